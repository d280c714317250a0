"""backups.pipeline.back_up called directly: sources and a job in, an outcome out.
No schedule and no run exist in these tests: the pipeline needs neither."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sqlite3
import time
import uuid
from contextlib import contextmanager

import pytest

from backups import pipeline, storage
from backups.engines.directory import DirectoryEngine
from backups.engines.sqlite import SqliteEngine
from backups.errors import BackupError, ErrorCode
from backups.models import BackupItem, BackupSet, ItemStatus, SetStatus, SourceKind
from tenants.models import Tenant
from tests.backups.jobs import Calls, folder_source, job_for, root, sqlite_source, stored_files
from tests.helpers import stored_path


def test_two_sources_make_one_complete_set_with_an_item_each(tenant) -> None:
    shop = sqlite_source(tenant, "Shop", rows=50)
    site = folder_source(tenant, "Site")
    calls = Calls()
    outcome = pipeline.back_up([shop, site], job_for(tenant, calls))
    assert (outcome.status, outcome.error_code, outcome.message) == (pipeline.SUCCEEDED, "", "")
    backup_set = outcome.backup_set
    assert backup_set is not None
    assert BackupSet.objects.get() == backup_set
    assert backup_set.tenant_id == tenant.pk and backup_set.status == SetStatus.COMPLETE
    items = list(backup_set.items.order_by("id"))
    assert [(item.label, item.kind, item.source) for item in items] == [
        ("Shop", SourceKind.SQLITE, shop),
        ("Site", SourceKind.DIRECTORY, site),
    ]
    # The keys are the caller's, asked for in order, with the engine's suffix.
    assert [item.storage_key for item in items] == calls.keys
    assert calls.keys[0].endswith("-0.sqlite3.zst") and calls.keys[1].endswith("-1.tar.zst")
    for item in items:
        assert item.status == ItemStatus.OK and not item.error_code and not item.error_message
        stored = stored_path(item.storage_key).read_bytes()
        assert item.size == len(stored) > 0
        assert item.sha256 == hashlib.sha256(stored).hexdigest()
        assert item.source_size > 0
        assert item.started_at is not None and item.finished_at is not None
        assert item.started_at <= item.finished_at
    assert backup_set.size == sum(item.size for item in items)
    assert backup_set.source_size == sum(item.source_size for item in items)
    assert stored_files() == sorted(stored_path(key) for key in calls.keys)


def test_the_stored_sqlite_file_is_the_source_database(tenant, tmp_path) -> None:
    shop = sqlite_source(tenant, "Shop", rows=37)
    outcome = pipeline.back_up([shop], job_for(tenant, Calls()))
    assert outcome.backup_set is not None
    item = outcome.backup_set.items.get()
    copy = tmp_path / "copy.sqlite3"
    with storage.open_decompressed(item.storage_key) as stream:
        copy.write_bytes(stream.read())
    assert item.source_size == copy.stat().st_size
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT count(*), max(label) FROM items").fetchone() == (37, "item 9")


def test_adopt_is_called_once_with_the_new_set_and_its_items(tenant) -> None:
    shop, wiki = sqlite_source(tenant, "Shop"), sqlite_source(tenant, "Wiki")
    seen: list[tuple[BackupSet, list[str]]] = []

    def adopt(backup_set: BackupSet) -> None:
        seen.append((backup_set, list(backup_set.items.order_by("id").values_list("label", flat=True))))

    outcome = pipeline.back_up([shop, wiki], job_for(tenant, Calls(), adopt=adopt))
    assert seen == [(outcome.backup_set, ["Shop", "Wiki"])]


def test_what_adopt_writes_commits_with_the_set(tenant) -> None:
    def adopt(backup_set: BackupSet) -> None:
        Tenant.objects.filter(pk=backup_set.tenant_id).update(name="Adopted")

    pipeline.back_up([sqlite_source(tenant, "Shop")], job_for(tenant, Calls(), adopt=adopt))
    tenant.refresh_from_db()
    assert tenant.name == "Adopted"


def test_a_failing_adopt_leaves_no_set_no_item_no_file_and_undoes_its_own_writes(tenant) -> None:
    """adopt runs inside the transaction that creates the set: if it raises, its own
    writes, the set and its items all roll back, and the stored files are removed."""
    calls = Calls()

    def adopt(backup_set: BackupSet) -> None:
        calls.adopted.append(backup_set)
        Tenant.objects.filter(pk=backup_set.tenant_id).update(name="Adopted")
        raise RuntimeError("the caller could not record the set")

    sources = [sqlite_source(tenant, "Shop"), folder_source(tenant)]
    with pytest.raises(RuntimeError, match="could not record"):
        pipeline.back_up(sources, job_for(tenant, calls, adopt=adopt))
    assert len(calls.adopted) == 1
    assert not BackupSet.objects.exists() and not BackupItem.objects.exists()
    assert stored_files() == []
    tenant.refresh_from_db()
    assert tenant.name == "Alice & Co"


def test_one_failed_source_makes_a_partial_set_that_records_the_failure(tenant) -> None:
    shop = sqlite_source(tenant, "Shop")
    gone = sqlite_source(tenant, "Gone", rows=0)  # its file was never created
    calls = Calls()
    outcome = pipeline.back_up([gone, shop], job_for(tenant, calls))
    assert outcome.status == pipeline.PARTIAL
    assert outcome.error_code == ErrorCode.SOURCE_NOT_FOUND
    assert outcome.message.startswith("1 of 2 items failed: “Gone” (SOURCE_NOT_FOUND: ")
    backup_set = outcome.backup_set
    assert backup_set is not None and calls.adopted == [backup_set]
    assert backup_set.status == SetStatus.PARTIAL
    failed, good = backup_set.items.order_by("id")
    assert (failed.label, failed.source, failed.status) == ("Gone", gone, ItemStatus.FAILED)
    assert failed.error_code == ErrorCode.SOURCE_NOT_FOUND
    assert "does not exist" in failed.error_message and failed.error_message in outcome.message
    assert (failed.storage_key, failed.size, failed.source_size, failed.sha256) == ("", 0, 0, "")
    assert (good.label, good.status) == ("Shop", ItemStatus.OK)
    assert backup_set.size == good.size and backup_set.source_size == good.source_size
    assert stored_files() == [stored_path(good.storage_key)]
    assert any(line.startswith("“Gone” failed: SOURCE_NOT_FOUND: ") for line in calls.lines)
    assert calls.lines[-1].startswith("Partial: 1 of 2 items stored.")


def test_when_every_source_fails_there_is_no_set_and_the_first_error_code_is_the_outcomes(tenant, tmp_path) -> None:
    (tmp_path / "secret.sqlite3").touch()
    outside = sqlite_source(tenant, "Outside", rows=0)
    outside.path = str(tmp_path / "secret.sqlite3")  # not under the tenant's file root
    outside.save()
    gone = sqlite_source(tenant, "Gone", rows=0)
    calls = Calls()
    outcome = pipeline.back_up([outside, gone], job_for(tenant, calls))
    assert outcome.status == pipeline.FAILED and outcome.backup_set is None
    assert outcome.error_code == ErrorCode.PERMISSION_DENIED
    assert outcome.message.startswith("2 of 2 items failed: “Outside” (PERMISSION_DENIED: ")
    assert "“Gone” (SOURCE_NOT_FOUND: " in outcome.message
    assert calls.adopted == []
    assert not BackupSet.objects.exists() and not BackupItem.objects.exists()
    assert stored_files() == []
    assert calls.lines[-1] == "Failed: no item could be stored (2 failed)."


def test_a_single_failed_source_gives_its_own_message(tenant) -> None:
    outcome = pipeline.back_up([sqlite_source(tenant, "Gone", rows=0)], job_for(tenant, Calls()))
    assert outcome.status == pipeline.FAILED and outcome.error_code == ErrorCode.SOURCE_NOT_FOUND
    assert outcome.message == f"The SQLite file {root() / 'gone.sqlite3'} does not exist."


def test_no_source_is_started_once_the_deadline_has_passed(tenant) -> None:
    calls = Calls()
    job = job_for(tenant, calls, deadline=pipeline.clock() - 1)
    outcome = pipeline.back_up([sqlite_source(tenant, "Shop"), folder_source(tenant)], job)
    assert outcome.status == pipeline.FAILED and outcome.error_code == ErrorCode.TIMEOUT
    assert outcome.message.startswith("2 of 2 items failed")
    assert "time limit (5 minutes)" in outcome.message
    assert not any(line.startswith("Snapshot taken") for line in calls.lines)
    assert not BackupSet.objects.exists() and stored_files() == []


def test_a_deadline_passing_mid_dump_stops_it_as_timeout_and_keeps_its_file_out(tenant, monkeypatch) -> None:
    """The clock jumps past the deadline while the first source's snapshot is read: the
    stream stops at its next read (the job's timeout error), no file of it is left, and
    the next source is never started."""
    offset = [0.0]
    monkeypatch.setattr(pipeline, "clock", lambda: time.monotonic() + offset[0])
    calls = Calls()

    def log(line: str) -> None:
        calls.lines.append(line)
        if line.startswith("Snapshot taken"):
            offset[0] += 3600

    job = job_for(tenant, calls)
    job.log = log
    outcome = pipeline.back_up([sqlite_source(tenant, "Shop"), sqlite_source(tenant, "Wiki")], job)
    assert outcome.status == pipeline.FAILED and outcome.error_code == ErrorCode.TIMEOUT
    assert outcome.message.count("(TIMEOUT: The backup was still going after") == 2
    assert sum(line.startswith("Snapshot taken") for line in calls.lines) == 1
    assert stored_files() == []


def test_a_deadline_passing_after_the_first_item_keeps_it_in_a_partial_set(tenant, monkeypatch) -> None:
    offset = [0.0]
    monkeypatch.setattr(pipeline, "clock", lambda: time.monotonic() + offset[0])
    calls = Calls()

    def log(line: str) -> None:
        calls.lines.append(line)
        if line.startswith("“Shop”: stored"):
            offset[0] += 3600

    job = job_for(tenant, calls)
    job.log = log
    outcome = pipeline.back_up([sqlite_source(tenant, "Shop"), sqlite_source(tenant, "Wiki")], job)
    assert outcome.status == pipeline.PARTIAL and outcome.error_code == ErrorCode.TIMEOUT
    assert outcome.backup_set is not None
    statuses = list(outcome.backup_set.items.order_by("id").values_list("label", "status", "error_code"))
    assert statuses == [("Shop", ItemStatus.OK, ""), ("Wiki", ItemStatus.FAILED, ErrorCode.TIMEOUT)]
    assert job.timeout.message in outcome.message


def test_progress_is_reported_in_growing_byte_counts_up_to_the_sets_size(tenant) -> None:
    calls = Calls()
    outcome = pipeline.back_up(
        [sqlite_source(tenant, "Shop", rows=2000), folder_source(tenant)], job_for(tenant, calls)
    )
    assert outcome.backup_set is not None
    first, _second = outcome.backup_set.items.order_by("id")
    assert len(calls.progress) >= 2
    assert calls.progress == sorted(calls.progress)  # never goes back
    assert calls.progress[-1] == outcome.backup_set.size
    # Once the first item is stored the count says so, and the second item adds to it.
    assert first.size in calls.progress
    assert any(count > first.size for count in calls.progress)


def test_progress_keeps_what_was_stored_when_an_item_fails(tenant) -> None:
    calls = Calls()
    outcome = pipeline.back_up(
        [sqlite_source(tenant, "Shop"), sqlite_source(tenant, "Gone", rows=0)], job_for(tenant, calls)
    )
    assert outcome.backup_set is not None
    assert calls.progress == sorted(calls.progress)
    assert calls.progress[-1] == outcome.backup_set.size


def test_the_log_sink_hears_each_source_its_dump_and_what_was_stored(tenant) -> None:
    calls = Calls()
    outcome = pipeline.back_up([sqlite_source(tenant, "Shop"), folder_source(tenant)], job_for(tenant, calls))
    assert outcome.backup_set is not None
    shop, site = outcome.backup_set.items.order_by("id")
    assert "Source “Shop” (SQLite database file)." in calls.lines
    assert any(line.startswith("Snapshot taken with the online backup API: 1 tables") for line in calls.lines)
    assert f"“Shop”: stored {shop.size} bytes (from {shop.source_size}), sha256 {shop.sha256}." in calls.lines
    assert any(line.startswith("Source “Site” (") for line in calls.lines)
    assert f"“Site”: stored {site.size} bytes (from {site.source_size}), sha256 {site.sha256}." in calls.lines
    # In order: a source is announced before its item is stored.
    assert calls.lines.index("Source “Shop” (SQLite database file).") < calls.lines.index(
        f"“Shop”: stored {shop.size} bytes (from {shop.source_size}), sha256 {shop.sha256}."
    )


def test_the_log_sink_hears_how_much_is_written_while_an_item_goes(tenant, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "PROGRESS_LOG_SECONDS", 0.0)
    calls = Calls()
    pipeline.back_up([sqlite_source(tenant, "Shop")], job_for(tenant, calls))
    assert any(line.startswith("“Shop”: ") and line.endswith("MB written so far (compressed).") for line in calls.lines)


def test_an_unexpected_error_is_unknown_and_its_details_go_to_the_server_log_only(tenant, monkeypatch, caplog) -> None:
    def broken_dump(self, source, target, ctx):
        raise ValueError("secret detail")

    monkeypatch.setattr(DirectoryEngine, "dump", broken_dump)
    calls = Calls()
    with caplog.at_level(logging.ERROR, logger="backups.pipeline"):
        outcome = pipeline.back_up([folder_source(tenant), sqlite_source(tenant, "Shop")], job_for(tenant, calls))
    assert outcome.status == pipeline.PARTIAL and outcome.error_code == ErrorCode.UNKNOWN
    assert pipeline.UNEXPECTED_MESSAGE in outcome.message and "secret detail" not in outcome.message
    assert not any("secret detail" in line for line in calls.lines)
    assert "test backup: backing up 'Site' failed unexpectedly" in caplog.text
    assert "secret detail" in caplog.text


def test_a_dump_that_fails_on_leaving_never_keeps_its_stored_file(tenant, monkeypatch) -> None:
    real_dump = SqliteEngine.dump

    @contextmanager
    def dump_failing_at_exit(self, source, target, ctx):
        with real_dump(self, source, target, ctx) as stream:
            yield stream
        raise BackupError(ErrorCode.CONNECTION_FAILED, "the end went wrong")

    monkeypatch.setattr(SqliteEngine, "dump", dump_failing_at_exit)
    outcome = pipeline.back_up([sqlite_source(tenant, "Shop")], job_for(tenant, Calls()))
    assert (outcome.status, outcome.error_code, outcome.message) == (
        pipeline.FAILED,
        ErrorCode.CONNECTION_FAILED,
        "the end went wrong",
    )
    assert stored_files() == []


def test_the_set_joins_the_series_its_job_names(tenant) -> None:
    # An opaque key for the caller (the worker gives its schedule's code); none by default.
    calls = Calls()
    series = uuid.uuid4()
    job = dataclasses.replace(job_for(tenant, calls), series=series)
    named = pipeline.back_up([sqlite_source(tenant, "Shop")], job).backup_set
    other = sqlite_source(tenant, "Other", file_name="other.sqlite3")
    unnamed = pipeline.back_up([other], job_for(tenant, calls)).backup_set
    assert named is not None and unnamed is not None
    assert (BackupSet.objects.get(pk=named.pk).series, BackupSet.objects.get(pk=unnamed.pk).series) == (series, None)
