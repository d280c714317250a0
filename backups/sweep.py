"""Removing the temporary files of writes that died (local storage).

A local backup is written to a hidden `.tmp-<random>-<name>` file beside its final name
and renamed into place when complete; every error removes it. Only a worker killed
outright (SIGKILL, OOM, power loss) leaves one behind. It never looks like a backup (no
item points at it, and keys never start with a dot), but it holds disk space: up to the
size of the biggest dump, per killed worker.

Three ways remove one, soonest first:

* when the work that wrote it has ended: the caller that ends it (scheduling's end of
  a run) removes the temporary files in its key folder whose name carries its marker
  (remove_temporary_files), on the node that ends it;
* storage is per node, and the node that ends a run need not be the one that wrote
  it: every node's sweeper asks the caller, every ENDED_SWEEP_SECONDS, which of its
  temporary files belong to work still going (sweep_ended_writes), and removes the
  others. This package never learns what the work is: the caller reads its own keys;
* and a last resort for files no caller can place: by age (below).

A temporary file is stale once it has not been written to for longer than any run may
last: a live run writes to its file as the dump streams, and a run that stalls is
stopped, and its file removed, at its schedule's time limit (at most
MAX_TIME_LIMIT_MINUTES). So an untouched file older than that, plus a margin, cannot
belong to a run that is still going, whichever node it runs on.

S3 has no temporary objects: an upload that dies is an incomplete multipart upload,
which the bucket's lifecycle rule (AbortIncompleteMultipartUpload) clears.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.db import close_old_connections

from backups import dirfd, orphans, storage
from lib.slots import MAX_TIME_LIMIT_MINUTES

logger = logging.getLogger(__name__)

TEMPORARY_PREFIX = ".tmp-"
STALE_AFTER = timedelta(minutes=MAX_TIME_LIMIT_MINUTES) + timedelta(hours=1)


@dataclass
class SweepReport:
    local: bool = True
    removed: list[Path] = field(default_factory=list)
    removed_bytes: int = 0
    kept_fresh: int = 0  # temporary files young enough to belong to a live run
    errors: list[str] = field(default_factory=list)


def sweep_temporary_files(stale_after: timedelta = STALE_AFTER, *, dry_run: bool = False) -> SweepReport:
    """Remove (or with dry_run, list) the stale temporary files under the backups folder."""
    report = SweepReport()
    if not storage.is_local():
        report.local = False
        return report
    root = storage.backups_root()
    if not root.is_dir():  # nothing backed up on this node yet
        return report
    cutoff = time.time() - stale_after.total_seconds()

    def unreadable(error: OSError) -> None:  # a folder we cannot list may hide stale files: say so
        report.errors.append(f"{error.filename}: {error.strerror or error}")

    # os.walk reads each folder once; it does not follow symlinks out of the backups folder.
    for folder, _, names in os.walk(root, onerror=unreadable):
        for name in names:
            if not name.startswith(TEMPORARY_PREFIX):
                continue
            path = Path(folder) / name
            try:
                stat = path.lstat()
                if stat.st_mtime > cutoff:
                    report.kept_fresh += 1
                    continue
                if not dry_run:
                    path.unlink()
            except FileNotFoundError:  # finished or swept by another node meanwhile
                continue
            except OSError as exc:
                report.errors.append(f"{path}: {exc.strerror or exc}")
                continue
            report.removed.append(path)
            report.removed_bytes += stat.st_size
    if report.removed and not dry_run:
        logger.warning(
            "removed %d stale temporary backup file(s), %d bytes, left by writes that died",
            len(report.removed),
            report.removed_bytes,
        )
    for error in report.errors:
        logger.error("could not remove a stale temporary backup file: %s", error)
    return report


def _final_key(folder: str, name: str) -> str | None:
    """The key a temporary file was to become: `.tmp-<32 hex>-<name>` -> folder/name."""
    rest = name[len(TEMPORARY_PREFIX) :]
    random_part, dash, final = rest.partition("-")
    if not name.startswith(TEMPORARY_PREFIX) or not dash or len(random_part) != 32 or not final:
        return None
    return f"{folder}/{final}" if folder else final


def remove_temporary_files(folder_key: str, marker: str) -> int:
    """Remove the temporary files in the storage folder `folder_key` whose final name
    contains `-<marker>-` (the caller's name for the work that wrote them, which has
    ended). Returns how many. Nothing on S3 (no temporary objects).

    Through directory descriptors, the folder opened component by component with
    O_NOFOLLOW and each file unlinked relative to it: a symlink in the way is refused,
    never followed, so this never removes anything outside the backups folder."""
    if not storage.is_local() or not marker:
        return 0
    try:
        folder_fd = _open_folder(storage.backups_root(), storage.check_key(folder_key).split("/"))
    except FileNotFoundError:  # the work stored nothing on this node
        return 0
    removed = 0
    needle = f"-{marker}-"
    try:
        with os.scandir(folder_fd) as entries:
            names = [
                entry.name
                for entry in entries
                if _final_key("", entry.name) is not None
                and needle in entry.name
                and entry.is_file(follow_symlinks=False)
            ]
        for name in names:
            try:
                os.unlink(name, dir_fd=folder_fd)
            except FileNotFoundError:  # its writer failed and removed it meanwhile
                continue
            removed += 1
    finally:
        os.close(folder_fd)
    if removed:
        logger.info("removed %d temporary file(s) of ended work %s in %s", removed, marker, folder_key)
    return removed


@dataclass
class EndedSweepReport:
    removed: list[str] = field(default_factory=list)  # the keys they were to become
    kept: int = 0  # temporary files of work still going
    errors: list[str] = field(default_factory=list)


def sweep_ended_writes(still_writing: Callable[[list[str]], Iterable[str]]) -> EndedSweepReport:
    """Remove this node's temporary files whose writer has ended.

    `still_writing` gets the keys the temporary files were to become and returns those
    whose work is still going (or that it cannot place: those are kept for the age
    sweep). Walked with os.fwalk and unlinked relative to each folder's descriptor, no
    symlink followed. One listing per folder per sweep."""
    report = EndedSweepReport()
    if not storage.is_local():
        return report
    root = storage.backups_root()
    if not root.is_dir():
        return report
    found: list[tuple[str, str, str]] = []  # (folder, name, final key)
    for folder, _, names, _ in os.fwalk(root, follow_symlinks=False):
        relative = os.path.relpath(folder, root)
        relative = "" if relative == "." else relative
        for name in names:
            key = _final_key(relative, name)
            if key is not None:
                found.append((relative, name, key))
    if not found:
        return report
    going = set(still_writing([key for _, _, key in found]))
    ended: dict[str, list[tuple[str, str]]] = {}
    for relative, name, key in found:
        if key in going:
            report.kept += 1
        else:
            ended.setdefault(relative, []).append((name, key))
    for relative, files in ended.items():
        try:
            folder_fd = _open_folder(root, [part for part in relative.split("/") if part])
        except FileNotFoundError:  # removed meanwhile, with what it held
            continue
        except OSError as exc:  # a symlink put in the way (ELOOP, ENOTDIR) is refused, not followed
            report.errors.append(f"{root / relative}: {exc.strerror or exc}")
            continue
        try:
            for name, key in files:
                try:
                    if not dirfd.is_symlink(folder_fd, name):  # unlink would only drop the link; still not ours
                        os.unlink(name, dir_fd=folder_fd)
                        report.removed.append(key)
                except FileNotFoundError:  # its writer failed and removed it meanwhile
                    continue
                except OSError as exc:
                    report.errors.append(f"{root / relative / name}: {exc.strerror or exc}")
        finally:
            os.close(folder_fd)
    if report.removed:
        logger.warning("removed %d temporary backup file(s) whose run had ended", len(report.removed))
    for error in report.errors:
        logger.error("could not remove a temporary backup file of ended work: %s", error)
    return report


def _open_folder(root: Path, parts: list[str]) -> int:
    """A descriptor of root/parts..., each component opened relative to its parent with
    O_NOFOLLOW | O_DIRECTORY (a symlink raises ELOOP or ENOTDIR). The root itself is the
    configured BACKUPS_DIR, trusted as set."""
    fd = os.open(root, dirfd.DIR_FLAGS)
    try:
        for part in parts:
            if part in ("", ".", ".."):
                raise OSError(errno.EINVAL, "not a plain path", str(root / part))
            next_fd = os.open(part, dirfd.DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except BaseException:
        os.close(fd)
        raise
    return fd


SWEEP_EVERY_SECONDS = 3600
# How often a node looks for temporary files of ended work: a killed worker's half
# dump is gone within about a minute of its run ending, whichever node ended it.
ENDED_SWEEP_SECONDS = 60


def run_sweeper(
    stop: threading.Event,
    every: float = SWEEP_EVERY_SECONDS,
    first_after: float = 60,
    still_writing: Callable[[list[str]], Iterable[str]] | None = None,
    ended_every: float = ENDED_SWEEP_SECONDS,
) -> None:
    """The cluster's sweeps, beside the dispatcher clock (not in it: a big folder tree
    must not delay a minute's pass): the temporary files of ended work every
    `ended_every` seconds (with `still_writing`, the caller's answer to "is this file's
    work still going?"), and by age every `every` seconds, the first soon after the
    start, so a cluster restarted more often than hourly still sweeps. Several nodes
    sweeping at once is harmless."""
    now = time.monotonic()
    next_stale = now + first_after
    next_ended = now + min(first_after, ended_every)
    while True:
        wait = max(0.0, min(next_stale, next_ended if still_writing else next_stale) - time.monotonic())
        if stop.wait(wait):
            return
        close_old_connections()
        now = time.monotonic()
        if still_writing is not None and now >= next_ended:
            next_ended = now + ended_every
            try:
                sweep_ended_writes(still_writing)
            except Exception:  # keep sweeping: the database may be back next time
                logger.exception("sweeping the temporary files of ended runs failed")
        if now >= next_stale:
            next_stale = now + every
            try:
                sweep_temporary_files()
            except Exception:  # keep sweeping later: a folder that fails now may not then
                logger.exception("sweeping stale temporary backup files failed")
            orphans.sweep_quietly()
