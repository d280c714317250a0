"""Source leases: one source is backed up by one run at a time."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.db import connection

from backups.models import BackupSet, BackupSource
from scheduling import leases
from scheduling.dispatch import ABANDONED_AFTER, run_pass
from scheduling.lifecycle import claim
from scheduling.models import BackupScheduleRun, RunStatus, SourceLease
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tests.conftest import make_sqlite_database
from tests.helpers import make_schedule, set_of_run


def running(schedule, holds: list[BackupSource]) -> BackupScheduleRun:
    """A run of `schedule` in the middle of its backup: claimed, holding `holds`."""
    run = run_now(schedule, actor=None)
    assert claim(str(run.code), datetime.now(UTC))
    assert leases.acquire(run, holds) is None
    return run


def second_source(tenant, settings, name: str = "Wiki") -> BackupSource:
    path = make_sqlite_database(settings.SOURCE_ROOTS[0] / f"{name.lower()}.sqlite3")
    return BackupSource.objects.create(tenant=tenant, name=name, path=str(path))


def test_a_source_busy_with_another_schedules_run_skips_the_new_run_naming_both(schedule, source, tenant) -> None:
    weekly = make_schedule(tenant, source, name="Weekly full")
    holder = running(weekly, [source])
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "skipped"
    run.refresh_from_db()
    assert run.status == RunStatus.SKIPPED
    assert "source “Shop”" in run.error_message and "schedule “Weekly full”" in run.error_message
    assert str(holder.code) in run.error_message
    assert not BackupSet.objects.filter(run=run).exists()
    assert SourceLease.objects.get(source=source).run_id == holder.pk  # the holder keeps it


def test_runs_of_different_sources_go_in_parallel(schedule, source, tenant, settings) -> None:
    wiki = second_source(tenant, settings)
    other = make_schedule(tenant, wiki, name="Wiki nightly")
    holder = running(other, [wiki])
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    assert SourceLease.objects.get().run_id == holder.pk  # ours were released, theirs kept


def test_leases_are_all_or_nothing(schedule, source, tenant, settings) -> None:
    wiki = second_source(tenant, settings)
    schedule.sources.add(wiki)
    other = make_schedule(tenant, wiki, name="Wiki nightly")
    holder = running(other, [wiki])
    run = run_now(schedule, actor=None)
    assert claim(str(run.code), datetime.now(UTC))
    busy = leases.acquire(run, [source, wiki])
    assert busy is not None and busy.source_name == "Wiki" and busy.schedule_name == "Wiki nightly"
    assert list(SourceLease.objects.values_list("source__name", "run_id")) == [("Wiki", holder.pk)]


def test_leases_are_released_after_success_and_after_failure(schedule, source) -> None:
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    assert not SourceLease.objects.exists()
    source.path = source.path + ".missing"
    source.save()
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "SOURCE_NOT_FOUND"
    assert not SourceLease.objects.exists()


def test_a_lease_whose_holder_is_no_longer_running_is_taken_over(schedule, source, tenant) -> None:
    weekly = make_schedule(tenant, source, name="Weekly full")
    holder = running(weekly, [source])
    # Its worker died and the run was failed without the release (a crash in between).
    BackupScheduleRun.objects.filter(pk=holder.pk).update(status=RunStatus.FAILED, error_code="WORKER_LOST")
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    assert not SourceLease.objects.exists()


def test_the_dispatcher_releases_the_leases_of_runs_whose_worker_died(schedule, source, tenant) -> None:
    weekly = make_schedule(tenant, source, name="Weekly full")
    holder = running(weekly, [source])
    started = datetime.now(UTC) - timedelta(hours=1)
    BackupScheduleRun.objects.filter(pk=holder.pk).update(heartbeat_at=started)  # its last heartbeat
    report = run_pass(started + ABANDONED_AFTER + timedelta(seconds=1))
    assert report.abandoned == 1
    assert not SourceLease.objects.exists()
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"


def test_a_second_acquire_by_the_same_run_keeps_its_leases(schedule, source) -> None:
    run = running(schedule, [source])
    assert leases.acquire(run, [source]) is None
    assert SourceLease.objects.get().run_id == run.pk
    assert leases.release(run) == 1
    assert not SourceLease.objects.exists()


@pytest.mark.django_db(transaction=True)  # two workers, two connections
def test_two_workers_on_one_source_back_it_up_once_at_a_time(schedule, source, tenant, monkeypatch) -> None:
    """A real second worker (thread, own connection) runs while the first is inside its dump."""
    from backups.engines.sqlite import SqliteEngine

    weekly = make_schedule(tenant, source, name="Weekly full")
    inside, go_on = threading.Event(), threading.Event()
    real_dump = SqliteEngine.dump

    @contextmanager
    def held_dump(self, *args, **kwargs):
        inside.set()  # the first worker holds its lease now ...
        go_on.wait(30)  # ... until the second worker has tried
        with real_dump(self, *args, **kwargs) as stream:
            yield stream

    monkeypatch.setattr(SqliteEngine, "dump", held_dump)
    first = run_now(weekly, actor=None)
    results: list[str] = []

    def first_worker() -> None:
        try:
            results.append(execute_run(str(first.code)))
        finally:
            connection.close()

    worker = threading.Thread(target=first_worker)
    worker.start()
    try:
        assert inside.wait(30)
        monkeypatch.setattr(SqliteEngine, "dump", real_dump)
        second = run_now(schedule, actor=None)
        assert execute_run(str(second.code)) == "skipped"
    finally:
        go_on.set()
        worker.join()
    assert results == ["succeeded"]
    second.refresh_from_db()
    assert "schedule “Weekly full”" in second.error_message
    assert not SourceLease.objects.exists()
    # Once free, the source is backed up by the next run as usual.
    third = run_now(schedule, actor=None)
    assert execute_run(str(third.code)) == "succeeded"


# ---------------------------------------------------------------- restores over a source


def _restore_over_the_source(schedule, source, alice) -> tuple[BackupScheduleRun, dict[str, str]]:
    """A backup of the source, then the source changed, then a restore asked over it."""
    from backups.engines.base import RestoreTarget
    from scheduling.operations import request_restore
    from tests.scheduling.test_operations import backed_up, table_checksums

    backup_set = backed_up(schedule)
    backed_up_sums = table_checksums(Path(source.path))
    with sqlite3.connect(source.path) as db:
        db.execute("INSERT INTO items (label) VALUES ('written after the backup')")
    db.close()
    assert table_checksums(Path(source.path)) != backed_up_sums
    target = RestoreTarget(path=source.path, overwrite=True)
    return request_restore(backup_set, alice, target=target, confirm=source.path), backed_up_sums


def test_an_overwriting_restore_waits_while_a_backup_reads_its_source(
    schedule, source, tenant, alice, monkeypatch
) -> None:
    from scheduling import perform
    from tests.scheduling.test_operations import table_checksums

    restore, backed_up_sums = _restore_over_the_source(schedule, source, alice)
    holder = running(make_schedule(tenant, source, name="Weekly full"), [source])
    waits: list[float] = []

    def the_backup_finishes(seconds: float) -> None:
        waits.append(seconds)
        assert table_checksums(Path(source.path)) != backed_up_sums  # nothing written while it waited
        BackupScheduleRun.objects.filter(pk=holder.pk).update(status=RunStatus.SUCCEEDED)
        leases.release(holder)

    monkeypatch.setattr(perform, "wait_a_moment", the_backup_finishes)
    assert execute_run(str(restore.code)) == "succeeded"
    assert waits == [perform.LEASE_WAIT_SECONDS]
    assert table_checksums(Path(source.path)) == backed_up_sums
    restore.refresh_from_db()
    assert f"Waiting: source “Shop” is being backed up by schedule “Weekly full” (run {holder.code})" in restore.log
    assert not SourceLease.objects.exists()  # the restore let go of it too


def test_an_overwriting_restore_gives_up_at_the_time_limit_and_writes_nothing(
    schedule, source, tenant, alice, monkeypatch
) -> None:
    from backups import pipeline
    from scheduling import perform
    from tests.scheduling.test_operations import table_checksums

    restore, backed_up_sums = _restore_over_the_source(schedule, source, alice)
    before = table_checksums(Path(source.path))
    holder = running(make_schedule(tenant, source, name="Weekly full"), [source])
    now = [1000.0]
    monkeypatch.setattr(pipeline, "clock", lambda: now[0])
    monkeypatch.setattr(perform, "wait_a_moment", lambda seconds: now.__setitem__(0, now[0] + seconds))
    assert execute_run(str(restore.code)) == "TIMEOUT"
    restore.refresh_from_db()
    assert restore.status == RunStatus.FAILED and "still busy" in restore.error_message
    assert "nothing was restored" in restore.error_message
    assert now[0] >= 1000.0 + schedule.time_limit_minutes * 60 - perform.LEASE_WAIT_SECONDS
    assert table_checksums(Path(source.path)) == before != backed_up_sums
    assert SourceLease.objects.get().run_id == holder.pk


def test_a_backup_is_skipped_while_a_restore_overwrites_its_source(schedule, source, alice) -> None:
    restore, _ = _restore_over_the_source(schedule, source, alice)
    assert claim(str(restore.code), datetime.now(UTC))
    assert leases.acquire(restore, [source]) is None  # the restore is writing
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "skipped"
    run.refresh_from_db()
    assert f"was being restored over by run {restore.code}" in run.error_message
    assert "not backed up while a restore overwrites it" in run.error_message


def test_a_restore_into_a_new_file_does_not_wait_for_a_backup(schedule, source, tenant, alice, monkeypatch) -> None:
    from scheduling import perform
    from scheduling.operations import request_restore
    from tests.scheduling.test_operations import backed_up

    backup_set = backed_up(schedule)
    holder = running(make_schedule(tenant, source, name="Weekly full"), [source])
    monkeypatch.setattr(perform, "wait_a_moment", lambda seconds: pytest.fail("a new target waited for a lease"))
    restore = request_restore(backup_set, alice)
    assert execute_run(str(restore.code)) == "succeeded"
    assert SourceLease.objects.get().run_id == holder.pk


def test_an_overwriting_restore_holds_the_lease_while_it_writes(schedule, source, alice, monkeypatch) -> None:
    from backups.engines.sqlite import SqliteEngine

    restore, _ = _restore_over_the_source(schedule, source, alice)
    holders: list[int] = []
    real_restore = SqliteEngine.restore

    def watched(self, *args, **kwargs):
        holders.extend(SourceLease.objects.filter(source=source).values_list("run_id", flat=True))
        return real_restore(self, *args, **kwargs)

    monkeypatch.setattr(SqliteEngine, "restore", watched)
    assert execute_run(str(restore.code)) == "succeeded"
    assert holders == [restore.pk]
    assert not SourceLease.objects.exists()


def test_the_time_limit_of_a_restore_counts_from_when_it_got_its_sources(
    schedule, source, tenant, alice, monkeypatch
) -> None:
    """Waiting most of the limit for a backup must not leave the restore seconds to write in."""
    from backups import pipeline
    from backups.engines.sqlite import SqliteEngine
    from scheduling import perform

    restore, _ = _restore_over_the_source(schedule, source, alice)
    holder = running(make_schedule(tenant, source, name="Weekly full"), [source])
    limit = schedule.time_limit_minutes * 60
    now = [0.0]
    monkeypatch.setattr(pipeline, "clock", lambda: now[0])

    def most_of_the_limit_passes(seconds: float) -> None:
        now[0] += limit - 3 * perform.LEASE_WAIT_SECONDS
        BackupScheduleRun.objects.filter(pk=holder.pk).update(status=RunStatus.SUCCEEDED)
        leases.release(holder)

    deadlines: list[float] = []
    real_restore = SqliteEngine.restore

    def watched(self, source_, target, stream, to, ctx):
        deadlines.append(ctx.deadline)
        return real_restore(self, source_, target, stream, to, ctx)

    monkeypatch.setattr(perform, "wait_a_moment", most_of_the_limit_passes)
    monkeypatch.setattr(SqliteEngine, "restore", watched)
    assert execute_run(str(restore.code)) == "succeeded"
    assert deadlines == [now[0] + limit]


def test_a_restore_written_inside_a_folder_source_waits_for_that_folders_backup(
    schedule, source, tenant, alice, settings, monkeypatch
) -> None:
    """A new file beside the SQLite source lands inside a folder source covering it: a backup
    of that folder meanwhile would archive a half-written file."""
    from scheduling import perform
    from scheduling.operations import request_restore
    from tests.scheduling.test_operations import backed_up

    settings.TENANT_MAX_RUNNING = 0  # two runs here on purpose; the limit: tests/scheduling/test_fairness.py
    backup_set = backed_up(schedule)
    everything = BackupSource.objects.create(
        tenant=tenant, name="Everything", kind="directory", path=str(settings.SOURCE_ROOTS[0])
    )
    elsewhere = BackupSource.objects.create(
        tenant=tenant, name="Elsewhere", kind="directory", path=str(settings.SOURCE_ROOTS[0] / "other")
    )
    holder = running(make_schedule(tenant, everything, name="Files"), [everything])
    running(make_schedule(tenant, elsewhere, name="Other files"), [elsewhere])  # not in the way
    waited: list[str] = []

    def the_folder_backup_finishes(seconds: float) -> None:
        waited.append(holder.schedule.name)
        BackupScheduleRun.objects.filter(pk=holder.pk).update(status=RunStatus.SUCCEEDED)
        leases.release(holder)

    monkeypatch.setattr(perform, "wait_a_moment", the_folder_backup_finishes)
    restore = request_restore(backup_set, alice)
    assert not restore.restore_target["items"][0]["overwrite"]
    assert execute_run(str(restore.code)) == "succeeded"
    assert waited == ["Files"]


def test_a_database_restore_leases_the_server_sources_that_would_dump_the_target(schedule, tenant) -> None:
    from backups.models import BackupItem
    from backups.restore import sources_a_restore_touches as _sources_a_restore_touches

    def server(name: str, **fields) -> BackupSource:
        fields = {"kind": "postgres", "host": "db.internal", "port": 5432, "database": "shop", **fields}
        return BackupSource.objects.create(tenant=tenant, name=name, **fields)

    origin = server("Shop DB")
    whole_server = server("All of db.internal", database="", all_databases=True)
    copy = server("Shop copy", database="shop_restored")
    other_port = server("Other cluster", port=5433, database="", all_databases=True)
    other_kind = server("MariaDB", kind="mysql", port=5432, database="", all_databases=True)
    run = run_now(schedule, actor=None)
    backup_set = set_of_run(run, tenant=tenant, created_at=run.created_at)
    item = BackupItem.objects.create(backup_set=backup_set, source=origin, kind="postgres", label="shop")

    def touched(**entry) -> set[str]:
        entries = [{"item": str(item.code), **entry}]
        return {source.name for source in _sources_a_restore_touches(run.tenant_id, backup_set, entries)}

    assert touched(database="shop_restored") == {whole_server.name, copy.name}
    assert touched(database="shop", overwrite=True) == {origin.name, whole_server.name}
    assert touched(database="fresh") == {whole_server.name}
    assert other_port.name not in touched(database="shop") and other_kind.name not in touched(database="shop")


def test_one_server_is_recognized_under_another_spelling_or_a_blank_port(schedule, tenant) -> None:
    from backups.models import BackupItem
    from backups.restore import sources_a_restore_touches as _sources_a_restore_touches

    def server(name: str, host: str, port: int | None) -> BackupSource:
        return BackupSource.objects.create(
            tenant=tenant, name=name, kind="postgres", host=host, port=port, database="", all_databases=True
        )

    origin = server("Local", "127.0.0.1", 5432)
    by_name = server("Local by name", "LOCALHOST", None)  # blank port: PostgreSQL's 5432
    elsewhere = server("Other port", "localhost", 5433)
    nowhere = server("Unresolvable", "no-such-host.invalid", 5432)
    run = run_now(schedule, actor=None)
    backup_set = set_of_run(run, tenant=tenant, created_at=run.created_at)
    item = BackupItem.objects.create(backup_set=backup_set, source=origin, kind="postgres", label="shop")
    entries = [{"item": str(item.code), "database": "shop_restored"}]
    touched = {source.name for source in _sources_a_restore_touches(run.tenant_id, backup_set, entries)}
    assert touched == {origin.name, by_name.name}
    assert elsewhere.name not in touched and nowhere.name not in touched


@pytest.mark.django_db(transaction=True)
def test_a_race_lost_to_a_run_that_has_finished_since_is_worded_plainly(schedule, source, tenant) -> None:
    """Another run inserts the lease between our look and our insert (we get the
    IntegrityError), and finishes, releasing it, before we can see who it was."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's IMMEDIATE write lock serializes acquire: this race cannot happen there")
    import psycopg

    from tests.helpers import database_url

    weekly = make_schedule(tenant, source, name="Weekly full")
    other = run_now(weekly, actor=None)
    assert claim(str(other.code), datetime.now(UTC))
    run = run_now(schedule, actor=None)
    assert claim(str(run.code), datetime.now(UTC))
    table = SourceLease._meta.db_table
    url = database_url()
    inserter, locker, watcher = (psycopg.connect(url) for _ in range(3))
    watcher.autocommit = True

    def waiting() -> int:
        row = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
        return row[0] if row else 0

    def wait_for(count: int) -> None:
        deadline = time.monotonic() + 30
        while waiting() < count:
            assert time.monotonic() < deadline, "the sessions never queued up"
            time.sleep(0.02)

    results: list[leases.Busy | None] = []

    def acquire() -> None:
        try:
            results.append(leases.acquire(run, [source]))
        finally:
            connection.close()

    def take_over_and_finish() -> None:
        # Queued behind both transactions: granted once ours rolls back, before we look.
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        locker.execute(f"DELETE FROM {table} WHERE run_id = %s", [other.pk])
        locker.commit()

    try:
        inserter.execute(
            f"INSERT INTO {table} (source_id, run_id, acquired_at) VALUES (%s, %s, now())", [source.pk, other.pk]
        )
        ours = threading.Thread(target=acquire)
        ours.start()
        wait_for(1)  # our insert waits on the other run's
        finisher = threading.Thread(target=take_over_and_finish)
        finisher.start()
        wait_for(2)
        inserter.commit()  # the other run won the insert
        ours.join(30)
        finisher.join(30)
    finally:
        for session in (inserter, locker, watcher):
            session.close()
    (busy,) = results
    assert busy is not None
    assert busy.reason == (
        "Skipped: source “Shop” was taken by another run a moment ago, which has finished since; "
        "a source is backed up by one run at a time, and the next slot backs it up as usual."
    )
    assert "?" not in busy.reason
    assert not SourceLease.objects.exists()
