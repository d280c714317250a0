from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from backups import storage
from backups.models import BackupItem, BackupSet, BackupSource, ItemStatus, SetStatus
from scheduling.dispatch import run_pass
from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus, ScheduleSource, Trigger
from scheduling.runs import RunRefused, retry, run_now
from scheduling.worker import execute_run
from tenants.models import AuditAction, AuditLog
from tests.conftest import make_sqlite_database
from tests.helpers import drain, make_schedule, queued_tasks, set_of_run, stored_path

SLOT = datetime(2026, 11, 24, 1, 30, tzinfo=UTC)


def restore_to(tmp_path: Path, backup_set: BackupSet) -> Path:
    target = tmp_path / f"restored-{backup_set.code}.sqlite3"
    with storage.open_decompressed(backup_set.items.get().storage_key) as reader, open(target, "wb") as out:
        while chunk := reader.read(1 << 20):
            out.write(chunk)
    return target


def test_a_scheduled_slot_becomes_a_verified_restorable_backup(
    schedule, tmp_path, django_capture_on_commit_callbacks
) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=SLOT)
    with django_capture_on_commit_callbacks(execute=True):
        run_pass(SLOT)
    assert drain() == ["succeeded"]
    run = BackupScheduleRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED and run.started_at and run.finished_at
    assert "Snapshot taken with the online backup API" in run.log
    backup_set = run.backup_set
    stored = stored_path(backup_set.items.get().storage_key)
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == backup_set.items.get().sha256
    assert backup_set.size == stored.stat().st_size
    restored = restore_to(tmp_path, backup_set)
    with sqlite3.connect(restored) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 50
    schedule.refresh_from_db()
    assert (schedule.last_status, schedule.last_run_at) == (RunStatus.SUCCEEDED, run.finished_at)
    actions = set(AuditLog.objects.values_list("action", flat=True))
    assert {AuditAction.RUN_CREATED, AuditAction.RUN_STARTED, AuditAction.RUN_FINISHED} <= actions


def test_a_second_delivery_of_the_same_task_does_nothing(schedule, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        run = run_now(schedule, actor=None)
    (task,) = queued_tasks()
    assert execute_run(*task["args"]) == "succeeded"
    assert execute_run(*task["args"]) == "not claimed"
    assert BackupSet.objects.filter(run=run).count() == 1
    assert AuditLog.objects.filter(action=AuditAction.RUN_STARTED).count() == 1


def test_the_backup_is_consistent_while_the_source_is_written(schedule, tmp_path) -> None:
    path = Path(schedule.sources.get().path)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.executemany("INSERT INTO items (label) VALUES (?)", [("x" * 500,)] * 20000)
    stop = threading.Event()

    def writer() -> None:
        db = sqlite3.connect(path, timeout=30)
        while not stop.is_set():
            with db:  # each transaction adds 10 rows: a consistent copy has a multiple of 10 beyond the first 20050
                db.executemany("INSERT INTO items (label) VALUES (?)", [("y",)] * 10)
        db.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        run = run_now(schedule, actor=None)
        assert execute_run(str(run.code)) == "succeeded"
    finally:
        stop.set()
        thread.join()
    run.refresh_from_db()
    restored = restore_to(tmp_path, run.backup_set)
    with sqlite3.connect(restored) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = db.execute("SELECT count(*) FROM items").fetchone()[0]
    assert count >= 20050 and (count - 20050) % 10 == 0


def test_a_missing_source_fails_the_run_with_a_clear_code(schedule) -> None:
    Path(schedule.sources.get().path).unlink()
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "SOURCE_NOT_FOUND"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error_code == "SOURCE_NOT_FOUND" and "does not exist" in run.error_message
    assert not Path(schedule.sources.get().path).exists()  # read-only open never creates it
    assert not BackupSet.objects.exists()


def test_a_source_outside_the_allowed_roots_is_refused(schedule, tmp_path) -> None:
    outside = tmp_path / "elsewhere.sqlite3"
    sqlite3.connect(outside).close()
    source = schedule.sources.get()
    source.path = str(tmp_path / "sources" / ".." / "elsewhere.sqlite3")
    source.save()
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "PERMISSION_DENIED"


def test_a_crash_mid_write_leaves_no_file_that_looks_complete(schedule, monkeypatch) -> None:
    def explode(self, source, destination, **kwargs):
        destination.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(zstandard.ZstdCompressor, "copy_stream", explode)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "STORAGE_FULL"
    leftovers = [p for p in storage.backups_root().rglob("*") if p.is_file()]
    assert leftovers == []


def test_retention_keeps_the_newest_n_of_this_schedule_only(schedule, source, tenant) -> None:
    other = make_schedule(tenant, source, name="Other", keep_last=1)
    other_run = run_now(other, actor=None)
    execute_run(str(other_run.code))
    made = []
    for _ in range(5):
        run = run_now(schedule, actor=None)
        assert execute_run(str(run.code)) == "succeeded"
        made.append(BackupSet.objects.get(run=run))
    live = list(BackupSet.objects.filter(run__schedule=schedule, deleted_at__isnull=True))
    assert [s.pk for s in live] == [s.pk for s in reversed(made[-3:])]  # keep_last=3
    for pruned in made[:2]:
        pruned.refresh_from_db()
        assert pruned.deleted_at is not None
        assert not stored_path(pruned.items.get().storage_key).exists()
    assert BackupSet.objects.get(run=other_run).deleted_at is None
    assert AuditLog.objects.filter(action=AuditAction.SET_PRUNED).count() == 2


def test_retention_does_not_run_after_a_failed_run(schedule) -> None:
    schedule.keep_last = 1
    schedule.save()
    for _ in range(2):
        run = run_now(schedule, actor=None)
        execute_run(str(run.code))
    assert BackupSet.objects.filter(deleted_at__isnull=True).count() == 1
    newest = BackupSet.objects.get(deleted_at__isnull=True)
    Path(schedule.sources.get().path).unlink()
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "SOURCE_NOT_FOUND"
    newest.refresh_from_db()
    assert newest.deleted_at is None and stored_path(newest.items.get().storage_key).exists()


def test_run_now_is_refused_while_a_run_is_queued_or_running(schedule) -> None:
    first = run_now(schedule, actor=None)
    with pytest.raises(RunRefused, match="already has a run queued or running"):
        run_now(schedule, actor=None)
    BackupScheduleRun.objects.filter(pk=first.pk).update(status=RunStatus.RUNNING)
    with pytest.raises(RunRefused):
        run_now(schedule, actor=None)
    assert BackupScheduleRun.objects.count() == 1


def test_retry_links_to_the_first_attempt_and_counts_attempts(schedule) -> None:
    Path(schedule.sources.get().path).unlink()
    first = run_now(schedule, actor=None)
    execute_run(str(first.code))
    first.refresh_from_db()
    second = retry(first, actor=None)
    assert (second.trigger, second.attempt, second.retry_of) == (Trigger.RETRY, 2, first)
    execute_run(str(second.code))
    second.refresh_from_db()
    third = retry(second, actor=None)
    assert (third.attempt, third.retry_of) == (3, first)


def test_only_failed_runs_can_be_retried(schedule) -> None:
    run = run_now(schedule, actor=None)
    with pytest.raises(RunRefused, match="Only failed"):
        retry(run, actor=None)
    execute_run(str(run.code))
    run.refresh_from_db()
    with pytest.raises(RunRefused, match="Only failed"):
        retry(run, actor=None)


def test_manual_runs_do_not_take_a_scheduled_slot(schedule) -> None:
    run = run_now(schedule, actor=None)
    execute_run(str(run.code))
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=SLOT)
    assert run_pass(SLOT + timedelta(seconds=1)).created == 1


@pytest.mark.django_db(transaction=True)  # the heartbeat thread has its own connection
def test_a_long_backup_keeps_its_heartbeat_fresh(schedule, monkeypatch) -> None:
    """The heartbeat thread beats while the backup is busy."""
    import time

    from backups.engines.sqlite import SqliteEngine
    from scheduling import heartbeat

    monkeypatch.setattr(heartbeat, "HEARTBEAT_SECONDS", 0.05)
    beats: list[datetime] = []
    real_dump = SqliteEngine.dump

    def slow_dump(*args, **kwargs):
        for _ in range(6):
            time.sleep(0.05)
            beats.append(BackupScheduleRun.objects.get(trigger=Trigger.MANUAL).heartbeat_at)
        return real_dump(*args, **kwargs)

    monkeypatch.setattr(SqliteEngine, "dump", slow_dump)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    assert len(set(beats)) >= 2  # it moved while the backup ran


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_survives_a_failed_beat(schedule, monkeypatch) -> None:
    """Regression: one OperationalError (a locked database, a dropped connection)
    ended the heartbeat thread, and the live run was later failed as WORKER_LOST."""
    import time

    from django.db import OperationalError

    from scheduling import heartbeat, lifecycle

    monkeypatch.setattr(heartbeat, "HEARTBEAT_SECONDS", 0.02)
    calls: list[str] = []
    real_beat = lifecycle.beat

    def flaky_beat(code, log=None):
        calls.append(code)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return real_beat(code, log=log)

    monkeypatch.setattr(heartbeat, "beat", flaky_beat)
    run = run_now(schedule, actor=None)
    lifecycle.claim(str(run.code), datetime.now(UTC))
    with heartbeat.heartbeat(str(run.code)):
        time.sleep(0.3)
    assert len(calls) >= 3


def test_a_worker_given_up_for_lost_keeps_the_verdict_and_leaves_only_its_log(schedule) -> None:
    from scheduling.lifecycle import claim, finish, note_late_result

    run = run_now(schedule, actor=None)
    claim(str(run.code), datetime.now(UTC))
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error_code="WORKER_LOST")
    assert not finish(run, RunStatus.SUCCEEDED, "log")
    assert note_late_result(run, "what the worker did")
    run.refresh_from_db()
    assert (run.status, run.error_code, run.log) == (RunStatus.FAILED, "WORKER_LOST", "what the worker did")
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, error_code="")
    assert not finish(run, RunStatus.FAILED, "again")  # a finished run stays finished
    assert not note_late_result(run, "nor its log")


# ---------------------------------------------------------------- several sources, partial runs


def add_source(schedule: BackupSchedule, name: str, path: Path, rows: int = 20) -> BackupSource:
    if rows:
        make_sqlite_database(path, rows)
    source = BackupSource.objects.create(tenant=schedule.tenant, name=name, path=str(path))
    ScheduleSource.objects.create(schedule=schedule, source=source)
    return source


def test_several_sources_make_one_set_with_one_item_each(schedule, settings, tmp_path) -> None:
    root = settings.SOURCE_ROOTS[0]
    add_source(schedule, "Accounts", root / "accounts.sqlite3", rows=7)
    add_source(schedule, "Wiki", root / "wiki.sqlite3", rows=9)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    backup_set = BackupSet.objects.get(run=run)
    assert backup_set.status == SetStatus.COMPLETE
    items = list(backup_set.items.order_by("id"))
    assert [item.label for item in items] == ["Accounts", "Shop", "Wiki"]  # sources in name order
    assert len({item.storage_key for item in items}) == 3
    expected_rows = {"Accounts": 7, "Shop": 50, "Wiki": 9}
    for item in items:
        assert item.status == ItemStatus.OK and item.source.name == item.label
        stored = stored_path(item.storage_key)
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == item.sha256
        restored = tmp_path / f"{item.label}.sqlite3"
        with storage.open_decompressed(item.storage_key) as reader:
            restored.write_bytes(reader.read())
        with sqlite3.connect(restored) as db:
            assert db.execute("SELECT count(*) FROM items").fetchone()[0] == expected_rows[item.label]
    assert backup_set.size == sum(item.size for item in items)
    run.refresh_from_db()
    assert run.bytes_written == backup_set.size


def test_one_bad_source_makes_a_partial_run_that_names_it(schedule, settings, tmp_path) -> None:
    root = settings.SOURCE_ROOTS[0]
    add_source(schedule, "Gone", root / "gone.sqlite3", rows=0)  # never created
    (tmp_path / "secret.sqlite3").touch()
    add_source(schedule, "Outside", tmp_path / "secret.sqlite3", rows=0)
    schedule.keep_last = 1
    schedule.save()
    older = run_now(schedule, actor=None)
    set_of_run(older, tenant=schedule.tenant, created_at=datetime.now(UTC))
    BackupScheduleRun.objects.filter(pk=older.pk).update(status=RunStatus.SUCCEEDED)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "partial"
    run.refresh_from_db()
    assert run.status == RunStatus.PARTIAL
    assert run.error_code == "SOURCE_NOT_FOUND"
    assert run.error_message.startswith("2 of 3 items failed")
    assert "“Gone” (SOURCE_NOT_FOUND" in run.error_message
    assert "“Outside” (PERMISSION_DENIED" in run.error_message
    backup_set = BackupSet.objects.get(run=run)
    assert backup_set.status == SetStatus.PARTIAL
    statuses = {item.label: (item.status, item.error_code) for item in backup_set.items.all()}
    assert statuses == {
        "Gone": (ItemStatus.FAILED, "SOURCE_NOT_FOUND"),
        "Outside": (ItemStatus.FAILED, "PERMISSION_DENIED"),
        "Shop": (ItemStatus.OK, ""),
    }
    good = backup_set.items.get(status=ItemStatus.OK)
    assert backup_set.size == good.size and stored_path(good.storage_key).exists()
    # No retention after a partial run: the complete older set is kept although keep_last=1.
    assert BackupSet.objects.get(run=older).deleted_at is None
    schedule.refresh_from_db()
    assert schedule.last_status == RunStatus.PARTIAL
    assert AuditLog.objects.get(action=AuditAction.RUN_FINISHED, target_code=run.code).details["status"] == "partial"


def test_all_sources_bad_fail_the_run_without_a_set(schedule, settings) -> None:
    Path(schedule.sources.get().path).unlink()
    add_source(schedule, "Gone", settings.SOURCE_ROOTS[0] / "gone.sqlite3", rows=0)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "SOURCE_NOT_FOUND"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error_message.startswith("2 of 2 items failed")
    assert "“Gone”" in run.error_message and "“Shop”" in run.error_message
    assert not BackupSet.objects.exists() and not BackupItem.objects.exists()
    assert [p for p in storage.backups_root().rglob("*") if p.is_file()] == []


def test_a_kind_without_an_engine_fails_its_item_with_a_clear_message(schedule) -> None:
    # A kind this server has no engine for (a source row from a newer version, say).
    source = BackupSource.objects.create(tenant=schedule.tenant, name="Tape", kind="tape")
    ScheduleSource.objects.create(schedule=schedule, source=source)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "partial"
    run.refresh_from_db()
    assert "“Tape” (UNKNOWN: Sources of kind “tape” cannot be backed up by this server.)" in run.error_message


def test_an_unexpected_error_is_unknown_and_hides_its_details(schedule, monkeypatch, caplog) -> None:
    from backups.engines.sqlite import SqliteEngine

    def broken_targets(self, source, ctx):
        raise RuntimeError("password=hunter2 leaked by a library")

    monkeypatch.setattr(SqliteEngine, "targets", broken_targets)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "UNKNOWN"
    run.refresh_from_db()
    assert "hunter2" not in run.error_message and "hunter2" not in run.log
    assert "server log has the details" in run.error_message
    assert "hunter2" in caplog.text  # logged server-side for the operator


# ---------------------------------------------------------------- progress and the time limit


def big_database(path: Path, megabytes: int) -> Path:
    import os

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
        # Random bytes do not compress: the stored file is as big as the source.
        db.executemany("INSERT INTO blobs (data) VALUES (?)", [(os.urandom(64 * 1024),) for _ in range(megabytes * 16)])
    return path


def test_bytes_written_moves_while_the_run_goes(schedule, settings, monkeypatch) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from scheduling import worker

    source = schedule.sources.get()
    big_database(Path(source.path).with_name("big.sqlite3"), 4)
    source.path = str(Path(source.path).with_name("big.sqlite3"))
    source.save()
    monkeypatch.setattr(worker, "PROGRESS_SECONDS", 0)  # every write, to see each step
    run = run_now(schedule, actor=None)
    with CaptureQueriesContext(connection) as queries:
        assert execute_run(str(run.code)) == "succeeded"
    progress = [q["sql"] for q in queries.captured_queries if '"bytes_written" =' in q["sql"]]
    assert len(progress) >= 3  # several updates during the one item, not only at the end
    run.refresh_from_db()
    assert run.bytes_written == BackupSet.objects.get(run=run).size > 4_000_000


def test_progress_updates_are_throttled(schedule, monkeypatch) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from scheduling import worker

    monkeypatch.setattr(worker, "PROGRESS_SECONDS", 3600)
    run = run_now(schedule, actor=None)
    with CaptureQueriesContext(connection) as queries:
        assert execute_run(str(run.code)) == "succeeded"
    progress = [q["sql"] for q in queries.captured_queries if '"bytes_written" =' in q["sql"]]
    assert len(progress) == 1  # only the final one


def test_a_dump_running_past_the_time_limit_is_stopped_as_timeout_and_keeps_nothing(
    schedule, settings, monkeypatch
) -> None:
    """The schedule's real limit (1 minute); the deadline clock jumps 61 s while the
    big source's snapshot is taken, so the stream is stopped at its first read, and
    the next source is not even started."""
    from backups import pipeline
    from backups.runlog import RunLog

    source = schedule.sources.get()
    big_database(Path(source.path), 8)
    add_source(schedule, "Wiki", settings.SOURCE_ROOTS[0] / "wiki.sqlite3")
    schedule.time_limit_minutes = 1
    schedule.max_attempts = 1
    schedule.save()
    offset = [0.0]
    monkeypatch.setattr(pipeline, "clock", lambda: time.monotonic() + offset[0])
    real_log = RunLog.__call__

    def log_and_maybe_jump(self, message: str) -> None:
        real_log(self, message)
        if message.startswith("Snapshot taken"):  # the dump of the first source is under way
            offset[0] += 61

    monkeypatch.setattr(RunLog, "__call__", log_and_maybe_jump)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "TIMEOUT"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error_message.startswith("2 of 2 items failed")
    assert "time limit (1 minute)" in run.error_message
    assert run.log.count("Snapshot taken") == 1  # Wiki was never dumped
    assert not BackupSet.objects.exists()
    assert [p for p in storage.backups_root().rglob("*") if p.is_file()] == []


def test_the_deadline_reader_stops_a_stream_mid_way_and_no_file_is_left(schedule, tmp_path) -> None:
    from backups.errors import BackupError
    from backups.pipeline import DeadlineReader, timeout_error

    big = big_database(tmp_path / "sources" / "big.sqlite3", 4)
    with open(big, "rb") as raw:
        reader = DeadlineReader(raw, time.monotonic() + 3600, timeout_error(schedule))

        def deadline_passes(written: int) -> None:
            reader.deadline = time.monotonic() - 1  # as if the clock ran past it during the dump

        with pytest.raises(BackupError) as caught:
            storage.store_stream("t/big.sqlite3.zst", reader, progress=deadline_passes)  # type: ignore[arg-type]
    assert caught.value.code == "TIMEOUT"
    assert [p for p in storage.backups_root().rglob("*") if p.is_file()] == []


def test_a_failed_dump_never_leaves_its_stored_file(schedule, monkeypatch) -> None:
    """An engine may report the failure only on leaving dump() (a process's exit
    status), after the stream was stored: that file is not a backup."""
    from contextlib import contextmanager

    from backups.engines.sqlite import SqliteEngine
    from backups.errors import BackupError, ErrorCode

    real_dump = SqliteEngine.dump

    @contextmanager
    def dump_failing_at_exit(self, source, target, ctx):
        with real_dump(self, source, target, ctx) as stream:
            yield stream
        raise BackupError(ErrorCode.CONNECTION_FAILED, "the server went away at the end")

    monkeypatch.setattr(SqliteEngine, "dump", dump_failing_at_exit)
    schedule.max_attempts = 1
    schedule.save()
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "CONNECTION_FAILED"
    assert [p for p in storage.backups_root().rglob("*") if p.is_file()] == []


def test_a_failed_progress_update_does_not_fail_the_backup(schedule, monkeypatch) -> None:
    """Regression: a progress UPDATE hitting a locked database raised inside the
    item's work and failed a good backup as UNKNOWN."""
    from django.db import OperationalError

    from scheduling import worker

    def locked(self, written):
        raise OperationalError("database is locked")

    monkeypatch.setattr(worker, "PROGRESS_SECONDS", 0)
    monkeypatch.setattr(worker.Progress, "_write", locked)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"


def test_a_partial_run_can_be_retried_by_hand(schedule, settings) -> None:
    add_source(schedule, "Gone", settings.SOURCE_ROOTS[0] / "gone.sqlite3", rows=0)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "partial"
    run.refresh_from_db()
    again = retry(run, actor=None)
    assert (again.attempt, again.retry_of, again.trigger) == (2, run, Trigger.RETRY)


def test_verify_and_restore_runs_are_not_retried_as_backups(schedule) -> None:
    from scheduling.models import Operation

    run = run_now(schedule, actor=None)
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, operation=Operation.VERIFY)
    run.refresh_from_db()
    with pytest.raises(RunRefused, match="not retried"):
        retry(run, actor=None)
