"""SQLite sources: a consistent copy through the online backup API.

The backup API copies the pages in one step, inside one read transaction, so the
copy is a single consistent snapshot while the source is in use. (Copying in
several steps would restart whenever another connection writes, and a busy
source could keep it restarting forever.) In WAL mode the read does not block
the source's writers.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from backups.engines.base import CheckResult, DumpContext, DumpTarget, Engine, RestoreTarget, iter_chunks
from backups.engines.registry import register
from backups.errors import BackupError, ErrorCode
from backups.paths import check_restore_destination, check_source_path
from backups.storage import fsync_dir

# The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"

if TYPE_CHECKING:
    from backups.models import BackupSource


@register
class SqliteEngine(Engine):
    kind = "sqlite"
    suffix = ".sqlite3.zst"

    @contextmanager
    def dump(self, source: BackupSource, target: DumpTarget, ctx: DumpContext) -> Iterator[BinaryIO]:
        source_path = check_source_path(source.path, source.tenant)
        if not source_path.is_file():
            raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"The SQLite file {source_path} does not exist.")
        # mode=ro: never create or change the source, even by accident.
        try:
            connection = sqlite3.connect(f"{source_path.as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot open the SQLite file: {exc}.") from None
        with tempfile.TemporaryDirectory(prefix="sqlite-backup-") as scratch:
            snapshot_path = Path(scratch) / "snapshot.sqlite3"
            try:
                snapshot = sqlite3.connect(snapshot_path)
                try:
                    connection.backup(snapshot, pages=-1)
                    tables = _table_count(snapshot)
                finally:
                    snapshot.close()
            except sqlite3.DatabaseError as exc:
                raise BackupError(ErrorCode.UNKNOWN, f"SQLite could not read the source: {exc}.") from None
            finally:
                connection.close()
            ctx.log(
                f"Snapshot taken with the online backup API: {tables} tables, {snapshot_path.stat().st_size} bytes."
            )
            with open(snapshot_path, "rb") as snapshot_file:
                yield snapshot_file

    def check_connection(self, source: BackupSource) -> CheckResult:
        try:
            path = check_source_path(source.path, source.tenant)
        except BackupError as exc:
            return CheckResult(ok=False, message=exc.message, error_code=exc.code)
        if not path.is_file():
            return CheckResult(False, f"The SQLite file {path} does not exist.", ErrorCode.SOURCE_NOT_FOUND)
        try:
            with open(path, "rb") as handle:
                header = handle.read(len(SQLITE_HEADER))
        except PermissionError:
            return CheckResult(False, f"The file {path} is not readable by the backup service.", "PERMISSION_DENIED")
        if header != SQLITE_HEADER:
            return CheckResult(False, f"{path} is not a SQLite database.", ErrorCode.SOURCE_NOT_FOUND)
        try:
            connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
            try:
                tables = _table_count(connection)
            finally:
                connection.close()
        except sqlite3.Error as exc:
            return CheckResult(False, f"SQLite cannot read {path}: {exc}.", ErrorCode.UNKNOWN)
        return CheckResult(ok=True, message=f"SQLite database with {tables} tables.")

    def verify_stream(self, stream: BinaryIO, ctx: DumpContext) -> str:
        # SQLite needs a file to open: the snapshot goes to a private scratch folder.
        with tempfile.TemporaryDirectory(prefix="sqlite-verify-") as scratch:
            copy = Path(scratch) / "verify.sqlite3"
            with open(copy, "wb") as out:
                for chunk in iter_chunks(stream):
                    out.write(chunk)
            tables = _check_database(copy)
        summary = f"SQLite integrity check ok: {tables} tables."
        ctx.log(summary)
        return summary

    def restore(
        self, source: BackupSource, target: DumpTarget, stream: BinaryIO, to: RestoreTarget, ctx: DumpContext
    ) -> str:
        destination = check_restore_destination(to.path, source.tenant, to.overwrite, folder=False)
        if not destination.parent.is_dir():
            raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"The folder {destination.parent} does not exist.")
        if to.overwrite:
            _refuse_database_in_use(destination)
        # Written and checked beside the target, then renamed: the target is the old
        # database or the restored one, never a half-written or damaged file.
        scratch = destination.with_name(f".{destination.name}.restoring-{uuid.uuid4().hex[:8]}")
        try:
            with open(scratch, "xb") as out:
                for chunk in iter_chunks(stream):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            tables = _check_database(scratch)
            _remove_sidecars(scratch)
            if to.overwrite:
                os.replace(scratch, destination)
            else:
                # link() fails if the name appeared meanwhile: a restore never replaces a file silently.
                try:
                    os.link(scratch, destination)
                except FileExistsError:
                    raise BackupError(ErrorCode.PERMISSION_DENIED, f"{destination} appeared meanwhile.") from None
                scratch.unlink()
            fsync_dir(destination.parent)
        except PermissionError as exc:
            raise BackupError(
                ErrorCode.PERMISSION_DENIED, f"Cannot write {exc.filename} (permission denied)."
            ) from None
        finally:
            scratch.unlink(missing_ok=True)
            _remove_sidecars(scratch)
        summary = f"Restored {tables} tables into {destination}."
        ctx.log(summary)
        return summary

    def default_restore_target(self, source: BackupSource, target: DumpTarget, stamp: str) -> RestoreTarget:
        path = Path(source.path)
        return RestoreTarget(path=str(path.with_name(f"{path.stem}-restore-{stamp}{path.suffix}")))


def _table_count(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0])


def _check_database(path: Path) -> int:
    """Number of tables, if `path` is a SQLite database that passes PRAGMA integrity_check."""
    with open(path, "rb") as handle:
        if handle.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
            raise BackupError(ErrorCode.CORRUPTED, "The backup is not a SQLite database.")
    try:
        connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        try:
            result = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            tables = _table_count(connection)
        finally:
            connection.close()
    except sqlite3.OperationalError as exc:  # I/O, locking, opening: about this machine, not the file
        raise BackupError(ErrorCode.UNKNOWN, f"SQLite could not check the backup: {exc}.") from None
    except sqlite3.DatabaseError as exc:
        raise BackupError(ErrorCode.CORRUPTED, f"The backup is a damaged SQLite database: {exc}.") from None
    if result != ["ok"]:
        raise BackupError(ErrorCode.CORRUPTED, f"SQLite's integrity check failed: {'; '.join(result[:3])}.")
    return tables


def _remove_sidecars(scratch: Path) -> None:
    """Checking a database in WAL mode makes -wal and -shm files beside it, named after
    it; for our scratch file they are ours (empty: the check only reads) and go with it."""
    for suffix in ("-wal", "-shm", "-journal"):
        scratch.with_name(scratch.name + suffix).unlink(missing_ok=True)


def _refuse_database_in_use(path: Path) -> None:
    """A non-empty WAL or a rollback journal beside the target belongs to the old database;
    SQLite would apply it to the restored file and corrupt it. Their presence means the
    database is open or was not closed cleanly, so the application must be stopped first."""
    wal = path.with_name(path.name + "-wal")
    journal = path.with_name(path.name + "-journal")
    if (wal.exists() and wal.stat().st_size > 0) or journal.exists():
        raise BackupError(
            ErrorCode.PERMISSION_DENIED,
            f"{path} is in use (it has a -wal or -journal file); stop the application using it, then restore.",
        )
