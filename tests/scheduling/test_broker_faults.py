"""The broker fails for real: a killed redis-server, a SIGKILLed cluster holding taken
tasks, a long backlog over many passes. Every run is still executed, once, and no run
whose task waits in the queue is given a second one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import time as clock_time
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import cache
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ, Task
from django_q.tasks import async_task

from backups.models import BackupSource
from scheduling.dispatch import LOST_AFTER, run_pass
from scheduling.health import WORKERS_STALLED_AFTER, dispatcher_health
from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus
from scheduling.runs import run_now
from tenants.models import Tenant
from tests.helpers import ROOT, database_url, make_schedule, runcluster
from tests.redis_server import RedisServer, redis_server

ENDED = (RunStatus.SUCCEEDED, RunStatus.FAILED)


@pytest.fixture
def own_redis(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    """This process and the clusters a test starts use a Redis of the test's own."""
    with redis_server() as server:
        url = f"{server.url}?socket_connect_timeout=2&socket_timeout=5"
        monkeypatch.setattr(Conf, "ORM", None)
        monkeypatch.setattr(Conf, "REDIS", url)
        settings.Q_CLUSTER = {key: value for key, value in settings.Q_CLUSTER.items() if key != "orm"} | {"redis": url}
        yield server


@pytest.fixture
def orm_broker(settings: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str | None]:
    """The ORM broker on the test database, in either profile; the clusters' environment for it."""
    monkeypatch.setattr(Conf, "ORM", "default")
    settings.Q_CLUSTER = {key: value for key, value in settings.Q_CLUSTER.items() if key != "redis"} | {
        "orm": "default"
    }
    return {"REDIS_URL": None}


def own_schedules(tenant: Tenant, source: BackupSource, count: int) -> list[BackupSchedule]:
    """A source of its own each: runs sharing a source would skip each other (source leases)."""
    schedules = []
    for i in range(count):
        own = BackupSource.objects.create(tenant=tenant, name=f"copy {i}", path=source.path)
        schedules.append(make_schedule(tenant, own, name=f"s{i}", kind="daily", time_of_day=clock_time(3)))
    return schedules


def wait_until(condition: Callable[[], bool], seconds: float, what: str, output: Callable[[], str] = str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds} s: {what}\n{output()}")


def all_ended(runs: list[BackupScheduleRun]) -> bool:
    return BackupScheduleRun.objects.filter(pk__in=[run.pk for run in runs], status__in=ENDED).count() == len(runs)


def deliveries(runs: list[BackupScheduleRun]) -> dict[str, int]:
    """How many times a worker was handed each run's task (django-q2 records every task it executed)."""
    counts = {str(run.code): 0 for run in runs}
    for task in Task.objects.all():
        if task.args and str(task.args[0]) in counts:
            counts[str(task.args[0])] += 1
    return counts


@pytest.mark.django_db(transaction=True)
def test_runs_created_while_redis_is_down_are_executed_once_it_is_back(tenant, source, settings, own_redis) -> None:
    schedules = own_schedules(tenant, source, 4)
    # The cluster's own clock stays off: the passes are this test's, so it knows which one ran.
    env = {"REDIS_URL": own_redis.url, "DISPATCHER_ENABLED": "false"}
    with runcluster(settings, workers=2, env=env) as cluster:
        before = run_now(schedules[0], actor=None)
        wait_until(lambda: all_ended([before]), 120, "the cluster runs a task", cluster.output)

        own_redis.kill()
        during = [run_now(schedule, actor=None) for schedule in schedules[1:3]]  # Run now still answers
        BackupSchedule.objects.filter(pk=schedules[3].pk).update(next_run_at=timezone.now() - timedelta(seconds=1))
        report = run_pass()  # the pass survives the dead broker
        assert (report.created, report.requeued) == (1, 0)
        during.append(BackupScheduleRun.objects.get(schedule=schedules[3]))
        # Their pushes failed: marked as having no task, not as waiting in the queue.
        assert [run.enqueued_at for run in BackupScheduleRun.objects.filter(pk__in=[r.pk for r in during])] == [
            None
        ] * 3
        cache.clear()
        health = dispatcher_health()
        assert (health.ok, health.state) == (False, "broker-unreachable")
        assert "cannot be reached" in health.message

        own_redis.start()  # same port, empty: a restart without persistence
        assert run_pass().retries == 3  # the first pass after it is back pushes them
        wait_until(lambda: all_ended(during), 120, "the runs made during the outage end", cluster.output)
        cache.clear()
        assert dispatcher_health().state == "running"
    statuses = list(BackupScheduleRun.objects.filter(pk__in=[r.pk for r in during]).values_list("status", flat=True))
    assert statuses == [RunStatus.SUCCEEDED] * 3, cluster.output()
    assert deliveries([before, *during]) == {str(run.code): 1 for run in [before, *during]}


def held_by_a_busy_cluster(settings: Any, env: dict[str, str | None], tenant: Tenant, source: BackupSource):  # type: ignore[no-untyped-def]
    """Three runs queued behind a cluster whose only worker is busy, then the cluster
    SIGKILLed: the first two it had taken (one in its queue, as queue_limit = workers, one
    in its pusher's hand), the third still waits in the queue."""
    schedules = own_schedules(tenant, source, 3)
    broker = get_broker()
    with runcluster(settings, workers=1, env=env, new_session=True) as doomed:
        async_task("time.sleep", 300, task_name="busy worker", broker=broker)
        wait_until(lambda: broker.queue_size() == 0, 120, "the worker takes the long task", doomed.output)
        runs = [run_now(schedule, actor=None) for schedule in schedules]
        wait_until(lambda: broker.queue_size() == 1, 60, "the cluster takes two tasks ahead", doomed.output)
        time.sleep(1)  # settled: nothing more is taken while the worker is busy
        assert broker.queue_size() == 1
        for process in doomed.processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    assert BackupScheduleRun.objects.filter(status=RunStatus.QUEUED).count() == 3
    return runs


@pytest.mark.django_db(transaction=True)
def test_a_redis_task_taken_by_a_killed_cluster_is_pushed_again_and_run_by_another(
    tenant, source, settings, own_redis
) -> None:
    env: dict[str, str | None] = {"REDIS_URL": own_redis.url, "DISPATCHER_ENABLED": "false"}
    runs = held_by_a_busy_cluster(settings, env, tenant, source)
    assert run_pass(timezone.now() + LOST_AFTER / 2).requeued == 0  # a fresh push may still be on its way
    # No worker left: scheduler health says so two minutes after the runs were due.
    health = dispatcher_health(timezone.now() + WORKERS_STALLED_AFTER + timedelta(seconds=1))
    assert (health.ok, health.state) == (False, "workers-stalled")
    # The next pass a minute on gives the two lost ones a task; the third waits in the list.
    assert run_pass(timezone.now() + LOST_AFTER + timedelta(seconds=1)).requeued == 2
    assert get_broker().queue_size() == 3
    with runcluster(settings, workers=1, env=env) as survivor:
        wait_until(lambda: all_ended(runs), 180, "another cluster runs all three", survivor.output)
    statuses = list(BackupScheduleRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True))
    assert statuses == [RunStatus.SUCCEEDED] * 3, survivor.output()
    assert deliveries(runs) == {str(run.code): 1 for run in runs}


@pytest.mark.django_db(transaction=True)
def test_an_orm_row_locked_by_a_killed_cluster_is_unlocked_and_run_by_another(
    tenant, source, settings, orm_broker
) -> None:
    env = {**orm_broker, "DISPATCHER_ENABLED": "false"}
    runs = held_by_a_busy_cluster(settings, env, tenant, source)
    # django-q2 would hand the two taken rows out again only after its `retry` (hours).
    assert OrmQ.objects.filter(lock__gt=timezone.now() + timedelta(hours=1)).count() == 3  # the sleep's too
    assert run_pass(timezone.now() + LOST_AFTER + timedelta(seconds=1)).requeued == 2
    # Unlocked, not copied: no second row for any run.
    assert OrmQ.objects.count() == 4
    assert OrmQ.objects.filter(lock__lte=timezone.now()).count() == 3
    with runcluster(settings, workers=1, env=env) as survivor:
        wait_until(lambda: all_ended(runs), 180, "another cluster runs all three", survivor.output)
    statuses = list(BackupScheduleRun.objects.filter(pk__in=[r.pk for r in runs]).values_list("status", flat=True))
    assert statuses == [RunStatus.SUCCEEDED] * 3, survivor.output()
    assert deliveries(runs) == {str(run.code): 1 for run in runs}


@pytest.mark.django_db(transaction=True)
def test_healthz_and_every_page_say_so_while_redis_cannot_be_reached(client, rita, tenant, own_redis) -> None:
    client.force_login(rita)
    run_pass()
    cache.clear()
    assert client.get("/healthz").status_code == 200
    own_redis.kill()
    assert client.get("/healthz").status_code == 200  # the answer is cached for 15 seconds
    cache.clear()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["dispatcher"]["state"] == "broker-unreachable"
    assert own_redis.url not in response.text  # the address is the operators' business
    page = client.get(f"/t/{tenant.code}/runs/").text
    assert "Scheduled backups are not starting." in page and "task queue (Redis) cannot be reached" in page
    own_redis.start()
    cache.clear()
    assert client.get("/healthz").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_pass_against_a_redis_that_stopped_answering_ends_and_marks_its_runs(
    tenant, source, settings, own_redis
) -> None:
    """SIGSTOP: connections open but nothing answers (a hung host, a dropped route). The
    socket timeouts the settings add to REDIS_URL end the pass; its run is marked as
    having no task, and the health check's own short ping says Redis cannot be reached."""
    due, waiting = own_schedules(tenant, source, 2)
    stale = run_now(waiting, actor=None)  # its task in the list; looked for by the pass below
    BackupSchedule.objects.filter(pk=due.pk).update(next_run_at=timezone.now() - timedelta(seconds=1))
    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGSTOP)
    try:
        env = {**os.environ, "DATABASE_URL": database_url(), "REDIS_URL": own_redis.url}
        at = (timezone.now() + LOST_AFTER + timedelta(seconds=1)).isoformat()
        command = [sys.executable, "manage.py", "dispatch", "--at", at]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr[-2000:]
        assert '"created": 1' in done.stdout and '"requeued": 0' in done.stdout, done.stdout
        assert "could not read the task queue" in done.stderr and "could not put 1 tasks" in done.stderr
        assert BackupScheduleRun.objects.get(schedule=due).enqueued_at is None  # the next pass pushes it
        stale.refresh_from_db()
        assert stale.enqueued_at is not None  # unknown, so left as it was
        run_pass()
        cache.clear()
        assert dispatcher_health().state == "broker-unreachable"
    finally:
        own_redis.process.send_signal(signal.SIGCONT)


@pytest.mark.django_db(transaction=True)
def test_tasks_a_busy_live_cluster_took_ahead_get_one_second_task_not_one_per_pass(
    tenant, source, settings, own_redis
) -> None:
    """A live cluster's taken-ahead tasks look lost from the queue; each gets one second
    task, which then waits in the list, and later passes add none."""
    schedules = own_schedules(tenant, source, 3)
    broker = get_broker()
    env: dict[str, str | None] = {"REDIS_URL": own_redis.url, "DISPATCHER_ENABLED": "false"}
    with runcluster(settings, workers=1, env=env, new_session=True) as busy:
        try:
            async_task("time.sleep", 300, task_name="busy worker", broker=broker)
            wait_until(lambda: broker.queue_size() == 0, 120, "the worker takes the long task", busy.output)
            runs = [run_now(schedule, actor=None) for schedule in schedules]
            wait_until(lambda: broker.queue_size() == 1, 60, "the cluster takes two tasks ahead", busy.output)
            start = timezone.now()
            assert run_pass(start + LOST_AFTER + timedelta(seconds=1)).requeued == 2
            for minutes in (3, 5, 20, 60):
                assert run_pass(start + timedelta(minutes=minutes)).requeued == 0, minutes
            assert broker.queue_size() == 3
            queued = BackupScheduleRun.objects.filter(pk__in=[r.pk for r in runs], status=RunStatus.QUEUED)
            assert queued.count() == 3
        finally:
            # Its worker sleeps for minutes, and a stopping cluster waits for its workers.
            for process in busy.processes:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
