"""Test helpers that exercise the real queue instead of calling functions around it."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import connection
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.signing import SignedPackage

from backups import storage
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


def stored_path(key: str) -> Path:
    """The local file of a stored key (local storage only: S3 objects have no path)."""
    if not storage.is_local():
        raise ValueError("the backups storage is not a local folder")
    return Path(storage.backups_storage().path(storage.check_key(key)))


def stored_exists(key: str) -> bool:
    return bool(storage.backups_storage().exists(storage.check_key(key)))


def set_of_run(run: Any, **fields: Any) -> BackupSet:
    """A backup set row that `run` made (the run points at it, and it joins the series
    the worker names by the run's schedule)."""
    if run.schedule_id is not None:
        fields.setdefault("series", type(run).objects.filter(pk=run.pk).values_list("schedule__code", flat=True)[0])
    backup_set = BackupSet.objects.create(**fields)
    type(run).objects.filter(pk=run.pk).update(backup_set=backup_set)
    run.backup_set = backup_set
    return backup_set


def make_stored_set(schedule: BackupSchedule, run: Any, sha256: str = "ab" * 32, **fields: Any) -> BackupSet:
    """A backup set row with one item, as a finished run leaves it (no file behind it)."""
    fields.setdefault("size", 1234)
    fields.setdefault("source_size", 5678)
    backup_set = set_of_run(run, tenant=schedule.tenant, created_at=timezone.now(), **fields)
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


# ---------------------------------------------------------------- real processes

ROOT = Path(__file__).resolve().parent.parent


def database_url() -> str:
    """The test database, as a URL for another process (manage.py dispatch, runcluster)."""
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{config['NAME']}"
    user = config["USER"] or "postgres"
    return f"postgres://{user}@{config['HOST'] or '127.0.0.1'}:{config['PORT'] or 5432}/{config['NAME']}"


@dataclass
class Cluster:
    processes: list[subprocess.Popen[str]]
    outputs: list[str] = field(default_factory=list)

    def output(self) -> str:
        """What the nodes printed (all of it once they stopped), the end of it."""
        return "".join(self.outputs)[-3000:]


@contextmanager
def runcluster(
    settings: Any, nodes: int = 1, workers: int = 1, extra_env: dict[str, str] | None = None
) -> Iterator[Cluster]:
    """`manage.py runcluster` as real processes on the test database and storage, stopped
    with SIGINT (as Ctrl-C) on leaving; `extra_env` adds to their environment (faketime's)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "BACKUPS_DIR": str(settings.BACKUPS_DIR),
        "SOURCE_ROOTS": ",".join(str(p) for p in settings.SOURCE_ROOTS),
        "Q_WORKERS": str(workers),
        **(extra_env or {}),
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # set for the browser tests' own process only
    command = [sys.executable, "manage.py", "runcluster"]
    options: dict[str, Any] = {"cwd": ROOT, "env": env, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    cluster = Cluster([subprocess.Popen(command, text=True, **options) for _ in range(nodes)])
    try:
        yield cluster
    finally:
        for process in cluster.processes:
            process.send_signal(signal.SIGINT)
        for process in cluster.processes:
            try:
                cluster.outputs.append(process.communicate(timeout=60)[0])
            except subprocess.TimeoutExpired:
                process.kill()
                cluster.outputs.append(process.communicate()[0])
