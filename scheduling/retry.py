"""Automatic retries of backup runs that failed for a reason that may pass.

Retried: CONNECTION_FAILED (a server restarting, a network blip), TIMEOUT (a
busy source; the next attempt may be quicker), THROTTLED (the source or storage
asked us to slow down) and INTERRUPTED (the worker's node was stopped, a deploy or a
reboot, before the backup finished: another node, or this one restarted, does it).

Never retried:
* AUTH_FAILED, PERMISSION_DENIED, SOURCE_NOT_FOUND: a person must fix the source;
  retrying only repeats the failure (and may lock the account on the server).
* STORAGE_FULL: nothing frees space between attempts (retention runs only after a
  fully successful run), so every attempt would fill the disk again and fail. The
  run fails at once, which notifies people sooner.
* WORKER_LOST: the dispatcher sets it, without knowing why the worker died; a
  backup that gets its worker OOM-killed would kill the next one too. Press Retry.
* CORRUPTED: a verify or restore found the stored file damaged; reading it again
  finds the same bytes.
* UNKNOWN: we do not know that it may pass.

The next attempt is a new run (trigger retry, retry_of the first attempt) in
status queued with `not_before` set and no task yet (`enqueued_at` NULL); the
dispatcher pushes its task once `not_before` has come (release_due_retries).
While it waits, the one-active-run rule makes slots of the schedule skip as busy,
with a reason saying that a retry is pending.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from backups.errors import ErrorCode
from lib.backoff import backoff_delay
from scheduling.creation import NewRun, RunConflict, insert_run
from scheduling.models import BackupScheduleRun, Operation, RunStatus
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)

RETRYABLE_CODES = frozenset(
    {ErrorCode.CONNECTION_FAILED, ErrorCode.TIMEOUT, ErrorCode.THROTTLED, ErrorCode.INTERRUPTED}
)


def is_retryable(error_code: str) -> bool:
    return error_code in RETRYABLE_CODES


def schedule_retry(
    run: BackupScheduleRun, now: datetime | None = None, rng: random.Random | None = None
) -> BackupScheduleRun | None:
    """The next attempt of a failed backup run, if its failure is retryable and
    attempts remain; None otherwise (or if another run of the schedule got there first)."""
    if run.operation != Operation.BACKUP or run.status != RunStatus.FAILED or not is_retryable(run.error_code):
        return None
    schedule = run.schedule
    if run.attempt >= schedule.max_attempts:
        return None
    now = now or timezone.now()
    not_before = now + backoff_delay(run.attempt, rng)
    try:
        # The one-active-run constraint decides: if a Run now or a slot's run was
        # created since this run finished, that run is the next attempt already.
        with transaction.atomic():
            # No task yet: the dispatcher pushes it once not_before has come.
            retry = insert_run(NewRun.retry(run, not_before=not_before, now=now))
            record(
                run.tenant_id,
                AuditAction.RUN_RETRY_SCHEDULED,
                retry,
                schedule=str(schedule.code),
                failed_run=str(run.code),
                error_code=run.error_code,
                attempt=retry.attempt,
                max_attempts=schedule.max_attempts,
                not_before=not_before.isoformat(),
            )
    except RunConflict:
        logger.info("schedule %s already has an active run; no automatic retry of run %s", schedule.code, run.code)
        return None
    return retry
