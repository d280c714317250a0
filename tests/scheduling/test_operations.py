"""Verify and restore as runs: requested with access checks, executed by the task."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.http import Http404

from backups import storage
from backups.engines.base import RestoreTarget
from backups.models import BackupSet, BackupSource, ItemStatus, VerifyStatus
from scheduling.dispatch import run_pass
from scheduling.models import (
    BackupSchedule,
    BackupScheduleRun,
    Notification,
    NotificationKind,
    Operation,
    RunStatus,
    ScheduleSource,
)
from scheduling.operations import OperationRefused, request_restore, request_verify
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tenants.models import AuditAction, AuditLog
from tests.conftest import make_sqlite_database
from tests.helpers import drain, queued_tasks, stored_path


def backed_up(schedule: BackupSchedule) -> BackupSet:
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    queued_tasks()  # the run-now task, executed above
    return BackupSet.objects.get(run=run)


def table_checksums(path: Path) -> dict[str, str]:
    """Every table's rows, in rowid order, hashed: equal checksums mean equal contents."""
    sums = {}
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            digest = hashlib.sha256()
            for row in db.execute(f'SELECT * FROM "{table}" ORDER BY rowid'):
                digest.update(repr(row).encode())
            sums[table] = digest.hexdigest()
    return sums


def flip_a_byte(key: str, offset: int = 20) -> None:
    path = stored_path(key)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- verify


def test_verifying_a_good_set_records_ok_on_it(schedule, bob, django_capture_on_commit_callbacks) -> None:
    backup_set = backed_up(schedule)
    with django_capture_on_commit_callbacks(execute=True):
        run = request_verify(backup_set, bob)
    assert (run.operation, run.subject_set, run.status, run.requested_by) == (
        Operation.VERIFY,
        backup_set,
        RunStatus.QUEUED,
        bob,
    )
    assert drain() == ["succeeded"]
    backup_set.refresh_from_db()
    assert backup_set.verify_status == VerifyStatus.OK and backup_set.verified_at is not None
    assert "1 stored item(s) verified" in backup_set.verify_message
    run.refresh_from_db()
    assert "SQLite integrity check ok" in run.log
    assert AuditLog.objects.filter(action=AuditAction.VERIFY_REQUESTED, actor=bob).count() == 1
    assert AuditLog.objects.get(action=AuditAction.SET_VERIFIED).details["status"] == "ok"


def test_a_flipped_byte_fails_verification(schedule, bob) -> None:
    backup_set = backed_up(schedule)
    flip_a_byte(backup_set.items.get().storage_key)
    run = request_verify(backup_set, bob)
    assert execute_run(str(run.code)) == "CORRUPTED"
    backup_set.refresh_from_db()
    assert backup_set.verify_status == VerifyStatus.FAILED
    assert "sha256 mismatch" in backup_set.verify_message
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.error_message.startswith("Verification failed.")
    assert AuditLog.objects.get(action=AuditAction.SET_VERIFIED).details["status"] == "failed"


def rewrite_with_matching_checksum(item, mangle) -> None:
    """Change the stored bytes and record their checksum, as if the file had been written broken."""
    path = stored_path(item.storage_key)
    data = mangle(bytearray(path.read_bytes()))
    path.write_bytes(bytes(data))
    item.sha256 = hashlib.sha256(data).hexdigest()
    item.save()


def test_a_file_that_does_not_decompress_fails_verification(schedule, bob) -> None:
    backup_set = backed_up(schedule)

    def break_the_frame(data: bytearray) -> bytearray:
        data[0:4] = b"\x00\x00\x00\x00"  # no zstd frame magic
        return data

    rewrite_with_matching_checksum(backup_set.items.get(), break_the_frame)
    run = request_verify(backup_set, bob)
    assert execute_run(str(run.code)) == "CORRUPTED"
    backup_set.refresh_from_db()
    assert backup_set.verify_status == VerifyStatus.FAILED
    assert "not a zstd file" in backup_set.verify_message or "does not decompress" in backup_set.verify_message


def test_a_file_that_decompresses_to_a_broken_database_fails_the_engine_check(schedule, bob) -> None:
    backup_set = backed_up(schedule)

    def flip(data: bytearray) -> bytearray:
        data[200] ^= 0xFF  # inside the compressed pages: zstd itself does not notice
        return data

    rewrite_with_matching_checksum(backup_set.items.get(), flip)
    run = request_verify(backup_set, bob)
    assert execute_run(str(run.code)) == "CORRUPTED"
    backup_set.refresh_from_db()
    assert backup_set.verify_status == VerifyStatus.FAILED
    assert "SQLite" in backup_set.verify_message or "does not decompress" in backup_set.verify_message


def test_a_missing_file_fails_verification(schedule, bob) -> None:
    backup_set = backed_up(schedule)
    storage.delete(backup_set.items.get().storage_key)
    run = request_verify(backup_set, bob)
    assert execute_run(str(run.code)) == "SOURCE_NOT_FOUND"
    backup_set.refresh_from_db()
    assert "The stored file is missing" in backup_set.verify_message


def test_verify_needs_operator(schedule, rita, charlie, alice) -> None:
    backup_set = backed_up(schedule)
    with pytest.raises(PermissionDenied):
        request_verify(backup_set, rita)
    with pytest.raises(Http404):
        request_verify(backup_set, charlie)
    assert request_verify(backup_set, alice).operation == Operation.VERIFY


def test_a_pruned_set_cannot_be_verified(schedule, bob) -> None:
    backup_set = backed_up(schedule)
    BackupSet.objects.filter(pk=backup_set.pk).update(deleted_at=datetime.now(UTC))
    with pytest.raises(OperationRefused, match="deleted by retention"):
        request_verify(backup_set, bob)


def test_a_queued_verify_does_not_hold_up_the_schedules_backups(schedule, bob) -> None:
    """Regression: the dispatcher counted any active run as busy, so a verify
    waiting in the queue made the schedule's slot skip."""
    backup_set = backed_up(schedule)
    request_verify(backup_set, bob)
    slot = datetime(2026, 11, 24, 1, 30, tzinfo=UTC)
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=slot)
    report = run_pass(slot)
    assert (report.created, report.skipped) == (1, 0)
    assert run_now is not None and BackupScheduleRun.objects.filter(slot=slot, status=RunStatus.QUEUED).exists()


# ---------------------------------------------------------------- restore


def test_a_restore_goes_into_a_new_file_that_matches_the_source(schedule, source, alice) -> None:
    backup_set = backed_up(schedule)
    run = request_restore(backup_set, alice)
    (entry,) = run.restore_target["items"]
    target = Path(entry["path"])
    assert target.parent == Path(source.path).parent and "-restore-" in target.name and not target.exists()
    assert entry["overwrite"] is False
    assert execute_run(str(run.code)) == "succeeded"
    assert table_checksums(target) == table_checksums(Path(source.path))
    run.refresh_from_db()
    assert f"into {target}" in run.log
    assert AuditLog.objects.get(action=AuditAction.RESTORE_REQUESTED).details["targets"] == [str(target)]
    assert AuditLog.objects.get(action=AuditAction.RESTORE_FINISHED).details["status"] == "succeeded"
    finished = Notification.objects.get(user=alice, kind=NotificationKind.RESTORE_FINISHED)
    assert finished.title == f"Restore for “{schedule.name}” finished" and finished.run_id == run.pk


def test_a_restore_into_a_named_file_beside_the_source(schedule, source, alice) -> None:
    backup_set = backed_up(schedule)
    run = request_restore(backup_set, alice, target=RestoreTarget(path="copy.sqlite3"))
    assert execute_run(str(run.code)) == "succeeded"
    copy = Path(source.path).with_name("copy.sqlite3")
    assert table_checksums(copy) == table_checksums(Path(source.path))


def test_overwriting_needs_the_targets_name_typed_exactly(schedule, source, alice, settings) -> None:
    backup_set = backed_up(schedule)
    existing = make_sqlite_database(settings.SOURCE_ROOTS[0] / "live.sqlite3", rows=3)
    with pytest.raises(OperationRefused, match="exists. To replace it"):
        request_restore(backup_set, alice, target=RestoreTarget(path=str(existing)))
    with pytest.raises(OperationRefused, match="Type its name"):
        request_restore(backup_set, alice, target=RestoreTarget(path=str(existing), overwrite=True))
    with pytest.raises(OperationRefused, match="Type its name"):
        request_restore(backup_set, alice, target=RestoreTarget(path=str(existing), overwrite=True), confirm="live")
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()
    assert table_checksums(existing) != table_checksums(Path(source.path))
    run = request_restore(
        backup_set, alice, target=RestoreTarget(path=str(existing), overwrite=True), confirm=str(existing)
    )
    assert run.restore_target["items"][0]["overwrite"] is True
    assert execute_run(str(run.code)) == "succeeded"
    assert table_checksums(existing) == table_checksums(Path(source.path))


def test_a_target_outside_the_tenants_folders_is_refused(schedule, alice, tmp_path) -> None:
    backup_set = backed_up(schedule)
    with pytest.raises(OperationRefused, match="outside the folders"):
        request_restore(backup_set, alice, target=RestoreTarget(path=str(tmp_path / "x.sqlite3")))
    with pytest.raises(OperationRefused, match="outside the folders"):
        request_restore(backup_set, alice, target=RestoreTarget(path="../../escape.sqlite3"))


def test_only_owners_may_restore(schedule, alice, mia, bob, rita, charlie) -> None:
    backup_set = backed_up(schedule)
    for member in (mia, bob, rita):
        with pytest.raises(PermissionDenied):
            request_restore(backup_set, member)
    with pytest.raises(Http404):
        request_restore(backup_set, charlie)
    with pytest.raises(OperationRefused):
        request_restore(backup_set, None)
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()
    assert request_restore(backup_set, alice).operation == Operation.RESTORE


def test_a_corrupted_file_is_never_restored(schedule, alice) -> None:
    backup_set = backed_up(schedule)
    flip_a_byte(backup_set.items.get().storage_key)
    run = request_restore(backup_set, alice)
    target = Path(run.restore_target["items"][0]["path"])
    assert execute_run(str(run.code)) == "CORRUPTED"
    assert not target.exists()
    run.refresh_from_db()
    assert "sha256 mismatch" in run.error_message
    failed = Notification.objects.get(user=alice, kind=NotificationKind.RUN_FAILED)
    assert failed.title == f"Restore for “{schedule.name}” failed" and failed.run_id == run.pk
    assert failed.message.startswith("CORRUPTED: ")


def test_a_set_of_several_items_restores_each_to_its_own_new_file(schedule, source, alice, settings) -> None:
    wiki_path = make_sqlite_database(settings.SOURCE_ROOTS[0] / "wiki.sqlite3", rows=11)
    wiki = BackupSource.objects.create(tenant=schedule.tenant, name="Wiki", path=str(wiki_path))
    ScheduleSource.objects.create(schedule=schedule, source=wiki)
    backup_set = backed_up(schedule)
    with pytest.raises(OperationRefused, match="holds 2 items"):
        request_restore(backup_set, alice, target=RestoreTarget(path="one.sqlite3"))
    with pytest.raises(OperationRefused, match="no item 3"):
        request_restore(backup_set, alice, item=3)
    run = request_restore(backup_set, alice)
    assert execute_run(str(run.code)) == "succeeded"
    targets = {entry["label"]: Path(entry["path"]) for entry in run.restore_target["items"]}
    assert table_checksums(targets["Shop"]) == table_checksums(Path(source.path))
    assert table_checksums(targets["Wiki"]) == table_checksums(wiki_path)
    only_wiki = request_restore(backup_set, alice, item=2, target=RestoreTarget(path="wiki-copy.sqlite3"))
    assert [entry["label"] for entry in only_wiki.restore_target["items"]] == ["Wiki"]


def test_a_failed_item_cannot_be_restored(schedule, alice, settings) -> None:
    gone = BackupSource.objects.create(
        tenant=schedule.tenant, name="Gone", path=str(settings.SOURCE_ROOTS[0] / "gone.sqlite3")
    )
    ScheduleSource.objects.create(schedule=schedule, source=gone)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "partial"
    backup_set = BackupSet.objects.get(run=run)
    failed_number = [item.status for item in backup_set.items.order_by("id")].index(ItemStatus.FAILED) + 1
    with pytest.raises(OperationRefused, match="failed in its backup"):
        request_restore(backup_set, alice, item=failed_number)
    # The whole set: only its stored item.
    restore = request_restore(backup_set, alice)
    assert [entry["label"] for entry in restore.restore_target["items"]] == ["Shop"]


def test_restore_targets_hold_no_secret(schedule, alice) -> None:
    backup_set = backed_up(schedule)
    run = request_restore(backup_set, alice)
    assert set(run.restore_target["items"][0]) == {"item", "label", "database", "path", "overwrite", "extra"}


def test_a_verify_run_does_not_change_the_schedules_last_backup_status(schedule, bob) -> None:
    backup_set = backed_up(schedule)
    BackupSchedule.objects.filter(pk=schedule.pk).update(last_status=RunStatus.FAILED)
    run = request_verify(backup_set, bob)
    assert execute_run(str(run.code)) == "succeeded"
    schedule.refresh_from_db()
    assert schedule.last_status == RunStatus.FAILED
