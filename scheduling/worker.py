"""The task the cluster executes for each run. Its only argument is the run's code.

Thin: a run is claimed by compare-and-swap (a second delivery of the same task finds
it running and does nothing), then its work is done by backups (backups.pipeline for a
backup of the schedule's sources; backups.verify / backups.restore through
scheduling.perform for the others), and the outcome becomes run state through
scheduling.endings, the one way every run ends (audited, leases released, temporary
files removed, a retry if the failure may pass, people notified). Its path for the
queue is taken from the function (scheduling.queue).
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
from scheduling import leases, retention, shutdown
from scheduling.endings import Ending, end, storage_folder
from scheduling.heartbeat import Pulse, heartbeat
from scheduling.lifecycle import adopt, claim, hand_back, note_late_result
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus
from scheduling.perform import Outcome, perform_restore, perform_verify
from tenants.audit import record
from tenants.connections import fresh_connection, retry_on_drop
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
        written = self.written
        try:
            # A dump holds the connection for hours: a dropped one is noticed here first,
            # and replaced, so the steps after the dump (the set, the finish) find it working.
            retry_on_drop(lambda: self._write(written), f"run {self.run_pk}: progress")
        except DatabaseError:
            # Only a number for pages (a locked SQLite database, a database away for a
            # while): never a reason to fail the item being written. The next flush tries again.
            logger.warning("progress of run %s not recorded this time", self.run_pk, exc_info=True)

    def _write(self, written: int) -> None:
        BackupScheduleRun.objects.filter(pk=self.run_pk, status=RunStatus.RUNNING).update(bytes_written=written)


def storage_key(run: BackupScheduleRun, started: datetime, index: int = 0, suffix: str = ".sqlite3.zst") -> str:
    stamp = started.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    # The run's code in the name lets its temporary files be found once it has ended
    # (scheduling.endings); its folder is the schedule's.
    return f"{storage_folder(run)}/{stamp}-{run.code}-{index}{suffix}"


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
    with heartbeat(run_code, log) as pulse:  # through retention too: all of it is the run's work
        outcome = _perform(run, started, log, stop_check(pulse))
    fresh_connection()  # a long dump may have outlived the connection; reconnect before the ending
    try:
        ended = end(run, Ending(outcome.status, log.text(), outcome.error_code, outcome.message))
    except DatabaseError:
        # The database stays away: the run stays `running` with its heartbeat stopped, so the
        # dispatcher fails it as WORKER_LOST (and releases its leases) once the beat is old.
        # Never a run that looks fine: no set was kept without its run (backups.pipeline).
        logger.exception(
            "run %s: its outcome (%s%s) could not be recorded, the database is unreachable; the dispatcher "
            "will fail it as abandoned",
            run.code,
            outcome.status,
            f", {outcome.error_code}" if outcome.error_code else "",
        )
        return "unrecorded"
    if not ended:
        # Given up for lost while it worked (its heartbeat was late): that verdict
        # stands (scheduling.lifecycle.finish says why); what it did stays readable.
        note_late_result(run, log.text())
        logger.error("run %s had been ended by someone else; its result was not recorded", run.code)
        return "lost"
    if run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.SKIPPED):
        return str(run.status)
    return outcome.error_code or str(run.status)


def _perform(run: BackupScheduleRun, started: datetime, log: RunLog, should_stop: StopCheck) -> Outcome:
    try:
        if run.operation == Operation.VERIFY:
            return perform_verify(run, log)
        if run.operation == Operation.RESTORE:
            return perform_restore(run, log)
        return _backup_run(run, started, log, should_stop)
    except BackupError as exc:
        log(f"Failed: {exc.code}: {exc.message}")
        return Outcome(RunStatus.FAILED, exc.code, exc.message)
    except Exception:
        logger.exception("run %s failed unexpectedly", run.code)
        log("Failed: an unexpected error; the server log has the details.")
        return Outcome(RunStatus.FAILED, ErrorCode.UNKNOWN, UNEXPECTED_MESSAGE)


def _backup_run(run: BackupScheduleRun, started: datetime, log: RunLog, should_stop: StopCheck) -> Outcome:
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
        should_stop=should_stop,
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


def stop_check(pulse: Pulse) -> StopCheck:
    """Why this run's backup must stop now, asked on every read of a dump: its node is
    shutting down and the grace is over (INTERRUPTED), or the dispatcher gave the run up
    for lost while it worked (WORKER_LOST: its sources may be the next run's by now).
    One callable, so the pipeline asks one thing."""
    return pipeline.first_stop(shutdown.interrupted, pulse.stop_error)


def _apply_retention(run: BackupScheduleRun, log: RunLog) -> None:
    try:
        fresh_connection()  # the dump's connection may be gone; retention is not repeated whole
        pruned = retention.apply_retention(run.schedule)
    except Exception:  # the new set is safe; a retention hiccup must not fail the run
        logger.exception("retention failed for schedule %s", run.schedule.code)
        log("Retention could not run this time; older sets were kept.")
    else:
        if pruned:
            log(f"Retention removed {len(pruned)} older set(s).")
