"""Verify and restore runs, run side: the worker's task loads the set a run acts on,
holds what it must (source leases), calls backups.verify or backups.restore, audits,
and says how it went as a run outcome. Requests are scheduling.operations'."""

from __future__ import annotations

import time
from dataclasses import dataclass

from backups import pipeline
from backups.engines.base import Log
from backups.errors import BackupError, ErrorCode
from backups.models import BackupSet, BackupSource, VerifyStatus
from backups.restore import restore_entries, sources_a_restore_touches
from backups.verify import verify_set
from scheduling import leases
from scheduling.models import BackupScheduleRun, RunStatus
from tenants.audit import record
from tenants.models import AuditAction

# How often an overwriting restore looks again for a source a backup holds.
LEASE_WAIT_SECONDS = 2.0
wait_a_moment = time.sleep  # a seam: tests finish the other run here instead of sleeping


@dataclass
class Outcome:
    """How a run's work went, for finish(): a RunStatus, and the error if it failed."""

    status: str
    error_code: str = ""
    message: str = ""


def _subject(run: BackupScheduleRun) -> BackupSet:
    if run.subject_set_id is None:
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "The backup set is gone (deleted by retention or by hand).")
    backup_set = BackupSet.objects.filter(pk=run.subject_set_id).first()
    if backup_set is None or backup_set.deleted_at is not None:
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "The backup set is gone (deleted by retention or by hand).")
    return backup_set


def _limit(run: BackupScheduleRun) -> tuple[float, BackupError]:
    minutes = run.schedule.time_limit_minutes
    return pipeline.deadline_after(minutes), pipeline.timeout_error(minutes)


def perform_verify(run: BackupScheduleRun, log: Log) -> Outcome:
    backup_set = _subject(run)
    deadline, timeout = _limit(run)
    verified = verify_set(backup_set, deadline, timeout, log, run.started_at)
    status = VerifyStatus.OK if verified.ok else VerifyStatus.FAILED
    record(run.tenant_id, AuditAction.SET_VERIFIED, backup_set, run=str(run.code), status=status)
    if verified.ok:
        log(verified.message)
        return Outcome(RunStatus.SUCCEEDED)
    return Outcome(RunStatus.FAILED, verified.error_code, f"Verification failed. {verified.message}")


def perform_restore(run: BackupScheduleRun, log: Log) -> Outcome:
    backup_set = _subject(run)
    entries = (run.restore_target or {}).get("items") or []
    if not entries:
        raise BackupError(ErrorCode.UNKNOWN, "This restore run names nothing to restore.")
    touched = sources_a_restore_touches(run.tenant_id, backup_set, entries)
    _wait_for_leases(run, touched, _limit(run)[0], log)
    try:
        # The time limit counts from here: waiting for a backup must not leave the restore
        # itself too little time and stop it halfway through an overwrite.
        deadline, timeout = _limit(run)
        restored = restore_entries(backup_set, entries, deadline, timeout, log, run.started_at)
    finally:
        if touched:
            leases.release_quietly(run)
    status = RunStatus.FAILED if restored.failure else RunStatus.SUCCEEDED
    record(
        run.tenant_id,
        AuditAction.RESTORE_FINISHED,
        backup_set,
        run=str(run.code),
        status=status,
        restored=restored.done,
    )
    if restored.failure:
        return Outcome(RunStatus.FAILED, restored.failure.code, restored.failure.message)
    return Outcome(RunStatus.SUCCEEDED)


def _wait_for_leases(run: BackupScheduleRun, sources: list[BackupSource], deadline: float, log: Log) -> None:
    """Take the sources' leases, waiting (up to the time limit) while a backup holds one:
    a restore someone asked for is not skipped like a scheduled backup would be."""
    if not sources:
        return
    told = ""
    while (busy := leases.acquire(run, sources)) is not None:
        if busy.run_code != told:
            log(f"Waiting: source “{busy.source_name}” is being {busy.holder}; the restore writes what it reads.")
            told = busy.run_code
        if pipeline.clock() + LEASE_WAIT_SECONDS >= deadline:
            raise BackupError(
                ErrorCode.TIMEOUT,
                f"Source “{busy.source_name}” was still busy ({busy.holder}) at the schedule's time limit; "
                "nothing was restored.",
            )
        wait_a_moment(LEASE_WAIT_SECONDS)
    if told:
        log("The source is free; restoring.")
