"""Stored backup files that no backup item names: found, and removed once old enough.

A file is stored under its key when its item's dump is complete, and named by a
BackupItem only when the run's set is recorded, at the end of the run. A file between
the two that never gets its set is an orphan: the worker was killed (SIGKILL, OOM,
power loss) after the rename and before the set, or the database could not be reached
to record the set and could not be asked whether a COMMIT lost on the way had been
carried out (backups.pipeline keeps the files then, rather than risk a recorded set with
nothing behind it). An orphan is no backup: no page lists it, no restore reads it, no
retention ever prunes it; it only holds space, for ever.

The age (settings.BACKUPS_ORPHAN_AFTER_HOURS, never less than the longest time limit a
run may have plus an hour): a live run names its files at most its time limit after the
first one was written, so an unnamed file older than that cannot belong to a run still
going on any node. The file's mtime is its last write, just before its rename into place.

Only this installation's database says which files are named: a backups folder or bucket
belongs to one installation. A database holding no stored item at all (a new install, a
wrong DATABASE_URL) sweeps nothing.

Local storage is walked through directory descriptors (backups.dirfd): every folder is
opened relative to its parent with O_NOFOLLOW, listed by descriptor, and a file is removed
relative to its folder only if it is still the file that was judged. A symlink anywhere
in the tree is never followed (nor removed: nothing of ours is a link). Hidden names are
skipped: `.tmp-` files are backups.sweep's, and keys never start with a dot. On S3 the
bucket (under the storage's prefix) is listed, a thousand keys per request.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings

from backups import storage
from backups.dirfd import DIR_FLAGS, lstat_at, same_file, walk
from backups.errors import BackupError
from backups.models import BackupItem

logger = logging.getLogger(__name__)

# Keys checked against the items per query: the statements grow with the files / BATCH,
# whatever the folders (and far below SQLite's limit on a statement's parameters).
BATCH = 500
# A file system's own folder at its root, never ours (a backups folder that is a mount point).
NOT_OURS = frozenset({"lost+found"})


def orphan_after() -> timedelta:
    return timedelta(hours=settings.BACKUPS_ORPHAN_AFTER_HOURS)


@dataclass
class OrphanReport:
    local: bool = True
    checked: int = 0  # stored files old enough to be judged
    kept_young: int = 0  # too young to judge: may belong to a run still going
    removed: list[str] = field(default_factory=list)  # keys (with dry_run: that would be removed)
    removed_bytes: int = 0
    links: list[str] = field(default_factory=list)  # symlinks found in the tree, never followed
    errors: list[str] = field(default_factory=list)
    no_items: bool = False  # the database names no stored file: nothing was judged


@dataclass(frozen=True)
class _Found:
    key: str
    size: int
    stat: os.stat_result | None = None  # local: what was judged, to be the same when removed


def sweep_orphan_files(
    older_than: timedelta | None = None, *, dry_run: bool = False, batch: int = BATCH
) -> OrphanReport:
    """Remove (with dry_run, list) the stored files no backup item names, older than
    `older_than` (default: settings.BACKUPS_ORPHAN_AFTER_HOURS)."""
    age = orphan_after() if older_than is None else older_than
    cutoff = time.time() - age.total_seconds()
    report = OrphanReport(local=storage.is_local())
    if not BackupItem.objects.exclude(storage_key="").exists():
        report.no_items = True
        return report
    if report.local:
        _sweep_local(cutoff, report, dry_run, batch)
    else:
        _sweep_s3(cutoff, report, dry_run, batch)
    if report.removed and not dry_run:
        logger.warning(
            "removed %d stored backup file(s) no backup set names, %d bytes: %s",
            len(report.removed),
            report.removed_bytes,
            ", ".join(report.removed[:20]) + (" …" if len(report.removed) > 20 else ""),
        )
    for link in report.links:
        logger.warning("the backups storage holds a symlink, not followed: %s", link)
    for error in report.errors:
        logger.error("sweeping orphan backup files: %s", error)
    return report


def sweep_quietly() -> None:
    """The cluster's sweeper's call: a failure is logged, and the next sweep tries again."""
    try:
        sweep_orphan_files()
    except Exception:
        logger.exception("sweeping orphan backup files failed")


def _judge(found: Sequence[_Found], report: OrphanReport) -> list[_Found]:
    """Those of `found` no item names: one query for the whole batch."""
    report.checked += len(found)
    named = set(BackupItem.objects.filter(storage_key__in=[f.key for f in found]).values_list("storage_key", flat=True))
    return [f for f in found if f.key not in named]


def _batches(found: Iterator[_Found], size: int) -> Iterator[list[_Found]]:
    pending: list[_Found] = []
    for item in found:
        pending.append(item)
        if len(pending) >= size:
            yield pending
            pending = []
    if pending:
        yield pending


# ---------------------------------------------------------------- local


def _sweep_local(cutoff: float, report: OrphanReport, dry_run: bool, batch: int) -> None:
    root = storage.backups_root()
    try:
        # The configured folder itself is the administrator's (it may be a link to a
        # mount): opened as configured, as the storage writes it; nothing below is followed.
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:  # nothing stored on this node yet
        return
    try:
        for found in _batches(_local_files(root_fd, (), cutoff, report), batch):
            for orphan in _judge(found, report):
                if dry_run or _remove_local(root_fd, orphan, report):
                    report.removed.append(orphan.key)
                    report.removed_bytes += orphan.size
    finally:
        os.close(root_fd)


def _local_files(fd: int, parts: tuple[str, ...], cutoff: float, report: OrphanReport) -> Iterator[_Found]:
    """The regular files under the folder `fd` older than `cutoff`, depth first; only the
    folders on the current path are open."""
    try:
        with os.scandir(fd) as listing:
            entries = sorted(listing, key=lambda entry: entry.name)
    except OSError as exc:
        report.errors.append(f"{'/'.join(parts) or '.'}: cannot list: {exc.strerror or exc}")
        return
    for entry in entries:
        name = entry.name
        key = "/".join((*parts, name))
        if name.startswith(".") or (not parts and name in NOT_OURS):
            continue
        try:
            if entry.is_symlink():
                report.links.append(key)
            elif entry.is_dir(follow_symlinks=False):
                # O_NOFOLLOW: a folder swapped for a link since the listing is refused here.
                child = os.open(name, DIR_FLAGS, dir_fd=fd)
                try:
                    yield from _local_files(child, (*parts, name), cutoff, report)
                finally:
                    os.close(child)
            elif entry.is_file(follow_symlinks=False):
                info = entry.stat(follow_symlinks=False)
                if info.st_mtime > cutoff:
                    report.kept_young += 1
                else:
                    yield _Found(key, info.st_size, info)
        except FileNotFoundError:  # removed meanwhile (retention, another node's sweep)
            continue
        except OSError as exc:
            report.errors.append(f"{key}: {exc.strerror or exc}")


def _remove_local(root_fd: int, orphan: _Found, report: OrphanReport) -> bool:
    *folders, name = orphan.key.split("/")
    try:
        # The folders again from the root, none through a link (BackupError if one is now).
        fd = walk(root_fd, folders, storage.backups_root())
    except BackupError as exc:
        report.errors.append(f"{orphan.key}: not removed: {exc.message}")
        return False
    except FileNotFoundError:
        return False
    try:
        now = lstat_at(fd, name)
        if now is None:  # gone meanwhile
            return False
        assert orphan.stat is not None
        if not stat.S_ISREG(now.st_mode) or not same_file(now, orphan.stat) or now.st_mtime != orphan.stat.st_mtime:
            return False  # not the file that was judged any more: judged again next time
        os.unlink(name, dir_fd=fd)
        return True
    except OSError as exc:
        report.errors.append(f"{orphan.key}: not removed: {exc.strerror or exc}")
        return False
    finally:
        os.close(fd)


# ---------------------------------------------------------------- S3


def _sweep_s3(cutoff: float, report: OrphanReport, dry_run: bool, batch: int) -> None:
    backend: Any = storage.backups_storage()
    client, bucket, prefix = storage.s3_location(backend)
    before = datetime.fromtimestamp(cutoff, UTC)

    def listed() -> Iterator[_Found]:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(prefix) :]
                if not key or any(part.startswith(".") for part in key.split("/")):
                    continue
                if obj["LastModified"] > before:
                    report.kept_young += 1
                    continue
                yield _Found(key, int(obj["Size"]))

    for found in _batches(listed(), batch):
        for orphan in _judge(found, report):
            if not dry_run:
                try:
                    storage.delete(orphan.key)
                except Exception as exc:  # one refused delete must not stop the sweep
                    report.errors.append(f"{orphan.key}: not removed ({type(exc).__name__})")
                    continue
            report.removed.append(orphan.key)
            report.removed_bytes += orphan.size
