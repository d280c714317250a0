"""Opening things under a tenant's root through directory descriptors.

A tenant can change its own folders while a worker is in them: replace a
subfolder by a symlink to the application's `var/` between the worker's check
and its open, say. So no path under a root is ever resolved twice: the root is
opened once, each component below it is opened relative to its parent's
descriptor with O_NOFOLLOW (O_DIRECTORY for folders), and everything after that
(listing, reading, creating, renaming) is relative to those descriptors. A
symlink anywhere on the way is refused, never followed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from backups.errors import BackupError, ErrorCode

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK and O_NOCTTY: a file swapped for a pipe or a terminal after its lstat
# must not block the worker or become its terminal; fstat then tells it apart.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def symlink_refused(where: Path | str) -> BackupError:
    return BackupError(
        ErrorCode.PERMISSION_DENIED,
        f"{where} is a symlink; the backup service never follows symlinks in a tenant's folders.",
    )


def open_error(exc: OSError, where: Path | str, parent_fd: int | None = None, name: str = "") -> BackupError:
    """The BackupError for a failed open of `where` (`name` relative to `parent_fd`)."""
    if isinstance(exc, FileNotFoundError):
        return BackupError(ErrorCode.SOURCE_NOT_FOUND, f"{where} does not exist.")
    if isinstance(exc, PermissionError):
        return BackupError(ErrorCode.PERMISSION_DENIED, f"Cannot open {where} (permission denied).")
    if exc.errno == errno.ELOOP or (exc.errno == errno.ENOTDIR and is_symlink(parent_fd, name)):
        return symlink_refused(where)
    if exc.errno == errno.ENOTDIR:
        return BackupError(ErrorCode.SOURCE_NOT_FOUND, f"{where} is not a folder.")
    return BackupError(ErrorCode.UNKNOWN, f"Cannot open {where}: {exc.strerror or exc}.")


def is_symlink(parent_fd: int | None, name: str) -> bool:
    if parent_fd is None or not name:
        return False
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def open_dir(name: str, parent_fd: int, where: Path | str) -> int:
    """The folder `name` in `parent_fd`, never through a symlink."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as exc:
        raise open_error(exc, where, parent_fd, name) from None


def open_resolved(path: Path) -> int:
    """A folder by a path that has no symlinks (a root, resolved when staff saved it):
    walked from / without following any, so a link that appeared since is refused."""
    if not path.is_absolute():
        raise BackupError(ErrorCode.PERMISSION_DENIED, f"{path} is not an absolute path.")
    fd = os.open("/", DIR_FLAGS)
    try:
        return walk(fd, path.parts[1:], Path("/"))
    finally:
        os.close(fd)


def walk(start_fd: int, parts: Iterable[str], start: Path) -> int:
    """A new descriptor of the folder `start/parts...`, opened component by component
    from `start_fd` (which stays open). `..` is refused rather than interpreted."""
    fd = os.dup(start_fd)
    where = start
    try:
        for part in parts:
            if part in ("", ".", "..") or "/" in part:
                raise BackupError(ErrorCode.PERMISSION_DENIED, f"{where / part} is not a plain path.")
            where = where / part
            next_fd = open_dir(part, fd, where)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lstat_at(parent_fd: int, name: str) -> os.stat_result | None:
    """lstat of `name` in the folder, or None if there is nothing by that name."""
    try:
        return os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def fd_path(fd: int) -> Path:
    """Where the kernel says an open descriptor is (for messages and for tools that need a path)."""
    return Path(os.readlink(f"/proc/self/fd/{fd}"))
