"""Folder sources: a tar stream of the folder.

Python's tarfile writes the archive in stream mode (`w|`) into an OS pipe from a
thread; the pipeline reads the other end, so nothing is copied to disk first and
memory stays at one pipe buffer plus one chunk. Python rather than `tar`: each
failure maps to a code (an unreadable file is PERMISSION_DENIED, not "tar exited 2").

The tenant may change its folder while we read it, so the walk never resolves a
path: every folder is opened relative to its parent's descriptor with O_NOFOLLOW,
every entry is looked at with lstat relative to that descriptor and then opened
the same way, and what was opened must be the inode that lstat saw. A symlink in
the folder is stored as a symlink and never followed; a folder or file swapped
for a symlink (or anything else) mid-backup is skipped and logged, never followed.

Restores extract with tarfile's "data" filter (no absolute names, no `..`, no
device files, no links leaving the target: such links are skipped and logged),
and write every member relative to descriptors too: a new folder is built in a
scratch folder made with mkdir(dir_fd=) and renamed into place relative to its
parent's descriptor; each file is written to a new name (O_EXCL | O_NOFOLLOW)
and renamed over the old one, so a symlink planted in the target is replaced,
never written through. See docs/security.md.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import stat
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from backups import dirfd
from backups.engines.base import CheckResult, DumpContext, DumpTarget, Engine, Log, ReadStream, RestoreTarget, Source
from backups.engines.registry import register
from backups.errors import BackupError, ErrorCode
from backups.paths import Place, check_restore_target, open_folder, open_restore_destination, source_place

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
    """Writes the tar stream of the folder open as `folder_fd` into a pipe, in a thread;
    remembers how it ended. `label` is the folder's path, for messages only."""

    def __init__(self, folder_fd: int, label: Path, ctx: DumpContext, write_fd: int) -> None:
        self.folder_fd = folder_fd
        self.label = label
        self.ctx = ctx
        self.pipe = os.fdopen(write_fd, "wb", buffering=CHUNK)
        self.error: BaseException | None = None
        self.counts = _Counts()
        self.thread = threading.Thread(target=self._run, name=f"tar {label}", daemon=True)

    def _run(self) -> None:
        try:
            with tarfile.open(fileobj=self.pipe, mode="w|", format=tarfile.PAX_FORMAT) as archive:
                self._add_folder(archive, self.folder_fd, "")
        except (BrokenPipeError, _Stopped):
            pass  # the reader failed first and reports its own error
        except BaseException as exc:
            self.error = exc
        finally:
            with suppress(OSError):  # a broken pipe on the last flush: the reader is gone anyway
                self.pipe.close()

    def _add_folder(self, archive: tarfile.TarFile, folder_fd: int, prefix: str) -> None:
        """The entries of one folder, then each subfolder's, like os.walk top-down."""
        try:
            with os.scandir(folder_fd) as entries:
                listed = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        except PermissionError:
            raise _unreadable(prefix.rstrip("/") or ".") from None
        names = sorted(name for name, is_dir in listed if is_dir)
        names += sorted(name for name, is_dir in listed if not is_dir)
        folders = []
        for name in names:
            seen = self._add(archive, folder_fd, name, prefix + name)
            if seen is not None:
                folders.append((name, seen))
        for name, seen in folders:
            arcname = prefix + name
            try:
                sub_fd = os.open(name, dirfd.DIR_FLAGS, dir_fd=folder_fd)
            except PermissionError:
                raise _unreadable(arcname) from None
            except OSError as exc:
                self._skip_changed(arcname, exc)
                continue
            try:
                # Opened again by name: it must still be the folder whose entry was stored.
                if dirfd.same_file(os.fstat(sub_fd), seen):
                    self._add_folder(archive, sub_fd, arcname + "/")
                else:
                    self.ctx.log(f"Skipped the contents of {arcname}: it was replaced while the backup ran.")
            finally:
                os.close(sub_fd)

    def _add(self, archive: tarfile.TarFile, folder_fd: int, name: str, arcname: str) -> os.stat_result | None:
        """Store one entry; for a real folder, return its stat (its contents come later)."""
        if _deadline_passed(self.ctx.deadline):
            raise _timeout()
        try:
            seen = os.stat(name, dir_fd=folder_fd, follow_symlinks=False)
            if stat.S_ISLNK(seen.st_mode):
                try:
                    target = os.readlink(name, dir_fd=folder_fd)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:  # EINVAL: no longer a symlink
                        raise
                    self.ctx.log(f"Skipped {arcname}: it was replaced while the backup ran.")
                    return None
                archive.addfile(_symlink_info(archive, arcname, seen, target))
                self.counts.links += 1
            elif stat.S_ISREG(seen.st_mode):
                with os.fdopen(os.open(name, dirfd.FILE_FLAGS, dir_fd=folder_fd), "rb") as handle:
                    opened = os.fstat(handle.fileno())
                    if not (stat.S_ISREG(opened.st_mode) and dirfd.same_file(opened, seen)):
                        self.ctx.log(f"Skipped {arcname}: it was replaced while the backup ran.")
                        return None
                    self._add_file(archive, arcname, handle)
            elif stat.S_ISDIR(seen.st_mode):
                sub_fd = os.open(name, dirfd.DIR_FLAGS, dir_fd=folder_fd)
                try:
                    opened = os.fstat(sub_fd)
                    info = archive.gettarinfo(arcname=arcname, fileobj=_Descriptor(sub_fd))
                finally:
                    os.close(sub_fd)
                if not dirfd.same_file(opened, seen):
                    self.ctx.log(f"Skipped {arcname}: it was replaced while the backup ran.")
                    return None
                archive.addfile(info)
                self.counts.folders += 1
                return opened
            else:
                # Sockets, pipes and devices hold no data a restore could bring back.
                self.counts.skipped += 1
                self.ctx.log(f"Skipped {arcname}: not a file, folder or symlink.")
        except PermissionError:
            raise _unreadable(arcname) from None
        except OSError as exc:
            self._skip_changed(arcname, exc)
        return None

    def _add_file(self, archive: tarfile.TarFile, arcname: str, handle: BinaryIO) -> None:
        info = archive.gettarinfo(arcname=arcname, fileobj=handle)  # fstat of what was opened
        if info.isreg():
            archive.addfile(info, _DeadlineReader(handle, self.ctx.deadline))
            self.counts.bytes += info.size
        else:
            archive.addfile(info)  # a hard link to a file stored earlier
        self.counts.files += 1

    def _skip_changed(self, arcname: str, exc: OSError) -> None:
        """An entry that vanished or changed kind between listing and opening: the folder is
        in use (normal), or someone swaps things in it. Either way it is not followed."""
        if isinstance(exc, FileNotFoundError):
            self.ctx.log(f"Skipped {arcname}: removed while the backup ran.")
        elif exc.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW met a symlink, O_DIRECTORY a non-folder
            self.ctx.log(f"Skipped {arcname}: it was replaced while the backup ran (a symlink is never followed).")
        else:
            raise exc


class _Descriptor(ReadStream):
    """What tarfile.gettarinfo needs of a file object: an open descriptor (here a folder's)."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def fileno(self) -> int:
        return self.fd


def _symlink_info(archive: tarfile.TarFile, arcname: str, seen: os.stat_result, target: str) -> tarfile.TarInfo:
    """The entry gettarinfo would make for a symlink, from an lstat taken through a descriptor
    (gettarinfo itself reads a link by its path)."""
    info = archive.tarinfo(arcname)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = seen.st_mode
    info.uid, info.gid = seen.st_uid, seen.st_gid
    info.mtime = seen.st_mtime
    with suppress(KeyError):
        info.uname = pwd.getpwuid(seen.st_uid).pw_name
    with suppress(KeyError):
        info.gname = grp.getgrgid(seen.st_gid).gr_name
    return info


def _unreadable(arcname: str) -> BackupError:
    return BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot read {arcname} in the folder (permission denied).")


class _DeadlineReader:
    """A file being archived: stops the archive when the deadline passes mid-file."""

    def __init__(self, handle: BinaryIO, deadline: float | None) -> None:
        self.handle = handle
        self.deadline = deadline

    def read(self, size: int = -1) -> bytes:
        if _deadline_passed(self.deadline):
            raise _timeout()
        return self.handle.read(size)


class _PipeReader(ReadStream):
    """The read end of the pipe. At the end of the stream it waits for the writer and
    raises its error, so a broken archive fails the write instead of being stored."""

    def __init__(self, read_fd: int, writer: _ArchiveWriter) -> None:
        super().__init__()
        self.pipe = os.fdopen(read_fd, "rb", buffering=0)
        self.writer = writer

    def read(self, size: int | None = -1, /) -> bytes:
        if _deadline_passed(self.writer.ctx.deadline):
            raise _timeout()
        data = self.pipe.read(size if size and size > 0 else CHUNK)
        if not data:
            self.writer.thread.join()
            _raise_mapped(self.writer.error, self.writer.label)
        return data or b""

    def close(self) -> None:
        self.pipe.close()
        super().close()


def _raise_mapped(error: BaseException | None, label: Path) -> None:
    if error is None:
        return
    if isinstance(error, BackupError):
        raise error
    if isinstance(error, OSError) and "unexpected end of data" in str(error):
        raise BackupError(ErrorCode.UNKNOWN, "A file shrank while it was being read; run the backup again.")
    if isinstance(error, OSError):
        raise BackupError(ErrorCode.UNKNOWN, f"Cannot read the folder {label}: {error.strerror or error}.")
    raise BackupError(ErrorCode.UNKNOWN, f"The folder could not be archived ({type(error).__name__}).")


@contextmanager
def archive_stream(folder_fd: int, label: Path, ctx: DumpContext) -> Iterator[BinaryIO]:
    """The tar stream of the folder open as `folder_fd` (the caller keeps and closes it);
    raises on leaving if the archive failed. `label` is its path, for messages."""
    read_fd, write_fd = os.pipe()
    writer = _ArchiveWriter(folder_fd, label, ctx, write_fd)
    reader = _PipeReader(read_fd, writer)
    writer.thread.start()
    try:
        yield reader
    finally:
        # Closing our end makes a writer still blocked on the pipe fail and end.
        reader.close()
        writer.thread.join()
    _raise_mapped(writer.error, label)
    ctx.log(f"Archived {label}: {writer.counts.summary()}.")


@contextmanager
def _source_folder(source: Source) -> Iterator[tuple[Place, int]]:
    place = source_place(source.path, source.tenant)
    fd = open_folder(place)
    try:
        yield place, fd
    finally:
        os.close(fd)


@register
class DirectoryEngine(Engine):
    kind = "directory"
    label = "Folder"
    suffix = ".tar.zst"
    path_is_folder = True
    path_noun = "folder"

    @contextmanager
    def dump(self, source: Source, target: DumpTarget, ctx: DumpContext) -> Iterator[BinaryIO]:
        with _source_folder(source) as (place, fd), archive_stream(fd, place.path, ctx) as stream:
            yield stream

    def check_connection(self, source: Source) -> CheckResult:
        try:
            with _source_folder(source) as (place, fd):
                try:
                    os.listdir(fd)
                except PermissionError:
                    return CheckResult(
                        False, f"The folder {place.path} is not readable by the backup service.", "PERMISSION_DENIED"
                    )
        except BackupError as exc:
            return CheckResult(ok=False, message=exc.message, error_code=exc.code)
        return CheckResult(ok=True, message=f"The folder {place.path} exists and is readable.")

    def verify_stream(self, stream: BinaryIO, ctx: DumpContext) -> str:
        counts = _Counts()
        tail = _TailReader(stream)
        try:
            with tarfile.open(fileobj=tail, mode="r|") as archive:
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

    def restore(self, source: Source, target: DumpTarget, stream: BinaryIO, to: RestoreTarget, ctx: DumpContext) -> str:
        place, parent_fd, existing = open_restore_destination(to.path, source.tenant, to.overwrite, folder=True)
        counts = _Counts()
        try:
            if existing is not None:
                # Overwrite: files of the backup replace same-named ones; other files stay.
                folder_fd = dirfd.open_dir(place.name, parent_fd, place.path)
                try:
                    _extract(stream, folder_fd, place.path, counts, ctx)
                finally:
                    os.close(folder_fd)
            else:
                _restore_new_folder(stream, parent_fd, place, counts, ctx)
        finally:
            os.close(parent_fd)
        summary = f"Restored into {place.path}: {counts.summary()}."
        ctx.log(summary)
        return summary

    def default_restore_target(self, source: Source, target: DumpTarget, stamp: str) -> RestoreTarget:
        folder = Path(source.path)
        name = f"{folder.name}-restore-{stamp}"
        beside = folder.parent / name
        try:
            check_restore_target(str(beside), source.tenant)
        except BackupError:  # the folder is a whole root: its siblings are not the tenant's
            return RestoreTarget(path=str(folder / name))
        return RestoreTarget(path=str(beside))


def _restore_new_folder(stream: BinaryIO, parent_fd: int, place: Place, counts: _Counts, ctx: DumpContext) -> None:
    """A new folder appears only complete: built in a scratch folder beside it (ours,
    0700, held open by descriptor), then renamed into place relative to the parent."""
    scratch = f".{place.name}.restoring-{uuid.uuid4().hex[:8]}"
    try:
        os.mkdir(scratch, 0o700, dir_fd=parent_fd)
    except PermissionError:
        where = place.path.parent
        raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot write in {where} (permission denied).") from None
    # If the scratch folder was swapped for a symlink since mkdir, this refuses it.
    scratch_fd = dirfd.open_dir(scratch, parent_fd, place.path.with_name(scratch))
    ours = os.fstat(scratch_fd)
    try:
        _extract(stream, scratch_fd, place.path, counts, ctx)
        os.fchmod(scratch_fd, 0o755)
        if dirfd.lstat_at(parent_fd, place.name) is not None:
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"{place.path} appeared while the restore ran.")
        os.rename(scratch, place.name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        placed = dirfd.lstat_at(parent_fd, place.name)
        if placed is None or not dirfd.same_file(placed, ours):
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"{place.path} was replaced while the restore ran.")
        os.fsync(parent_fd)
    except BaseException:
        _remove_ours(parent_fd, scratch, ours)
        raise
    finally:
        os.close(scratch_fd)


def _count(counts: _Counts, member: tarfile.TarInfo) -> None:
    if member.isdir():
        counts.folders += 1
    elif member.issym():
        counts.links += 1
    else:
        counts.files += 1
        counts.bytes += member.size


class _TailReader(ReadStream):
    """Counts the bytes read and keeps the last 1 KiB, to check the end-of-archive marker."""

    def __init__(self, stream: BinaryIO) -> None:
        super().__init__()
        self.stream = stream
        self.total = 0
        self.tail = b""

    def read(self, size: int = -1, /) -> bytes:
        data = self.stream.read(size)
        self.total += len(data)
        self.tail = (self.tail + data)[-2 * tarfile.BLOCKSIZE :]
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass


def _extract(stream: BinaryIO, folder_fd: int, label: Path, counts: _Counts, ctx: DumpContext) -> None:
    """Extract the archive into the folder open as `folder_fd`; `label` names it in messages."""
    extractor = _Extractor(folder_fd, label, counts, ctx.log)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                extractor.extract(archive, member)
            extractor.finish()
    except tarfile.FilterError as exc:
        raise BackupError(
            ErrorCode.PERMISSION_DENIED, f"The archive tries to write outside the target: {exc}."
        ) from None
    except tarfile.TarError as exc:
        raise BackupError(ErrorCode.CORRUPTED, f"The archive is damaged: {exc}.") from None
    finally:
        extractor.close()


class _Extractor:
    """Writes archive members below a folder descriptor, never through a symlink.

    tarfile's own extractall checks a member's path (its data filter) and then opens
    that path again by name, following whatever is there by then; here the filter
    only screens names and modes, and each write goes through descriptors."""

    def __init__(self, folder_fd: int, label: Path, counts: _Counts, log: Log) -> None:
        self.folder_fd = folder_fd
        self.label = label
        self.counts = counts
        self.log = log
        self.screen_path = str(dirfd.fd_path(folder_fd))
        self.folders: list[tuple[tuple[str, ...], tarfile.TarInfo]] = []
        # Members come folder by folder: keep the last parent open instead of walking again.
        self.parent: tuple[tuple[str, ...], int] | None = None

    def extract(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        try:
            checked = tarfile.data_filter(member, self.screen_path)
        except (tarfile.AbsoluteLinkError, tarfile.LinkOutsideDestinationError):
            _skipped_link(self.log, member, self.counts)
            return
        except OSError:
            # The filter resolves the member's path on disk; a symlink in the target that
            # changes while it reads it makes that fail. Nothing was written for it.
            raise BackupError(
                ErrorCode.PERMISSION_DENIED,
                f"{self.label} changed while it was restored into (at {member.name}); nothing was written there.",
            ) from None
        parts = _member_parts(checked.name)
        if not parts:
            return  # "." : the target folder itself
        where = self.label.joinpath(*parts)
        parent_fd = self._folder(parts[:-1])
        name = parts[-1]
        try:
            if checked.isdir():
                self._make_folder(parent_fd, name, where, checked)
                self.folders.append((parts, checked))
            elif checked.isreg():
                self._replace(parent_fd, name, where, lambda tmp: self._write(archive, checked, parent_fd, tmp))
            elif checked.issym():
                self._replace(
                    parent_fd, name, where, lambda temporary: os.symlink(checked.linkname, temporary, dir_fd=parent_fd)
                )
            elif checked.islnk():
                self._hard_link(checked, parent_fd, name, where)
            else:
                return  # the data filter refuses every other kind
        except PermissionError:
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot write {where} (permission denied).") from None
        _count(self.counts, checked)

    def _folder(self, parts: tuple[str, ...]) -> int:
        """The folder `parts` below the target, opened from the target's descriptor,
        making missing ones (as tarfile does for a member's parents)."""
        if self.parent is not None and self.parent[0] == parts:
            return self.parent[1]
        fd = os.dup(self.folder_fd)
        where = self.label
        try:
            for part in parts:
                where = where / part
                with suppress(FileExistsError):
                    os.mkdir(part, dir_fd=fd)
                next_fd = dirfd.open_dir(part, fd, where)
                os.close(fd)
                fd = next_fd
        except PermissionError:
            os.close(fd)
            raise BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot write {where} (permission denied).") from None
        except BaseException:
            os.close(fd)
            raise
        if self.parent is not None:
            os.close(self.parent[1])
        self.parent = (parts, fd)
        return fd

    def _make_folder(self, parent_fd: int, name: str, where: Path, member: tarfile.TarInfo) -> None:
        with suppress(FileExistsError):
            # Like tarfile: private until its mode is set at the end, or the default mode.
            os.mkdir(name, 0o700 if member.mode is not None else 0o777, dir_fd=parent_fd)
        os.close(dirfd.open_dir(name, parent_fd, where))  # a folder there, not a symlink or a file

    def _write(self, archive: tarfile.TarFile, member: tarfile.TarInfo, parent_fd: int, temporary: str) -> None:
        data = archive.extractfile(member)
        assert data is not None  # a regular file member
        with os.fdopen(os.open(temporary, dirfd.NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd), "wb") as out:
            shutil.copyfileobj(data, out, CHUNK)
            out.flush()
            if member.mode is not None:
                os.fchmod(out.fileno(), member.mode)
            os.utime(out.fileno(), (member.mtime, member.mtime))

    def _hard_link(self, member: tarfile.TarInfo, parent_fd: int, name: str, where: Path) -> None:
        # The data filter made sure the link's target is inside the target folder.
        link_parts = _member_parts(member.linkname)
        if not link_parts:
            raise BackupError(ErrorCode.CORRUPTED, f"The archive's hard link {member.name} names no file.")
        source_fd = dirfd.walk(self.folder_fd, link_parts[:-1], self.label)
        try:
            self._replace(
                parent_fd,
                name,
                where,
                lambda temporary: os.link(
                    link_parts[-1], temporary, src_dir_fd=source_fd, dst_dir_fd=parent_fd, follow_symlinks=False
                ),
            )
        finally:
            os.close(source_fd)

    def _replace(self, parent_fd: int, name: str, where: Path, make: Callable[[str], None]) -> None:
        """Make the entry under a new name, then rename it over `name`: whatever was there
        (an older file, a symlink someone planted) is replaced, never written through."""
        temporary = f".restoring-{uuid.uuid4().hex[:12]}"
        try:
            make(temporary)
            os.rename(temporary, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except IsADirectoryError:
            raise BackupError(
                ErrorCode.PERMISSION_DENIED, f"Cannot restore {where}: a folder of that name is in the way."
            ) from None
        finally:
            with suppress(FileNotFoundError):
                os.unlink(temporary, dir_fd=parent_fd)

    def finish(self) -> None:
        """Folders' modes and times last (writing into a folder changes its time), deepest first."""
        for parts, member in sorted(self.folders, key=lambda entry: entry[0], reverse=True):
            fd = dirfd.walk(self.folder_fd, parts, self.label)
            try:
                if member.mode is not None:
                    os.fchmod(fd, member.mode)
                os.utime(fd, (member.mtime, member.mtime))
            finally:
                os.close(fd)

    def close(self) -> None:
        if self.parent is not None:
            os.close(self.parent[1])
            self.parent = None


def _member_parts(name: str) -> tuple[str, ...]:
    parts = tuple(part for part in name.split("/") if part not in ("", "."))
    if ".." in parts:
        raise BackupError(ErrorCode.PERMISSION_DENIED, f"The archive tries to write outside the target: {name}.")
    return parts


def _skipped_link(log: Log, member: tarfile.TarInfo, counts: _Counts) -> None:
    counts.skipped += 1
    log(f"Skipped the link {member.name} -> {member.linkname}: it points outside the restored folder.")


def _remove_ours(parent_fd: int, name: str, ours: os.stat_result) -> None:
    """Remove the scratch folder `name` if it is still the one we made (never a symlink
    or a folder someone put in its place), by descriptors, whatever modes it holds."""
    now = dirfd.lstat_at(parent_fd, name)
    if now is not None and dirfd.same_file(now, ours):
        _remove_tree_at(parent_fd, name)


def _remove_tree_at(parent_fd: int, name: str) -> None:
    fd = os.open(name, dirfd.DIR_FLAGS, dir_fd=parent_fd)
    try:
        os.fchmod(fd, 0o700)  # a restored read-only folder would keep its entries
        with os.scandir(fd) as entries:
            children = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for child, is_dir in children:
            if is_dir:
                _remove_tree_at(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
