"""Keeping a running run's heartbeat fresh while the worker is busy with it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection
from django.utils import timezone

from scheduling.runs import beat

HEARTBEAT_SECONDS = 30


@contextmanager
def heartbeat(run_code: str) -> Iterator[None]:
    stop = threading.Event()
    every = HEARTBEAT_SECONDS

    def loop() -> None:
        try:
            while not stop.wait(every):
                beat(run_code, timezone.now())
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=loop, name=f"heartbeat-{run_code}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
