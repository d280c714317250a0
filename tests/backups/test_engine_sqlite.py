from __future__ import annotations

import hashlib
import io
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from backups import storage
from backups.engines.base import DumpContext, DumpTarget, RestoreTarget
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupSource, SourceKind

ENGINE = engine_for(SourceKind.SQLITE)
QUIET = DumpContext(log=lambda _: None)


def make_rich_database(path: Path) -> Path:
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, note TEXT, score REAL, photo BLOB);
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers(id), total NUMERIC);
            CREATE INDEX orders_by_customer ON orders(customer);
            CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100;
            CREATE TRIGGER orders_touch AFTER INSERT ON orders BEGIN SELECT 1; END;
            """
        )
        db.executemany(
            "INSERT INTO customers (name, note, score, photo) VALUES (?, ?, ?, ?)",
            [(f"Zoë {i} — 日本", None if i % 3 else "n", i / 7, bytes([i % 256]) * 50) for i in range(2000)],
        )
        db.executemany("INSERT INTO orders (customer, total) VALUES (?, ?)", [(i % 2000 + 1, i) for i in range(5000)])
    return path


def table_checksums(path: Path) -> dict[str, str]:
    """sha256 of every table's rows in primary-key order, plus the schema."""
    with sqlite3.connect(path) as db:
        sums = {
            "schema": hashlib.sha256(
                repr(db.execute("SELECT sql FROM sqlite_master ORDER BY name").fetchall()).encode()
            ).hexdigest()
        }
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall():
            rows = db.execute(f'SELECT * FROM "{table}" ORDER BY rowid').fetchall()
            sums[table] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return sums


@pytest.fixture
def rich_source(tenant, settings) -> BackupSource:
    path = make_rich_database(settings.SOURCE_ROOTS[0] / "crm.sqlite3")
    return BackupSource.objects.create(tenant=tenant, name="CRM", kind=SourceKind.SQLITE, path=str(path))


def back_up(source: BackupSource, key: str = "t/crm.sqlite3.zst") -> str:
    with ENGINE.dump(source, DumpTarget(label=source.name), QUIET) as stream:
        return storage.store_stream(key, stream).key


def restore(source: BackupSource, key: str, to: RestoreTarget) -> str:
    with storage.open_decompressed(key) as stream:
        return ENGINE.restore(source, DumpTarget(label=source.name), stream, to, QUIET)


def test_a_database_restores_into_a_new_file_with_every_table_identical(rich_source) -> None:
    source_path = Path(rich_source.path)
    before = table_checksums(source_path)
    key = back_up(rich_source)
    target = ENGINE.default_restore_target(rich_source, DumpTarget(label="CRM"), "20261127T0200Z")
    assert target.path == str(source_path.with_name("crm-restore-20261127T0200Z.sqlite3")) and not target.overwrite
    summary = restore(rich_source, key, target)
    assert summary == f"Restored 2 tables into {target.path}."
    assert table_checksums(Path(target.path)) == before
    assert table_checksums(source_path) == before  # the source is untouched
    assert sorted(p.name for p in source_path.parent.iterdir()) == ["crm-restore-20261127T0200Z.sqlite3", "crm.sqlite3"]


def test_verify_accepts_a_good_backup_and_counts_its_tables(rich_source) -> None:
    key = back_up(rich_source)
    with storage.open_decompressed(key) as stream:
        assert ENGINE.verify_stream(stream, QUIET) == "SQLite integrity check ok: 2 tables."


def decompressed(key: str) -> bytes:
    with storage.open_decompressed(key) as stream:
        return stream.read()


def corrupted(data: bytes) -> bytes:
    """Page 3 and on overwritten: the header still says SQLite, the b-trees are broken."""
    page_size = int.from_bytes(data[16:18], "big")
    return data[: 2 * page_size] + b"\xff" * (len(data) - 2 * page_size)


@pytest.mark.parametrize(
    "damage", [lambda data: data[: len(data) // 2], corrupted, lambda data: b"not a database at all" * 100]
)
def test_verify_rejects_a_truncated_or_damaged_database(rich_source, damage) -> None:
    data = decompressed(back_up(rich_source))
    with pytest.raises(BackupError):
        ENGINE.verify_stream(io.BytesIO(damage(data)), QUIET)


def test_a_restore_refuses_an_existing_file_unless_overwrite_is_confirmed(rich_source, settings) -> None:
    key = back_up(rich_source)
    existing = settings.SOURCE_ROOTS[0] / "existing.sqlite3"
    with sqlite3.connect(existing) as db:
        db.execute("CREATE TABLE other (x)")
    with pytest.raises(BackupError, match="already exists") as caught:
        restore(rich_source, key, RestoreTarget(path=str(existing)))
    assert caught.value.code == ErrorCode.PERMISSION_DENIED
    assert "other" in table_checksums(existing)
    restore(rich_source, key, RestoreTarget(path=str(existing), overwrite=True))
    assert table_checksums(existing) == table_checksums(Path(rich_source.path))


def test_a_damaged_backup_never_replaces_the_target(rich_source, settings) -> None:
    existing = settings.SOURCE_ROOTS[0] / "existing.sqlite3"
    with sqlite3.connect(existing) as db:
        db.execute("CREATE TABLE precious (x)")
    before = existing.read_bytes()
    data = decompressed(back_up(rich_source))
    with pytest.raises(BackupError):
        ENGINE.restore(
            rich_source,
            DumpTarget(label="CRM"),
            io.BytesIO(corrupted(data)),
            RestoreTarget(path=str(existing), overwrite=True),
            QUIET,
        )
    assert existing.read_bytes() == before
    assert sorted(p.name for p in existing.parent.iterdir()) == ["crm.sqlite3", "existing.sqlite3"]


def test_an_overwrite_is_refused_while_the_target_has_a_live_wal(rich_source, settings) -> None:
    key = back_up(rich_source)
    existing = settings.SOURCE_ROOTS[0] / "busy.sqlite3"
    app = sqlite3.connect(existing)  # an application keeping the database open in WAL mode
    try:
        app.execute("PRAGMA journal_mode=WAL")
        app.execute("CREATE TABLE live (x)")
        app.execute("INSERT INTO live VALUES (1)")
        app.commit()
        with pytest.raises(BackupError, match="in use"):
            restore(rich_source, key, RestoreTarget(path=str(existing), overwrite=True))
    finally:
        app.close()
    assert "live" in table_checksums(existing)


def test_check_connection_tells_a_database_from_a_missing_or_foreign_file(rich_source, settings) -> None:
    assert ENGINE.check_connection(rich_source).message == "SQLite database with 2 tables."
    not_sqlite = settings.SOURCE_ROOTS[0] / "notes.txt"
    not_sqlite.write_text("hello")
    rich_source.path = str(not_sqlite)
    result = ENGINE.check_connection(rich_source)
    assert not result.ok and "not a SQLite database" in result.message
    rich_source.path = str(settings.SOURCE_ROOTS[0] / "missing.sqlite3")
    result = ENGINE.check_connection(rich_source)
    assert not result.ok and result.error_code == ErrorCode.SOURCE_NOT_FOUND
    rich_source.path = "/etc/passwd"
    result = ENGINE.check_connection(rich_source)
    assert not result.ok and result.error_code == ErrorCode.PERMISSION_DENIED


def test_a_restore_into_a_missing_folder_fails_clearly(rich_source, settings) -> None:
    key = back_up(rich_source)
    with pytest.raises(BackupError, match="does not exist"):
        restore(rich_source, key, RestoreTarget(path=str(settings.SOURCE_ROOTS[0] / "no" / "x.sqlite3")))


@pytest.mark.parametrize("overwrite", [False, True])
def test_restoring_a_wal_mode_database_leaves_no_scratch_files_behind(rich_source, settings, overwrite) -> None:
    """The restored file is checked before it is put in place; for a database in WAL mode
    that check made -wal and -shm files named after the scratch file, left in the user's folder."""
    source_path = Path(rich_source.path)
    with sqlite3.connect(source_path) as db:
        assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    db.close()
    before = table_checksums(source_path)
    key = back_up(rich_source)
    target = source_path.with_name("restored.sqlite3")
    if overwrite:
        make_rich_database(target)  # an older copy, replaced
    restore(rich_source, key, RestoreTarget(path=str(target), overwrite=overwrite))
    assert table_checksums(target) == before
    leftovers = [p.name for p in source_path.parent.iterdir() if ".restoring-" in p.name]
    assert leftovers == []


def _locked_until(path: Path, release: threading.Event) -> threading.Thread:
    """Another connection holds the file exclusively locked until `release` is set."""
    holding = threading.Event()

    def hold() -> None:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")
        holding.set()
        release.wait(60)
        connection.execute("ROLLBACK")
        connection.close()

    thread = threading.Thread(target=hold)
    thread.start()
    holding.wait(10)
    return thread


def test_a_backup_waits_for_a_source_another_connection_holds_locked(rich_source) -> None:
    # Past SQLite's default busy wait (5 s): the backup waits within its time limit, as the
    # backup API itself waits on busy pages, instead of failing the item.
    release = threading.Event()
    thread = _locked_until(Path(rich_source.path), release)
    timer = threading.Timer(6.5, release.set)
    timer.start()
    try:
        with ENGINE.dump(
            rich_source, DumpTarget(label="CRM"), DumpContext(log=lambda _: None, deadline=time.monotonic() + 120)
        ) as stream:
            assert stream.read(16) == b"SQLite format 3\x00"
        assert release.is_set()  # it really waited for the lock's end
    finally:
        release.set()
        timer.cancel()
        thread.join()


def test_a_source_locked_past_the_time_limit_is_a_timeout(rich_source) -> None:
    release = threading.Event()
    thread = _locked_until(Path(rich_source.path), release)
    try:
        with (
            pytest.raises(BackupError) as failed,
            ENGINE.dump(
                rich_source, DumpTarget(label="CRM"), DumpContext(log=lambda _: None, deadline=time.monotonic() + 1)
            ),
        ):
            pass
        assert failed.value.code == ErrorCode.TIMEOUT and "stayed locked" in failed.value.message
    finally:
        release.set()
        thread.join()
