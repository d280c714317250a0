"""Creating runs (one way for every caller), Run now and Retry (their status changes:
scheduling.lifecycle)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from lib.passes import first_pass_at
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun, Operation, RunStatus, Trigger
from scheduling.notifications import notify_retry_canceled, notify_run_requested
from scheduling.queue import enqueue_runs
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)

# What a person may retry by hand (automatic retries: scheduling.retry).
RETRYABLE = (RunStatus.FAILED, RunStatus.PARTIAL, RunStatus.CANCELED)


class RunRefused(Exception):
    """The run was not created; the message says why, in words for the user."""


class RetryPending(RunRefused):
    """The schedule's automatic retry waits for its time; it starts at `starts_at` (the
    dispatcher pass that releases it). The message says it in UTC; pages say it in the
    viewer's zone (scheduling.presentation.refusal_text)."""

    def __init__(self, schedule_name: str, starts_at: datetime) -> None:
        self.schedule_name, self.starts_at = schedule_name, starts_at
        super().__init__(f"{self.pending} {starts_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC.")

    @property
    def pending(self) -> str:
        return f"“{self.schedule_name}” has an automatic retry pending; it starts at"


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


def create_run(new: NewRun, enqueue: bool = True) -> BackupScheduleRun:
    """Insert `new` and push its task (unless it waits for not_before, or `enqueue`
    is False: the caller executes it in-process, and if that process dies before
    claiming it the dispatcher pushes a task after REQUEUE_AFTER).

    The one-active-run constraints decide, not a look beforehand: two presses at
    once, a press racing the dispatcher or a retry racing a Run now cannot both
    create a run. The loser gets RunConflict naming the winner."""
    try:
        with transaction.atomic():
            run = BackupScheduleRun.objects.create(**new.fields())
            if enqueue and new.not_before is None:
                enqueue_runs([run.code])
    except IntegrityError:
        raise RunConflict(new, _active_run(new)) from None
    return run


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


def run_now(schedule: BackupSchedule, actor: Any) -> BackupScheduleRun:
    return _request(schedule, NewRun.run_now(schedule, actor), actor, AuditAction.RUN_NOW)


def retry(run: BackupScheduleRun, actor: Any) -> BackupScheduleRun:
    if run.status not in RETRYABLE:
        raise RunRefused(
            "Only failed or canceled runs can be retried (and partial ones, to get their failed items); "
            f"this one is {run.get_status_display().lower()}."
        )
    if run.operation != Operation.BACKUP:
        raise RunRefused("Verify and restore runs are not retried; request a new one from the backup set.")
    first = run.retry_of or run
    return _request(run.schedule, NewRun.retry(run, actor), actor, AuditAction.RUN_RETRY, retry_of=first)


def _request(
    schedule: BackupSchedule,
    new: NewRun,
    actor: Any,
    action: AuditAction,
    retry_of: BackupScheduleRun | None = None,
) -> BackupScheduleRun:
    """A run a person asked for: created, audited and announced in one transaction."""
    try:
        with transaction.atomic():
            run = create_run(new)
            details: dict[str, Any] = {"schedule": str(schedule.code), "trigger": new.trigger}
            if retry_of:
                details["retry_of"] = str(retry_of.code)
            record(schedule.tenant_id, action, run, actor=actor, **details)
            notify_run_requested(run, actor)
    except RunConflict as conflict:
        if conflict.active is not None and conflict.active.retry_pending:
            assert conflict.active.not_before is not None
            raise RetryPending(schedule.name, first_pass_at(conflict.active.not_before)) from None
        raise RunRefused(f"“{schedule.name}” already has a run queued or running; wait for it to finish.") from None
    return run


RETRY_CANCELED_MESSAGE = "Canceled: the schedule was disabled before this automatic retry started."


def cancel_pending_retries(schedule: BackupSchedule, actor: Any = None) -> int:
    """Cancel the automatic retries still waiting for their time (no task pushed yet).

    A person who disables a schedule means "no more backups from it"; a retry
    starting an hour later would surprise them. Compare-and-swap: one the dispatcher
    released meanwhile has a task and runs as a requested run would. The failed
    attempt the retry followed told nobody (a retry was pending): it is told now."""
    pending = BackupScheduleRun.objects.filter(
        schedule=schedule, status=RunStatus.QUEUED, enqueued_at__isnull=True, not_before__isnull=False
    )
    canceled = 0
    # At most one: the one-active-run constraint.
    for pk, chain, attempt in list(pending.values_list("pk", "retry_of_id", "attempt")):
        with transaction.atomic():  # the cancel and its notification commit together
            if not pending.filter(pk=pk).update(
                status=RunStatus.CANCELED, finished_at=timezone.now(), error_message=RETRY_CANCELED_MESSAGE
            ):
                continue
            canceled += 1
            followed = (
                BackupScheduleRun.objects.filter(
                    Q(pk=chain) | Q(retry_of_id=chain), attempt=attempt - 1, status=RunStatus.FAILED
                )
                .select_related("schedule", "tenant")
                .first()
            )
            if followed is not None:
                notify_retry_canceled(followed, actor)
    return canceled
