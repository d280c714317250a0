"""Keeping a running run's heartbeat fresh while the worker is busy with it, and
its log current for the run page.

One thread per run does both, so a run costs at most one UPDATE per
LOG_SECONDS (when the log has new lines) and one per HEARTBEAT_SECONDS otherwise.
The run's own thread never waits on these writes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from django.db import close_old_connections, connection

from scheduling.lifecycle import beat

HEARTBEAT_SECONDS = 30
# A followed log is written at most this often: a person watching a multi-hour dump
# sees it move, and a chatty tool does not turn into a stream of writes.
LOG_SECONDS = 10
logger = logging.getLogger(__name__)


class FollowedLog(Protocol):
    """A log that grows while the run works (backups.runlog.RunLog)."""

    @property
    def version(self) -> int: ...  # changes with every line

    def snapshot(self) -> tuple[int, str]: ...  # (version, text), consistent with each other


@contextmanager
def heartbeat(run_code: str, log: FollowedLog | None = None) -> Iterator[None]:
    stop = threading.Event()
    every = min(LOG_SECONDS, HEARTBEAT_SECONDS) if log is not None else HEARTBEAT_SECONDS

    def loop() -> None:
        written = log.version if log is not None else 0
        last_beat = time.monotonic()
        try:
            while not stop.wait(every):
                changed = log is not None and log.version != written
                if not changed and time.monotonic() - last_beat < HEARTBEAT_SECONDS:
                    continue
                try:
                    if changed:
                        assert log is not None
                        version, text = log.snapshot()
                        beat(run_code, log=text)
                        written = version
                    else:
                        beat(run_code)
                    last_beat = time.monotonic()
                except Exception:  # a locked database or a dropped connection: try again next time
                    logger.warning("heartbeat of run %s failed; retrying", run_code, exc_info=True)
                    close_old_connections()
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=loop, name=f"heartbeat-{run_code}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
