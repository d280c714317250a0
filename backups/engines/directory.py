"""Folder sources: a tar stream of the folder.

Python's tarfile writes the archive in stream mode (`w|`) into an OS pipe from a
thread; the pipeline reads the other end, so nothing is copied to disk first and
memory stays at one pipe buffer plus one chunk. Python rather than `tar`: every
entry is looked at with lstat, so a symlink inside the folder is stored as a
symlink and never followed (out of the tenant's root or anywhere), and each
failure maps to a code (an unreadable file is PERMISSION_DENIED, not "tar exited 2").

Restores extract with tarfile's "data" filter: no absolute names, no `..`, no
device files, no links leaving the target (such links are skipped and logged; the
rest is restored).
"""

from __future__ import annotations

import os
import stat
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from backups.engines.base import CheckResult, DumpContext, DumpTarget, Engine, Log, RestoreTarget
from backups.engines.registry import register
from backups.errors import BackupError, ErrorCode
from backups.paths import check_restore_destination, check_restore_target, check_source_path

if TYPE_CHECKING:
    from backups.models import BackupSource

CHUNK = 1024 * 1024


@dataclass
class _Counts:
    files: int = 0
    folders: int = 0
    links: int = 0
    skipped: int = 0
    bytes: int = 0

    def summary(self) -> str:
        text = f"{self.files} files, {self.folders} folders, {self.links} symlinks, {self.bytes} bytes"
        return text + (f", {self.skipped} special files skipped" if self.skipped else "")


def _deadline_passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _timeout() -> BackupError:
    return BackupError(ErrorCode.TIMEOUT, "The backup took longer than the schedule's time limit and was stopped.")


class _Stopped(Exception):
    """The reader went away (the pipeline failed); the writer thread just ends."""


class _ArchiveWriter:
    """Writes the tar stream of `root` into a pipe, in a thread; remembers how it ended."""

    def __init__(self, root: Path, ctx: DumpContext, write_fd: int) -> None:
        self.root = root
        self.ctx = ctx
        self.pipe = os.fdopen(write_fd, "wb", buffering=CHUNK)
        self.error: BaseException | None = None
        self.counts = _Counts()
        self.thread = threading.Thread(target=self._run, name=f"tar {root}", daemon=True)

    def _run(self) -> None:
        try:
            with tarfile.open(fileobj=self.pipe, mode="w|", format=tarfile.PAX_FORMAT) as archive:  # type: ignore[call-overload]
                self._add_tree(archive)
        except (BrokenPipeError, _Stopped):
            pass  # the reader failed first and reports its own error
        except BaseException as exc:
            self.error = exc
        finally:
            with suppress(OSError):  # a broken pipe on the last flush: the reader is gone anyway
                self.pipe.close()

    def _add_tree(self, archive: tarfile.TarFile) -> None:
        def walk_error(exc: OSError) -> None:
            raise exc

        for folder, dirnames, filenames in os.walk(self.root, onerror=walk_error, followlinks=False):
            dirnames.sort()
            base = Path(folder)
            for name in sorted(dirnames) + sorted(filenames):
                self._add(archive, base / name)

    def _add(self, archive: tarfile.TarFile, path: Path) -> None:
        if _deadline_passed(self.ctx.deadline):
            raise _timeout()
        arcname = path.relative_to(self.root).as_posix()
        try:
            mode = path.lstat().st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                # Sockets, pipes and devices hold no data a restore could bring back.
                self.counts.skipped += 1
                self.ctx.log(f"Skipped {arcname}: not a file, folder or symlink.")
                return
            info = archive.gettarinfo(str(path), arcname)  # lstat: a symlink stays a symlink
            if info.isreg():
                with open(path, "rb") as handle:
                    archive.addfile(info, _DeadlineReader(handle, self.ctx.deadline))
                self.counts.files += 1
                self.counts.bytes += info.size
            else:
                archive.addfile(info)
                if info.isdir():
                    self.counts.folders += 1
                elif info.issym():
                    self.counts.links += 1
                else:
                    self.counts.files += 1  # a hard link to a file stored earlier
        except FileNotFoundError:
            # Deleted between listing and reading: the folder is in use, which is normal.
            self.ctx.log(f"Skipped {arcname}: removed while the backup ran.")


class _DeadlineReader:
    """A file being archived: stops the archive when the deadline passes mid-file."""

    def __init__(self, handle: BinaryIO, deadline: float | None) -> None:
        self.handle = handle
        self.deadline = deadline

    def read(self, size: int = -1) -> bytes:
        if _deadline_passed(self.deadline):
            raise _timeout()
        return self.handle.read(size)


class _PipeReader:
    """The read end of the pipe. At the end of the stream it waits for the writer and
    raises its error, so a broken archive fails the write instead of being stored."""

    def __init__(self, read_fd: int, writer: _ArchiveWriter) -> None:
        self.pipe = os.fdopen(read_fd, "rb", buffering=0)
        self.writer = writer

    def read(self, size: int = -1) -> bytes:
        if _deadline_passed(self.writer.ctx.deadline):
            raise _timeout()
        data = self.pipe.read(size if size and size > 0 else CHUNK)
        if not data:
            self.writer.thread.join()
            _raise_mapped(self.writer.error, self.writer.root)
        return data or b""

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.pipe.close()


def _raise_mapped(error: BaseException | None, root: Path) -> None:
    if error is None:
        return
    if isinstance(error, BackupError):
        raise error
    if isinstance(error, PermissionError):
        where = Path(error.filename).relative_to(root) if error.filename else root
        raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot read {where} in the folder (permission denied).")
    if isinstance(error, OSError) and "unexpected end of data" in str(error):
        raise BackupError(ErrorCode.UNKNOWN, "A file shrank while it was being read; run the backup again.")
    if isinstance(error, OSError):
        raise BackupError(ErrorCode.UNKNOWN, f"Cannot read the folder: {error.strerror or error}.")
    raise BackupError(ErrorCode.UNKNOWN, f"The folder could not be archived ({type(error).__name__}).")


@contextmanager
def archive_stream(root: Path, ctx: DumpContext) -> Iterator[BinaryIO]:
    """The tar stream of the (already checked) folder `root`; raises on leaving if the archive failed."""
    if not os.access(root, os.R_OK | os.X_OK):
        raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot read the folder {root} (permission denied).")
    read_fd, write_fd = os.pipe()
    writer = _ArchiveWriter(root, ctx, write_fd)
    reader = _PipeReader(read_fd, writer)
    writer.thread.start()
    try:
        yield reader  # type: ignore[misc]
    finally:
        # Closing our end makes a writer still blocked on the pipe fail and end.
        reader.close()
        writer.thread.join()
    _raise_mapped(writer.error, root)
    ctx.log(f"Archived {root}: {writer.counts.summary()}.")


@register
class DirectoryEngine(Engine):
    kind = "directory"
    suffix = ".tar.zst"

    @contextmanager
    def dump(self, source: BackupSource, target: DumpTarget, ctx: DumpContext) -> Iterator[BinaryIO]:
        root = _existing_folder(source)
        with archive_stream(root, ctx) as stream:
            yield stream

    def check_connection(self, source: BackupSource) -> CheckResult:
        try:
            root = _existing_folder(source)
        except BackupError as exc:
            return CheckResult(ok=False, message=exc.message, error_code=exc.code)
        if not os.access(root, os.R_OK | os.X_OK):
            return CheckResult(False, f"The folder {root} is not readable by the backup service.", "PERMISSION_DENIED")
        return CheckResult(ok=True, message=f"The folder {root} exists and is readable.")

    def verify_stream(self, stream: BinaryIO, ctx: DumpContext) -> str:
        counts = _Counts()
        tail = _TailReader(stream)
        try:
            with tarfile.open(fileobj=tail, mode="r|") as archive:  # type: ignore[call-overload]
                for member in archive:  # reading through each member checks every block
                    _count(counts, member)
        except tarfile.TarError as exc:
            raise BackupError(ErrorCode.CORRUPTED, f"The archive is damaged: {exc}.") from None
        tail.drain()
        # A tar stream ends with two zero blocks: without them it was cut at a member boundary.
        if tail.total % tarfile.BLOCKSIZE or tail.tail != bytes(2 * tarfile.BLOCKSIZE):
            raise BackupError(ErrorCode.CORRUPTED, "The archive is incomplete (it has no end-of-archive marker).")
        summary = f"Archive readable: {counts.summary()}."
        ctx.log(summary)
        return summary

    def restore(
        self, source: BackupSource, target: DumpTarget, stream: BinaryIO, to: RestoreTarget, ctx: DumpContext
    ) -> str:
        destination = check_restore_destination(to.path, source.tenant, to.overwrite, folder=True)
        counts = _Counts()
        if destination.exists():
            # Overwrite: files of the backup replace same-named ones; other files stay.
            _extract(stream, destination, counts, ctx)
        else:
            # A new folder appears only complete: extract beside it, then rename.
            if not destination.parent.is_dir():
                raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"The folder {destination.parent} does not exist.")
            scratch = destination.with_name(f".{destination.name}.restoring-{uuid.uuid4().hex[:8]}")
            scratch.mkdir(mode=0o700)
            try:
                _extract(stream, scratch, counts, ctx)
                os.chmod(scratch, 0o755)
                os.rename(scratch, destination)
            except BaseException:
                _remove_tree(scratch)
                raise
        summary = f"Restored into {destination}: {counts.summary()}."
        ctx.log(summary)
        return summary

    def default_restore_target(self, source: BackupSource, target: DumpTarget, stamp: str) -> RestoreTarget:
        folder = Path(source.path)
        name = f"{folder.name}-restore-{stamp}"
        beside = folder.parent / name
        try:
            check_restore_target(str(beside), source.tenant)
        except BackupError:  # the folder is a whole root: its siblings are not the tenant's
            return RestoreTarget(path=str(folder / name))
        return RestoreTarget(path=str(beside))


def _existing_folder(source: BackupSource) -> Path:
    root = check_source_path(source.path, source.tenant)
    if not root.exists():
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"The folder {root} does not exist.")
    if not root.is_dir():
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"{root} is not a folder.")
    return root


def _count(counts: _Counts, member: tarfile.TarInfo) -> None:
    if member.isdir():
        counts.folders += 1
    elif member.issym():
        counts.links += 1
    else:
        counts.files += 1
        counts.bytes += member.size


class _TailReader:
    """Counts the bytes read and keeps the last 1 KiB, to check the end-of-archive marker."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.total = 0
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.total += len(data)
        self.tail = (self.tail + data)[-2 * tarfile.BLOCKSIZE :]
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _extract(stream: BinaryIO, destination: Path, counts: _Counts, ctx: DumpContext) -> None:
    def data_filter(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        try:
            checked = tarfile.data_filter(member, path)
        except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
            _skipped_link(ctx.log, member, counts)
            return None
        _count(counts, checked)
        return checked

    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
            archive.extractall(destination, filter=data_filter)
    except tarfile.FilterError as exc:
        raise BackupError(
            ErrorCode.PERMISSION_DENIED, f"The archive tries to write outside the target: {exc}."
        ) from None
    except tarfile.TarError as exc:
        raise BackupError(ErrorCode.CORRUPTED, f"The archive is damaged: {exc}.") from None
    except PermissionError as exc:
        raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot write {exc.filename} (permission denied).") from None


def _skipped_link(log: Log, member: tarfile.TarInfo, counts: _Counts) -> None:
    counts.skipped += 1
    log(f"Skipped the link {member.name} -> {member.linkname}: it points outside the restored folder.")


def _remove_tree(folder: Path) -> None:
    import shutil

    def make_writable(function: Any, path: str, _exc: Any) -> None:
        os.chmod(path, 0o700)
        function(path)

    shutil.rmtree(folder, onerror=make_writable)
