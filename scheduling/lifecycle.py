"""The compare-and-swap status changes of a run: claim, defer, beat, finish, adopt.

Each is one statement (or one locked transaction) on the run's row, so a second
delivery of a task, the dispatcher and the worker never both win."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from backups.errors import BackupError, ErrorCode
from backups.models import BackupSet
from scheduling.dbclock import db_now
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus
from tenants.models import Tenant

logger = logging.getLogger(__name__)


def claim(run_code: str, now: datetime) -> bool:
    """queued -> running. False if someone else (a redelivered task) got it first,
    if the run is an automatic retry whose time has not come yet, or if its tenant
    already has TENANT_MAX_RUNNING runs running (then the run is deferred: see defer).

    The heartbeat, and the retry's time, are the database's clock (scheduling.dbclock),
    as the dispatcher judges them. started_at is `now`, the worker's clock: finish()
    stamps finished_at with the same clock, so the run's duration is right on a node
    whose clock is off (and the stored file's name carries that time)."""
    db_time = db_now()
    due = Q(not_before__isnull=True) | Q(not_before__lte=db_time)
    queued = BackupScheduleRun.objects.filter(due, code=run_code, status=RunStatus.QUEUED)
    cap = settings.TENANT_MAX_RUNNING
    with transaction.atomic():
        if cap:
            tenant_id = queued.values_list("tenant_id", flat=True).first()
            if tenant_id is None:
                return False
            # Serializes the claims of one tenant (PostgreSQL; SQLite's write lock
            # already does), so two workers cannot both take the last free place.
            list(Tenant.objects.select_for_update().filter(pk=tenant_id).values_list("pk"))
            running = BackupScheduleRun.objects.filter(tenant_id=tenant_id, status=RunStatus.RUNNING).count()
            if running >= cap:
                defer(run_code, running)
                return False
        return queued.update(status=RunStatus.RUNNING, started_at=now, heartbeat_at=db_time) == 1


def defer(run_code: str, running: int) -> None:
    """Leave a run queued, without a task, for the dispatcher's next pass to push again.

    Its tenant is at its share of the workers. Waiting costs nothing meanwhile (no
    worker holds it, nothing polls), the run keeps its place (still queued: the slot
    is not lost, and no second run of the schedule starts), and every other tenant's
    runs are claimed as usual. The pass releases it like a due automatic retry
    (scheduling.dispatch.release_due_retries), once a minute, until a place is free."""
    deferred = BackupScheduleRun.objects.filter(code=run_code, status=RunStatus.QUEUED).update(
        enqueued_at=None, not_before=None
    )
    if deferred:
        logger.info("run %s waits: its tenant already runs %d (TENANT_MAX_RUNNING)", run_code, running)


def hand_back(run_code: str) -> bool:
    """Leave a run queued, without a task, for the dispatcher's next pass to push again
    (as defer does): its worker's node is shutting down (scheduling.shutdown) and took
    the task before it stopped taking new ones. not_before is kept: a retry still waits
    for its time (release_due_retries pushes it then)."""
    return BackupScheduleRun.objects.filter(code=run_code, status=RunStatus.QUEUED).update(enqueued_at=None) == 1


def beat(run_code: str, log: str | None = None) -> bool:
    """The worker is alive and still on this run; with `log`, the log so far (the run
    page follows it). A finished run is left alone: its final log is finish()'s.

    Stamped with the database's clock, the one the dispatcher judges it by."""
    changes: dict[str, Any] = {"heartbeat_at": db_now()}
    if log is not None:
        changes["log"] = log
    return BackupScheduleRun.objects.filter(code=run_code, status=RunStatus.RUNNING).update(**changes) == 1


def finish(
    run: BackupScheduleRun,
    status: str,
    log: str | None,
    error_code: str = "",
    error_message: str = "",
    only_if: Q | None = None,
) -> bool:
    """running -> succeeded/failed/..., and the schedule's last-run summary. False if
    the run was not running (any more), or did not match `only_if` (the dispatcher's
    "its heartbeat is still old"): then nothing changed. `log` None keeps the run's log.

    Only from running. A run the dispatcher gave up for lost (failed/WORKER_LOST) stays
    so, even if its worker was in fact alive and reports later: by then its source
    leases were released, the schedule's next run may be dumping the same sources, and
    lifecycle.adopt refused it a set. A late result replacing the verdict would make a
    second "last result" of a slot whose set does not exist, so the worker only leaves
    its log (note_late_result). Use scheduling.endings.end, which does the rest of an
    ending (audit, leases, temporary files, notifications) around this.
    """
    now = timezone.now()
    changes: dict[str, Any] = {
        "status": status,
        "finished_at": now,
        "error_code": error_code,
        "error_message": error_message,
    }
    if log is not None:
        changes["log"] = log
    runs = BackupScheduleRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING)
    if only_if is not None:
        runs = runs.filter(only_if)
    if not runs.update(**changes):
        return False
    run.status, run.finished_at = status, now
    run.error_code, run.error_message = error_code, error_message
    if log is not None:
        run.log = log
    if run.operation == Operation.BACKUP:  # the schedule's summary is about its backups
        BackupSchedule.objects.filter(pk=run.schedule_id).update(last_run_at=now, last_status=status)
    return True


def note_late_result(run: BackupScheduleRun, log: str) -> bool:
    """A worker given up for lost while it still worked keeps its log on the run (what it
    really did is worth reading), not its result (see finish). True if noted."""
    return (
        BackupScheduleRun.objects.filter(pk=run.pk, status=RunStatus.FAILED, error_code=ErrorCode.WORKER_LOST).update(
            log=log
        )
        == 1
    )


def adopt(run: BackupScheduleRun, backup_set: BackupSet) -> None:
    """The run made `backup_set`: called in the transaction that creates the set, so a
    set never exists without the run that points at it (backups.pipeline's adopt).

    Only a running run adopts. One that is gone (deleted while it worked) or ended
    meanwhile (given up for lost by the dispatcher while its worker was alive: its leases
    are released and the schedule's next run may be dumping the same sources) adopts
    nothing: the error rolls the set and its items back, and the pipeline removes the
    files it stored. So a slot never gets a second set, nor a set its run's status denies."""
    if not BackupScheduleRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(backup_set=backup_set):
        raise BackupError(
            ErrorCode.UNKNOWN,
            "This run was no longer running when its backup was complete (given up for lost, or deleted); "
            "the backup was not kept.",
        )
    run.backup_set = backup_set
