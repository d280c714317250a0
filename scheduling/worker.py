"""The task the cluster executes for each run. Its only argument is the run's code.

Thin: a run is claimed by compare-and-swap (a second delivery of the same task finds
it running and does nothing), then its work is done by backups (backups.pipeline for a
backup of the schedule's sources; backups.verify / backups.restore through
scheduling.perform for the others), and the outcome becomes run state here: the run is
finished, audited, its people are notified and a retry is scheduled if the failure
may pass. Its path for the queue is taken from the function (scheduling.queue).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from django.db import DatabaseError
from django.utils import timezone

from backups import pipeline, storage
from backups.engines.base import StopCheck
from backups.errors import BackupError, ErrorCode
from backups.runlog import RunLog
from lib.passes import first_pass_at
from scheduling import leases, retention, retry, shutdown
from scheduling.heartbeat import heartbeat
from scheduling.lifecycle import adopt, claim, finish, hand_back
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus
from scheduling.notifications import notify_run_finished
from scheduling.perform import Outcome, perform_restore, perform_verify
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)

# bytes_written is written at most this often (one UPDATE), so a fast dump does
# not turn into a stream of writes while pages can still show it moving.
PROGRESS_SECONDS = 1.0
UNEXPECTED_MESSAGE = pipeline.UNEXPECTED_MESSAGE


# What a run's status says of each way a backup can go (a test holds every one mapped).
RUN_STATUS_OF = {
    pipeline.Result.SUCCEEDED: RunStatus.SUCCEEDED,
    pipeline.Result.PARTIAL: RunStatus.PARTIAL,
    pipeline.Result.FAILED: RunStatus.FAILED,
}


def deadline_for(schedule: BackupSchedule) -> float:
    """The monotonic instant past which every dump of this run is stopped (TIMEOUT)."""
    return pipeline.deadline_after(schedule.time_limit_minutes)


class Progress:
    """Keeps run.bytes_written current while the pipeline writes, throttled."""

    def __init__(self, run: BackupScheduleRun) -> None:
        self.run_pk = run.pk
        self.written = 0
        self.flushed_at = time.monotonic()

    def __call__(self, written: int) -> None:
        self.written = written
        if time.monotonic() - self.flushed_at >= PROGRESS_SECONDS:
            self.flush()

    def flush(self) -> None:
        self.flushed_at = time.monotonic()
        try:
            self._write(self.written)
        except DatabaseError:
            # Only a number for pages (a locked SQLite database, a dropped connection):
            # never a reason to fail the item being written. The next flush tries again.
            logger.warning("progress of run %s not recorded this time", self.run_pk, exc_info=True)

    def _write(self, written: int) -> None:
        BackupScheduleRun.objects.filter(pk=self.run_pk, status=RunStatus.RUNNING).update(bytes_written=written)


def storage_key(run: BackupScheduleRun, started: datetime, index: int = 0, suffix: str = ".sqlite3.zst") -> str:
    stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{run.tenant.code}/{run.schedule.code}/{stamp}-{run.code}-{index}{suffix}"


def execute_run(run_code: str) -> str:
    # django-q2's worker closes stale connections before each task.
    if shutdown.stopping():
        # This node is stopping: a task it had taken off the broker before is not
        # started now (it would only be interrupted); the next dispatcher pass, on any
        # node, pushes it again.
        hand_back(run_code)
        logger.info("run %s handed back: this node is shutting down", run_code)
        return "handed back"
    started = timezone.now()
    if not claim(run_code, started):
        # A second delivery of the same task, a run canceled meanwhile, or a retry
        # whose time has not come (the dispatcher pushes it again when it has).
        logger.info("run %s was not queued (or not due) any more; nothing to do", run_code)
        return "not claimed"
    run = BackupScheduleRun.objects.select_related("schedule", "tenant").get(code=run_code)
    schedule = run.schedule
    record(
        run.tenant_id,
        AuditAction.RUN_STARTED,
        run,
        schedule=str(schedule.code),
        trigger=run.trigger,
        operation=run.operation,
        attempt=run.attempt,
    )
    log = RunLog()
    log(f"Run {run.code} started ({run.get_operation_display()}, {run.get_trigger_display()}, attempt {run.attempt}).")
    with heartbeat(run_code, log):  # through retention too: all of it is the run's work
        outcome = _perform(run, started, log)
    replaced = finish(run, outcome.status, log.text(), outcome.error_code, outcome.message)
    if not replaced:
        logger.error("run %s had been finished by someone else; its result was not recorded", run.code)
        return "lost"
    _audit_finish(run)
    if replaced == RunStatus.FAILED:
        # The dispatcher had given this run up for lost and told people it failed, as
        # the last attempt of its chain. A real failure is not told again (nor retried,
        # which would tell it a second time); a success says the schedule works again.
        if run.status == RunStatus.SUCCEEDED:
            _notify(run, retrying=False)
    else:
        retrying = run.status == RunStatus.FAILED and _maybe_retry(run)
        _notify(run, retrying)
    if run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.SKIPPED):
        return str(run.status)
    return outcome.error_code or str(run.status)


def _notify(run: BackupScheduleRun, retrying: bool) -> None:
    # The run's result is recorded; telling people about it must not undo that.
    try:
        notify_run_finished(run, retrying)
    except Exception:
        logger.exception("run %s: could not notify its tenant's members", run.code)


def _perform(run: BackupScheduleRun, started: datetime, log: RunLog) -> Outcome:
    try:
        if run.operation == Operation.VERIFY:
            return perform_verify(run, log)
        if run.operation == Operation.RESTORE:
            return perform_restore(run, log)
        return _backup_run(run, started, log)
    except BackupError as exc:
        log(f"Failed: {exc.code}: {exc.message}")
        return Outcome(RunStatus.FAILED, exc.code, exc.message)
    except Exception:
        logger.exception("run %s failed unexpectedly", run.code)
        log("Failed: an unexpected error; the server log has the details.")
        return Outcome(RunStatus.FAILED, ErrorCode.UNKNOWN, UNEXPECTED_MESSAGE)


def _maybe_retry(run: BackupScheduleRun) -> bool:
    """Schedule the next attempt if the failure may pass; True if one is pending."""
    try:
        nxt = retry.schedule_retry(run)
    except Exception:  # the failure is recorded; a hiccup here must not hide it (it is notified)
        logger.exception("could not schedule the automatic retry of run %s", run.code)
        return False
    if nxt is None:
        return False
    assert nxt.not_before is not None
    note = (
        f"{datetime.now(UTC):%H:%M:%S} Attempt {nxt.attempt} of {run.schedule.max_attempts} "
        f"will start at {first_pass_at(nxt.not_before):%Y-%m-%d %H:%M} UTC (run {nxt.code}).\n"
    )
    run.log += note
    BackupScheduleRun.objects.filter(pk=run.pk).update(log=run.log)
    return True


def _backup_run(run: BackupScheduleRun, started: datetime, log: RunLog) -> Outcome:
    schedule = run.schedule
    sources = list(schedule.sources.select_related("tenant").order_by("name", "id"))
    if not sources:
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "This schedule has no source to back up.")
    # Fail early (STORAGE_FULL), before any dump starts.
    storage.check_free_space(retention.estimated_size(schedule))
    busy = leases.acquire(run, sources)
    if busy is not None:
        log(busy.reason)
        return Outcome(RunStatus.SKIPPED, "", busy.reason)
    progress = Progress(run)
    job = pipeline.BackupJob(
        tenant_id=run.tenant_id,
        started=started,
        deadline=deadline_for(schedule),
        timeout=pipeline.timeout_error(schedule.time_limit_minutes),
        log=log,
        key_for=lambda index, suffix: storage_key(run, started, index, suffix),
        progress=progress,
        adopt=lambda backup_set: adopt(run, backup_set),
        context=f"run {run.code}",
        series=schedule.code,  # scheduling.retention.live_sets finds the schedule's sets by it
        should_stop=stop_check(run),
    )
    try:
        done = pipeline.back_up(sources, job)
        progress.flush()
    finally:
        leases.release_quietly(run)
    if done.status == pipeline.SUCCEEDED:
        # No retention after a partial run: pruning a complete older set for one
        # that lacks some sources would lose the only copy of those.
        _apply_retention(run, log)
        log("Succeeded.")
    return Outcome(RUN_STATUS_OF[done.status], done.error_code, done.message)


def stop_check(run: BackupScheduleRun) -> StopCheck:
    """Why this run's backup must stop now, asked on every read of a dump: its node is
    shutting down and the grace is over (INTERRUPTED). Other reasons join here, each a
    check of its own, so the pipeline asks one callable."""
    return pipeline.first_stop(shutdown.interrupted)


def _apply_retention(run: BackupScheduleRun, log: RunLog) -> None:
    try:
        pruned = retention.apply_retention(run.schedule)
    except Exception:  # the new set is safe; a retention hiccup must not fail the run
        logger.exception("retention failed for schedule %s", run.schedule.code)
        log("Retention could not run this time; older sets were kept.")
    else:
        if pruned:
            log(f"Retention removed {len(pruned)} older set(s).")


def _audit_finish(run: BackupScheduleRun) -> None:
    details = {"status": run.status, "schedule": str(run.schedule.code), "operation": run.operation}
    if run.error_code:
        details["error_code"] = run.error_code
    record(run.tenant_id, AuditAction.RUN_FINISHED, run, **details)
