"""Source leases: one source is backed up by one run at a time, across workers and nodes.

Two schedules may cover the same source (a nightly and a weekly one). Dumping it
twice at once doubles the load on the source's server for nothing, and for file
sources two snapshots would compete for the same disk. So a backup run takes a
SourceLease row for every one of its sources, all in one transaction, before it
dumps anything; the unique source column makes that race-free in the database,
whichever node the run's worker is on. Runs of different sources go in parallel.

A restore takes the leases of the tenant's sources that would read what it writes: the
item's own source when it overwrites an existing target (it may be that very source), file
sources whose path overlaps the target, and server sources on the same server covering the
target database (by name or all databases); see scheduling.perform.sources_a_restore_touches. It
waits while a backup holds one, and a backup that starts meanwhile is skipped rather than
dumping a half-restored source. A restore touching no source takes none. A waiting restore
holds nothing, so restores cannot deadlock each other; frequent backups of a source can
keep one waiting until its time limit (it then fails as TIMEOUT, having written nothing).

A lease held by a run that is not running any more (its worker died and the
dispatcher failed it as WORKER_LOST, or a crash skipped the release) is stale and
taken over; every ending of a run releases them (scheduling.endings), the
dispatcher's verdict on a run whose worker died included.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import DatabaseError, IntegrityError, transaction

from backups.models import BackupSource
from scheduling.dbclock import db_now
from scheduling.models import BackupScheduleRun, Operation, RunStatus, SourceLease
from tenants.connections import retry_on_drop

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Busy:
    """A source another live run holds. With no run_code: another run took it between
    our look and our insert, and let go of it again before we could see which one."""

    source_name: str
    schedule_name: str
    run_code: str
    operation: str = Operation.BACKUP

    @property
    def holder(self) -> str:
        if not self.run_code:
            return "taken by another run a moment ago"
        if self.operation == Operation.RESTORE:
            return f"restored over by run {self.run_code} (from a backup set of schedule “{self.schedule_name}”)"
        return f"backed up by schedule “{self.schedule_name}” (run {self.run_code})"

    @property
    def reason(self) -> str:
        """Why a backup run that found the source busy was skipped."""
        if not self.run_code:
            return (
                f"Skipped: source “{self.source_name}” was {self.holder}, which has finished since; a source is "
                "backed up by one run at a time, and the next slot backs it up as usual."
            )
        if self.operation == Operation.RESTORE:
            return (
                f"Skipped: source “{self.source_name}” was being {self.holder}; a source is not backed up "
                "while a restore overwrites it."
            )
        return (
            f"Skipped: source “{self.source_name}” was being {self.holder}; a source is backed up by one run at a time."
        )


class _Conflict(Exception):
    def __init__(self, busy: Busy) -> None:
        self.busy = busy


def acquire(run: BackupScheduleRun, sources: Sequence[BackupSource]) -> Busy | None:
    """Take the leases of all `sources` for `run`, or none of them.

    Returns None when the run holds them all, else the first busy source (and the
    run holds nothing)."""
    if not sources:
        return None
    try:
        with transaction.atomic():
            _acquire_all(run, sources)
    except _Conflict as conflict:
        return conflict.busy
    except IntegrityError:
        # Another run inserted a lease between our read and our insert: it won.
        return _holder_of(sources, run) or _gone_holder(sources)
    return None


def _acquire_all(run: BackupScheduleRun, sources: Sequence[BackupSource]) -> None:
    now = db_now()  # the database's clock: the lease is read on other nodes
    by_source = {source.pk: source for source in sources}
    # select_for_update: on PostgreSQL a concurrent take-over of the same stale lease waits here.
    held = {
        lease.source_id: lease
        for lease in SourceLease.objects.select_for_update()
        .select_related("run__schedule")
        .filter(source_id__in=list(by_source))
    }
    fresh = []
    for source_id, source in by_source.items():
        lease = held.get(source_id)
        if lease is None:
            fresh.append(SourceLease(source=source, run=run, acquired_at=now))
        elif lease.run_id == run.pk:
            continue
        elif lease.run.status == RunStatus.RUNNING:
            raise _Conflict(Busy(source.name, lease.run.schedule.name, str(lease.run.code), lease.run.operation))
        else:
            # Compare-and-swap on the old holder: two runs taking over the same stale lease cannot both win.
            taken = SourceLease.objects.filter(pk=lease.pk, run_id=lease.run_id).update(run=run, acquired_at=now)
            if taken != 1:
                raise IntegrityError("lease taken over by another run")
    SourceLease.objects.bulk_create(fresh)


def _holder_of(sources: Sequence[BackupSource], run: BackupScheduleRun) -> Busy | None:
    lease = (
        SourceLease.objects.select_related("run__schedule", "source")
        .filter(source__in=list(sources))
        .exclude(run=run)
        .first()
    )
    if lease is None:
        return None
    return Busy(lease.source.name, lease.run.schedule.name, str(lease.run.code), lease.run.operation)


def _gone_holder(sources: Sequence[BackupSource]) -> Busy:
    """The race lost to a run that ended (and released) before we could look at it.
    Which of the sources it held went with its lease: the first is named, in order,
    the one a reader of a one-source schedule (the usual case) expects."""
    return Busy(sources[0].name, "", "")


def release(run: BackupScheduleRun | int) -> int:
    """Drop every lease `run` holds; returns how many."""
    run_id = run if isinstance(run, int) else run.pk
    deleted, _ = SourceLease.objects.filter(run_id=run_id).delete()
    return deleted


def _release_in_savepoint(run: BackupScheduleRun) -> int:
    with transaction.atomic():  # a savepoint in the dispatcher's pass: a failure here must not end it
        return release(run)


def release_quietly(run: BackupScheduleRun) -> None:
    """Let go of the run's source leases; a failure here never changes the run's result."""
    try:
        retry_on_drop(lambda: _release_in_savepoint(run), f"run {run.code}: releasing its source leases")
    except DatabaseError:
        # Left behind, they are taken over by the next run once this one is finished
        # (a lease of a run that is not running is stale); the work itself is fine.
        logger.warning("could not release the source leases of run %s", run.code, exc_info=True)
