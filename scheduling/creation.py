"""The rules every new run follows and its one insert (NewRun, insert_run), with no
task pushed: scheduling.runs.create_run pushes it, and the worker's automatic retry
(scheduling.retry) needs none (it waits for not_before). Kept apart from the queue so
that the worker, which the queue names, can create runs without an import cycle."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.utils import timezone

from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun, Operation, RunStatus, Trigger

# ---------------------------------------------------------------- creating a run
# Every run starts here, by one set of rules: Run now, Retry, the automatic retry
# (schedule_retry), verify and restore requests through NewRun and create_run; the
# dispatcher's bulk insert through scheduled_run_constants and scheduled_run_row.


def _origin_fields(
    trigger: str, created_at: datetime, attempt: int = 1, not_before: datetime | None = None
) -> dict[str, Any]:
    """The columns every new run sets the same way, whoever creates it.

    Its task is pushed when it is created (enqueued_at), unless it waits for
    not_before: then the dispatcher pushes it once that has come (release_due_retries)."""
    return {
        "trigger": trigger,
        "attempt": attempt,
        "error_code": "",
        "created_at": created_at,
        "log": "",
        "enqueued_at": None if not_before is not None else created_at,
    }


def _person(actor: Any) -> Any:
    """The user who asked for a run, if a signed-in one did (the system asks as None)."""
    return actor if getattr(actor, "is_authenticated", False) else None


@dataclass(frozen=True)
class NewRun:
    """A run about to be created, by a person or by the system; create_run inserts it.

    The rules every new run follows (checked here, so no caller can break one):
    * its tenant is its schedule's (the constructors take both from the same row);
    * it starts queued (only the dispatcher records slots as skipped or missed);
    * a retry names the first attempt of its chain and counts its attempt on from
      the run it follows; any other run is attempt 1 of its own chain;
    * only an automatic retry waits (not_before); it gets no task until then;
    * a verify or restore names the backup set it acts on, and only a restore has
      a target; a backup names no set;
    * the dispatcher's scheduled runs are not created here but share the columns
      (scheduled_run_constants, scheduled_run_row).
    """

    schedule_id: int
    tenant_id: int
    trigger: Trigger
    created_at: datetime
    operation: Operation = Operation.BACKUP
    attempt: int = 1
    retry_of_id: int | None = None
    not_before: datetime | None = None
    subject_set_id: int | None = None
    restore_target: dict[str, Any] | None = None
    requested_by: Any = None  # a signed-in user, or None for the system

    def __post_init__(self) -> None:
        if self.trigger == Trigger.SCHEDULED:
            raise ValueError("scheduled runs are the dispatcher's (scheduled_run_row)")
        if (self.trigger == Trigger.RETRY) != (self.retry_of_id is not None) or (self.attempt > 1) != (
            self.retry_of_id is not None
        ):
            raise ValueError("a retry, and only a retry, names its first attempt and is attempt 2 or later")
        if self.not_before is not None and self.trigger != Trigger.RETRY:
            raise ValueError("only an automatic retry waits for not_before")
        if (self.operation == Operation.BACKUP) != (self.subject_set_id is None):
            raise ValueError("a verify or restore, and only those, names the set it acts on")
        if (self.operation == Operation.RESTORE) != (self.restore_target is not None):
            raise ValueError("a restore, and only a restore, has a target")

    @classmethod
    def run_now(cls, schedule: BackupSchedule, actor: Any, now: datetime | None = None) -> NewRun:
        return cls(
            schedule_id=schedule.pk,
            tenant_id=schedule.tenant_id,
            trigger=Trigger.MANUAL,
            created_at=now or timezone.now(),
            requested_by=_person(actor),
        )

    @classmethod
    def retry(
        cls,
        run: BackupScheduleRun,
        actor: Any = None,
        not_before: datetime | None = None,
        now: datetime | None = None,
    ) -> NewRun:
        """The next attempt after `run`: pressed by a person (actor), or automatic
        (waiting for not_before)."""
        return cls(
            schedule_id=run.schedule_id,
            tenant_id=run.tenant_id,
            trigger=Trigger.RETRY,
            created_at=now or timezone.now(),
            attempt=run.attempt + 1,
            retry_of_id=run.retry_of_id or run.pk,  # the id alone: no query for the first attempt's row
            not_before=not_before,
            requested_by=_person(actor),
        )

    @classmethod
    def on_set(
        cls,
        operation: str,
        backup_set: Any,
        schedule_id: int | None,
        actor: Any,
        restore_target: dict[str, Any] | None = None,
        now: datetime | None = None,
    ) -> NewRun:
        """A verify or restore of `backup_set` (a backups.BackupSet), made by the
        schedule `schedule_id`, whose tenant is the set's. A set whose schedule was
        deleted has no run to file it under."""
        if schedule_id is None:
            raise ValueError("the schedule of this backup set was deleted")
        return cls(
            schedule_id=schedule_id,
            tenant_id=backup_set.tenant_id,
            trigger=Trigger.REQUEST,  # never "Run now": it was asked for on the set
            created_at=now or timezone.now(),
            operation=Operation(operation),
            subject_set_id=backup_set.pk,
            restore_target=restore_target,
            requested_by=_person(actor),
        )

    def fields(self) -> dict[str, Any]:
        """Its columns, as BackupScheduleRun.objects.create takes them."""
        return {
            "tenant_id": self.tenant_id,
            "schedule_id": self.schedule_id,
            "status": RunStatus.QUEUED,
            "operation": self.operation,
            "retry_of_id": self.retry_of_id,
            "not_before": self.not_before,
            "subject_set_id": self.subject_set_id,
            "restore_target": self.restore_target,
            "requested_by": self.requested_by,
            **_origin_fields(self.trigger, self.created_at, self.attempt, self.not_before),
        }


@dataclass(frozen=True)
class ActiveRun:
    """The queued or running run that kept a new one from being created."""

    code: UUID
    status: str
    trigger: str
    not_before: datetime | None

    @property
    def retry_pending(self) -> bool:
        """An automatic retry still waiting: what a person sees is when it starts."""
        return self.status == RunStatus.QUEUED and self.trigger == Trigger.RETRY and self.not_before is not None


class RunConflict(IntegrityError):
    """The database refused the run: its schedule already has a backup queued or
    running (scheduling_run_one_active), or its set a verify or restore of the same
    kind (scheduling_run_one_active_per_set). `active` is that run, None if it ended
    meanwhile. An IntegrityError, so callers written against the constraint keep
    catching it; the caller's transaction is unharmed (the insert had its savepoint)."""

    def __init__(self, new: NewRun, active: ActiveRun | None) -> None:
        super().__init__(f"schedule {new.schedule_id} ({new.operation}): a run is already queued or running")
        self.new, self.active = new, active


def _active_run(new: NewRun) -> ActiveRun | None:
    active = BackupScheduleRun.objects.filter(status__in=ACTIVE_STATUSES, operation=new.operation)
    if new.subject_set_id is None:
        active = active.filter(schedule_id=new.schedule_id)
    else:
        active = active.filter(subject_set_id=new.subject_set_id)
    row = active.values_list("code", "status", "trigger", "not_before").first()
    return None if row is None else ActiveRun(*row)


def scheduled_run_constants(now: datetime) -> dict[str, Any]:
    """The columns every run of one dispatcher pass shares (sent once for all rows)."""
    return _origin_fields(Trigger.SCHEDULED, now)


def scheduled_run_row(
    code: str, schedule_id: int, tenant_id: int, slot: datetime, status: str, message: str = "", missed: int = 0
) -> dict[str, Any]:
    """The columns of one slot's run that differ between rows of a pass: whose, which
    slot, and what became of it (queued, or skipped or missed with the reason and, for
    missed, how many slots). One dict and no checks beyond that: a pass builds 10,000."""
    return {
        "code": code,
        "tenant_id": tenant_id,
        "schedule_id": schedule_id,
        "slot": slot,
        "status": status,
        "missed_count": missed,
        "error_message": message,
    }


def insert_run(new: NewRun) -> BackupScheduleRun:
    """Insert `new`, pushing no task. The one-active-run constraints decide, not a look
    beforehand; the loser gets RunConflict naming the winner, its caller's transaction
    unharmed (the insert has its savepoint)."""
    try:
        with transaction.atomic():
            return BackupScheduleRun.objects.create(**new.fields())
    except IntegrityError:
        raise RunConflict(new, _active_run(new)) from None
