"""Is the scheduler alive? The question a stopped cluster never answers by itself.

With no cluster running, or its dispatcher clock dead, no scheduled backup starts and no
run fails: every page would look calm while nothing is backed up. Each dispatcher pass
records itself (DispatcherBeat, dispatch.record_beat); a beat older than STALE_AFTER, or no beat at all while
schedules are overdue, means scheduled backups are not starting. So does a task queue
that cannot be reached (Redis down: a ping with a short timeout), or runs waiting
WORKERS_STALLED_AFTER while no worker is busy. Pages show it as a
banner to every member, and /healthz answers 503 for external monitoring.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db.models import Q
from django.db.models.functions import Coalesce

from scheduling.dbclock import db_now
from scheduling.dispatch import dispatcher_disabled_message
from scheduling.heartbeat import HEARTBEAT_SECONDS
from scheduling.models import BackupSchedule, BackupScheduleRun, DispatcherBeat, NodeClock, RunStatus
from scheduling.presentation import relative
from scheduling.queue import broker_reachable

# The clock starts a pass every minute; three missed in a row is no hiccup.
STALE_AFTER = timedelta(minutes=3)
# A queued run's task reaches an idle worker within seconds, and one the queue lost is given
# out again within two minutes (dispatch.LOST_AFTER plus a pass): two minutes with no worker
# busy means none is taking tasks.
WORKERS_STALLED_AFTER = timedelta(minutes=2)
# Pages read the answer from the cache: one query per process every CACHE_SECONDS, not per page.
CACHE_KEY = "scheduling:dispatcher-health"
CACHE_SECONDS = 15
BROKER_CACHE_KEY = "scheduling:broker-reachable"
BROKER_UNREACHABLE_MESSAGE = (
    "The task queue (Redis) cannot be reached: runs are created but no worker receives them. "
    "They start once it is back. Check that Redis is running and that REDIS_URL points at it."
)


@dataclass(frozen=True)
class DispatcherHealth:
    ok: bool
    # "running", "disabled", "stopped", "never-ran", "broker-unreachable", "clock-skew", "workers-stalled",
    # "waiting" (no beat, nothing overdue)
    state: str
    last_pass_at: datetime | None
    message: str  # for people, "" when ok

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "state": self.state,
            "last_pass_at": self.last_pass_at.isoformat() if self.last_pass_at else None,
            "message": self.message,
        }


def dispatcher_health(now: datetime | None = None) -> DispatcherHealth:
    if not settings.DISPATCHER_ENABLED:  # a setting: no query, not even the clock's
        return DispatcherHealth(False, "disabled", None, dispatcher_disabled_message())
    now = now or db_now()  # the clock the passes record their beats with
    last = DispatcherBeat.objects.filter(pk=1).values_list("at", flat=True).first()
    if last is not None:
        if now - last <= STALE_AFTER:
            if not _broker_reachable():
                return DispatcherHealth(False, "broker-unreachable", last, BROKER_UNREACHABLE_MESSAGE)
            return _clock_health(now, last) or _workers_health(now, last)
        return DispatcherHealth(
            False,
            "stopped",
            last,
            f"The dispatcher last ran {relative(last, now)} ({last:%Y-%m-%d %H:%M} UTC); no scheduled backup "
            "starts until it runs again. Check that the cluster (manage.py runcluster) is running.",
        )
    if BackupSchedule.objects.filter(enabled=True, next_run_at__lt=now - STALE_AFTER).exists():
        return DispatcherHealth(
            False,
            "never-ran",
            None,
            "The dispatcher has never run, and schedules are overdue; no scheduled backup starts until it "
            "does. Start the cluster (manage.py runcluster).",
        )
    return DispatcherHealth(True, "waiting", None, "")


def _clock_health(now: datetime, last: datetime) -> DispatcherHealth | None:
    """A node whose clock is off marks no slot missed (scheduling.dispatch._judge_clock):
    its late schedules wait for a node whose clock is right, and if there is none, they
    stop. Nothing else would tell, so the offset its last pass measured is shown here."""
    limit = settings.CLOCK_SKEW_LIMIT_SECONDS
    skewed = (
        NodeClock.objects.filter(measured_at__gte=now - STALE_AFTER)
        .filter(Q(offset_seconds__gt=limit) | Q(offset_seconds__lt=-limit))
        .order_by("-measured_at")
        .first()
    )
    if skewed is None:
        return None
    offset = skewed.offset_seconds
    return DispatcherHealth(
        False,
        "clock-skew",
        last,
        f"The clock of node {skewed.node} is {abs(offset):.0f} s {'ahead of' if offset > 0 else 'behind'} the "
        f"database's (more than {limit} s, CLOCK_SKEW_LIMIT_SECONDS): its dispatcher passes mark no slot missed. "
        "Fix the node's time synchronization (NTP).",
    )


def _workers_health(now: datetime, last: datetime) -> DispatcherHealth:
    """The clock runs; do the workers? Runs that wait long are no proof (a night's backups
    queue behind two workers), but runs waiting while no worker beats on any run are."""
    cutoff = now - WORKERS_STALLED_AFTER
    due_since = Coalesce("not_before", "created_at")
    oldest = (
        BackupScheduleRun.objects.filter(status=RunStatus.QUEUED, enqueued_at__isnull=False)
        .annotate(due_since=due_since)
        .filter(due_since__lt=cutoff)
        .order_by("due_since")
        .values_list("due_since", flat=True)
        .first()
    )
    if oldest is None:
        return DispatcherHealth(True, "running", last, "")
    alive = now - timedelta(seconds=HEARTBEAT_SECONDS * 4)
    if BackupScheduleRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__gte=alive).exists():
        return DispatcherHealth(True, "running", last, "")  # busy, not stuck
    waited = relative(oldest, now).removesuffix(" ago")
    return DispatcherHealth(
        False,
        "workers-stalled",
        last,
        f"Runs are queued but no worker takes them; the oldest has waited {waited}. "
        "Check the cluster's workers (manage.py runcluster) and its broker.",
    )


def _broker_reachable() -> bool:
    """The ping's answer, cached like the health itself: /healthz is not cached, and a
    monitor polling it every second must not cost a connection to Redis each time."""
    reachable = cache.get(BROKER_CACHE_KEY)
    if not isinstance(reachable, bool):
        reachable = broker_reachable()
        cache.set(BROKER_CACHE_KEY, reachable, CACHE_SECONDS)
    return reachable


def cached_dispatcher_health() -> DispatcherHealth:
    if not settings.DISPATCHER_ENABLED:  # a setting, no query: never stale
        return dispatcher_health()
    health = cache.get(CACHE_KEY)
    if not isinstance(health, DispatcherHealth):
        health = dispatcher_health()
        cache.set(CACHE_KEY, health, CACHE_SECONDS)
    return health
