"""Creating runs (create_run: the rules and the insert of scheduling.creation, then the
task), Run now and Retry. Their status changes are scheduling.lifecycle's."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from lib.passes import first_pass_at
from scheduling.creation import NewRun, RunConflict, insert_run
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus
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


def create_run(new: NewRun, enqueue: bool = True) -> BackupScheduleRun:
    """Insert `new` (scheduling.creation.insert_run: RunConflict if it loses to an active
    run) and push its task, unless it waits for not_before, or `enqueue` is False: the
    caller executes it in-process, and if that process dies before claiming it the
    dispatcher's look for lost tasks pushes one (dispatch.LOST_AFTER after its creation)."""
    with transaction.atomic():
        run = insert_run(new)
        if enqueue and new.not_before is None:
            enqueue_runs([run.code])
    return run


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
