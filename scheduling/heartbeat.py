"""Keeping a running run's heartbeat fresh while the worker is busy with it, and
its log current for the run page; and noticing when the run is no longer the worker's.

One thread per run does both, so a run costs at most one UPDATE per
LOG_SECONDS (when the log has new lines) and one per HEARTBEAT_SECONDS otherwise.
The run's own thread never waits on these writes.

A beat that finds the run not running any more (the dispatcher gave it up for lost,
scheduling.dispatch.fail_abandoned_runs, though this worker is alive: a stalled
database, a paused process) makes the worker stop: the pipeline checks stop_error at
every read, so the dump ends at its next chunk, its temporary file is removed and no
set is made (scheduling.lifecycle.adopt refuses one too). The run's source leases are
the next run's by then, and one source is dumped by one run at a time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from django.db import close_old_connections, connection

from backups.errors import BackupError, ErrorCode
from scheduling.lifecycle import beat

# The cadence and the dispatcher's verdict are chosen together (scheduling.dispatch
# ABANDONED_AFTER is 4.5 beats): a beat every 10 s lets a killed worker's run be failed
# within 45 s of its last beat + at most one minute to the next pass (< 2 minutes), and
# a live worker may still miss four beats in a row (a locked SQLite database, a slow
# commit) before it is given up. One small UPDATE per running run per 10 s.
HEARTBEAT_SECONDS = 10
# A followed log is written at most this often: a person watching a multi-hour dump
# sees it move, and a chatty tool does not turn into a stream of writes.
LOG_SECONDS = 10
logger = logging.getLogger(__name__)

GIVEN_UP_MESSAGE = (
    "The dispatcher had given this run up for lost (its heartbeat was late), so this worker stopped: "
    "the run's sources may already be backed up by the schedule's next run."
)


class FollowedLog(Protocol):
    """A log that grows while the run works (backups.runlog.RunLog)."""

    @property
    def version(self) -> int: ...  # changes with every line

    def snapshot(self) -> tuple[int, str]: ...  # (version, text), consistent with each other


class Pulse:
    """What the heartbeat learned: whether the run is still this worker's."""

    def __init__(self) -> None:
        self.given_up = threading.Event()

    def stop_error(self) -> BackupError | None:
        """The pipeline's should_stop: an error once the run is not running any more."""
        return BackupError(ErrorCode.WORKER_LOST, GIVEN_UP_MESSAGE) if self.given_up.is_set() else None


@contextmanager
def heartbeat(run_code: str, log: FollowedLog | None = None) -> Iterator[Pulse]:
    stop = threading.Event()
    pulse = Pulse()
    every = min(LOG_SECONDS, HEARTBEAT_SECONDS) if log is not None else HEARTBEAT_SECONDS

    def loop() -> None:
        written = log.version if log is not None else 0
        last_beat = time.monotonic()
        try:
            while not stop.wait(every):
                changed = log is not None and log.version != written
                # Half a tick of slack: waking `every` after the last beat is measured
                # a hair short of it, and skipping that tick would double the gap.
                if not changed and time.monotonic() - last_beat < HEARTBEAT_SECONDS - every / 2:
                    continue
                try:
                    if changed:
                        assert log is not None
                        version, text = log.snapshot()
                        alive = beat(run_code, log=text)
                        written = version
                    else:
                        alive = beat(run_code)
                    last_beat = time.monotonic()
                except Exception:  # a locked database or a dropped connection: try again next time
                    logger.warning("heartbeat of run %s failed; retrying", run_code, exc_info=True)
                    close_old_connections()
                    continue
                if not alive:
                    logger.warning("run %s is no longer running (given up for lost?); its worker stops", run_code)
                    pulse.given_up.set()
                    return
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=loop, name=f"heartbeat-{run_code}", daemon=True)
    thread.start()
    try:
        yield pulse
    finally:
        stop.set()
        thread.join()
