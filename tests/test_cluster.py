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
from tests.helpers import make_schedule
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


@pytest.mark.django_db(transaction=True)
def test_two_cluster_nodes_execute_each_run_once_even_when_its_task_is_delivered_twice(
    tenant, source, settings
) -> None:
    from datetime import time as clock_time

    from backups.models import BackupSet, BackupSource
    from scheduling.queue import enqueue_runs
    from tenants.models import AuditAction, AuditLog

    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "BACKUPS_DIR": str(settings.BACKUPS_DIR),
        "SOURCE_ROOTS": ",".join(str(p) for p in settings.SOURCE_ROOTS),
        "Q_WORKERS": "2",
    }
    nodes = [
        subprocess.Popen(
            [sys.executable, "manage.py", "runcluster"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        runs = []
        for i in range(6):
            # A source of its own each: runs sharing a source would skip each other (source leases).
            own = BackupSource.objects.create(tenant=tenant, name=f"copy {i}", path=source.path)
            schedule = make_schedule(tenant, own, name=f"s{i}", kind="daily", time_of_day=clock_time(3))
            runs.append(run_now(schedule, actor=None))
        enqueue_runs([run.code for run in runs])  # every task a second time, as a redelivery would
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if not BackupScheduleRun.objects.filter(status__in=["queued", "running"]).exists():
                break
            time.sleep(0.1)
    finally:
        outputs = []
        for node in nodes:
            node.send_signal(signal.SIGINT)
        for node in nodes:
            outputs.append(node.communicate(timeout=60)[0][-2000:])
    statuses = list(BackupScheduleRun.objects.values_list("status", flat=True))
    assert statuses == ["succeeded"] * 6, (statuses, outputs)
    assert BackupSet.objects.count() == 6
    assert AuditLog.objects.filter(action=AuditAction.RUN_STARTED).count() == 6
