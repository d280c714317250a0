"""A stopped cluster is told: a banner on every page and /healthz answering 503."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.cache import cache

from scheduling.dbclock import db_now
from scheduling.dispatch import run_pass
from scheduling.health import STALE_AFTER, WORKERS_STALLED_AFTER, dispatcher_health
from scheduling.models import BackupSchedule, DispatcherBeat, NodeClock

NOON = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
BANNER = "Scheduled backups are not starting."


def overdue(schedule: BackupSchedule, by: timedelta) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(enabled=True, next_run_at=NOON - by)


@pytest.mark.django_db
def test_every_pass_records_when_it_ran() -> None:
    run_pass(NOON)
    run_pass(NOON + timedelta(minutes=1))
    beat = DispatcherBeat.objects.get()
    assert beat.at == NOON + timedelta(minutes=1) and beat.node


@pytest.mark.django_db
def test_a_pass_records_the_database_time_and_this_nodes_clock() -> None:
    before = db_now()
    report = run_pass()
    beat, measured = DispatcherBeat.objects.get(), NodeClock.objects.get()
    assert before <= beat.at <= db_now() and beat.node == measured.node
    assert measured.measured_at == beat.at and measured.round_trip_seconds >= 0
    assert report.clock_offset == round(measured.offset_seconds, 3)


@pytest.mark.django_db
def test_a_recent_pass_is_healthy_and_a_stale_one_is_not() -> None:
    run_pass(NOON)
    assert dispatcher_health(NOON).state == "running"
    assert dispatcher_health(NOON + STALE_AFTER).ok
    health = dispatcher_health(NOON + STALE_AFTER + timedelta(seconds=1))
    assert (health.ok, health.state, health.last_pass_at) == (False, "stopped", NOON)
    assert "last ran 3 minutes ago (2026-11-27 12:00 UTC)" in health.message


def test_no_pass_yet_is_only_a_problem_once_a_schedule_is_overdue(schedule) -> None:
    overdue(schedule, STALE_AFTER - timedelta(seconds=1))  # the first pass may still come
    assert dispatcher_health(NOON).state == "waiting"
    overdue(schedule, STALE_AFTER + timedelta(seconds=1))
    health = dispatcher_health(NOON)
    assert (health.ok, health.state) == (False, "never-ran")
    assert "never run" in health.message


def test_a_disabled_dispatcher_is_reported(settings) -> None:
    settings.DISPATCHER_ENABLED = False
    health = dispatcher_health()
    assert (health.ok, health.state) == (False, "disabled") and "DISPATCHER_ENABLED=false" in health.message


def test_every_member_sees_the_banner_while_the_cluster_is_stopped(client, rita, tenant, schedule) -> None:
    client.force_login(rita)
    cache.clear()
    run_pass()
    assert BANNER not in client.get(f"/t/{tenant.code}/runs/").text
    cache.clear()  # pages cache the answer for a few seconds
    DispatcherBeat.objects.update(at=db_now() - timedelta(minutes=10))  # the last pass, 10 minutes ago
    for page in ("schedules", "runs", "settings", "audit"):
        text = client.get(f"/t/{tenant.code}/{page}/").text
        assert BANNER in text and "last ran 10 minutes ago" in text, page


def test_pages_read_the_health_from_the_cache_not_the_database(client, rita, tenant, schedule) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(rita)
    cache.clear()
    with CaptureQueriesContext(connection) as queries:
        client.get(f"/t/{tenant.code}/runs/")  # fills the cache
    assert any("dispatcherbeat" in query["sql"] for query in queries.captured_queries)
    with CaptureQueriesContext(connection) as queries:
        client.get(f"/t/{tenant.code}/runs/")
    assert not any("dispatcherbeat" in query["sql"] for query in queries.captured_queries)


def test_healthz_answers_200_while_passes_come_and_503_once_they_stop(client, schedule) -> None:
    run_pass()
    response = client.get("/healthz")
    assert response.status_code == 200
    at = DispatcherBeat.objects.get().at
    assert response.json() == {
        "ok": True,
        "database": "ok",
        "dispatcher": {"ok": True, "state": "running", "last_pass_at": at.isoformat(), "message": ""},
    }
    assert "no-cache" in response["Cache-Control"]
    DispatcherBeat.objects.update(at=at - timedelta(minutes=5))
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["dispatcher"]["state"] == "stopped"
    assert schedule.name not in response.text and str(schedule.tenant.code) not in response.text


def test_healthz_needs_no_login_and_takes_no_post(client, db) -> None:
    assert client.get("/healthz").status_code == 200  # nothing overdue, no pass yet: waiting
    assert client.post("/healthz").status_code == 405


def queued_run(schedule: BackupSchedule, waiting: timedelta, **fields):  # type: ignore[no-untyped-def]
    from scheduling.models import BackupScheduleRun, RunStatus, Trigger

    fields.setdefault("created_at", NOON - waiting)
    return BackupScheduleRun.objects.create(
        tenant=schedule.tenant,
        schedule=schedule,
        status=RunStatus.QUEUED,
        trigger=Trigger.MANUAL,
        enqueued_at=fields["created_at"],
        **fields,
    )


def test_runs_waiting_while_no_worker_beats_mean_the_workers_are_stalled(schedule) -> None:
    run_pass(NOON)
    run = queued_run(schedule, WORKERS_STALLED_AFTER)
    assert dispatcher_health(NOON).state == "running"  # a moment's wait is no sign
    # Due for 3 minutes, though the dispatcher has pushed its task again since.
    type(run).objects.filter(pk=run.pk).update(created_at=NOON - timedelta(minutes=3), enqueued_at=NOON)
    health = dispatcher_health(NOON)
    assert (health.ok, health.state) == (False, "workers-stalled")
    assert "the oldest has waited 3 minutes" in health.message


def test_runs_waiting_behind_busy_workers_are_no_alarm(schedule, tenant, source) -> None:
    from scheduling.models import BackupScheduleRun, RunStatus
    from tests.helpers import make_schedule

    other = make_schedule(tenant, source, name="Weekly full")
    run_pass(NOON)
    queued_run(schedule, timedelta(hours=2))
    busy = queued_run(other, timedelta(hours=3))
    BackupScheduleRun.objects.filter(pk=busy.pk).update(
        status=RunStatus.RUNNING, heartbeat_at=NOON - timedelta(seconds=40)
    )
    assert dispatcher_health(NOON).state == "running"
    BackupScheduleRun.objects.filter(pk=busy.pk).update(heartbeat_at=NOON - timedelta(minutes=10))
    assert dispatcher_health(NOON).state == "workers-stalled"  # that worker is gone too  # that worker is gone too


def test_a_retry_waits_from_when_it_became_due_not_from_when_it_was_made(schedule) -> None:
    run_pass(NOON)
    retry = queued_run(schedule, timedelta(hours=1), not_before=NOON - timedelta(minutes=1))
    assert dispatcher_health(NOON).state == "running"
    type(retry).objects.filter(pk=retry.pk).update(not_before=NOON - timedelta(minutes=3))
    assert dispatcher_health(NOON).state == "workers-stalled"
