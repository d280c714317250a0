"""Putting run tasks on django-q2's queue, many at a time.

A task carries only the run's public code: never a password or a path, so task
arguments, the queue and its admin pages hold nothing secret.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from django.db import transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from scheduling.bulk import insert_rows

EXECUTE_RUN = "backups.tasks.execute_run"


def task_package(run_code: UUID, now: datetime) -> str:
    """The same signed package django_q.tasks.async_task would build."""
    task = {
        "id": uuid.uuid4().hex,
        "name": f"backup run {run_code}",
        "func": EXECUTE_RUN,
        "args": (str(run_code),),
        "kwargs": {},
        "started": now,
        "ack_failure": True,
    }
    return SignedPackage.dumps(task)


def enqueue_runs(run_codes: Sequence[UUID], broker: Broker | None = None) -> None:
    """Enqueue one task per run, inside the caller's transaction where possible.

    With the ORM broker the queue lives in our database, so tasks commit or roll
    back together with their runs. With Redis the push waits for the commit (a
    task never points at a run that does not exist); if the process dies in
    between, the run stays queued and the dispatcher's next pass pushes it again.
    """
    if not run_codes:
        return
    broker = broker or get_broker()
    now = timezone.now()
    packages = [task_package(code, now) for code in run_codes]
    if isinstance(broker, ORM):
        key = broker.list_key
        insert_rows(OrmQ, [{"key": key, "payload": package, "lock": now} for package in packages])
    else:
        transaction.on_commit(lambda: push_packages(broker, packages))


def push_packages(broker: Broker, packages: Sequence[str]) -> None:
    connection = broker.connection
    if hasattr(connection, "pipeline"):  # Redis: one round trip for the lot
        pipe = connection.pipeline(transaction=False)
        for package in packages:
            pipe.rpush(broker.list_key, package)
        pipe.execute()
    else:
        for package in packages:
            broker.enqueue(package)
