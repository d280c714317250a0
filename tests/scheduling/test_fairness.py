"""Sharing the workers between tenants (TENANT_MAX_RUNNING), and one active verify or
restore per backup set (scheduling_run_one_active_per_set)."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from backups.models import BackupSet, BackupSource
from scheduling.dispatch import run_pass
from scheduling.lifecycle import claim
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus, Trigger
from scheduling.operations import OperationRefused, request_restore, request_verify
from scheduling.runs import run_now
from tenants.models import Membership, Role, Tenant
from tests.conftest import make_sqlite_database, make_user
from tests.helpers import drain, execute, make_schedule, make_stored_set, queued_tasks


def stored_sets(schedule: BackupSchedule, count: int) -> list[BackupSet]:
    sets = []
    for _ in range(count):
        run = BackupScheduleRun.objects.create(
            tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
        )
        sets.append(make_stored_set(schedule, run))
    return sets


def running_verifies(schedule: BackupSchedule, sets: list[BackupSet]) -> list[BackupScheduleRun]:
    """Runs a worker is executing right now (their heartbeat is fresh)."""
    now = timezone.now()
    return [
        BackupScheduleRun.objects.create(
            tenant=schedule.tenant,
            schedule=schedule,
            operation=Operation.VERIFY,
            trigger=Trigger.MANUAL,
            subject_set=each,
            status=RunStatus.RUNNING,
            created_at=now,
            started_at=now,
            heartbeat_at=now,
        )
        for each in sets
    ]


@pytest.fixture
def other_tenant(settings, tenant: Tenant) -> tuple[Tenant, BackupSchedule]:
    """Tenant B, with its own folder and a real SQLite source and schedule."""
    root = settings.SOURCE_ROOTS[0]
    (root / "a").mkdir()
    (root / "b").mkdir()
    Tenant.objects.filter(pk=tenant.pk).update(file_roots=[str(root / "a")])
    other = Tenant.objects.create(name="Bea's", file_roots=[str(root / "b")])
    Membership.objects.create(user=make_user("bea"), tenant=other, role=Role.OWNER)
    source = BackupSource.objects.create(
        tenant=other, name="Shop B", path=str(make_sqlite_database(root / "b" / "shop.sqlite3"))
    )
    return other, make_schedule(other, source, name="B nightly", timezone="UTC")


def test_tenant_bs_run_starts_while_tenant_a_has_ten_queued_verifies(
    settings, tenant, bob, other_tenant, django_capture_on_commit_callbacks
) -> None:
    settings.TENANT_MAX_RUNNING = 2
    _, schedule_b = other_tenant
    schedule_a = make_schedule(tenant, None, name="A nightly", timezone="UTC")
    busy, waiting = stored_sets(schedule_a, 2), stored_sets(schedule_a, 10)
    running_verifies(schedule_a, busy)  # A's share of the workers is taken
    with django_capture_on_commit_callbacks(execute=True):
        a_runs = [request_verify(each, bob) for each in waiting]
        b_run = run_now(schedule_b, actor=None)
    # The queue holds A's ten tasks first, then B's: a worker takes them in that order.
    results = drain()
    assert results == ["not claimed"] * 10 + ["succeeded"]
    b_run.refresh_from_db()
    assert b_run.status == RunStatus.SUCCEEDED and b_run.started_at is not None
    # A's verifies keep their place: still queued, none lost, and no task left spinning.
    assert BackupScheduleRun.objects.filter(pk__in=[r.pk for r in a_runs], status=RunStatus.QUEUED).count() == 10
    assert queued_tasks() == []
    assert BackupScheduleRun.objects.filter(tenant=tenant, status=RunStatus.RUNNING).count() == 2


def test_a_deferred_run_starts_once_its_tenant_has_a_free_place(
    settings, tenant, bob, schedule, django_capture_on_commit_callbacks
) -> None:
    settings.TENANT_MAX_RUNNING = 1
    busy, waiting = stored_sets(schedule, 1), stored_sets(schedule, 1)
    (running,) = running_verifies(schedule, busy)
    with django_capture_on_commit_callbacks(execute=True):
        deferred = request_verify(waiting[0], bob)
    assert drain() == ["not claimed"]
    # While the place is taken, each pass pushes it again and a worker defers it again.
    with django_capture_on_commit_callbacks(execute=True):
        assert run_pass(timezone.now()).retries == 1
    assert drain() == ["not claimed"]
    BackupScheduleRun.objects.filter(pk=running.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        run_pass(timezone.now() + timedelta(minutes=1))
    [result] = drain()
    deferred.refresh_from_db()
    assert deferred.status not in (RunStatus.QUEUED, RunStatus.RUNNING)
    assert deferred.started_at is not None
    assert result == (deferred.error_code or deferred.status)  # a set row with no file: its verify fails


def test_no_limit_with_zero(settings, tenant, bob, schedule, django_capture_on_commit_callbacks) -> None:
    settings.TENANT_MAX_RUNNING = 0
    running_verifies(schedule, stored_sets(schedule, 5))
    run = request_verify(stored_sets(schedule, 1)[0], bob, enqueue=False)
    assert claim(str(run.code), timezone.now()) is True


@pytest.mark.django_db(transaction=True)
def test_workers_racing_for_one_tenants_runs_start_no_more_than_the_limit(settings, tenant) -> None:
    """Eight workers claim eight queued runs of one tenant at the same instant."""
    settings.TENANT_MAX_RUNNING = 2
    schedule = make_schedule(tenant, None, name="A", timezone="UTC")
    runs = [
        BackupScheduleRun.objects.create(
            tenant=tenant,
            schedule=schedule,
            operation=Operation.VERIFY,
            trigger=Trigger.MANUAL,
            subject_set=each,
            status=RunStatus.QUEUED,
            created_at=timezone.now(),
            enqueued_at=timezone.now(),
        )
        for each in stored_sets(schedule, 8)
    ]
    start = threading.Barrier(len(runs))
    claimed: list[bool] = []

    def worker(code: str) -> None:
        try:
            start.wait()
            claimed.append(claim(code, timezone.now()))
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=worker, args=(str(run.code),)) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == [False] * 6 + [True] * 2
    assert BackupScheduleRun.objects.filter(tenant=tenant, status=RunStatus.RUNNING).count() == 2
    assert BackupScheduleRun.objects.filter(tenant=tenant, status=RunStatus.QUEUED).count() == 6


# ------------------------------------------------------------------ one active operation per set


def test_a_second_verify_of_a_set_is_refused_while_the_first_is_queued(client, bob, schedule) -> None:
    [backup_set] = stored_sets(schedule, 1)
    client.force_login(bob)
    first = client.post(f"/sets/{backup_set.code}/verify/")
    assert first.status_code == 302
    again = client.post(f"/sets/{backup_set.code}/verify/", follow=True)
    assert "already queued or running" in again.text
    assert BackupScheduleRun.objects.filter(operation=Operation.VERIFY, subject_set=backup_set).count() == 1


def test_the_verify_command_exits_2_for_a_duplicate(bob, schedule) -> None:
    [backup_set] = stored_sets(schedule, 1)
    call_command("verify_backup", str(backup_set.code), "--as", "bob", stdout=StringIO())
    with pytest.raises(CommandError) as caught:
        call_command("verify_backup", str(backup_set.code), "--as", "bob", stdout=StringIO())
    assert caught.value.returncode == 2
    assert "already queued or running" in str(caught.value)


def test_a_second_restore_of_a_set_is_refused_but_a_verify_beside_it_is_fine(alice, bob, schedule) -> None:
    [backup_set] = stored_sets(schedule, 1)
    request_restore(backup_set, alice)
    with pytest.raises(OperationRefused, match="A restore of this backup set is already queued or running"):
        request_restore(backup_set, alice)
    request_verify(backup_set, bob)
    assert BackupScheduleRun.objects.filter(subject_set=backup_set).count() == 2


def test_after_it_finished_the_set_can_be_verified_again(bob, schedule) -> None:
    [backup_set] = stored_sets(schedule, 1)
    first = request_verify(backup_set, bob)
    queued_tasks()
    BackupScheduleRun.objects.filter(pk=first.pk).update(status=RunStatus.FAILED)
    request_verify(backup_set, bob)
    assert BackupScheduleRun.objects.filter(subject_set=backup_set).count() == 2


def test_the_database_refuses_a_duplicate_whoever_inserts_it(schedule) -> None:
    """The invariant is the constraint's, not a check in Python that two requests could race."""
    [backup_set] = stored_sets(schedule, 1)
    fields = {
        "tenant": schedule.tenant,
        "schedule": schedule,
        "operation": Operation.VERIFY,
        "subject_set": backup_set,
        "created_at": timezone.now(),
    }
    BackupScheduleRun.objects.create(status=RunStatus.RUNNING, **fields)
    with pytest.raises(IntegrityError), transaction.atomic():
        BackupScheduleRun.objects.create(status=RunStatus.QUEUED, **fields)


def test_a_queued_verify_and_its_own_task_still_run(bob, schedule, django_capture_on_commit_callbacks) -> None:
    [backup_set] = stored_sets(schedule, 1)
    with django_capture_on_commit_callbacks(execute=True):
        run = request_verify(backup_set, bob)
    [task] = queued_tasks()
    execute(task)
    run.refresh_from_db()
    assert run.status != RunStatus.QUEUED


def test_verify_wait_says_the_run_waits_when_its_tenant_is_at_its_limit(settings, bob, schedule) -> None:
    settings.TENANT_MAX_RUNNING = 1
    running_verifies(schedule, stored_sets(schedule, 1))
    [backup_set] = stored_sets(schedule, 1)
    with pytest.raises(CommandError) as caught:
        call_command("verify_backup", str(backup_set.code), "--as", "bob", "--wait", stdout=StringIO())
    assert caught.value.returncode == 1
    assert "waits: this tenant already runs 1 runs" in str(caught.value)
    run = BackupScheduleRun.objects.get(subject_set=backup_set)
    assert run.status == RunStatus.QUEUED and run.enqueued_at is None  # the next pass pushes its task


def test_a_second_restore_from_the_page_is_a_form_error_naming_the_first(client, alice, schedule) -> None:
    [backup_set] = stored_sets(schedule, 1)
    client.force_login(alice)
    assert client.post(f"/sets/{backup_set.code}/restore/", {"target": "", "confirm": ""}).status_code == 302
    first = BackupScheduleRun.objects.get(operation=Operation.RESTORE)
    again = client.post(f"/sets/{backup_set.code}/restore/", {"target": "", "confirm": ""})
    assert again.status_code == 200
    assert "A restore of this backup set is already queued or running" in again.text
    assert str(first.code) in again.text
    assert BackupScheduleRun.objects.filter(operation=Operation.RESTORE).count() == 1


def test_the_run_page_says_why_a_deferred_run_waits(client, settings, bob, schedule) -> None:
    settings.TENANT_MAX_RUNNING = 1
    running_verifies(schedule, stored_sets(schedule, 1))
    run = request_verify(stored_sets(schedule, 1)[0], bob, enqueue=False)
    assert claim(str(run.code), timezone.now()) is False
    client.force_login(bob)
    page = client.get(f"/runs/{run.code}/")
    assert "waits: this tenant's runs already fill its share of the workers" in page.text
