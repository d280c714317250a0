"""The minute trigger: one dispatcher pass just after every minute boundary.

django-q2's scheduler wakes only every ~30 s and computes from 'now' in one global
zone, so it cannot start a slot on time. This clock runs beside the cluster
(manage.py runcluster) and starts a pass at second ~0.5 of each minute; several
clocks on several nodes are safe because a pass is idempotent.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections

from lib.passes import OFFSET_SECONDS
from scheduling.dispatch import run_pass

logger = logging.getLogger("scheduling.clock")


def seconds_to_next_minute(now: float) -> float:
    return 60 - (now % 60) + OFFSET_SECONDS


def run_clock(stop: threading.Event) -> None:
    while not stop.is_set():
        if stop.wait(seconds_to_next_minute(time.time())):
            break
        close_old_connections()
        try:
            report = run_pass()
        except Exception:  # keep ticking: one bad pass must not stop every later one
            logger.exception("dispatcher pass failed")
            continue
        if not report.enabled:
            logger.warning(report.message)
        elif report.due:
            logger.info("dispatch %s", report.as_json())
