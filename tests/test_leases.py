"""Source leases: one source is backed up by one run at a time."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from backups import leases
from backups.models import BackupSet, BackupSource, SourceLease
from backups.tasks import execute_run
from scheduling.dispatch import ABANDONED_AFTER, run_pass
from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.runs import beat, claim, run_now
from tests.conftest import make_sqlite_database
from tests.helpers import make_schedule


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
    beat(str(holder.code), started)
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
