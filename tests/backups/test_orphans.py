"""Stored files no backup item names (a worker killed between the file and its set, a set
that could not be recorded): the sweep finds them on disk, judges them by the database,
and removes them once older than any run may last; never a named one, never through a link."""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backups import orphans, storage, sweep
from backups.models import BackupItem, BackupSet
from tests.backups.jobs import backed_up, sqlite_source
from tests.backups.test_storage import bucket, moto_endpoint, s3_settings  # noqa: F401 (fixtures)
from tests.helpers import stored_exists, stored_path

OLD = orphans.orphan_after() + timedelta(minutes=5)


def age(path: Path, by: timedelta = OLD) -> None:
    then = time.time() - by.total_seconds()
    os.utime(path, (then, then), follow_symlinks=False)


def store(key: str, data: bytes = b"a complete backup, but no set names it\n" * 100) -> Path:
    """A real stored file under `key`, written as a backup is (zstd, atomic rename)."""
    import io

    storage.store_stream(key, io.BytesIO(data))
    return stored_path(key)


@pytest.fixture
def named(tenant) -> Path:
    """A backup set's stored file, old: the database names it, so it is never an orphan."""
    backup_set = backed_up(tenant, [sqlite_source(tenant, "Shop")])
    path = stored_path(backup_set.items.get().storage_key)
    age(path)
    return path


def test_the_settings_age_is_longer_than_any_run(settings) -> None:
    from lib.slots import MAX_TIME_LIMIT_MINUTES

    assert orphans.orphan_after() > timedelta(minutes=MAX_TIME_LIMIT_MINUTES)
    assert settings.BACKUPS_ORPHAN_MIN_HOURS * 60 > MAX_TIME_LIMIT_MINUTES


def test_an_old_file_no_item_names_is_removed_and_a_named_or_young_one_is_kept(tenant, named, settings) -> None:
    orphan = store("t1/s1/20260101T000000Z-run-0.sqlite3.zst")
    age(orphan)
    young = store("t1/s1/20260102T000000Z-run-0.sqlite3.zst")  # may be a run's still going
    temporary = orphan.with_name(".tmp-" + "1" * 32 + "-0.sqlite3.zst")  # backups.sweep's business
    temporary.write_bytes(b"partial")
    age(temporary)
    size = orphan.stat().st_size

    report = orphans.sweep_orphan_files(dry_run=True)
    assert report.removed == ["t1/s1/20260101T000000Z-run-0.sqlite3.zst"] and report.removed_bytes == size
    assert orphan.exists()  # a dry run removes nothing
    assert (report.checked, report.kept_young) == (2, 1)

    report = orphans.sweep_orphan_files()
    assert report.removed == ["t1/s1/20260101T000000Z-run-0.sqlite3.zst"] and report.errors == []
    assert not orphan.exists()
    assert named.exists() and young.exists() and temporary.exists()
    assert orphans.sweep_orphan_files().removed == []


def test_a_database_that_names_no_stored_file_sweeps_nothing(tenant) -> None:
    """A new install, or a wrong DATABASE_URL pointed at this folder: every file would look
    like an orphan, so nothing is judged at all."""
    orphan = store("t1/s1/old.sqlite3.zst")
    age(orphan)
    report = orphans.sweep_orphan_files()
    assert report.no_items and report.removed == [] and orphan.exists()


def test_a_symlinked_folder_or_file_in_the_backups_tree_is_never_followed(tenant, named, settings, tmp_path) -> None:
    outside = tmp_path / "elsewhere"
    (outside / "s1").mkdir(parents=True)
    victim = outside / "s1" / "old.sqlite3.zst"
    victim.write_bytes(b"not ours")
    age(victim)
    root = Path(settings.BACKUPS_DIR)
    (root / "linked-tenant").symlink_to(outside)  # a folder
    (root / "t1").mkdir(exist_ok=True)
    (root / "t1" / "linked.sqlite3.zst").symlink_to(victim)  # a file
    age(root / "t1" / "linked.sqlite3.zst")

    report = orphans.sweep_orphan_files()
    assert report.removed == [] and report.errors == []
    assert sorted(report.links) == ["linked-tenant", "t1/linked.sqlite3.zst"]
    assert victim.read_bytes() == b"not ours" and (root / "t1" / "linked.sqlite3.zst").is_symlink()


def test_a_folder_swapped_for_a_symlink_after_the_listing_is_not_removed_through(
    tenant, named, settings, tmp_path
) -> None:
    """The walk lists a folder, then (before the removal) the folder is replaced by a link
    to another one holding a file of the same name: the removal opens the folders again
    without following links, so it refuses, and the other file stays."""
    orphan = store("t1/s1/old.sqlite3.zst")
    age(orphan)
    root = Path(settings.BACKUPS_DIR)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        report = orphans.OrphanReport()
        (found,) = [f for f in orphans._local_files(root_fd, (), time.time(), report) if f.key.startswith("t1/")]
        decoy = tmp_path / "decoy"
        decoy.mkdir()
        (decoy / "old.sqlite3.zst").write_bytes(b"another tenant's file")
        os.rename(root / "t1" / "s1", tmp_path / "moved")
        (root / "t1" / "s1").symlink_to(decoy)
        assert orphans._remove_local(root_fd, found, report) is False
    finally:
        os.close(root_fd)
    assert (decoy / "old.sqlite3.zst").read_bytes() == b"another tenant's file"
    assert "symlink" in report.errors[0]
    # And a file replaced by another under the same name is not the one that was judged.
    (root / "t1" / "s1").unlink()
    os.rename(tmp_path / "moved", root / "t1" / "s1")
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        orphan.unlink()
        replaced = store("t1/s1/old.sqlite3.zst", b"new")
        assert orphans._remove_local(root_fd, found, orphans.OrphanReport()) is False
    finally:
        os.close(root_fd)
    assert replaced.exists()


def many_files(tenant, count: int, named_every: int = 2) -> None:  # type: ignore[no-untyped-def]
    """`count` old files in a few folders, every `named_every`-th named by an item."""
    backup_set = BackupSet.objects.create(tenant=tenant, created_at=timezone.now())
    items = []
    for i in range(count):
        key = f"t{i % 3}/s{i % 5}/{i:05d}.sqlite3.zst"
        path = stored_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
        age(path)
        if i % named_every == 0:
            items.append(BackupItem(backup_set=backup_set, kind="sqlite", label=key, storage_key=key))
    BackupItem.objects.bulk_create(items)


@pytest.mark.parametrize("count", [6, 300])
def test_the_sweep_costs_the_same_statements_for_few_files_as_for_many(tenant, named, count) -> None:
    many_files(tenant, count)
    with CaptureQueriesContext(connection) as queries:
        report = orphans.sweep_orphan_files(dry_run=True)
    assert len(report.removed) == count // 2 and report.checked == count + 1
    # One to see that the database names stored files at all, one per batch of keys.
    assert len(queries) == 2


def test_keys_are_checked_a_batch_at_a_time(tenant, named) -> None:
    many_files(tenant, 120)
    with CaptureQueriesContext(connection) as queries:
        report = orphans.sweep_orphan_files(dry_run=True, batch=50)
    assert len(report.removed) == 60
    assert len(queries) == 1 + 3  # 121 keys: 50 + 50 + 21


def test_s3_orphans_are_listed_and_removed_and_named_objects_kept(tenant, s3_settings) -> None:  # noqa: F811
    backup_set = backed_up(tenant, [sqlite_source(tenant, "Shop")])
    named_key = backup_set.items.get().storage_key
    import io

    storage.store_stream("t1/s1/orphan.sqlite3.zst", io.BytesIO(b"no set names it"))
    storage.store_stream("t1/s1/young.sqlite3.zst", io.BytesIO(b"no set names it yet"))
    # Objects cannot be aged in a bucket: judge them with a cutoff in the future instead,
    # after a young one was told apart with the real age.
    assert orphans.sweep_orphan_files().removed == []
    report = orphans.sweep_orphan_files(older_than=-timedelta(minutes=5))
    assert not report.local and sorted(report.removed) == ["t1/s1/orphan.sqlite3.zst", "t1/s1/young.sqlite3.zst"]
    assert stored_exists(named_key) and not stored_exists("t1/s1/orphan.sqlite3.zst")


@pytest.mark.django_db(transaction=True)  # the sweeper thread has its own connection
def test_the_clusters_sweeper_removes_orphans(tenant, settings) -> None:
    backed = backed_up(tenant, [sqlite_source(tenant, "Shop")])
    age(stored_path(backed.items.get().storage_key))
    orphan = store("t1/s1/old.sqlite3.zst")
    age(orphan)
    stop = threading.Event()
    worker = threading.Thread(target=sweep.run_sweeper, args=(stop, 0.05, 0.01))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while orphan.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(30)
    assert not orphan.exists()
    assert stored_exists(backed.items.get().storage_key)


def test_the_command_lists_in_a_dry_run_and_then_removes(tenant, named) -> None:
    from io import StringIO

    from django.core.management import call_command

    orphan = store("t1/s1/old.sqlite3.zst")
    age(orphan)
    out = StringIO()
    call_command("sweep_orphans", "--dry-run", stdout=out)
    assert "Would remove t1/s1/old.sqlite3.zst" in out.getvalue() and orphan.exists()
    out = StringIO()
    call_command("sweep_orphans", stdout=out)
    assert "Removed 1 file(s)" in out.getvalue() and not orphan.exists() and named.exists()
