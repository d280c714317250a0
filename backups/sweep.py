"""Removing the temporary files of writes that died (local storage).

A local backup is written to a hidden `.tmp-<random>-<name>` file beside its final name
and renamed into place when complete; every error removes it. Only a worker killed
outright (SIGKILL, OOM, power loss) leaves one behind. It never looks like a backup (no
item points at it, and keys never start with a dot), but it holds disk space.

A temporary file is stale once it has not been written to for longer than any run may
last: a live run writes to its file as the dump streams, and a run that stalls is
stopped, and its file removed, at its schedule's time limit (at most
MAX_TIME_LIMIT_MINUTES). So an untouched file older than that, plus a margin, cannot
belong to a run that is still going, whichever node it runs on.

S3 has no temporary objects: an upload that dies is an incomplete multipart upload,
which the bucket's lifecycle rule (AbortIncompleteMultipartUpload) clears.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from django.db import close_old_connections

from backups import orphans, storage
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


SWEEP_EVERY_SECONDS = 3600


def run_sweeper(stop: threading.Event, every: float = SWEEP_EVERY_SECONDS, first_after: float = 60) -> None:
    """The cluster's hourly sweep, beside the dispatcher clock (not in it: a big folder
    tree must not delay a minute's pass). The first sweep comes soon after the start, so
    a cluster restarted more often than hourly still sweeps. Several nodes sweeping at
    once is harmless."""
    wait = first_after
    while not stop.wait(wait):
        wait = every
        close_old_connections()
        try:
            sweep_temporary_files()
        except Exception:  # keep sweeping later: a folder that fails now may not then
            logger.exception("sweeping stale temporary backup files failed")
        orphans.sweep_quietly()
