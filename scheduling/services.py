"""Saving schedules: derived fields (anchor, next_run_at) and the audit entry."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from backups.models import BackupSource
from lib.slots import default_anchor, next_slot
from scheduling.models import ACTIVE_STATUSES, EDITABLE_FIELDS, BackupSchedule, ScheduleKind
from scheduling.runs import cancel_pending_retries
from tenants.audit import record
from tenants.models import AuditAction

# Changing any of these re-anchors an every-N-hours schedule; other edits keep its grid.
ANCHOR_FIELDS = ("kind", "every_hours", "time_of_day", "timezone")
TIMING_FIELDS = (*ANCHOR_FIELDS, "weekdays", "cron", "enabled")
# Sources are a many-to-many field: audited as a sorted list of codes (see source_codes).
AUDITED_FIELDS = tuple(name for name in EDITABLE_FIELDS if name != "sources")


def refresh_next_run(schedule: BackupSchedule, now: datetime | None = None) -> None:
    """No catch-up: the next slot is always counted from now."""
    now = now or timezone.now()
    if not schedule.enabled:
        schedule.next_run_at = None
    else:
        schedule.next_run_at = next_slot(schedule.cadence, now)


def prepare(schedule: BackupSchedule, before: dict[str, Any] | None, now: datetime) -> None:
    if schedule.kind == ScheduleKind.EVERY_N_HOURS:
        changed = before is None or any(before.get(f) != getattr(schedule, f) for f in ANCHOR_FIELDS)
        if changed or schedule.anchor_at is None:
            schedule.anchor_at = default_anchor(schedule.time_of_day, schedule.timezone, now)
    else:
        schedule.anchor_at = None
    # Only a change of timing moves next_run_at: recomputing it on any edit (a
    # rename, keep-last) would drop a slot that is due but not dispatched yet.
    if before is None or any(before.get(f) != getattr(schedule, f) for f in TIMING_FIELDS):
        refresh_next_run(schedule, now)


def snapshot(schedule: BackupSchedule) -> dict[str, Any]:
    values = {f: getattr(schedule, f) for f in set(TIMING_FIELDS) | set(AUDITED_FIELDS)}
    values["sources"] = source_names(schedule) if schedule.pk else []
    return values


def source_names(schedule: BackupSchedule) -> list[str]:
    return sorted(schedule.sources.values_list("name", flat=True))


def save_schedule(
    schedule: BackupSchedule, before: dict[str, Any] | None, actor: Any, sources: Iterable[BackupSource] | None = None
) -> BackupSchedule:
    """Save a validated schedule; `before` is snapshot() of it as loaded, None when new.

    `sources` (all of the schedule's tenant, checked here too) replaces the schedule's
    sources; None leaves them as they are."""
    prepare(schedule, before, timezone.now())
    with transaction.atomic():
        schedule.save()
        if sources is not None:
            sources = list(sources)
            if any(source.tenant_id != schedule.tenant_id for source in sources):
                raise ValueError("a schedule may only cover sources of its own tenant")
            schedule.sources.set(sources)
    if before is None:
        record(schedule.tenant, AuditAction.SCHEDULE_CREATED, schedule, actor=actor, **schedule_details(schedule))
    else:
        changes = {
            f: [_plain(before[f]), _plain(getattr(schedule, f))]
            for f in AUDITED_FIELDS
            if before[f] != getattr(schedule, f)
        }
        if sources is not None and before.get("sources") != source_names(schedule):
            changes["sources"] = [before.get("sources"), source_names(schedule)]
        if changes:
            record(schedule.tenant, AuditAction.SCHEDULE_UPDATED, schedule, actor=actor, changes=changes)
    if not schedule.enabled:
        cancel_pending_retries(schedule, actor)
    return schedule


def set_enabled(schedule: BackupSchedule, enabled: bool, actor: Any) -> None:
    schedule.enabled = enabled
    refresh_next_run(schedule)
    schedule.save(update_fields=["enabled", "next_run_at", "updated_at"])
    action = AuditAction.SCHEDULE_ENABLED if enabled else AuditAction.SCHEDULE_DISABLED
    canceled = 0 if enabled else cancel_pending_retries(schedule, actor)
    record(schedule.tenant, action, schedule, actor=actor, **({"retries_canceled": canceled} if canceled else {}))


class ScheduleInUse(Exception):
    """The schedule cannot be deleted now; the message says why, for the user, and
    `short` in a few words (a bulk action's summary line)."""

    def __init__(self, message: str, short: str) -> None:
        super().__init__(message)
        self.short = short


HAS_SETS = "has backup sets"


def delete_schedule(schedule: BackupSchedule, actor: Any, **details: Any) -> None:
    """Delete a schedule and its run history, never its backups.

    A schedule whose runs made backup sets is refused here (its sets would lose the
    run that names their schedule): scheduling.deletion deletes one together with its sets (owner only),
    and it can always be disabled instead. A schedule with a queued or running run is
    refused too, so a worker never loses the run it is executing. `details` go into
    the audit entry.
    """
    in_use = f"“{schedule.name}” has backup sets: an owner can delete it together with them, or disable it instead."
    with transaction.atomic():
        # Locked: on PostgreSQL the dispatcher locks the rows it dispatches, and a
        # run inserted for this schedule waits for this transaction (SQLite's write
        # lock serializes the same), so no run starts between the check and the delete.
        BackupSchedule.objects.select_for_update().filter(pk=schedule.pk).first()
        if schedule.runs.filter(backup_set__isnull=False).exists():  # index scheduling_run_set_by_schedule
            raise ScheduleInUse(in_use, HAS_SETS)
        if schedule.runs.filter(status__in=ACTIVE_STATUSES).exists():
            busy = "has a run queued or running"
            raise ScheduleInUse(f"“{schedule.name}” {busy}; wait for it to finish.", busy)
        record(
            schedule.tenant,
            AuditAction.SCHEDULE_DELETED,
            schedule,
            actor=actor,
            **schedule_details(schedule),
            **details,
        )
        schedule.delete()


def schedule_details(schedule: BackupSchedule) -> dict[str, Any]:
    """A schedule's fields as an audit entry holds them."""
    return {**{f: _plain(getattr(schedule, f)) for f in AUDITED_FIELDS}, "sources": source_names(schedule)}


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | list):
        return value
    return str(value)
