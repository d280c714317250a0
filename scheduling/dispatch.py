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

import json
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from lib.slots import Cadence, next_slot
from scheduling.bulk import insert_rows, update_rows
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun, RunStatus, Trigger
from scheduling.queue import enqueue_runs
from tenants.models import AuditAction, AuditLog

# Missed slots are counted up to this many; beyond it the entry says "at least".
MISSED_COUNT_LIMIT = 1000
# Arbitrary constant naming the dispatcher's PostgreSQL advisory lock.
ADVISORY_LOCK_KEY = 0x6261_636B_7570  # "backup"

BUSY_REASON = "Skipped: the previous run of this schedule was still queued or running."
SUPERSEDED_REASON = "Skipped: a later slot of this schedule was due in the same pass."


@dataclass
class PassReport:
    at: str
    enabled: bool = True
    due: int = 0
    created: int = 0
    skipped: int = 0
    missed: int = 0
    message: str = ""

    def as_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)


@dataclass
class _Plan:
    runs: list[dict[str, Any]] = field(default_factory=list)
    next_run_at: dict[int, dict[str, Any]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)


def dispatcher_disabled_message() -> str:
    return "The dispatcher is turned off (DISPATCHER_ENABLED=false): no scheduled backups are being started."


def run_pass(now: datetime | None = None) -> PassReport:
    now = now or timezone.now()
    report = PassReport(at=now.isoformat())
    if not settings.DISPATCHER_ENABLED:
        report.enabled = False
        report.message = dispatcher_disabled_message()
        return report
    grace = timedelta(seconds=settings.DISPATCH_GRACE_SECONDS)
    with transaction.atomic():
        _take_dispatch_lock()
        due = list(_due_schedules(now))
        report.due = len(due)
        if not due:
            return report
        plan = _plan(due, now, grace)
        inserted = insert_rows(
            BackupScheduleRun, plan.runs, returning=["code", "tenant", "schedule", "status", "slot", "error_message"]
        )
        inserted += _record_lost_races(plan, inserted)
        enqueue_runs([code for code, _, _, status, _, _ in inserted if status == RunStatus.QUEUED])
        _audit(inserted, plan, now)
        update_rows(BackupSchedule, plan.next_run_at)
    for _, _, _, status, _, _ in inserted:
        if status == RunStatus.QUEUED:
            report.created += 1
        elif status == RunStatus.SKIPPED:
            report.skipped += 1
        else:
            report.missed += 1
    return report


def _take_dispatch_lock() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [ADVISORY_LOCK_KEY])
    # SQLite: the IMMEDIATE transaction already holds the database's write lock.


def _due_schedules(now: datetime):  # type: ignore[no-untyped-def]
    busy = BackupScheduleRun.objects.filter(schedule=OuterRef("pk"), status__in=ACTIVE_STATUSES)
    return (
        BackupSchedule.objects.filter(enabled=True, next_run_at__lte=now)
        .annotate(busy=Exists(busy))
        .values_list(
            "id", "tenant_id", "name", "next_run_at", "kind", "timezone", "time_of_day",
            "weekdays", "cron", "every_hours", "anchor_at", "busy",
        )
        .order_by()
    )


def _plan(due: list[tuple[Any, ...]], now: datetime, grace: timedelta) -> _Plan:
    plan = _Plan()
    # Many schedules share a cadence and a due slot; compute each walk once.
    walks: dict[tuple[Cadence, datetime], tuple[list[datetime], datetime | None]] = {}
    for (pk, tenant_id, name, first_slot, kind, tz, at, weekdays, cron, every_hours, anchor, busy) in due:
        cadence = Cadence(kind, tz, at, frozenset(weekdays or ()), cron, every_hours, anchor)
        key = (cadence, first_slot)
        if key not in walks:
            walks[key] = _walk(cadence, first_slot, now)
        slots, following = walks[key]
        plan.names[pk] = name
        plan.next_run_at[pk] = {"next_run_at": following}
        late = [slot for slot in slots if now - slot > grace]
        fresh = slots[len(late):]
        if late:
            plan.runs.append(_row(pk, tenant_id, late[0], now, RunStatus.MISSED, _missed_message(late), len(late)))
        for slot in fresh[:-1]:
            plan.runs.append(_row(pk, tenant_id, slot, now, RunStatus.SKIPPED, SUPERSEDED_REASON))
        if fresh:
            status = RunStatus.SKIPPED if busy else RunStatus.QUEUED
            plan.runs.append(_row(pk, tenant_id, fresh[-1], now, status, BUSY_REASON if busy else ""))
    return plan


def _walk(cadence: Cadence, first_slot: datetime, now: datetime) -> tuple[list[datetime], datetime | None]:
    """The due slots from `first_slot` up to `now`, and the first slot after `now`."""
    slots = [first_slot]
    following = next_slot(cadence, first_slot)
    while following is not None and following <= now:
        if len(slots) <= MISSED_COUNT_LIMIT:
            slots.append(following)
            following = next_slot(cadence, following)
        else:  # far behind: stop counting, jump to the present
            following = next_slot(cadence, now)
    return slots, following


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


def _row(
    schedule_id: int, tenant_id: int, slot: datetime, now: datetime, status: str, message: str, missed: int = 0
) -> dict[str, Any]:
    return {
        "code": uuid.uuid4(),
        "tenant": tenant_id,
        "schedule": schedule_id,
        "slot": slot,
        "trigger": Trigger.SCHEDULED,
        "status": status,
        "attempt": 1,
        "missed_count": missed,
        "error_code": "",
        "error_message": message,
        "created_at": now,
        "log": "",
    }


def _record_lost_races(plan: _Plan, inserted: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """A queued row can lose to a Run now that committed after our SELECT (the
    one-active-run constraint). Record its slot as skipped instead of dropping it;
    rows another dispatcher already wrote conflict on the slot again and stay out."""
    ours = {row[0] for row in inserted}
    lost = [
        {**row, "code": uuid.uuid4(), "status": RunStatus.SKIPPED, "error_message": BUSY_REASON}
        for row in plan.runs
        if row["status"] == RunStatus.QUEUED and row["code"] not in ours
    ]
    return insert_rows(
        BackupScheduleRun, lost, returning=["code", "tenant", "schedule", "status", "slot", "error_message"]
    )


_AUDIT_ACTIONS = {
    RunStatus.QUEUED: AuditAction.RUN_CREATED,
    RunStatus.SKIPPED: AuditAction.RUN_SKIPPED,
    RunStatus.MISSED: AuditAction.RUN_MISSED,
}


def _audit(inserted: list[tuple[Any, ...]], plan: _Plan, now: datetime) -> None:
    entries = []
    for code, tenant_id, schedule_id, status, slot, message in inserted:
        details: dict[str, Any] = {"slot": slot.isoformat(), "trigger": Trigger.SCHEDULED}
        if message:
            details["reason"] = message
        entries.append(
            {
                "code": uuid.uuid4(),
                "tenant": tenant_id,
                "action": _AUDIT_ACTIONS[status],
                "target_type": "backupschedulerun",
                "target_code": code,
                "target_label": plan.names[schedule_id][:200],
                "details": details,
                "created_at": now,
            }
        )
    insert_rows(AuditLog, entries)
