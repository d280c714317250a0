"""Automatic retries: capped exponential backoff with full jitter, released by the dispatcher."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from hypothesis import given
from hypothesis import strategies as st

from backups.errors import ErrorCode
from lib.backoff import BASE_SECONDS, CAP_SECONDS, backoff_ceiling, backoff_delay
from scheduling import retry, worker
from scheduling.dbclock import db_now
from scheduling.dispatch import RETRY_PENDING_REASON, run_pass
from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus, Trigger
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tenants.models import AuditAction, AuditLog
from tests.helpers import drain, queued_tasks

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


# ---------------------------------------------------------------- the pure function


@given(attempt=st.integers(min_value=1, max_value=10_000), seed=st.integers(min_value=0, max_value=2**32))
def test_a_backoff_delay_lies_between_zero_and_the_capped_exponential(attempt: int, seed: int) -> None:
    delay = backoff_delay(attempt, random.Random(seed)).total_seconds()
    assert 0 <= delay <= min(CAP_SECONDS, BASE_SECONDS * 2 ** min(attempt - 1, 64))
    assert delay <= CAP_SECONDS


@given(attempt=st.integers(min_value=1, max_value=200))
def test_the_backoff_ceiling_doubles_until_the_cap_and_stays_there(attempt: int) -> None:
    assert backoff_ceiling(attempt) <= backoff_ceiling(attempt + 1) <= CAP_SECONDS
    if backoff_ceiling(attempt + 1) < CAP_SECONDS:
        assert backoff_ceiling(attempt + 1) == 2 * backoff_ceiling(attempt)


def test_the_backoff_starts_at_30_seconds_and_is_capped_at_15_minutes() -> None:
    assert [backoff_ceiling(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [30, 60, 120, 240, 480, 900, 900]
    with pytest.raises(ValueError):
        backoff_ceiling(0)


def test_full_jitter_spreads_the_delays() -> None:
    rng = random.Random(7)
    delays = {round(backoff_delay(4, rng).total_seconds()) for _ in range(200)}
    assert len(delays) > 50 and min(delays) < 60 and max(delays) > 180


# ---------------------------------------------------------------- retry chains


@pytest.fixture
def timing_out(monkeypatch):
    """Every dump hits its time limit at once (TIMEOUT, a retryable code) without waiting for it."""
    monkeypatch.setattr(worker, "deadline_for", lambda schedule: time.monotonic())


def fail_first_attempt(schedule: BackupSchedule) -> BackupScheduleRun:
    """A Run now at NOW that times out."""
    with time_machine.travel(NOW, tick=False):
        run = run_now(schedule, actor=None)
        assert execute_run(str(run.code)) == "TIMEOUT"
    queued_tasks()  # its task, executed above as a worker would
    run.refresh_from_db()
    return run


def test_a_retryable_failure_schedules_the_next_attempt_within_the_backoff(schedule, timing_out) -> None:
    first = fail_first_attempt(schedule)
    second = BackupScheduleRun.objects.get(retry_of=first)
    assert (second.trigger, second.attempt, second.status) == (Trigger.RETRY, 2, RunStatus.QUEUED)
    assert second.enqueued_at is None and second.created_at == NOW
    assert NOW <= second.not_before <= NOW + timedelta(seconds=30)  # attempt 1: up to 30 s
    assert queued_tasks() == []  # no task until its time has come
    entry = AuditLog.objects.get(action=AuditAction.RUN_RETRY_SCHEDULED)
    assert entry.target_code == second.code
    assert entry.details["failed_run"] == str(first.code) and entry.details["error_code"] == "TIMEOUT"
    # The first dispatcher pass (each minute at :00.5) at or after not_before releases it.
    starts = second.not_before.replace(second=0, microsecond=500_000)
    starts += timedelta(minutes=1) if starts < second.not_before else timedelta(0)
    assert f"Attempt 2 of 3 will start at {starts:%Y-%m-%d %H:%M} UTC" in first.log


def test_the_dispatcher_releases_a_retry_when_it_is_due_and_not_before(
    schedule, timing_out, django_capture_on_commit_callbacks
) -> None:
    first = fail_first_attempt(schedule)
    second = BackupScheduleRun.objects.get(retry_of=first)
    with django_capture_on_commit_callbacks(execute=True):
        early = run_pass(second.not_before - timedelta(microseconds=1))
    assert early.retries == 0 and queued_tasks() == []
    with django_capture_on_commit_callbacks(execute=True):
        due = run_pass(second.not_before)
    assert due.retries == 1
    second.refresh_from_db()
    assert second.enqueued_at == second.not_before
    assert [task["args"] for task in queued_tasks()] == [(str(second.code),)]
    with django_capture_on_commit_callbacks(execute=True):
        assert run_pass(second.not_before + timedelta(minutes=1)).retries == 0  # released once


def test_a_retry_is_not_claimed_before_its_time(schedule, timing_out) -> None:
    first = fail_first_attempt(schedule)
    second = BackupScheduleRun.objects.get(retry_of=first)
    # Its time is judged by the database's clock, as the dispatcher releases it.
    BackupScheduleRun.objects.filter(pk=second.pk).update(not_before=db_now() + timedelta(minutes=10))
    assert execute_run(str(second.code)) == "not claimed"
    second.refresh_from_db()
    assert second.status == RunStatus.QUEUED


def test_attempts_are_capped_at_max_attempts(schedule, timing_out, django_capture_on_commit_callbacks) -> None:
    schedule.max_attempts = 3
    schedule.save()
    first = fail_first_attempt(schedule)
    for attempt in (2, 3):
        pending = BackupScheduleRun.objects.get(status=RunStatus.QUEUED)
        assert (pending.attempt, pending.retry_of_id) == (attempt, first.pk)
        ceiling = timedelta(seconds=30 * 2 ** (attempt - 2))
        assert pending.not_before - pending.created_at <= ceiling
        with time_machine.travel(pending.not_before, tick=True):  # the worker's clock too
            with django_capture_on_commit_callbacks(execute=True):
                assert run_pass(pending.not_before).retries == 1
            assert drain() == ["TIMEOUT"]
    runs = list(BackupScheduleRun.objects.order_by("attempt").values_list("attempt", "status"))
    assert runs == [(1, RunStatus.FAILED), (2, RunStatus.FAILED), (3, RunStatus.FAILED)]


def test_a_task_delivered_twice_runs_the_retry_once(schedule, timing_out, django_capture_on_commit_callbacks) -> None:
    schedule.max_attempts = 2
    schedule.save()
    first = fail_first_attempt(schedule)
    second = BackupScheduleRun.objects.get(retry_of=first)
    with django_capture_on_commit_callbacks(execute=True):
        run_pass(second.not_before)
    (task,) = queued_tasks()
    assert execute_run(*task["args"]) == "TIMEOUT"
    assert execute_run(*task["args"]) == "not claimed"
    assert AuditLog.objects.filter(action=AuditAction.RUN_STARTED, target_code=second.code).count() == 1


@pytest.mark.parametrize("broken", ["missing", "outside"])
def test_failures_a_person_must_fix_are_never_retried(schedule, tmp_path, broken: str) -> None:
    source = schedule.sources.get()
    if broken == "missing":
        Path(source.path).unlink()
    else:
        source.path = str(tmp_path / "elsewhere.sqlite3")
        source.save()
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) in ("SOURCE_NOT_FOUND", "PERMISSION_DENIED")
    assert BackupScheduleRun.objects.count() == 1
    assert not AuditLog.objects.filter(action=AuditAction.RUN_RETRY_SCHEDULED).exists()


@pytest.mark.parametrize(
    "code",
    [
        ErrorCode.AUTH_FAILED,
        ErrorCode.PERMISSION_DENIED,
        ErrorCode.SOURCE_NOT_FOUND,
        ErrorCode.STORAGE_FULL,
        ErrorCode.CORRUPTED,
        "UNKNOWN",
    ],
)
def test_only_passing_failures_are_retryable(code: str) -> None:
    assert not retry.is_retryable(code)
    for passing in (ErrorCode.CONNECTION_FAILED, ErrorCode.TIMEOUT, ErrorCode.THROTTLED):
        assert retry.is_retryable(passing)


def test_a_partial_run_is_not_retried_automatically(schedule, tmp_path) -> None:
    from backups.models import BackupSource
    from scheduling.models import ScheduleSource

    gone = BackupSource.objects.create(tenant=schedule.tenant, name="Gone", path=str(tmp_path / "sources" / "x.db"))
    ScheduleSource.objects.create(schedule=schedule, source=gone)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "partial"
    assert BackupScheduleRun.objects.count() == 1


def test_a_slot_during_a_pending_retry_is_skipped_saying_so(schedule, timing_out) -> None:
    fail_first_attempt(schedule)
    slot = NOW + timedelta(seconds=1)
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=slot)
    report = run_pass(slot)
    assert report.skipped == 1
    skipped = BackupScheduleRun.objects.get(slot=slot)
    assert (skipped.status, skipped.error_message) == (RunStatus.SKIPPED, RETRY_PENDING_REASON)


def test_a_retry_loses_quietly_to_a_run_created_meanwhile(schedule, timing_out) -> None:
    first = fail_first_attempt(schedule)
    BackupScheduleRun.objects.filter(retry_of=first).delete()
    manual = run_now(schedule, actor=None)
    assert retry.schedule_retry(first) is None
    assert list(BackupScheduleRun.objects.filter(status=RunStatus.QUEUED)) == [manual]


def test_run_now_during_a_pending_retry_says_when_it_starts(schedule, timing_out) -> None:
    from scheduling.runs import RunRefused

    first = fail_first_attempt(schedule)
    pending = BackupScheduleRun.objects.get(retry_of=first)
    starts = pending.not_before.replace(second=0, microsecond=500_000)
    starts += timedelta(minutes=1) if starts < pending.not_before else timedelta(0)
    expected = f"automatic retry pending; it starts at {starts:%Y-%m-%d %H:%M} UTC"
    with pytest.raises(RunRefused, match=expected):
        run_now(schedule, actor=None)


def test_disabling_the_schedule_cancels_its_pending_automatic_retry(
    schedule, timing_out, django_capture_on_commit_callbacks
) -> None:
    from scheduling.runs import RETRY_CANCELED_MESSAGE
    from scheduling.services import set_enabled

    first = fail_first_attempt(schedule)
    second = BackupScheduleRun.objects.get(retry_of=first)
    set_enabled(schedule, False, actor=None)
    second.refresh_from_db()
    assert second.status == RunStatus.CANCELED and second.error_message == RETRY_CANCELED_MESSAGE
    with django_capture_on_commit_callbacks(execute=True):
        assert run_pass(second.not_before).retries == 0
    assert queued_tasks() == []
    assert AuditLog.objects.get(action=AuditAction.SCHEDULE_DISABLED).details == {"retries_canceled": 1}
