"""Test helpers that exercise the real queue instead of calling functions around it."""

from __future__ import annotations

import importlib
from typing import Any

from django.utils import timezone
from django_q.brokers import get_broker
from django_q.signing import SignedPackage

from backups.models import BackupItem, BackupSet, BackupSource
from scheduling.models import BackupSchedule, ScheduleSource
from tenants.models import Tenant


def queued_tasks() -> list[dict[str, Any]]:
    """Take every task off the configured broker (ORM or Redis) and acknowledge it."""
    broker = get_broker()
    tasks = []
    while True:
        batch = broker.dequeue()
        if not batch:
            break
        for task_id, payload in batch:
            tasks.append(SignedPackage.loads(payload))
            broker.acknowledge(task_id)
    return tasks


def execute(task: dict[str, Any]) -> Any:
    module_name, _, func_name = task["func"].rpartition(".")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(*task["args"], **task["kwargs"])


def drain() -> list[Any]:
    """Run every queued task the way a cluster worker would."""
    return [execute(task) for task in queued_tasks()]


def make_schedule(tenant: Tenant, source: BackupSource | None, **fields: Any) -> BackupSchedule:
    """A saved schedule covering `source`, without the service (for tests that set fields directly)."""
    schedule = BackupSchedule.objects.create(tenant=tenant, **fields)
    if source is not None:
        ScheduleSource.objects.create(schedule=schedule, source=source)
    return schedule


def make_stored_set(schedule: BackupSchedule, run: Any, sha256: str = "ab" * 32, **fields: Any) -> BackupSet:
    """A backup set row with one item, as a finished run leaves it (no file behind it)."""
    fields.setdefault("size", 1234)
    fields.setdefault("source_size", 5678)
    backup_set = BackupSet.objects.create(
        tenant=schedule.tenant, schedule=schedule, run=run, created_at=timezone.now(), **fields
    )
    source = schedule.sources.first()
    BackupItem.objects.create(
        backup_set=backup_set,
        source=source,
        kind=source.kind if source else "sqlite",
        label=source.name if source else "gone",
        storage_key=f"key-{run.code}",
        size=backup_set.size,
        source_size=backup_set.source_size,
        sha256=sha256,
    )
    return backup_set
