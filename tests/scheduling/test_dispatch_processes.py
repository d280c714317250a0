"""Two dispatcher processes started at once against one database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, time

import pytest

from scheduling.models import BackupSchedule, BackupScheduleRun, ScheduleKind
from tests.helpers import ROOT, database_url, queued_tasks

SLOT = datetime(2026, 11, 24, 1, 30, tzinfo=UTC)


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_started_at_once_create_each_run_exactly_once(tenant, source) -> None:
    BackupSchedule.objects.bulk_create(
        BackupSchedule(
            tenant=tenant,
            name=f"s{i}",
            kind=ScheduleKind.DAILY,
            time_of_day=time(2, 30),
            timezone="Europe/Berlin",
            next_run_at=SLOT,
        )
        for i in range(200)
    )
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "config.settings"}
    command = [sys.executable, "manage.py", "dispatch", "--at", "2026-11-24T01:30:30Z"]
    processes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    reports = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        reports.append(json.loads(out))
    assert sorted(r["created"] for r in reports) == [0, 200]
    assert BackupScheduleRun.objects.count() == 200
    assert BackupScheduleRun.objects.values("schedule", "slot").distinct().count() == 200
    assert len(queued_tasks()) == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("value", ["9999-12-31T23:59:00+00:00", ""])
def test_the_dispatch_command_exits_2_with_one_line_and_no_traceback_for_a_bad_instant(schedule, value) -> None:
    env = {**os.environ, "DATABASE_URL": database_url(), "DJANGO_SETTINGS_MODULE": "config.settings"}
    command = [sys.executable, "manage.py", "dispatch", "--at", value]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "--at" in done.stderr
    assert done.stdout == ""
    assert BackupScheduleRun.objects.count() == 0
