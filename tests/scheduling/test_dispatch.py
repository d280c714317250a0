from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from scheduling.dispatch import LOST_AFTER, run_pass
from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus, ScheduleKind
from scheduling.runs import run_now
from tenants.models import AuditAction, AuditLog
from tests.helpers import make_schedule, queued_tasks


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# Fixture `schedule`: daily 02:30 Europe/Berlin. On 2026-11-24 that is 01:30 UTC.
SLOT = utc(2026, 11, 24, 1, 30)


def due_schedule(schedule: BackupSchedule, slot: datetime = SLOT) -> BackupSchedule:
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=slot)
    schedule.refresh_from_db()
    return schedule


def test_a_due_schedule_gets_one_queued_run_and_one_task(schedule, django_capture_on_commit_callbacks) -> None:
    due_schedule(schedule)
    with django_capture_on_commit_callbacks(execute=True):
        report = run_pass(SLOT + timedelta(seconds=2))
    assert (report.due, report.created, report.skipped, report.missed) == (1, 1, 0, 0)
    run = BackupScheduleRun.objects.get()
    assert (run.slot, run.status, run.trigger) == (SLOT, RunStatus.QUEUED, "scheduled")
    assert run.tenant_id == schedule.tenant_id
    tasks = queued_tasks()
    assert [task["args"] for task in tasks] == [(str(run.code),)]
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 11, 25, 1, 30)
    assert AuditLog.objects.filter(action=AuditAction.RUN_CREATED, target_code=run.code).count() == 1


def test_a_repeated_pass_creates_nothing(schedule) -> None:
    due_schedule(schedule)
    run_pass(SLOT)
    again = run_pass(SLOT)
    assert (again.due, again.created) == (0, 0)
    # Even if next_run_at were rolled back (a crash before its update), the slot is taken.
    due_schedule(schedule)
    replay = run_pass(SLOT + timedelta(seconds=30))
    assert (replay.due, replay.created, replay.skipped, replay.missed) == (1, 0, 0, 0)
    assert BackupScheduleRun.objects.count() == 1


def test_a_slot_is_skipped_with_its_reason_while_a_run_is_active(schedule) -> None:
    run_now(schedule, actor=None)
    due_schedule(schedule)
    report = run_pass(SLOT)
    assert (report.created, report.skipped) == (0, 1)
    skipped = BackupScheduleRun.objects.get(status=RunStatus.SKIPPED)
    assert skipped.slot == SLOT
    assert "still queued or running" in skipped.error_message
    assert AuditLog.objects.filter(action=AuditAction.RUN_SKIPPED).count() == 1


def test_old_slots_are_missed_once_and_not_caught_up(schedule) -> None:
    due_schedule(schedule, utc(2026, 11, 20, 1, 30))
    now = utc(2026, 11, 24, 1, 32)  # the 24th's slot is within grace, four earlier ones are not
    report = run_pass(now)
    assert (report.created, report.missed) == (1, 1)
    missed = BackupScheduleRun.objects.get(status=RunStatus.MISSED)
    assert missed.missed_count == 4
    assert missed.slot == utc(2026, 11, 20, 1, 30)
    assert "Missed 4 slots from 2026-11-20 01:30 UTC to 2026-11-23 01:30 UTC" in missed.error_message
    assert BackupScheduleRun.objects.get(status=RunStatus.QUEUED).slot == SLOT
    schedule.refresh_from_db()
    assert schedule.next_run_at == utc(2026, 11, 25, 1, 30)


def test_a_slot_just_past_the_grace_window_is_missed_not_run(schedule, settings) -> None:
    settings.DISPATCH_GRACE_SECONDS = 300
    due_schedule(schedule)
    report = run_pass(SLOT + timedelta(minutes=5, seconds=1))
    assert (report.created, report.missed) == (0, 1)
    schedule.refresh_from_db()
    assert schedule.next_run_at == SLOT + timedelta(days=1)
    assert run_pass(SLOT + timedelta(days=1)).created == 1


def test_a_turned_off_dispatcher_says_so_and_does_nothing(schedule, settings, capsys) -> None:
    settings.DISPATCHER_ENABLED = False
    due_schedule(schedule)
    call_command("dispatch", "--at", SLOT.isoformat())
    out, err = capsys.readouterr()
    assert json.loads(out)["enabled"] is False
    assert "turned off" in err
    assert BackupScheduleRun.objects.count() == 0


def test_dispatch_command_prints_one_json_line(schedule, capsys) -> None:
    due_schedule(schedule)
    call_command("dispatch", "--at", "2026-11-24T01:30:00Z")
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert {k: json.loads(lines[0])[k] for k in ("due", "created", "skipped", "missed")} == {
        "due": 1,
        "created": 1,
        "skipped": 0,
        "missed": 0,
    }


@pytest.mark.parametrize("value", ["tomorrow", "2026-11-24T01:30:00"])
def test_dispatch_command_rejects_a_bad_instant_with_exit_2(value: str) -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError) as caught:
        call_command("dispatch", "--at", value)
    assert caught.value.returncode == 2


def _many_due(schedule: BackupSchedule, count: int) -> None:
    kinds = [
        {"kind": ScheduleKind.DAILY, "time_of_day": time(2, 30), "timezone": "Europe/Berlin"},
        {"kind": ScheduleKind.CRON, "cron": "*/5 * * * *", "timezone": "America/New_York"},
        {"kind": ScheduleKind.WEEKLY, "weekdays": [1], "timezone": "Asia/Tokyo"},
        {"kind": ScheduleKind.EVERY_N_HOURS, "every_hours": 6, "anchor_at": SLOT, "timezone": "UTC"},
    ]
    BackupSchedule.objects.bulk_create(
        BackupSchedule(
            tenant_id=schedule.tenant_id,
            name=f"bulk {i}",
            next_run_at=SLOT,
            **kinds[i % len(kinds)],
        )
        for i in range(count)
    )


@pytest.mark.parametrize("count", [10, 1000])
def test_a_pass_uses_the_same_number_of_statements_for_10_and_1000_due_schedules(
    schedule, count: int, django_capture_on_commit_callbacks
) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(enabled=False)
    _many_due(schedule, count)
    with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as queries:
        report = run_pass(SLOT + timedelta(seconds=1))
    assert report.created == count
    assert BackupScheduleRun.objects.filter(status=RunStatus.QUEUED).count() == count
    assert len(queued_tasks()) == count
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    from django.conf import settings

    # record the pass; look for abandoned runs; select due; insert runs; insert audit entries;
    # update next_run_at; look for runs whose task may be lost; look for automatic retries
    # whose time has come; and
    expected = 8
    if "redis" not in settings.Q_CLUSTER:
        expected += 1  # insert tasks into the ORM broker's table (with Redis they go to Redis, not SQL)
    if connection.vendor == "postgresql":
        expected += 1  # the advisory lock
    assert len(statements) == expected, statements


def test_a_pass_that_read_a_stale_due_list_creates_nothing_twice(
    schedule, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    """Without the lock, a second pass may read before the first commits: the
    unique constraint still keeps the slot to one run and one task."""
    from scheduling import dispatch

    due_schedule(schedule)
    stale = list(dispatch._due_schedules(SLOT))
    with django_capture_on_commit_callbacks(execute=True):
        first = run_pass(SLOT)
    monkeypatch.setattr(dispatch, "_due_schedules", lambda now: stale)
    with django_capture_on_commit_callbacks(execute=True):
        second = run_pass(SLOT)
    assert (first.created, second.due, second.created, second.skipped) == (1, 1, 0, 0)
    assert BackupScheduleRun.objects.count() == 1
    assert len(queued_tasks()) == 1


def test_a_slot_that_loses_to_a_run_now_is_recorded_as_skipped(schedule, monkeypatch) -> None:
    """A Run now committing after the pass read its due list: the one-active-run
    constraint refuses the slot's run, and the slot is recorded as busy, not dropped."""
    from scheduling import dispatch

    due_schedule(schedule)
    stale = list(dispatch._due_schedules(SLOT))  # read before the press: not busy
    pressed = run_now(schedule, actor=None)
    monkeypatch.setattr(dispatch, "_due_schedules", lambda now: stale)
    report = run_pass(SLOT + timedelta(seconds=1))
    assert (report.due, report.created, report.skipped) == (1, 0, 1)
    skipped = BackupScheduleRun.objects.get(slot=SLOT)
    assert (skipped.status, skipped.error_message, skipped.trigger) == (
        RunStatus.SKIPPED,
        dispatch.BUSY_REASON,
        "scheduled",
    )
    assert BackupScheduleRun.objects.get(status=RunStatus.QUEUED) == pressed


def test_a_queued_run_whose_task_was_lost_gets_it_again(schedule, django_capture_on_commit_callbacks) -> None:
    """Redis: the task was taken by a cluster that then died (or its push was lost).
    ORM broker: the same, seen as a row gone (a worker took and acknowledged it)."""
    with django_capture_on_commit_callbacks(execute=True):
        run = run_now(schedule, actor=None)
    queued_tasks()  # taken off the queue by a cluster that then dies
    assert run_pass(run.enqueued_at + LOST_AFTER).requeued == 0  # a fresh push may be on its way
    later = run.enqueued_at + LOST_AFTER + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert run_pass(later).requeued == 1
    run.refresh_from_db()
    assert run.enqueued_at == later
    # Its new task waits in the queue: later passes leave it alone.
    for minutes in (1, 2, 5, 30):
        with django_capture_on_commit_callbacks(execute=True):
            assert run_pass(later + timedelta(minutes=minutes)).requeued == 0
    assert [task["args"] for task in queued_tasks()] == [(str(run.code),)]


def test_a_task_a_cluster_took_and_never_started_is_given_out_again(
    schedule, django_capture_on_commit_callbacks
) -> None:
    """The cluster took the task (Redis: off the list; ORM broker: its row locked for
    `retry`, 6 hours) and was killed before a worker claimed the run."""
    from django_q.brokers import get_broker
    from django_q.models import OrmQ

    with django_capture_on_commit_callbacks(execute=True):
        run = run_now(schedule, actor=None)  # Redis: pushed on commit
    assert get_broker().dequeue()  # taken, never acknowledged
    later = run.enqueued_at + LOST_AFTER + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert run_pass(later).requeued == 1
    tasks = queued_tasks()
    assert [task["args"] for task in tasks] == [(str(run.code),)]
    if "orm" in settings.Q_CLUSTER:
        assert OrmQ.objects.count() == 0  # the same row, unlocked and now taken again: no copy


def test_a_long_backlog_gets_no_second_tasks_however_long_it_waits(
    tenant, source, django_capture_on_commit_callbacks
) -> None:
    """Runs waiting behind busy workers, their tasks in the queue: pass after pass,
    nothing is pushed again (before, each got one more task every 15 minutes)."""
    from django_q.brokers import get_broker

    from tests.helpers import make_schedule

    for i in range(120):
        make_schedule(tenant, source, name=f"s{i}", kind="daily", time_of_day=time(2, 30), timezone="UTC")
    BackupSchedule.objects.update(next_run_at=SLOT)
    with django_capture_on_commit_callbacks(execute=True):
        assert run_pass(SLOT).created == 120
    broker = get_broker()
    assert broker.queue_size() == 120
    for minutes in (1, 2, 3, 16, 31, 120, 24 * 60):
        with django_capture_on_commit_callbacks(execute=True):
            assert run_pass(SLOT + timedelta(minutes=minutes, seconds=1)).requeued == 0, minutes
    assert broker.queue_size() == 120
    # One of them taken by a cluster that dies: that one, and only it, is given out again.
    assert broker.dequeue()
    with django_capture_on_commit_callbacks(execute=True):
        assert run_pass(SLOT + timedelta(days=1, minutes=1)).requeued == 1
    assert broker.queue_size() == 120


def test_the_look_for_lost_tasks_reads_the_queue_once_whatever_the_backlog(
    tenant, source, django_capture_on_commit_callbacks
) -> None:
    from tests.helpers import make_schedule

    for i in range(30):
        make_schedule(tenant, source, name=f"s{i}", kind="daily", time_of_day=time(2, 30), timezone="UTC")
    BackupSchedule.objects.update(next_run_at=SLOT)
    with django_capture_on_commit_callbacks(execute=True):
        run_pass(SLOT)
    with CaptureQueriesContext(connection) as queries:
        assert run_pass(SLOT + timedelta(minutes=50)).requeued == 0
    reads = [q["sql"] for q in queries.captured_queries if "django_q_ormq" in q["sql"]]
    assert len(reads) == (1 if "orm" in settings.Q_CLUSTER else 0)  # Redis: one round trip instead


def test_one_broken_schedule_does_not_stop_the_others(schedule, source, tenant) -> None:
    """Regression: a zone gone from tzdata (or a cron string a croniter upgrade
    rejects, or a missing anchor) made the whole pass roll back, every minute."""
    broken = [
        make_schedule(tenant, source, name="gone zone", timezone="US/Pacific-New"),
        make_schedule(tenant, source, name="bad cron", kind="cron", cron="61 * * * *"),
        make_schedule(tenant, source, name="no anchor", kind="every_n_hours"),
    ]
    BackupSchedule.objects.update(next_run_at=SLOT)
    report = run_pass(SLOT + timedelta(seconds=1))
    assert (report.due, report.created, report.skipped) == (4, 1, 3)
    assert BackupScheduleRun.objects.get(status=RunStatus.QUEUED).schedule == schedule
    for item in broken:
        item.refresh_from_db()
        assert item.next_run_at is None  # no retry every minute
        (skip,) = item.runs.all()
        assert "cannot be computed" in skip.error_message and "Fix and save" in skip.error_message


def test_far_behind_still_runs_the_slot_within_grace() -> None:
    """Regression: past the missed-slot count limit the fresh slot was dropped."""
    from lib.slots import Cadence
    from scheduling.dispatch import MISSED_COUNT_LIMIT, _walk

    every_minute = Cadence("cron", "UTC", cron="* * * * *")
    now = SLOT + timedelta(seconds=30)
    walk = _walk(every_minute, SLOT - timedelta(minutes=1100), now, timedelta(minutes=5))
    assert len(walk.late) > MISSED_COUNT_LIMIT
    assert walk.newest == SLOT
    assert walk.superseded == [SLOT - timedelta(minutes=m) for m in (4, 3, 2, 1)]  # within 5 min of 01:30:30
    assert walk.following == SLOT + timedelta(minutes=1)


def test_a_run_whose_worker_died_is_failed_and_frees_its_schedule(schedule) -> None:
    from scheduling.dispatch import ABANDONED_AFTER
    from scheduling.lifecycle import beat, claim

    run = run_now(schedule, actor=None)
    started = SLOT - timedelta(hours=1)
    assert claim(str(run.code), started)
    assert beat(str(run.code))
    # Its last heartbeat (the database's clock) a minute after it started:
    BackupScheduleRun.objects.filter(pk=run.pk).update(heartbeat_at=started + timedelta(minutes=1))
    # The worker is killed here: no more heartbeats, no finish.
    still_fresh = started + timedelta(minutes=1) + ABANDONED_AFTER - timedelta(seconds=1)
    assert run_pass(still_fresh).abandoned == 0
    due_schedule(schedule)
    report = run_pass(SLOT)
    assert (report.abandoned, report.created, report.skipped) == (1, 1, 0)
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "WORKER_LOST")
    assert "press Retry" in run.error_message
    assert AuditLog.objects.filter(action=AuditAction.RUN_FINISHED, target_code=run.code).count() == 1


def test_batched_codes_are_distinct_version_4_uuids() -> None:
    import uuid
    from itertools import islice

    from scheduling.dispatch import _new_codes

    codes = list(islice(_new_codes(), 3000))
    assert len(set(codes)) == 3000
    parsed = [uuid.UUID(code) for code in codes]
    assert {(u.version, u.variant) for u in parsed} == {(4, uuid.RFC_4122)}


@pytest.mark.parametrize("count", [1, 300])
def test_releasing_due_retries_takes_the_same_statements_for_1_and_300(
    schedule, count: int, django_capture_on_commit_callbacks
) -> None:
    from scheduling.models import Trigger

    BackupSchedule.objects.filter(pk=schedule.pk).update(enabled=False)
    BackupSchedule.objects.bulk_create(
        BackupSchedule(tenant_id=schedule.tenant_id, name=f"retrying {i}", enabled=False) for i in range(count)
    )
    waiting = BackupScheduleRun.objects.bulk_create(
        BackupScheduleRun(
            tenant_id=schedule.tenant_id,
            schedule=each,
            trigger=Trigger.RETRY,
            attempt=2,
            status=RunStatus.QUEUED,
            created_at=SLOT - timedelta(minutes=1),
            not_before=SLOT - timedelta(seconds=i % 50),
            enqueued_at=None,
        )
        for i, each in enumerate(BackupSchedule.objects.filter(name__startswith="retrying"))
    )
    later = BackupScheduleRun.objects.create(
        tenant_id=schedule.tenant_id,
        schedule=schedule,
        trigger=Trigger.RETRY,
        attempt=2,
        status=RunStatus.QUEUED,
        created_at=SLOT,
        not_before=SLOT + timedelta(seconds=1),
    )
    with django_capture_on_commit_callbacks(execute=True), CaptureQueriesContext(connection) as queries:
        report = run_pass(SLOT)
    assert report.retries == count
    assert sorted(task["args"][0] for task in queued_tasks()) == sorted(str(run.code) for run in waiting)
    later.refresh_from_db()
    assert later.enqueued_at is None  # not yet
    statements = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]
    from django.conf import settings

    # the pass recorded; abandoned runs; lost tasks; due retries: select and update; due schedules (none)
    expected = 6
    if "redis" not in settings.Q_CLUSTER:
        expected += 1  # the retries' tasks go into the ORM broker's table
    if connection.vendor == "postgresql":
        expected += 1  # the advisory lock
    assert len(statements) == expected, statements


@pytest.mark.parametrize(
    "value", ["", "  ", "9999-12-31T23:59:00+00:00", "0001-01-01T00:00:00+14:00", "1999-12-31T23:59:59Z"]
)
def test_dispatch_command_refuses_an_empty_or_out_of_range_instant_with_exit_2(schedule, value: str) -> None:
    """Found by fuzzing: far-future instants overflowed the slot math (tracebacks, exit 0),
    and an empty --at was taken as now."""
    from django.core.management.base import CommandError

    due_schedule(schedule)
    with pytest.raises(CommandError) as caught:
        call_command("dispatch", "--at", value)
    assert caught.value.returncode == 2
    assert "--at" in str(caught.value)
    assert BackupScheduleRun.objects.count() == 0
