"""Keeping a running run's heartbeat fresh while the worker is busy with it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import close_old_connections, connection
from django.utils import timezone

from scheduling.runs import beat

HEARTBEAT_SECONDS = 30
logger = logging.getLogger(__name__)


@contextmanager
def heartbeat(run_code: str) -> Iterator[None]:
    stop = threading.Event()
    every = HEARTBEAT_SECONDS

    def loop() -> None:
        try:
            while not stop.wait(every):
                try:
                    beat(run_code, timezone.now())
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
