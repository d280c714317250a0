"""Putting run tasks on django-q2's queue, many at a time, and finding those it lost.

A task carries only the run's public code: never a password or a path, so task
arguments, the queue and its admin pages hold nothing secret. The packages are
built and put on the broker by the fast path (tenants/fastpath/task_packages.py).

A run's `enqueued_at` says when its task was last put on the queue; NULL means it
has none (an automatic retry before its time, a deferred run, a push that failed),
and the dispatcher's next pass pushes one (dispatch.release_due_retries).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from uuid import UUID

import redis
from django.db import transaction
from django.utils import timezone
from django_q.brokers import Broker, get_broker
from django_q.conf import Conf

from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.worker import execute_run
from tenants.fastpath.task_packages import (
    broker_in_database,
    dashed_code,
    insert_packages,
    push_packages,
    release_rows,
    scan_queue,
    signed_packages,
)

# The worker's task, as django-q2 names it (taken from the function: a move cannot leave it stale).
EXECUTE_RUN = f"{execute_run.__module__}.{execute_run.__qualname__}"
# How many tasks one look for lost tasks reads off the queue at most (~450 bytes each on
# Redis): a longer queue is a backlog whose tail holds recent pushes, not lost ones.
SCAN_LIMIT = 20_000
# The health check's ping gives up after this long: a broker that slow is as good as gone.
PING_TIMEOUT_SECONDS = 2.0

logger = logging.getLogger(__name__)


class BrokerUnreachable(Exception):
    """The broker could not be read; nothing is known about its tasks."""


def enqueue_runs(run_codes: Sequence[UUID | str], broker: Broker | None = None) -> None:
    """Enqueue one task per run, inside the caller's transaction where possible.

    With the ORM broker the queue lives in our database, so tasks commit or roll
    back together with their runs. With Redis the push waits for the commit (a
    task never points at a run that does not exist); if the push fails (Redis
    down), the runs are marked as having no task and the dispatcher's next pass
    pushes them; if the process dies in between, the look for lost tasks finds them.
    """
    if not run_codes:
        return
    broker = broker or get_broker()
    now = timezone.now()
    packages = signed_packages(EXECUTE_RUN, run_codes, now)
    if broker_in_database(broker):
        insert_packages(broker, packages, now)
    else:
        codes = list(run_codes)
        # robust: should even marking the runs fail, a created run must not become an error page.
        transaction.on_commit(lambda: _push_or_mark(broker, packages, codes), robust=True)


def _push_or_mark(broker: Broker, packages: Sequence[str], codes: Sequence[UUID | str]) -> None:
    try:
        push_packages(broker, packages)
    except redis.RedisError as exc:
        # No task went out (a pipeline of RPUSHes fails as a whole on a lost connection);
        # should a few have gone, their second push is harmless (claim by compare-and-swap).
        marked = BackupScheduleRun.objects.filter(
            code__in=codes, status=RunStatus.QUEUED, enqueued_at__isnull=False
        ).update(enqueued_at=None)
        logger.warning(
            "could not put %d tasks on the queue (%s); the dispatcher's next pass pushes the %d runs still queued",
            len(packages),
            type(exc).__name__,
            marked,
        )


def requeue_lost(run_codes: Sequence[UUID | str], broker: Broker | None = None) -> list[str]:
    """Of these queued runs, whose tasks were pushed a while ago, give a task again to
    those the queue no longer holds one for a worker to take; return their codes.

    One read of the queue (scan_queue). A run whose task still waits in the queue,
    however long the backlog, gets nothing. Redis: a run whose task is not in the list
    was taken by a cluster that never started it (killed with tasks it had taken), or
    its push was lost: it gets a new task (after the commit, as any push). ORM broker:
    a row a cluster locked is unlocked at once, no second row; a run with no row at all
    (the queue purged by hand) gets a new one. Raises BrokerUnreachable when Redis
    cannot be read.

    A live cluster also holds a few taken tasks it has not started (django-q2's
    `queue_limit`, set to the worker count, plus one in its pusher's hand) while all
    its workers are busy; seen from here they are lost too, and get a second task.
    That one waits in the queue, where the next looks find it; it costs at most one
    extra task per run that waited in a busy cluster, and the first delivery to reach a
    worker runs it (claim by compare-and-swap), the other is a no-op.
    """
    if not run_codes:
        return []
    broker = broker or get_broker()
    codes = [dashed_code(code) for code in run_codes]
    try:
        scan = scan_queue(broker, EXECUTE_RUN, SCAN_LIMIT)
    except redis.RedisError as exc:
        raise BrokerUnreachable(f"{type(exc).__name__}: {exc}") from exc
    taken = [code for code in codes if code in scan.taken]
    release_rows([pk for code in taken for pk in scan.taken[code]])
    missing = [code for code in codes if code not in scan.available and code not in scan.taken]
    if not scan.complete and missing:
        # Beyond the part read: most are further on in the queue; they are looked at again
        # next pass, and once the queue is shorter than SCAN_LIMIT a lost one is found.
        logger.warning(
            "the queue holds more than %d tasks; %d long-queued runs were not found in its first part",
            SCAN_LIMIT,
            len(missing),
        )
        missing = []
    enqueue_runs(missing, broker)
    return taken + missing


def broker_reachable() -> bool:
    """Can the cluster's broker be reached now? The ORM broker is our database: yes.

    A fresh Redis client with a short timeout, so a dead or unroutable Redis costs a
    health check PING_TIMEOUT_SECONDS, not the broker's own (longer) socket timeouts."""
    if Conf.ORM:  # asked before get_broker(): the ORM broker would close old connections
        return True
    pool = get_broker().connection.connection_pool
    options = {
        **pool.connection_kwargs,
        "socket_connect_timeout": PING_TIMEOUT_SECONDS,
        "socket_timeout": PING_TIMEOUT_SECONDS,
    }
    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **options))
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
        client.connection_pool.disconnect()
