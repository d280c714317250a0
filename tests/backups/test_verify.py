"""backups.verify called directly on a set the pipeline made: no schedule, no run."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.utils import timezone

from backups import pipeline, storage
from backups.errors import BackupError, ErrorCode
from backups.models import BackupItem, BackupSet, ItemStatus, SourceKind, VerifyStatus
from backups.retention import is_complete
from backups.verify import check_stored_file, verify_set
from tests.backups.jobs import Calls, backed_up, folder_source, job_for, sqlite_source
from tests.helpers import stored_path


def verify(backup_set: BackupSet, deadline: float | None = None) -> tuple[object, list[str]]:
    lines: list[str] = []
    deadline = pipeline.deadline_after(5) if deadline is None else deadline
    verified = verify_set(backup_set, deadline, pipeline.timeout_error(5), lines.append)
    backup_set.refresh_from_db()
    return verified, lines


def flip_a_byte(item: BackupItem, at: int = -10) -> None:
    path = stored_path(item.storage_key)
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def backup_set(tenant) -> BackupSet:
    return backed_up(tenant, [sqlite_source(tenant, "Shop"), folder_source(tenant, "Site")])


def test_a_good_set_verifies_and_the_result_is_kept_on_it(backup_set) -> None:
    before = timezone.now()
    verified, lines = verify(backup_set)
    assert (verified.ok, verified.error_code) == (True, "")
    assert verified.message == "All 2 stored item(s) verified."
    assert backup_set.verify_status == VerifyStatus.OK
    assert backup_set.verify_message == verified.message
    assert backup_set.verified_at is not None and backup_set.verified_at >= before
    assert "“Shop”: verified (SQLite integrity check ok: 1 tables.)" in lines
    assert any(line.startswith("“Site”: verified (") for line in lines)
    assert is_complete(backup_set)


def test_a_flipped_byte_fails_the_verification_and_says_the_file_changed(backup_set) -> None:
    shop = backup_set.items.get(label="Shop")
    flip_a_byte(shop)
    verified, lines = verify(backup_set)
    assert (verified.ok, verified.error_code) == (False, ErrorCode.CORRUPTED)
    assert verified.message == (
        "1 of 2 item(s) failed: “Shop”: The stored file has changed since it was written (sha256 mismatch)."
    )
    assert backup_set.verify_status == VerifyStatus.FAILED
    assert backup_set.verify_message == verified.message
    assert "“Shop”: verification failed: The stored file has changed since it was written (sha256 mismatch)." in lines
    assert any(line.startswith("“Site”: verified (") for line in lines)  # the other item is still checked
    # A set that failed its verification never counts as a good one for retention.
    assert not is_complete(backup_set)


def test_a_missing_stored_file_fails_the_verification(backup_set) -> None:
    site = backup_set.items.get(label="Site")
    stored_path(site.storage_key).unlink()
    verified, _lines = verify(backup_set)
    assert (verified.ok, verified.error_code) == (False, ErrorCode.SOURCE_NOT_FOUND)
    assert verified.message == "1 of 2 item(s) failed: “Site”: The stored file is missing."


def test_check_stored_file_passes_an_intact_file_and_refuses_a_changed_one(backup_set) -> None:
    shop = backup_set.items.get(label="Shop")
    check_stored_file(shop)
    flip_a_byte(shop, at=0)
    with pytest.raises(BackupError) as caught:
        check_stored_file(shop)
    assert caught.value.code == ErrorCode.CORRUPTED
    assert "sha256 mismatch" in caught.value.message


def stored_item(backup_set: BackupSet, key: str, content: bytes, kind: str = SourceKind.SQLITE) -> BackupItem:
    """An item whose stored file holds `content` (compressed, its sha256 recorded)."""
    stored = storage.store_stream(key, io.BytesIO(content))
    return BackupItem.objects.create(
        backup_set=backup_set,
        kind=kind,
        label="Odd",
        storage_key=stored.key,
        size=stored.size,
        source_size=stored.source_size,
        sha256=stored.sha256,
    )


def test_a_file_with_the_recorded_sha256_is_still_checked_by_its_engine(tenant) -> None:
    """The checksum matches (the file is what was written), but what was written is not
    a SQLite database: the engine's own check fails it."""
    backup_set = BackupSet.objects.create(tenant=tenant, created_at=timezone.now())
    stored_item(backup_set, "tests/odd.sqlite3.zst", b"not a database at all")
    verified, _lines = verify(backup_set)
    assert (verified.ok, verified.error_code) == (False, ErrorCode.CORRUPTED)
    assert verified.message == "1 of 1 item(s) failed: “Odd”: The backup is not a SQLite database."


def test_a_file_cut_short_when_it_was_written_fails_as_corrupted(tenant) -> None:
    backup_set = BackupSet.objects.create(tenant=tenant, created_at=timezone.now())
    item = stored_item(backup_set, "tests/odd.sqlite3.zst", b"x" * 1000)
    path = stored_path(item.storage_key)
    path.write_bytes(path.read_bytes()[:-4])  # cut short, and the cut recorded as what was written
    BackupItem.objects.filter(pk=item.pk).update(sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    verified, _lines = verify(backup_set)
    assert (verified.ok, verified.error_code) == (False, ErrorCode.CORRUPTED)
    assert verified.message == "1 of 1 item(s) failed: “Odd”: The stored backup file is incomplete (truncated)."


def test_only_the_stored_items_of_a_partial_set_are_verified(tenant) -> None:
    outcome = pipeline.back_up(
        [sqlite_source(tenant, "Shop"), sqlite_source(tenant, "Gone", rows=0)], job_for(tenant, Calls())
    )
    assert outcome.status == pipeline.PARTIAL and outcome.backup_set is not None
    assert outcome.backup_set.items.filter(status=ItemStatus.FAILED).exists()
    verified, _lines = verify(outcome.backup_set)
    assert verified.ok and verified.message == "All 1 stored item(s) verified."


def test_a_verification_past_its_deadline_fails_with_the_timeout_given(backup_set) -> None:
    verified, _lines = verify(backup_set, deadline=pipeline.clock() - 1)
    assert (verified.ok, verified.error_code) == (False, ErrorCode.TIMEOUT)
    assert verified.message.startswith("2 of 2 item(s) failed: “Shop”: The backup was still going after")
    assert backup_set.verify_status == VerifyStatus.FAILED
