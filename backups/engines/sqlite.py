"""SQLite sources: a consistent copy through the online backup API.

The backup API copies the pages in one step, inside one read transaction, so the
copy is a single consistent snapshot while the source is in use. (Copying in
several steps would restart whenever another connection writes, and a busy
source could keep it restarting forever.) In WAL mode the read does not block
the source's writers.

The source lies in a folder its tenant can change. SQLite opens files by path (it
resolves symlinks itself), so the file is first opened here by descriptors
(backups/paths.py: no symlink on the way), then SQLite opens it, and before
anything is copied the files SQLite holds open must be that very inode and its
-wal/-shm beside it: a source swapped for a symlink to another database at the
wrong moment fails the backup instead of copying that database. Restores never
open anything in the tenant's folder by name: the backup is checked in a private
scratch folder, copied into a new file created relative to the target folder's
descriptor (O_EXCL | O_NOFOLLOW), and renamed or linked into place there.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

from backups import dirfd
from backups.engines.base import CheckResult, DumpContext, DumpTarget, Engine, RestoreTarget, Source, iter_chunks
from backups.engines.registry import register
from backups.errors import BackupError, ErrorCode
from backups.paths import Place, open_parent, open_restore_destination, source_place

CHUNK = 1024 * 1024
SIDECARS = ("-wal", "-shm", "-journal")
OPEN_ATTEMPTS = 3
# How long a backup waits for a source another connection holds locked when the run has
# no time limit, and how long Test connection waits (it answers a person).
LOCK_WAIT_SECONDS = 24 * 3600.0
CHECK_LOCK_WAIT_SECONDS = 5.0

# The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


@register
class SqliteEngine(Engine):
    kind = "sqlite"
    label = "SQLite database file"
    suffix = ".sqlite3.zst"
    path_noun = "SQLite file"

    @contextmanager
    def dump(self, source: Source, target: DumpTarget, ctx: DumpContext) -> Iterator[BinaryIO]:
        # A source another connection holds locked is waited for, as the backup API itself
        # waits on a busy page, until the run's time limit (then TIMEOUT, as for any dump).
        wait = max(ctx.deadline - time.monotonic(), 1.0) if ctx.deadline is not None else LOCK_WAIT_SECONDS
        with (
            _opened_source(source, busy_seconds=wait) as connection,
            tempfile.TemporaryDirectory(prefix="sqlite-backup-") as scratch,
        ):
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

    def check_connection(self, source: Source) -> CheckResult:
        try:
            with _opened_source(source, require_header=True) as connection:
                tables = _table_count(connection)
        except BackupError as exc:
            return CheckResult(ok=False, message=exc.message, error_code=exc.code)
        return CheckResult(ok=True, message=f"SQLite database with {tables} tables.")

    def verify_stream(self, stream: BinaryIO, ctx: DumpContext) -> str:
        # SQLite needs a file to open: the snapshot goes to a private scratch folder.
        with tempfile.TemporaryDirectory(prefix="sqlite-verify-") as scratch:
            tables = _write_and_check(stream, Path(scratch) / "verify.sqlite3")
        summary = f"SQLite integrity check ok: {tables} tables."
        ctx.log(summary)
        return summary

    def restore(self, source: Source, target: DumpTarget, stream: BinaryIO, to: RestoreTarget, ctx: DumpContext) -> str:
        place, parent_fd, _existing = open_restore_destination(to.path, source.tenant, to.overwrite, folder=False)
        try:
            if to.overwrite:
                _refuse_database_in_use(parent_fd, place)
            # Checked in a private folder first: SQLite opens by path, and nothing in the
            # tenant's folder is opened by path. A damaged backup never gets that far.
            with tempfile.TemporaryDirectory(prefix="sqlite-restore-") as private:
                copy = Path(private) / "restore.sqlite3"
                tables = _write_and_check(stream, copy)
                _put_in_place(copy, parent_fd, place, replace=to.overwrite)
        except PermissionError:
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot write {place.path} (permission denied).") from None
        finally:
            os.close(parent_fd)
        summary = f"Restored {tables} tables into {place.path}."
        ctx.log(summary)
        return summary

    def default_restore_target(self, source: Source, target: DumpTarget, stamp: str) -> RestoreTarget:
        path = Path(source.path)
        return RestoreTarget(path=str(path.with_name(f"{path.stem}-restore-{stamp}{path.suffix}")))


def _table_count(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0])


def _write_and_check(stream: BinaryIO, copy: Path) -> int:
    """Write the decompressed backup to `copy`, in a private folder of the worker (SQLite
    opens by path), and check it: the number of tables."""
    with open(copy, "wb") as out:
        for chunk in iter_chunks(stream):
            out.write(chunk)
    return _check_database(copy)


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


@contextmanager
def _opened_source(
    source: Source, require_header: bool = False, busy_seconds: float = CHECK_LOCK_WAIT_SECONDS
) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the source inside an open read transaction, once SQLite
    is seen to hold the very file opened here by descriptors. `require_header`: refuse a
    file that does not start like a SQLite database (an empty file is one, to SQLite)."""
    place = source_place(source.path, source.tenant)
    parent_fd = open_parent(place)
    try:
        try:
            file_fd = os.open(place.name, dirfd.FILE_FLAGS, dir_fd=parent_fd)
        except PermissionError:
            raise _unreadable(place) from None
        except OSError as exc:
            if isinstance(exc, FileNotFoundError):
                raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"The SQLite file {place.path} does not exist.") from None
            raise dirfd.open_error(exc, place.path, parent_fd, place.name) from None
        try:
            opened = os.fstat(file_fd)
            if not stat.S_ISREG(opened.st_mode):
                raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"The SQLite file {place.path} does not exist.")
            if require_header and os.pread(file_fd, len(SQLITE_HEADER), 0) != SQLITE_HEADER:
                raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"{place.path} is not a SQLite database.")
            with _connected(
                dirfd.fd_path(parent_fd) / place.name, parent_fd, place, opened, busy_seconds
            ) as connection:
                yield connection
        finally:
            os.close(file_fd)
    finally:
        os.close(parent_fd)


def _unreadable(place: Place) -> BackupError:
    return BackupError(ErrorCode.PERMISSION_DENIED, f"The file {place.path} is not readable by the backup service.")


@contextmanager
def _connected(
    real: Path, parent_fd: int, place: Place, opened: os.stat_result, busy_seconds: float
) -> Iterator[sqlite3.Connection]:
    connection = _connect_checked(real, parent_fd, place, opened, busy_seconds)
    try:
        yield connection
    finally:
        connection.close()


def _connect_checked(
    real: Path, parent_fd: int, place: Place, opened: os.stat_result, busy_seconds: float
) -> sqlite3.Connection:
    """A connection in a read transaction that holds the source's very inode. Another thread
    of the worker opening a file at that moment (the heartbeat's database connection) looks
    like a swap, so a failed check is tried again a few times, each time in full."""
    for _attempt in range(OPEN_ATTEMPTS):
        before = _open_files()
        # mode=ro: never create or change the source, even by accident.
        try:
            connection = sqlite3.connect(f"{real.as_uri()}?mode=ro", uri=True, timeout=busy_seconds)
        except sqlite3.Error as exc:
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot open the SQLite file: {exc}.") from None
        try:
            # A read transaction: SQLite opens the file (and -wal, -shm) now and keeps them.
            connection.execute("BEGIN")
            _table_count(connection)
            if _holds_only_the_source(before, parent_fd, place, opened):
                return connection
        except sqlite3.OperationalError as exc:
            connection.close()
            if "locked" in str(exc):  # waited busy_seconds: as long as the run may last, or a person waits
                raise BackupError(
                    ErrorCode.TIMEOUT, f"The SQLite file stayed locked by another connection for {busy_seconds:.0f} s."
                ) from None
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot open the SQLite file: {exc}.") from None
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise BackupError(ErrorCode.UNKNOWN, f"SQLite could not read the source: {exc}.") from None
        except BaseException:
            connection.close()
            raise
        connection.close()
    raise BackupError(
        ErrorCode.PERMISSION_DENIED,
        f"{place.path} changed while SQLite opened it (it was replaced, perhaps by a symlink); "
        "nothing was copied. Run the backup again.",
    )


def _open_files() -> set[tuple[str, int, int]]:
    """(descriptor, device, inode) of every regular file this process has open. With the
    inode: a number can be reused (the listing's own descriptor, closed, then SQLite's)."""
    files = set()
    for number in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # the listing's own descriptor, closed by now
            now = os.stat(f"/proc/self/fd/{number}")
            if stat.S_ISREG(now.st_mode):
                files.add((number, now.st_dev, now.st_ino))
    return files


def _holds_only_the_source(
    before: set[tuple[str, int, int]], parent_fd: int, place: Place, opened: os.stat_result
) -> bool:
    """Whether every file SQLite opened is the source we opened, or its -wal/-shm/-journal in
    the same folder (SQLite opens those with O_NOFOLLOW itself), the source among them."""
    allowed = {(opened.st_dev, opened.st_ino)}
    for suffix in SIDECARS:
        sidecar = dirfd.lstat_at(parent_fd, place.name + suffix)
        if sidecar is not None and stat.S_ISREG(sidecar.st_mode):
            allowed.add((sidecar.st_dev, sidecar.st_ino))
    held = {(device, inode) for _number, device, inode in _open_files() - before}
    return (opened.st_dev, opened.st_ino) in held and held <= allowed


def _put_in_place(copy: Path, parent_fd: int, place: Place, replace: bool) -> None:
    """Copy the checked database into a new file beside the target, then rename it over the
    target (replace) or link it to the target's name (a new file, which must not appear
    meanwhile): the target is the old database or the restored one, never a half-written one."""
    scratch = f".{place.name}.restoring-{uuid.uuid4().hex[:8]}"
    ours: os.stat_result | None = None
    try:
        # 0o666 less the umask, as a plain open() would make it.
        with os.fdopen(os.open(scratch, dirfd.NEW_FILE_FLAGS, 0o666, dir_fd=parent_fd), "wb") as out:
            ours = os.fstat(out.fileno())
            with open(copy, "rb") as data:
                shutil.copyfileobj(data, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.rename(scratch, place.name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        else:
            try:
                os.link(scratch, place.name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd, follow_symlinks=False)
            except FileExistsError:
                raise BackupError(ErrorCode.PERMISSION_DENIED, f"{place.path} appeared meanwhile.") from None
        placed = dirfd.lstat_at(parent_fd, place.name)
        if placed is None or not dirfd.same_file(placed, ours):
            if not replace and placed is not None:
                os.unlink(place.name, dir_fd=parent_fd)  # the link just made, to whatever took our file's name
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"{place.path} was replaced while the restore ran.")
        os.fsync(parent_fd)
    finally:
        left = dirfd.lstat_at(parent_fd, scratch)
        if left is not None and ours is not None and dirfd.same_file(left, ours):
            os.unlink(scratch, dir_fd=parent_fd)


def _refuse_database_in_use(parent_fd: int, place: Place) -> None:
    """A non-empty WAL or a rollback journal beside the target belongs to the old database;
    SQLite would apply it to the restored file and corrupt it. Their presence means the
    database is open or was not closed cleanly, so the application must be stopped first."""
    wal = dirfd.lstat_at(parent_fd, place.name + "-wal")
    journal = dirfd.lstat_at(parent_fd, place.name + "-journal")
    if (wal is not None and wal.st_size > 0) or journal is not None:
        raise BackupError(
            ErrorCode.PERMISSION_DENIED,
            f"{place.path} is in use (it has a -wal or -journal file); stop the application using it, then restore.",
        )
