"""A node whose clock is off, for real: `manage.py runcluster` under libfaketime (the Debian
`faketime` package), its clock ten minutes behind or ahead of the database's.

PostgreSQL only: SQLite's clock is the clock of the process that opens the file, and an
embedded deployment is one host, so there is no second clock to disagree with there."""

from __future__ import annotations

import glob
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from django.db import connection

from backups.models import BackupItem, BackupSource
from scheduling.dbclock import db_now
from scheduling.dispatch import NODE, run_pass
from scheduling.health import dispatcher_health
from scheduling.models import BackupSchedule, BackupScheduleRun, NodeClock, RunStatus, SourceLease
from scheduling.runs import run_now
from tests.conftest import make_sqlite_database
from tests.helpers import make_schedule, runcluster

TEN_MINUTES = 600


def require_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite reads the clock of the process itself: the embedded profile has one host, one clock")


# libfaketime 0.9.10 with the monotonic clock left real turns the absolute deadline of
# clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which time.sleep uses, into EINVAL; with the
# monotonic clock faked too, timed condition waits (threading.Event.wait) never return. So the
# monotonic clock stays real (a skewed node's clock counts from boot all the same) and the
# child's time.sleep waits on an Event, the one change made to the process under test.
SLEEP_WITHOUT_CLOCK_NANOSLEEP = """
import threading
import time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
"""


def faketime_env(offset_seconds: int, site: Path) -> dict[str, str]:
    """The environment that runs a process with its wall clock `offset_seconds` off, checked on
    a child process first: a libfaketime that shifts nothing would make the test pass for nothing."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    if not found:
        reason = "libfaketime is not installed (apt-get install -y faketime)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason} (CI=true: a missing tool is a failure)")
        pytest.skip(reason)
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SLEEP_WITHOUT_CLOCK_NANOSLEEP)
    env = {
        "LD_PRELOAD": found[0],
        "FAKETIME": f"{offset_seconds:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }
    check = "import datetime, time; time.sleep(0.01); print(datetime.datetime.now(datetime.UTC).timestamp())"
    child = subprocess.run(
        [sys.executable, "-c", check], env={**os.environ, **env}, capture_output=True, text=True, timeout=30
    )
    assert child.returncode == 0, child.stderr
    shift = float(child.stdout) - time.time()
    assert abs(shift - offset_seconds) < 10, f"faketime shifted the child's clock by {shift:.1f} s"
    return env


@contextmanager
def locked(path: Path) -> Iterator[Callable[[], None]]:
    """Hold the SQLite source locked: its backup waits (running, beating) until released."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            holder.execute("ROLLBACK")
            released = True

    try:
        yield release
    finally:
        release()
        holder.close()


def wait_for(condition: Callable[[], object], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def status(run: BackupScheduleRun) -> str:
    return BackupScheduleRun.objects.filter(pk=run.pk).values_list("status", flat=True).get()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("offset", [-TEN_MINUTES, TEN_MINUTES], ids=["behind", "ahead"])
def test_a_node_ten_minutes_off_fails_no_live_run_marks_no_future_slot_missed_and_is_shown(
    offset, tenant, source, settings, tmp_path
) -> None:
    require_postgresql()
    env = faketime_env(offset, tmp_path / "site")
    now = db_now()
    other = BackupSource.objects.create(
        tenant=tenant, name="Other", path=str(make_sqlite_database(settings.SOURCE_ROOTS[0] / "other.sqlite3"))
    )
    # Every minute from the next one: a node ten minutes ahead would see ten of its slots
    # due, five of them beyond the grace, and record them missed.
    next_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    every_minute = make_schedule(
        tenant, other, name="Every minute", kind="cron", cron="* * * * *", timezone="UTC", next_run_at=next_minute
    )
    # Really late (the dispatcher was down two hours): a slot to mark missed, by a node whose clock is right.
    late_at = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    late = make_schedule(
        tenant, other, name="Hourly", kind="cron", cron="0 * * * *", timezone="UTC", next_run_at=late_at
    )
    nightly = make_schedule(tenant, source, name="Nightly", kind="cron", cron="0 3 * * *", timezone="UTC")
    weekly = make_schedule(tenant, source, name="Weekly", kind="cron", cron="0 4 * * 0", timezone="UTC")

    cluster = None
    try:
        # The source is held locked, so the run's backup waits (running, beating) until released;
        # released before the cluster stops (the inner context), so no worker holds the stop up.
        with runcluster(settings, workers=2, env=dict(env)) as cluster, locked(Path(source.path)) as release:
            live = run_now(nightly, actor=None)
            wait_for(lambda: SourceLease.objects.filter(source=source).exists(), 60, "the worker to take the lease")
            assert status(live) == RunStatus.RUNNING
            live.refresh_from_db()
            lease = SourceLease.objects.get(source=source)
            # Written with the database's clock, not the node's ten minutes off.
            assert abs((live.heartbeat_at - db_now()).total_seconds()) < 60, (live.heartbeat_at, cluster.output())
            assert abs((lease.acquired_at - db_now()).total_seconds()) < 60

            # The node's own pass (its clock thread, every minute): measured, refused, shown.
            wait_for(lambda: NodeClock.objects.exclude(node=NODE).exists(), 100, "a pass of the skewed node")
            measured = NodeClock.objects.exclude(node=NODE).get()
            assert abs(measured.offset_seconds - offset) < 10, measured
            late.refresh_from_db()
            assert late.next_run_at == late_at and not late.runs.exists()  # left to a node with a right clock
            health = dispatcher_health()
            assert (health.ok, health.state) == (False, "clock-skew")
            assert measured.node in health.message
            assert ("ahead of" if offset > 0 else "behind") in health.message

            # A pass on a node whose clock is right (this one) gives the live run up for nothing,
            # and does mark the late schedule's slots missed.
            report = run_pass()
            assert (report.abandoned, report.refused, report.missed) == (0, 0, 1), report
            assert status(live) == RunStatus.RUNNING

            # So its lease holds: a second run of the same source is skipped, not a second backup.
            second = run_now(weekly, actor=None)
            wait_for(lambda: status(second) not in (RunStatus.QUEUED, RunStatus.RUNNING), 60, "the second run")
            assert status(second) == RunStatus.SKIPPED, cluster.output()
            release()
            wait_for(lambda: status(live) not in (RunStatus.QUEUED, RunStatus.RUNNING), 90, "the live run to finish")
    except AssertionError as failed:  # with what the nodes printed, which is only there once they stopped
        raise AssertionError(f"{failed}\n{cluster.output() if cluster else ''}") from None
    assert status(live) == RunStatus.SUCCEEDED, cluster.output()
    assert BackupItem.objects.filter(source=source).count() == 1  # one set of the source, not two
    missed = BackupScheduleRun.objects.filter(status=RunStatus.MISSED)
    assert not missed.filter(schedule=every_minute).exists()  # no future slot recorded missed
    assert list(missed.values_list("schedule_id", flat=True)) == [late.pk]
    assert BackupSchedule.objects.get(pk=every_minute.pk).next_run_at <= db_now() + timedelta(minutes=2)


@pytest.mark.django_db(transaction=True)
def test_a_pass_on_a_node_whose_clock_is_off_marks_no_slot_missed(tenant, source, settings) -> None:
    """This process's own clock, moved ten minutes ahead of the database's (time_machine
    shifts Python's clock, not the server's): the late schedule is left for a right clock."""
    require_postgresql()
    late_at = db_now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    late = make_schedule(
        tenant, source, name="Hourly", kind="cron", cron="0 * * * *", timezone="UTC", next_run_at=late_at
    )
    with time_machine.travel(db_now() + timedelta(seconds=TEN_MINUTES), tick=True):
        report = run_pass()
    assert (report.due, report.refused, report.missed, report.created) == (1, 1, 0, 0)
    assert report.clock_offset is not None and abs(report.clock_offset - TEN_MINUTES) < 10
    late.refresh_from_db()
    assert late.next_run_at == late_at and not late.runs.exists()
    assert dispatcher_health().state == "clock-skew"
    settings.CLOCK_SKEW_LIMIT_SECONDS = 900  # within the bound, the same node marks the slots missed
    with time_machine.travel(db_now() + timedelta(seconds=TEN_MINUTES), tick=True):
        report = run_pass()
    assert (report.refused, report.missed) == (0, 1)


def test_health_shows_a_node_whose_last_pass_found_its_clock_off(client, rita, tenant) -> None:
    from django.core.cache import cache

    from scheduling.health import STALE_AFTER

    now = db_now()
    run_pass(now)
    NodeClock.objects.create(node="web-2:4242", measured_at=now, offset_seconds=-612.4, round_trip_seconds=0.002)
    health = dispatcher_health(now)
    assert (health.ok, health.state) == (False, "clock-skew")
    assert "web-2:4242 is 612 s behind the database's" in health.message
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["dispatcher"]["state"] == "clock-skew"
    client.force_login(rita)
    cache.clear()
    page = client.get(f"/t/{tenant.code}/runs/").text
    assert "A node's clock is wrong." in page and "web-2:4242 is 612 s behind" in page
    # A measurement older than a stopped dispatcher's is that node's past, not its present.
    NodeClock.objects.update(measured_at=now - STALE_AFTER - timedelta(seconds=1))
    assert dispatcher_health(now).state == "running"
