"""The minute dispatcher: turns due slots into runs, exactly once per slot.

One pass is set-based: a fixed number of SQL statements whatever the number of
due schedules (select due, insert runs, insert tasks, insert audit entries,
advance next_run_at). Exactly-once rests on the database, not on timing:

* a UniqueConstraint on (schedule, slot) makes a repeated pass, a second
  dispatcher or a crash-and-retry insert nothing new (ON CONFLICT DO NOTHING,
  and RETURNING tells us which rows are really ours);
* passes are serialized (an advisory lock on PostgreSQL, SQLite's IMMEDIATE
  write lock), so a second dispatcher normally finds nothing due at all;
* runs and their tasks commit in one transaction (ORM broker) or tasks are
  pushed after commit (Redis).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_datetime, parse_time

from backups.errors import ErrorCode
from lib.slots import Cadence, InvalidCadence, next_slot, validate
from scheduling.creation import scheduled_run_constants, scheduled_run_row
from scheduling.dbclock import ClockReading, read_clock
from scheduling.endings import Ending, give_up
from scheduling.heartbeat import HEARTBEAT_SECONDS
from scheduling.models import (
    ACTIVE_STATUSES,
    BackupSchedule,
    BackupScheduleRun,
    DispatcherBeat,
    NodeClock,
    Operation,
    RunStatus,
    Trigger,
)
from scheduling.notifications import notify_slots_missed
from scheduling.queue import BrokerUnreachable, enqueue_runs, requeue_lost
from tenants.audit import AuditEntry, record_many
from tenants.fastpath.sql_writes import insert_rows, update_rows
from tenants.fastpath.task_packages import dashed_code
from tenants.models import AuditAction

# A running run whose heartbeat is this old has lost its worker: 4.5 beats (45 s), so
# a live worker may miss four in a row, and a killed one's run is failed at the first
# pass after that, at most 45 + 60 s (passes are a minute apart) + the pass's own
# time after its last beat: under the 2 minutes promised (docs/scheduling.md).
ABANDONED_AFTER = timedelta(seconds=HEARTBEAT_SECONDS * 4.5)
WORKER_LOST_MESSAGE = (
    "The worker running this backup stopped responding (it crashed, was killed or restarted). "
    "No backup set was kept from this run; press Retry to run it again."
)
# A queued run whose task went out this long ago is looked for in the queue; if the queue
# holds no task of it a worker can take, it gets one again. A push reaches the queue within
# milliseconds of its commit. Half a minute, plus at most one minute to the next pass, plus
# the worker's start keeps a loss well under two minutes (a minute here measured 115 s at
# worst in bench/faults.py: too close). A task a busy live cluster took ahead of its workers
# looks lost too, and gets its one second task that much sooner: harmless (compare-and-swap).
LOST_AFTER = timedelta(seconds=30)
# Queued runs one pass looks at: a backlog this long is read again in the next pass.
LOST_LOOK_LIMIT = 10_000
# Runs with no task one pass pushes: after a Redis outage, every run created during it
# (its push failed) in the first pass that reaches Redis again, as a pass of 10,000 due
# schedules would push them.
RELEASE_LIMIT = 10_000
logger = logging.getLogger(__name__)

# Missed slots are counted up to this many; beyond it the entry says "at least".
MISSED_COUNT_LIMIT = 1000
# Arbitrary constant naming the dispatcher's PostgreSQL advisory lock.
ADVISORY_LOCK_KEY = 0x6261_636B_7570  # "backup"

BUSY_REASON = "Skipped: the previous run of this schedule was still queued or running."
RETRY_PENDING_REASON = (
    "Skipped: an automatic retry of this schedule's failed run was pending; it runs instead of this slot."
)
SUPERSEDED_REASON = "Skipped: a later slot of this schedule was due in the same pass."


@dataclass
class PassReport:
    at: str
    enabled: bool = True
    due: int = 0
    created: int = 0
    skipped: int = 0
    missed: int = 0
    requeued: int = 0
    abandoned: int = 0
    retries: int = 0
    # Schedules with late slots left for a node whose clock agrees with the database's.
    refused: int = 0
    clock_offset: float | None = None  # this node's clock minus the database's, in seconds
    message: str = ""

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)


@dataclass
class _Plan:
    runs: list[dict[str, Any]] = field(default_factory=list)
    next_run_at: dict[int, dict[str, Any]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    refused: int = 0


def dispatcher_disabled_message() -> str:
    return "The dispatcher is turned off (DISPATCHER_ENABLED=false): no scheduled backups are being started."


def run_pass(now: datetime | None = None) -> PassReport:
    """One pass at the database's time (scheduling/dbclock.py), judging this node's clock
    against it; given `now`, a simulated pass at that instant (tests, bench, the dispatch
    command's --at), which reads and judges no clock."""
    if not settings.DISPATCHER_ENABLED:
        return PassReport(at=(now or timezone.now()).isoformat(), enabled=False, message=dispatcher_disabled_message())
    grace = timedelta(seconds=settings.DISPATCH_GRACE_SECONDS)
    # A big pass allocates many short-lived tuples and dicts and no cycles; the
    # cyclic GC would stop to scan them again and again (~30% of a 10k pass).
    with _gc_paused(), transaction.atomic():
        _take_dispatch_lock()
        reading = None
        if now is None:  # read after the lock: a pass that waited for another decides at its own time
            reading = read_clock()
            now = reading.db_time
        report = PassReport(at=now.isoformat())
        skewed = reading is not None and _judge_clock(reading, report)
        record_beat(now)
        report.abandoned = fail_abandoned_runs(now)
        report.requeued = requeue_lost_tasks(now)
        report.retries = release_due_retries(now)
        due = list(_due_schedules(now))
        report.due = len(due)
        if not due:
            return report
        plan = _plan(due, now, grace, refuse_missed=skewed)
        report.refused = plan.refused
        inserted = _insert_runs(plan.runs, now)
        inserted += _record_lost_races(plan, inserted, now)
        enqueue_runs([row["code"] for row in inserted if row["status"] == RunStatus.QUEUED])
        _audit(inserted, plan, now)
        update_rows(BackupSchedule, plan.next_run_at)
    missed_by_tenant: dict[int, list[str]] = {}
    for row in inserted:
        status = row["status"]
        if status == RunStatus.QUEUED:
            report.created += 1
        elif status == RunStatus.SKIPPED:
            report.skipped += 1
        else:
            report.missed += 1
            missed_by_tenant.setdefault(row["tenant_id"], []).append(dashed_code(row["code"]))
    _notify_missed(missed_by_tenant)
    return report


def _notify_missed(missed_by_tenant: dict[int, list[str]]) -> None:
    """After the pass committed: a missed slot is news people must hear (rare: one
    set of statements per tenant that missed slots, none in an ordinary pass)."""
    for tenant_id, codes in missed_by_tenant.items():
        try:
            notify_slots_missed(tenant_id, codes)
        except Exception:
            logger.exception("could not notify tenant %s of %d missed slots", tenant_id, len(codes))


def fail_abandoned_runs(now: datetime) -> int:
    """Fail running runs whose worker stopped beating (crash, OOM kill, reboot).

    Otherwise such a run would stay 'running' forever, and the one-active-run rule
    would skip every later slot of its schedule: a silent stop of its backups.
    """
    cutoff = now - ABANDONED_AFTER
    abandoned = BackupScheduleRun.objects.filter(status=RunStatus.RUNNING, heartbeat_at__lt=cutoff).select_related(
        "schedule", "tenant"
    )[:1000]
    # The one ending every run goes through (audit, leases, temporary files, people
    # told): WORKER_LOST is never retried, so this is the last failure of its chain.
    # In the pass's transaction: a rolled-back pass tells nobody.
    failed = give_up(
        abandoned,
        Ending(RunStatus.FAILED, error_code=ErrorCode.WORKER_LOST, error_message=WORKER_LOST_MESSAGE),
        only_if=Q(heartbeat_at__lt=cutoff),  # a beat since the SELECT: alive after all
    )
    if failed:
        logger.warning("failed %d runs whose worker stopped", failed)
    return failed


def release_due_retries(now: datetime) -> int:
    """Push the tasks of automatic retries whose `not_before` has come, of runs
    deferred while their tenant was at its TENANT_MAX_RUNNING share, and of runs whose
    push failed (Redis unreachable: scheduling.queue marks them as having no task), so
    those go out in the first pass after Redis is back.

    A retry is created queued with no task (enqueued_at NULL) so that no worker
    holds it for minutes; setting enqueued_at here marks its task as pushed, and the
    lost-task look above covers it from then on. Set-based, inside the pass's
    transaction: one SELECT when none is due, plus one UPDATE and the task insert
    when some are.
    """
    # not_before NULL: a run deferred because its tenant was at TENANT_MAX_RUNNING (scheduling.lifecycle.defer).
    waiting = Q(not_before__lte=now) | Q(not_before__isnull=True)
    due = list(
        BackupScheduleRun.objects.filter(waiting, status=RunStatus.QUEUED, enqueued_at__isnull=True).values_list(
            "pk", "code"
        )[:RELEASE_LIMIT]
    )
    if not due:
        return 0
    BackupScheduleRun.objects.filter(pk__in=[pk for pk, _ in due], enqueued_at__isnull=True).update(enqueued_at=now)
    enqueue_runs([code for _, code in due])
    logger.info("released %d automatic retries", len(due))
    return len(due)


def requeue_lost_tasks(now: datetime) -> int:
    """Give a task again to queued runs whose task the queue lost; once per pass.

    A task can be lost after its run committed: with Redis, by a push that failed
    unnoticed or a process dying between commit and push; with either broker, by a
    cluster killed (OOM, reboot) after it took the task but before a worker claimed
    the run (the ORM broker would redeliver only after its 6-hour `retry`). Meanwhile
    every slot of the schedule would be skipped as busy.

    Only runs whose task went out LOST_AFTER ago or more are looked at (a fresh push is
    on its way), in one SELECT, with one read of the queue when there are any
    (scheduling.queue.requeue_lost); those the queue still holds a task for, however
    long they have waited behind others, get nothing. The others get their task again
    and a new enqueued_at, so each loss costs one push. A broker that cannot be read
    leaves everything as it is until a later pass can read it.
    """
    stale = list(
        BackupScheduleRun.objects.filter(status=RunStatus.QUEUED, enqueued_at__lt=now - LOST_AFTER).values_list(
            "pk", "code"
        )[:LOST_LOOK_LIMIT]
    )
    if not stale:
        return 0
    pks = {dashed_code(code): pk for pk, code in stale}
    try:
        lost = requeue_lost(list(pks))
    except BrokerUnreachable as exc:
        logger.warning("could not read the task queue to look for lost tasks: %s", exc)
        return 0
    if not lost:
        return 0
    BackupScheduleRun.objects.filter(pk__in=[pks[code] for code in lost]).update(enqueued_at=now)
    logger.warning("gave %d queued runs whose task was lost a task again", len(lost))
    return len(lost)


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


NODE = f"{socket.gethostname()}:{os.getpid()}"


def record_beat(at: datetime) -> None:
    """Every pass says when it ran (scheduling/health.py tells a stopped cluster by it):
    one upsert statement, the first pass's included."""
    beat = DispatcherBeat(pk=1, at=at, node=NODE)
    DispatcherBeat.objects.bulk_create(
        [beat], update_conflicts=True, unique_fields=["id"], update_fields=["at", "node"]
    )


def _judge_clock(reading: ClockReading, report: PassReport) -> bool:
    """Record this node's clock offset (NodeClock) and say whether it is beyond the bound.

    The pass decides by the database's time, so a wrong node clock misjudges nothing
    here; still, a node whose clock is off is a node to fix before its other timestamps
    (a run's start and end, a retry's time) mislead, and marking a slot missed cannot be
    undone, so a skewed node leaves that to a node that agrees with the database."""
    report.clock_offset = round(reading.offset_seconds, 3)
    measured = NodeClock(
        node=NODE,
        measured_at=reading.db_time,
        offset_seconds=reading.offset_seconds,
        round_trip_seconds=reading.round_trip_seconds,
    )
    NodeClock.objects.bulk_create(
        [measured],
        update_conflicts=True,
        unique_fields=["node"],
        update_fields=["measured_at", "offset_seconds", "round_trip_seconds"],
    )
    limit = settings.CLOCK_SKEW_LIMIT_SECONDS
    if abs(reading.offset_seconds) <= limit:
        return False
    logger.warning(
        "this node's clock (%s) is %+.1f s from the database's (limit %d s, CLOCK_SKEW_LIMIT_SECONDS): "
        "this pass marks no slot missed; fix the node's time synchronization",
        NODE,
        reading.offset_seconds,
        limit,
    )
    return True


def _take_dispatch_lock() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
    # SQLite: the IMMEDIATE transaction already holds the database's write lock.


def _due_schedules(now: datetime) -> list[tuple[Any, ...]]:
    """Due schedules as raw database rows: decoding 10,000 rows field by field costs
    more than the rest of the pass, and most rows share a cadence, so _plan decodes
    each distinct one once."""
    # Backups only, as the one-active-run constraint: a verify or restore of one of the
    # schedule's sets does not hold its backups up.
    busy = BackupScheduleRun.objects.filter(
        schedule=OuterRef("pk"), status__in=ACTIVE_STATUSES, operation=Operation.BACKUP
    )
    # Only to word the skip reason; the one-active-run constraint is what decides.
    retry_pending = BackupScheduleRun.objects.filter(
        schedule=OuterRef("pk"), status=RunStatus.QUEUED, trigger=Trigger.RETRY, operation=Operation.BACKUP
    )
    columns: list[Any] = list(_DUE_COLUMNS)
    if connection.vendor == "sqlite":
        # As text: the driver would parse every date and time (decltype converters),
        # though only one row per distinct cadence needs it.
        texts = {name: Cast(name, TextField()) for name in ("next_run_at", "time_of_day", "anchor_at")}
        columns = [texts.get(name, name) for name in columns]
    queryset = (
        # FOR UPDATE on PostgreSQL: an edit committing mid-pass waits, then writes its
        # own next_run_at, instead of being overwritten by one computed from old fields.
        BackupSchedule.objects.select_for_update(of=("self",))
        .filter(enabled=True, next_run_at__lte=now)
        .annotate(busy=Exists(busy), retry_pending=Exists(retry_pending))
        .values_list(*columns, "busy", "retry_pending")
        .order_by()
    )
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


_DUE_COLUMNS = (
    "id",
    "tenant_id",
    "name",
    "next_run_at",
    "kind",
    "timezone",
    "time_of_day",
    "weekdays",
    "cron",
    "every_hours",
    "anchor_at",
)


def _decode_datetime(value: Any) -> datetime | None:
    if isinstance(value, str):
        value = parse_datetime(value)
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _decode_time(value: Any) -> Any:
    return parse_time(value) if isinstance(value, str) else value


def _decode_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


# How to turn each raw cadence column (SQLite gives text) into what the ORM would give.
def _cadence(kind: str, columns: list[Any]) -> Cadence:
    """The canonical cadence from the raw columns after `kind`, decoding only those
    its kind uses (timezone, time_of_day, weekdays, cron, every_hours, anchor_at)."""
    tz, at, weekdays, cron, every_hours, anchor = columns
    if kind == "every_n_hours":
        return Cadence(kind, "UTC", every_hours=every_hours, anchor=_decode_datetime(anchor))
    if kind == "cron":
        return Cadence(kind, tz, cron=cron)
    if kind == "daily":
        return Cadence(kind, tz, time_of_day=_decode_time(at))
    if kind == "weekly":
        return Cadence(kind, tz, time_of_day=_decode_time(at), weekdays=frozenset(_decode_json(weekdays) or ()))
    return Cadence(kind)


@dataclass(frozen=True)
class _Walk:
    """What a pass does for every schedule with one cadence and one due slot."""

    late: list[datetime]  # older than the grace window: missed
    superseded: list[datetime]  # within grace, but a later slot is due too
    newest: datetime | None  # the slot to run now, if any
    following: datetime | None  # the next slot after now
    missed_message: str
    broken: str = ""  # why this cadence cannot be computed; empty when it can

    @property
    def update(self) -> dict[str, datetime | None]:
        return {"next_run_at": self.following}


# Which raw columns (after first_slot and kind) decide the slots of each kind; the
# others are leftovers of another kind and must not split the cache.
_RELEVANT = {
    "daily": itemgetter(0, 1),  # timezone, time_of_day
    "weekly": itemgetter(0, 1, 2),  # + weekdays
    "cron": itemgetter(0, 3),  # timezone, cron
    "every_n_hours": itemgetter(4, 5),  # every_hours, anchor_at
}


def _nothing(columns: list[Any]) -> tuple[()]:
    return ()


def _plan(due: list[tuple[Any, ...]], now: datetime, grace: timedelta, refuse_missed: bool = False) -> _Plan:
    """The rows to insert and the schedules to advance; with `refuse_missed` (this node's
    clock is off), a schedule with a late slot gets neither, and waits for another pass."""
    plan = _Plan()
    # Thousands of schedules share a cadence and a due slot: decode and walk each
    # combination once, keyed first on the raw columns that matter for its kind.
    codes = _new_codes()
    walks: dict[tuple[Cadence, datetime], _Walk] = {}
    by_raw: dict[tuple[Any, ...], _Walk] = {}
    for pk, tenant_id, name, first_raw, kind, *columns, busy, retry_pending in due:
        raw_key = (first_raw, kind, _RELEVANT.get(kind, _nothing)(columns))
        walk = by_raw.get(raw_key)
        if walk is None:
            try:
                first_slot = _decode_datetime(first_raw)
                assert first_slot is not None  # the due query filters next_run_at <= now
                cadence = _cadence(kind, columns)
                key = (cadence, first_slot)
                if key not in walks:
                    walks[key] = _walk(cadence, first_slot, now, grace)
                walk = walks[key]
            except Exception as exc:  # one broken schedule must not stop every other one
                logger.exception("schedule %s: its cadence cannot be computed", pk)
                walk = _broken_walk(first_raw, exc)
            by_raw[raw_key] = walk
        if refuse_missed and walk.late:
            plan.refused += 1
            continue
        plan.names[pk] = name[:200]
        plan.next_run_at[pk] = walk.update
        if walk.broken:
            slot = _decode_datetime(first_raw) or now
            plan.runs.append(scheduled_run_row(next(codes), pk, tenant_id, slot, RunStatus.SKIPPED, walk.broken))
            continue
        if walk.late:
            plan.runs.append(
                scheduled_run_row(
                    next(codes), pk, tenant_id, walk.late[0], RunStatus.MISSED, walk.missed_message, len(walk.late)
                )
            )
        for slot in walk.superseded:
            plan.runs.append(scheduled_run_row(next(codes), pk, tenant_id, slot, RunStatus.SKIPPED, SUPERSEDED_REASON))
        if walk.newest is not None:
            if busy:
                reason = RETRY_PENDING_REASON if retry_pending else BUSY_REASON
                plan.runs.append(scheduled_run_row(next(codes), pk, tenant_id, walk.newest, RunStatus.SKIPPED, reason))
            else:
                plan.runs.append(scheduled_run_row(next(codes), pk, tenant_id, walk.newest, RunStatus.QUEUED, ""))
    return plan


def _broken_walk(first_raw: Any, exc: Exception) -> _Walk:
    detail = str(exc) if isinstance(exc, InvalidCadence) else type(exc).__name__
    return _Walk(
        late=[],
        superseded=[],
        newest=None,
        following=None,  # no next run until someone fixes and saves the schedule
        missed_message="",
        broken=f"Skipped: this schedule's timing cannot be computed ({detail}). Fix and save it to resume.",
    )


def _walk(cadence: Cadence, first_slot: datetime, now: datetime, grace: timedelta) -> _Walk:
    """Sort the due slots from `first_slot` up to `now`, and find the first slot after `now`.

    The stored first slot is trusted only for a cadence that is valid today: one saved
    under older rules that no date matches (InvalidCadence) is skipped with its reason."""
    validate(cadence)
    slots = [first_slot]
    following = next_slot(cadence, first_slot)
    while following is not None and following <= now:
        if len(slots) <= MISSED_COUNT_LIMIT:
            slots.append(following)
            following = next_slot(cadence, following)
        else:  # far behind: stop counting, but still take the slots within grace
            cursor = max(slots[-1], now - grace - timedelta(microseconds=1))
            following = next_slot(cadence, cursor)
            while following is not None and following <= now:
                slots.append(following)
                following = next_slot(cadence, following)
    late = [slot for slot in slots if now - slot > grace]
    fresh = slots[len(late) :]
    return _Walk(
        late=late,
        superseded=fresh[:-1],
        newest=fresh[-1] if fresh else None,
        following=following,
        missed_message=_missed_message(late) if late else "",
    )


def _missed_message(late: list[datetime]) -> str:
    first, last = late[0], late[-1]
    if len(late) > MISSED_COUNT_LIMIT:
        count, span = f"more than {MISSED_COUNT_LIMIT}", f"since {_fmt(first)}"
    else:
        count = str(len(late))
        span = f"at {_fmt(first)}" if first == last else f"from {_fmt(first)} to {_fmt(last)}"
    return (
        f"Missed {count} slot{'s' if len(late) != 1 else ''} {span}: the dispatcher was not running "
        f"within {settings.DISPATCH_GRACE_SECONDS // 60} minutes of {'it' if first == last else 'them'}. "
        "Missed slots are not caught up; the schedule continues with its next slot."
    )


def _fmt(instant: datetime) -> str:
    return instant.strftime("%Y-%m-%d %H:%M UTC")


def _new_codes() -> Iterator[str]:
    """Random (version 4) UUIDs as 32 hex digits, the form SQLite stores.

    Drawn 1,024 at a time: uuid.uuid4() costs ~3 us apiece, a tenth of a 10k pass.
    Each pass makes its own stream, so no buffered codes outlive it (or a fork)."""
    while True:
        raw = bytearray(os.urandom(16 * 1024))
        raw[6::16] = bytes(b & 0x0F | 0x40 for b in raw[6::16])  # version 4
        raw[8::16] = bytes(b & 0x3F | 0x80 for b in raw[8::16])  # RFC 4122 variant
        text = raw.hex()
        yield from (text[i : i + 32] for i in range(0, len(text), 32))


def _insert_runs(rows: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """Insert the planned rows; return those really inserted (not already there)."""
    constants = scheduled_run_constants(now)
    returned = insert_rows(BackupScheduleRun, rows, returning=["code"], constants=constants, convert=False)
    if len(returned) == len(rows):  # the usual case: nothing was there already
        return list(rows)
    ours = {code.hex if isinstance(code, uuid.UUID) else code for (code,) in returned}
    return [row for row in rows if row["code"] in ours]


def _record_lost_races(plan: _Plan, inserted: list[dict[str, Any]], now: datetime) -> list[dict[str, Any]]:
    """A queued row can lose to a Run now that committed after our SELECT (the
    one-active-run constraint). Record its slot as skipped instead of dropping it;
    rows another dispatcher already wrote conflict on the slot again and stay out."""
    ours = {row["code"] for row in inserted}
    lost = [
        scheduled_run_row(
            uuid.uuid4().hex, row["schedule_id"], row["tenant_id"], row["slot"], RunStatus.SKIPPED, BUSY_REASON
        )
        for row in plan.runs
        if row["status"] == RunStatus.QUEUED and row["code"] not in ours
    ]
    return _insert_runs(lost, now)


_AUDIT_ACTIONS: dict[str, AuditAction] = {
    RunStatus.QUEUED: AuditAction.RUN_CREATED,
    RunStatus.SKIPPED: AuditAction.RUN_SKIPPED,
    RunStatus.MISSED: AuditAction.RUN_MISSED,
}


def _audit(inserted: list[dict[str, Any]], plan: _Plan, now: datetime) -> None:
    """One entry per tenant and action per pass, listing every run it concerns.

    A pass at 02:30 that queues 40 runs for a tenant reads better as one entry
    naming the 40 runs than as 40 entries, and it keeps a 10,000-schedule pass
    from writing 10,000 audit rows. The worker still audits each run's start and end.
    """
    slot_text: dict[datetime, str] = {}
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in inserted:
        slot = row["slot"]
        if slot not in slot_text:
            slot_text[slot] = slot.isoformat()
        item = {"run": dashed_code(row["code"]), "schedule": plan.names[row["schedule_id"]], "slot": slot_text[slot]}
        if row["error_message"]:
            item["reason"] = row["error_message"]
        groups.setdefault((row["tenant_id"], row["status"]), []).append(item)
    entries = []
    for (tenant_id, status), items in groups.items():
        noun = "slot" if status == RunStatus.MISSED else "run"
        entries.append(
            AuditEntry(
                tenant_id=tenant_id,
                action=_AUDIT_ACTIONS[status],
                target_type="dispatch",
                target_code=items[0]["run"] if len(items) == 1 else None,
                target_label=f"{len(items)} {noun}{'' if len(items) == 1 else 's'}",
                details={"count": len(items), "runs": items},
                created_at=now,
            )
        )
    record_many(entries)
