"""Backing up given sources into one new backup set: the storage pipeline.

It knows sources, engines, storage and sets, never a run: the caller (scheduling's
worker) gives it the sources, a deadline, what to say at the time limit, a progress
callback, a log sink and how to name the stored files, and turns the outcome it
returns into run state.

One item per source (one per database for a server with several): all stored ->
succeeded; some failed -> partial (the set keeps the good ones and the message names
the failed ones); all failed -> failed, with no set.
"""

from __future__ import annotations

import enum
import io
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO

from django.db import DatabaseError, transaction
from django.utils import timezone

from backups import storage
from backups.engines.base import DumpContext, DumpTarget, Engine, Log, StopCheck
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupItem, BackupSet, BackupSource, ItemStatus, SetStatus
from tenants.connections import fresh_connection, retry_on_drop

logger = logging.getLogger(__name__)


class Result(enum.Enum):
    """How a backup went: every item stored, some, or none (then there is no set)."""

    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


SUCCEEDED, PARTIAL, FAILED = Result.SUCCEEDED, Result.PARTIAL, Result.FAILED

# A line in the log saying how much of the item is written, this often.
PROGRESS_LOG_SECONDS = 30.0
# The clock of deadlines (monotonic: a wall-clock step must not end or extend a dump).
clock = time.monotonic
UNEXPECTED_MESSAGE = "An unexpected error stopped the backup; the server log has the details."


def deadline_after(minutes: int) -> float:
    """The monotonic instant `minutes` from now, past which every dump is stopped (TIMEOUT)."""
    return clock() + minutes * 60


def timeout_error(minutes: int) -> BackupError:
    """What a dump still going at a time limit of `minutes` fails with."""
    return BackupError(
        ErrorCode.TIMEOUT,
        f"The backup was still going after the schedule's time limit ({minutes} minute{'' if minutes == 1 else 's'}) "
        "and was stopped.",
    )


def never_stop() -> BackupError | None:
    return None


def first_stop(*checks: StopCheck) -> StopCheck:
    """One stop check made of several (a node shutting down, a run given up for lost):
    the first reason any of them gives, asked in order."""

    def should_stop() -> BackupError | None:
        for check in checks:
            if (reason := check()) is not None:
                return reason
        return None

    return should_stop


class DeadlineReader(io.BufferedIOBase, BinaryIO):
    """A dump stream that fails with `error` (TIMEOUT) once the deadline has passed,
    or with the reason `should_stop` gives (e.g. INTERRUPTED), at each chunk read.

    The process engines also kill their process at the deadline or the stop (their
    watchdog: a tool blocked on a lock writes nothing to read); this covers every
    engine, including those whose stream is a plain file or a tar written in a thread.
    Raising here leaves the engine's dump() with an error, which kills its tool, and
    storage's error path removes the temporary file."""

    def __init__(
        self, raw: BinaryIO, deadline: float | None, error: BackupError, should_stop: StopCheck = never_stop
    ) -> None:
        super().__init__()
        self.raw = raw
        self.deadline = deadline
        self.error = error
        self.should_stop = should_stop

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1, /) -> bytes:
        if self.deadline is not None and clock() > self.deadline:
            raise self.error
        if (reason := self.should_stop()) is not None:
            raise reason
        return self.raw.read(-1 if size is None else size)


@dataclass
class BackupOutcome:
    status: Result
    error_code: str = ""
    message: str = ""
    backup_set: BackupSet | None = None


@dataclass
class BackupJob:
    """What one backup needs besides its sources."""

    tenant_id: int
    started: datetime
    deadline: float
    timeout: BackupError  # what a dump still going at the deadline fails with
    log: Log
    # The storage key of the item numbered `index`, whose file ends in `suffix`.
    key_for: Callable[[int, str], str]
    # Called with the new set in the transaction that creates it, so whatever points
    # at it (the run) commits with it; if it raises, no set is kept.
    adopt: Callable[[BackupSet], None]
    # Compressed bytes written so far, all items (called often: the callee throttles).
    progress: Callable[[int], None] = lambda written: None
    context: str = ""  # names the work in the server's log, e.g. "run <code>"
    # The series the new set joins (BackupSet.series): the caller's key, opaque here.
    series: uuid.UUID | None = None
    # Asked on every read of a dump (next to the deadline) and before each item: an
    # error aborts the current dump with it (its file removed) and no further item
    # starts (each is recorded failed with it). One callable: the caller composes its
    # reasons with first_stop().
    should_stop: StopCheck = never_stop


class _Progress:
    """Bytes written so far for the callback, and a log line about the item being
    written every PROGRESS_LOG_SECONDS."""

    def __init__(self, job: BackupJob) -> None:
        self.job = job
        self.label = ""
        self.done = 0  # bytes of the items already stored
        self.logged_at = time.monotonic()

    def start(self, label: str) -> None:
        self.label = label
        self.logged_at = time.monotonic()

    def __call__(self, written: int) -> None:
        self.job.progress(self.done + written)
        now = time.monotonic()
        if now - self.logged_at >= PROGRESS_LOG_SECONDS:
            self.logged_at = now
            self.job.log(f"“{self.label}”: {written / 1_000_000:.1f} MB written so far (compressed).")

    def item_stored(self, size: int) -> None:
        self.done += size
        self.job.progress(self.done)

    def item_failed(self) -> None:
        self.job.progress(self.done)


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
    job: BackupJob
    progress: _Progress
    items: list[_Stored] = field(default_factory=list)

    def failed(self, source: BackupSource, label: str, database: str, at: datetime, exc: BackupError) -> None:
        self.job.log(f"“{label}” failed: {exc.code}: {exc.message}")
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


def back_up(sources: Sequence[BackupSource], job: BackupJob) -> BackupOutcome:
    """Back up every one of `sources` (in order) into one new set; the outcome says how it went."""
    backup = _Backup(job, _Progress(job))
    for source in sources:
        _back_up_source(backup, source)
    return _conclude(backup)


def _back_up_source(backup: _Backup, source: BackupSource) -> None:
    job = backup.job
    job.log(f"Source “{source.name}” ({source.get_kind_display()}).")
    at = timezone.now()
    ctx = DumpContext(log=job.log, deadline=job.deadline, started_at=job.started, should_stop=job.should_stop)
    try:
        if (reason := job.should_stop()) is not None:  # stopped during an earlier source
            raise reason
        engine = engine_for(source.kind)
        targets = engine.targets(source, ctx)
    except BackupError as exc:
        backup.failed(source, source.name, "", at, exc)
        return
    except Exception:
        logger.exception("%s: listing what to back up of source %s failed", job.context, source.pk)
        backup.failed(source, source.name, "", at, BackupError(ErrorCode.UNKNOWN, UNEXPECTED_MESSAGE))
        return
    for target in targets:
        _back_up_target(backup, engine, source, target, ctx)


def _back_up_target(
    backup: _Backup, engine: Engine, source: BackupSource, target: DumpTarget, ctx: DumpContext
) -> None:
    job = backup.job
    at = timezone.now()
    key = job.key_for(len(backup.items), engine.suffix)
    stored = None
    try:
        if clock() > job.deadline:  # an earlier item used the time up
            raise job.timeout
        if (reason := job.should_stop()) is not None:  # stopped during an earlier item
            raise reason
        backup.progress.start(target.label)
        with engine.dump(source, target, ctx) as stream:
            reader = DeadlineReader(stream, job.deadline, job.timeout, job.should_stop)
            stored = storage.store_stream(key, reader, backup.progress)
    except BackupError as exc:
        _discard(stored)
        backup.progress.item_failed()
        backup.failed(source, target.label, target.database, at, exc)
        return
    except Exception:
        _discard(stored)
        backup.progress.item_failed()
        logger.exception("%s: backing up %r failed unexpectedly", job.context, target.label)
        backup.failed(source, target.label, target.database, at, BackupError(ErrorCode.UNKNOWN, UNEXPECTED_MESSAGE))
        return
    backup.progress.item_stored(stored.size)
    job.log(f"“{target.label}”: stored {stored.size} bytes (from {stored.source_size}), sha256 {stored.sha256}.")
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


def _conclude(backup: _Backup) -> BackupOutcome:
    job, items = backup.job, backup.items
    good = [item for item in items if item.ok]
    bad = [item for item in items if not item.ok]
    if not good:
        first = bad[0]
        message = first.error_message if len(bad) == 1 else _failed_items_message(bad, len(items))
        job.log(f"Failed: no item could be stored ({len(bad)} failed).")
        return BackupOutcome(FAILED, first.error_code, message)
    recorder = _SetRecorder(job, items)
    try:
        # The dump may have taken hours: the connection that began the run is often gone
        # (a restart, a failover, an idle timeout). The transaction is tried again whole
        # on a new connection once; it never goes on inside a block that lost its connection.
        backup_set = retry_on_drop(recorder, f"{job.context}: recording the backup set")
    except BaseException:
        recovered = recorder.settle()
        if recovered is None:
            raise
        backup_set = recovered
    if bad:
        message = _failed_items_message(bad, len(items))
        job.log(f"Partial: {len(good)} of {len(items)} items stored. {message}")
        return BackupOutcome(PARTIAL, bad[0].error_code, message, backup_set)
    return BackupOutcome(SUCCEEDED, backup_set=backup_set)


class _SetRecorder:
    """Creates the set and its items, adopted by the caller, in one transaction; called
    again (by retry_on_drop) when the connection was lost, and then first finds out
    whether the last try committed after all.

    A connection that breaks while the COMMIT is on its way leaves the outcome unknown:
    the server may have committed it. Creating the set again would then fail on the
    items' unique storage keys, and removing the files would leave a recorded set with
    nothing behind it. So a try that reached its commit is looked up by its first key."""

    def __init__(self, job: BackupJob, items: list[_Stored]) -> None:
        self.job = job
        self.items = items
        self.keys = [item.key for item in items if item.ok]
        self.committing = False  # a try reached its COMMIT: it may have been carried out

    def __call__(self) -> BackupSet:
        if self.committing:
            recorded = self.recorded()
            if recorded is not None:
                return recorded
        with transaction.atomic():
            backup_set = self._create()
            self.committing = True  # what raises from here on is the COMMIT
        return backup_set

    def recorded(self) -> BackupSet | None:
        return BackupSet.objects.filter(items__storage_key=self.keys[0]).first()

    def settle(self) -> BackupSet | None:
        """After the last try failed: the set if it was recorded after all; otherwise
        its files are removed (a stored file no set names is not a backup, nor ever
        pruned), unless nobody can tell, when they are kept for the orphan sweep."""
        if self.committing:
            try:
                fresh_connection()
                recorded = self.recorded()
            except DatabaseError:
                logger.error(
                    "%s: the connection to the database broke while the backup set was committed and the database "
                    "cannot be reached to tell whether it was; its %d file(s) are kept: the orphan sweep "
                    "(backups.orphans) removes them later if no set names them",
                    self.job.context,
                    len(self.keys),
                )
                return None
            if recorded is not None:
                logger.warning("%s: the backup set had been recorded after all", self.job.context)
                return recorded
        left = storage.delete_files(self.keys)
        logger.error(
            "%s: the backup set could not be recorded; its %d stored file(s) were removed%s",
            self.job.context,
            len(self.keys) - len(left),
            f" ({len(left)} could not be, the orphan sweep removes them later)" if left else "",
        )
        return None

    def _create(self) -> BackupSet:
        job, items = self.job, self.items
        good = [item for item in items if item.ok]
        backup_set = BackupSet.objects.create(
            tenant_id=job.tenant_id,
            series=job.series,
            status=SetStatus.COMPLETE if len(good) == len(items) else SetStatus.PARTIAL,
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
        job.adopt(backup_set)
        return backup_set


def _failed_items_message(bad: list[_Stored], total: int) -> str:
    parts = "; ".join(f"“{item.label}” ({item.error_code}: {item.error_message})" for item in bad)
    return f"{len(bad)} of {total} items failed: {parts}"
