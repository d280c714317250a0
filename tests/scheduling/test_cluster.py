"""The real thing: `manage.py runcluster` (django-q2 workers + the minute clock) as a process."""

from __future__ import annotations

import time

import pytest
import time_machine

from scheduling.clock import OFFSET_SECONDS, seconds_to_next_minute
from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.runs import run_now
from tests.helpers import make_schedule, runcluster


def test_the_clock_wakes_just_after_each_minute_boundary() -> None:
    with time_machine.travel("2026-11-24 01:29:45.250 +0000", tick=False):
        assert seconds_to_next_minute(time.time()) == pytest.approx(14.75 + OFFSET_SECONDS)
    with time_machine.travel("2026-11-24 01:30:00 +0000", tick=False):
        assert seconds_to_next_minute(time.time()) == pytest.approx(60 + OFFSET_SECONDS)


@pytest.mark.django_db(transaction=True)
def test_a_run_now_is_executed_by_a_real_cluster(schedule, settings, tmp_path) -> None:
    with runcluster(settings) as cluster:
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
    assert run.status == RunStatus.SUCCEEDED, (seen, run.log, cluster.output())
    assert run.backup_set.size > 0
    assert cluster.processes[0].returncode == 0, cluster.output()
    assert BackupScheduleRun.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_cluster_nodes_execute_each_run_once_even_when_its_task_is_delivered_twice(
    tenant, source, settings
) -> None:
    from datetime import time as clock_time

    from backups.models import BackupSet, BackupSource
    from scheduling.queue import enqueue_runs
    from tenants.models import AuditAction, AuditLog

    with runcluster(settings, nodes=2, workers=2) as cluster:
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
    statuses = list(BackupScheduleRun.objects.values_list("status", flat=True))
    assert statuses == ["succeeded"] * 6, (statuses, cluster.output())
    assert BackupSet.objects.count() == 6
    assert AuditLog.objects.filter(action=AuditAction.RUN_STARTED).count() == 6
