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
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from backups.engines.base import DumpContext, DumpTarget, Engine, RestoreTarget
from backups.engines.registry import register
from backups.errors import BackupError, ErrorCode
from backups.paths import check_source_path

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
                    tables = snapshot.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
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

    # Verify and restore (added by the runs branch for verify/restore runs; the
    # storage branch owns this module and may replace these).
    def verify_stream(self, stream: BinaryIO, ctx: DumpContext) -> str:
        with tempfile.TemporaryDirectory(prefix="sqlite-verify-") as scratch:
            path = Path(scratch) / "check.sqlite3"
            _copy_out(stream, path)
            return f"SQLite integrity check passed: {_check(path)} tables."

    def restore(
        self, source: BackupSource, target: DumpTarget, stream: BinaryIO, to: RestoreTarget, ctx: DumpContext
    ) -> str:
        final = check_source_path(to.path, source.tenant)
        if final.exists() and not to.overwrite:
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"{final} exists; overwriting it needs a confirmation.")
        if not final.parent.is_dir():
            raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"The folder {final.parent} does not exist.")
        # Written beside the target and checked first, then renamed over it: the
        # target is never left half-written.
        scratch = final.with_name(f".restore-{final.name}.tmp")
        try:
            _copy_out(stream, scratch)
            tables = _check(scratch)
            os.replace(scratch, final)
        finally:
            scratch.unlink(missing_ok=True)
        return f"Restored {tables} tables into {final}."

    def default_restore_target(self, source: BackupSource, target: DumpTarget, stamp: str) -> RestoreTarget:
        original = Path(source.path)
        return RestoreTarget(path=str(original.with_name(f"{original.stem}-restored-{stamp}{original.suffix}")))


def _copy_out(stream: BinaryIO, path: Path) -> None:
    with open(path, "xb") as out:
        while chunk := stream.read(1024 * 1024):
            out.write(chunk)


def _check(path: Path) -> int:
    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
            result = db.execute("PRAGMA integrity_check").fetchone()[0]
            tables = int(db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise BackupError(ErrorCode.UNKNOWN, f"The backup is not a readable SQLite database: {exc}.") from None
    if result != "ok":
        raise BackupError(ErrorCode.UNKNOWN, f"The backup fails SQLite's integrity check: {result[:200]}.")
    return tables
