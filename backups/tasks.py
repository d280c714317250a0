"""The task the cluster executes for each run. Its only argument is the run's code.

A run is claimed by compare-and-swap (a second delivery of the same task finds it
running and does nothing), then does its operation: a backup of every source of
its schedule, or a verify or restore of a backup set (backups.operations).

A backup stores one item per source (one per database for a server with several):
all stored -> succeeded; some failed -> partial (the set keeps the good ones and
the run's message names the failed ones); all failed -> failed, with no set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, BinaryIO

from django.db import DatabaseError
from django.utils import timezone

from backups import leases, retention, retry, storage
from backups.engines.base import DumpContext, DumpTarget, Engine
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupItem, BackupSet, ItemStatus, SetStatus
from lib.passes import first_pass_at
from scheduling.heartbeat import heartbeat
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus
from scheduling.notifications import notify_run_finished
from scheduling.runs import claim, finish
from tenants.audit import record
from tenants.models import AuditAction

if TYPE_CHECKING:
    from backups.models import BackupSource

logger = logging.getLogger(__name__)

# bytes_written is written at most this often (one UPDATE), so a fast dump does
# not turn into a stream of writes while pages can still show it moving.
PROGRESS_SECONDS = 1.0
# A line in the log saying how much of the item is written, this often.
PROGRESS_LOG_SECONDS = 30.0
# The clock of deadlines (monotonic: a wall-clock step must not end or extend a dump).
clock = time.monotonic
UNEXPECTED_MESSAGE = "An unexpected error stopped the backup; the server log has the details."


# The log is bounded: a tool printing a line per table of a 100,000-table database,
# or a multi-hour dump, keeps its first HEAD_LINES and last TAIL_LINES lines (the
# start says what ran, the end how it went), each cut to LINE_LIMIT characters (its
# head and its tail).
HEAD_LINES = 50
TAIL_LINES = 450
LINE_LIMIT = 500


class RunLog:
    """The run's log. Our own sentences go in as written: only what a tool printed is
    scrubbed of passwords, where it is read (backups.engines.process.scrub_tool_output),
    a whole line at a time, so cutting a long line below never splits a secret.

    Lines come from the run's thread and from a tool's stderr reader; the heartbeat
    thread takes snapshots of it to persist while the run works (scheduling.heartbeat)."""

    def __init__(self) -> None:
        self.head: list[str] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.omitted = 0
        self.version = 0  # changes with every line: the heartbeat writes only a changed log
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        line = f"{stamp} {message}"
        if len(line) > LINE_LIMIT:  # its head says what, its end (usually) how it failed
            side = (LINE_LIMIT - 3) // 2
            line = f"{line[: LINE_LIMIT - 3 - side]} … {line[-side:]}"
        with self._lock:
            if len(self.head) < HEAD_LINES:
                self.head.append(line)
            else:
                if len(self.tail) == TAIL_LINES:
                    self.omitted += 1
                self.tail.append(line)
            self.version += 1

    def snapshot(self) -> tuple[int, str]:
        with self._lock:
            lines = list(self.head)
            if self.omitted:
                lines.append(f"… {self.omitted} line{'' if self.omitted == 1 else 's'} omitted …")
            lines += self.tail
            return self.version, "\n".join(lines) + "\n"

    def text(self) -> str:
        return self.snapshot()[1]


@dataclass
class Outcome:
    status: str
    error_code: str = ""
    message: str = ""


def deadline_for(schedule: BackupSchedule) -> float:
    """The monotonic instant past which every dump of this run is stopped (TIMEOUT)."""
    return clock() + schedule.time_limit_minutes * 60


def timeout_error(schedule: BackupSchedule) -> BackupError:
    minutes = schedule.time_limit_minutes
    return BackupError(
        ErrorCode.TIMEOUT,
        f"The backup was still going after the schedule's time limit ({minutes} minute{'' if minutes == 1 else 's'}) "
        "and was stopped.",
    )


class DeadlineReader:
    """A dump stream that fails with TIMEOUT once the deadline has passed.

    The process engines also kill their process at the deadline; this covers every
    engine, including those whose stream is a plain file, at each chunk read."""

    def __init__(self, raw: BinaryIO, deadline: float | None, error: BackupError) -> None:
        self.raw = raw
        self.deadline = deadline
        self.error = error

    def read(self, size: int = -1) -> bytes:
        if self.deadline is not None and clock() > self.deadline:
            raise self.error
        return self.raw.read(size)


class Progress:
    """Keeps run.bytes_written current while the run writes, throttled, and says in
    the log how far the item being written has come, every PROGRESS_LOG_SECONDS."""

    def __init__(self, run: BackupScheduleRun, log: RunLog | None = None) -> None:
        self.run_pk = run.pk
        self.log = log
        self.label = ""
        self.done = 0  # bytes of the items already stored
        self.current = 0  # bytes of the item being stored
        self.flushed_at = self.logged_at = time.monotonic()

    def start(self, label: str) -> None:
        self.label = label
        self.logged_at = time.monotonic()

    def __call__(self, written: int) -> None:
        self.current = written
        now = time.monotonic()
        if now - self.flushed_at >= PROGRESS_SECONDS:
            self.flush()
        if self.log is not None and now - self.logged_at >= PROGRESS_LOG_SECONDS:
            self.logged_at = now
            self.log(f"“{self.label}”: {written / 1_000_000:.1f} MB written so far (compressed).")

    def item_stored(self, size: int) -> None:
        self.done += size
        self.current = 0

    def item_failed(self) -> None:
        self.current = 0

    def flush(self) -> None:
        self.flushed_at = time.monotonic()
        try:
            self._write(self.done + self.current)
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
    from backups import operations  # it builds on this module's helpers

    try:
        if run.operation == Operation.VERIFY:
            return operations.perform_verify(run, log)
        if run.operation == Operation.RESTORE:
            return operations.perform_restore(run, log)
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


# ---------------------------------------------------------------- backup


@dataclass
class _Stored:
    source: BackupSource | None
    label: str
    database: str
    kind: str
    started_at: datetime
    finished_at: datetime
    key: str = ""
    size: int = 0
    source_size: int = 0
    sha256: str = ""
    error_code: str = ""
    error_message: str = ""

    @property
    def ok(self) -> bool:
        return not self.error_code


@dataclass
class _Backup:
    run: BackupScheduleRun
    started: datetime
    log: RunLog
    deadline: float
    progress: Progress
    items: list[_Stored] = field(default_factory=list)

    def failed(self, source: BackupSource, label: str, database: str, at: datetime, exc: BackupError) -> None:
        self.log(f"“{label}” failed: {exc.code}: {exc.message}")
        self.items.append(
            _Stored(
                source,
                label,
                database,
                source.kind,
                at,
                timezone.now(),
                error_code=exc.code,
                error_message=exc.message,
            )
        )


def _backup_run(run: BackupScheduleRun, started: datetime, log: RunLog) -> Outcome:
    schedule = run.schedule
    sources = list(schedule.sources.select_related("tenant").order_by("name", "id"))
    if not sources:
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "This schedule has no source to back up.")
    storage.check_free_space_for(schedule)  # fail early (STORAGE_FULL), before any dump starts
    busy = leases.acquire(run, sources)
    if busy is not None:
        log(busy.reason)
        return Outcome(RunStatus.SKIPPED, "", busy.reason)
    try:
        backup = _Backup(run, started, log, deadline_for(schedule), Progress(run, log))
        for source in sources:
            _back_up_source(backup, source)
        backup.progress.flush()
    finally:
        release_leases(run)
    return _conclude(backup)


def release_leases(run: BackupScheduleRun) -> None:
    """Let go of the run's source leases; a failure here never changes the run's result."""
    try:
        leases.release(run)
    except DatabaseError:
        # Left behind, they are taken over by the next run once this one is finished
        # (a lease of a run that is not running is stale); the backup itself is fine.
        logger.warning("could not release the source leases of run %s", run.code, exc_info=True)


def _back_up_source(backup: _Backup, source: BackupSource) -> None:
    log = backup.log
    log(f"Source “{source.name}” ({source.get_kind_display()}).")
    at = timezone.now()
    ctx = DumpContext(log=log, deadline=backup.deadline, started_at=backup.started)
    try:
        engine = engine_for(source.kind)
        targets = engine.targets(source, ctx)
    except BackupError as exc:
        backup.failed(source, source.name, "", at, exc)
        return
    except Exception:
        logger.exception("run %s: listing what to back up of source %s failed", backup.run.code, source.pk)
        backup.failed(source, source.name, "", at, BackupError(ErrorCode.UNKNOWN, UNEXPECTED_MESSAGE))
        return
    for target in targets:
        _back_up_target(backup, engine, source, target, ctx)


def _back_up_target(
    backup: _Backup, engine: Engine, source: BackupSource, target: DumpTarget, ctx: DumpContext
) -> None:
    at = timezone.now()
    timeout = timeout_error(backup.run.schedule)
    key = storage_key(backup.run, backup.started, len(backup.items), engine.suffix)
    stored = None
    try:
        if clock() > backup.deadline:  # an earlier item used the time up
            raise timeout
        backup.progress.start(target.label)
        with engine.dump(source, target, ctx) as stream:
            stored = storage.store_stream(key, DeadlineReader(stream, backup.deadline, timeout), backup.progress)  # type: ignore[arg-type]
    except BackupError as exc:
        _discard(stored)
        backup.progress.item_failed()
        backup.failed(source, target.label, target.database, at, exc)
        return
    except Exception:
        _discard(stored)
        backup.progress.item_failed()
        logger.exception("run %s: backing up %r failed unexpectedly", backup.run.code, target.label)
        backup.failed(source, target.label, target.database, at, BackupError(ErrorCode.UNKNOWN, UNEXPECTED_MESSAGE))
        return
    backup.progress.item_stored(stored.size)
    backup.log(f"“{target.label}”: stored {stored.size} bytes (from {stored.source_size}), sha256 {stored.sha256}.")
    backup.items.append(
        _Stored(
            source,
            target.label,
            target.database,
            source.kind,
            at,
            timezone.now(),
            key=stored.key,
            size=stored.size,
            source_size=stored.source_size,
            sha256=stored.sha256,
        )
    )


def _discard(stored: storage.StoredFile | None) -> None:
    """A file stored before the engine reported the dump as failed (on leaving
    dump()) is not a backup: never keep it where it could be taken for one."""
    if stored is not None:
        storage.delete(stored.key)


def _conclude(backup: _Backup) -> Outcome:
    run, log, items = backup.run, backup.log, backup.items
    good = [item for item in items if item.ok]
    bad = [item for item in items if not item.ok]
    if not good:
        first = bad[0]
        message = first.error_message if len(bad) == 1 else _failed_items_message(bad, len(items))
        log(f"Failed: no item could be stored ({len(bad)} failed).")
        return Outcome(RunStatus.FAILED, first.error_code, message)
    backup_set = BackupSet.objects.create(
        tenant_id=run.tenant_id,
        schedule=run.schedule,
        run=run,
        status=SetStatus.PARTIAL if bad else SetStatus.COMPLETE,
        size=sum(item.size for item in good),
        source_size=sum(item.source_size for item in good),
        created_at=timezone.now(),
    )
    BackupItem.objects.bulk_create(
        BackupItem(
            backup_set=backup_set,
            source=item.source,
            kind=item.kind,
            label=item.label[:500],
            database=item.database,
            status=ItemStatus.OK if item.ok else ItemStatus.FAILED,
            storage_key=item.key,
            size=item.size,
            source_size=item.source_size,
            sha256=item.sha256,
            error_code=item.error_code,
            error_message=item.error_message,
            started_at=item.started_at,
            finished_at=item.finished_at,
        )
        for item in items
    )
    if bad:
        message = _failed_items_message(bad, len(items))
        log(f"Partial: {len(good)} of {len(items)} items stored. {message}")
        # No retention after a partial run: pruning a complete older set for one
        # that lacks some sources would lose the only copy of those.
        return Outcome(RunStatus.PARTIAL, bad[0].error_code, message)
    _apply_retention(run, log)
    log("Succeeded.")
    return Outcome(RunStatus.SUCCEEDED)


def _failed_items_message(bad: list[_Stored], total: int) -> str:
    parts = "; ".join(f"“{item.label}” ({item.error_code}: {item.error_message})" for item in bad)
    return f"{len(bad)} of {total} items failed: {parts}"


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
