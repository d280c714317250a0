"""Putting run tasks on django-q2's queue, many at a time.

A task carries only the run's public code: never a password or a path, so task
arguments, the queue and its admin pages hold nothing secret. The packages are
built and put on the broker by the fast path (tenants/fastpath/task_packages.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from django.db import transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker

from scheduling.worker import execute_run
from tenants.fastpath.task_packages import broker_in_database, insert_packages, push_packages, signed_packages

# The worker's task, as django-q2 names it (taken from the function: a move cannot leave it stale).
EXECUTE_RUN = f"{execute_run.__module__}.{execute_run.__qualname__}"


def enqueue_runs(run_codes: Sequence[UUID | str], broker: Broker | None = None) -> None:
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
    packages = signed_packages(EXECUTE_RUN, run_codes, now)
    if broker_in_database(broker):
        insert_packages(broker, packages, now)
    else:
        # robust: a Redis hiccup after commit must not turn a created run into an error
        # page; the run stays queued and the dispatcher pushes its task again later.
        transaction.on_commit(lambda: push_packages(broker, packages), robust=True)
