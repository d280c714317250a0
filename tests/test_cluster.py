"""The real thing: `manage.py runcluster` (django-q2 workers + the minute clock) as a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import time_machine

from scheduling.clock import OFFSET_SECONDS, seconds_to_next_minute
from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.runs import run_now
from tests.test_dispatch_processes import database_url

ROOT = Path(__file__).resolve().parent.parent


def test_the_clock_wakes_just_after_each_minute_boundary() -> None:
    with time_machine.travel("2026-11-24 01:29:45.250 +0000", tick=False):
        assert seconds_to_next_minute(time.time()) == pytest.approx(14.75 + OFFSET_SECONDS)
    with time_machine.travel("2026-11-24 01:30:00 +0000", tick=False):
        assert seconds_to_next_minute(time.time()) == pytest.approx(60 + OFFSET_SECONDS)


@pytest.mark.django_db(transaction=True)
def test_a_run_now_is_executed_by_a_real_cluster(schedule, settings, tmp_path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "BACKUPS_DIR": str(settings.BACKUPS_DIR),
        "SOURCE_ROOTS": ",".join(str(p) for p in settings.SOURCE_ROOTS),
        "Q_WORKERS": "1",
    }
    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "runcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        run = run_now(schedule, actor=None)
        seen = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            run.refresh_from_db()
            if not seen or seen[-1] != run.status:
                seen.append(run.status)
            if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
                break
            time.sleep(0.05)
    finally:
        cluster.send_signal(signal.SIGINT)
        output, _ = cluster.communicate(timeout=60)
    assert run.status == RunStatus.SUCCEEDED, (seen, run.log, output[-3000:])
    assert run.backup_set.size > 0
    assert cluster.returncode == 0, output[-3000:]
    assert BackupScheduleRun.objects.count() == 1
