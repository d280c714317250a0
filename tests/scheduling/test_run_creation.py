"""One way to create a run (scheduling.runs.NewRun and create_run): the same rules and
the same answer to the one-active-run constraints for every caller, and the
dispatcher's bulk rows made of the same columns."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduling.creation import NewRun, RunConflict
from scheduling.dispatch import run_pass
from scheduling.models import BackupSchedule, BackupScheduleRun, Operation, RunStatus, Trigger
from scheduling.runs import RunRefused, create_run, run_now
from tests.helpers import make_stored_set, queued_tasks

NOW = datetime(2026, 11, 24, 1, 30, tzinfo=UTC)

# Columns a new run takes from its origin, not from what happens to it later.
ORIGIN = ("trigger", "status", "attempt", "error_code", "log", "missed_count", "operation", "bytes_written")


def origin(run: BackupScheduleRun) -> dict[str, object]:
    return {name: getattr(run, name) for name in ORIGIN}


def test_a_scheduled_run_and_a_run_now_start_alike(schedule, django_capture_on_commit_callbacks) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=NOW)
    run_pass(NOW + timedelta(seconds=1))
    scheduled = BackupScheduleRun.objects.get()
    BackupScheduleRun.objects.filter(pk=scheduled.pk).update(status=RunStatus.SUCCEEDED)
    pressed = create_run(NewRun.run_now(schedule, actor=None, now=NOW))
    assert (
        {**origin(scheduled), "trigger": ""}
        == {**origin(pressed), "trigger": ""}
        == {
            "trigger": "",
            "status": RunStatus.QUEUED,
            "attempt": 1,
            "error_code": "",
            "log": "",
            "missed_count": 0,
            "operation": Operation.BACKUP,
            "bytes_written": 0,
        }
    )
    for run in (scheduled, pressed):
        run.refresh_from_db()
        assert run.enqueued_at == run.created_at and run.tenant_id == schedule.tenant_id
        assert run.not_before is None and run.retry_of_id is None and run.requested_by_id is None


def test_an_automatic_retry_waits_without_a_task(schedule) -> None:
    failed = create_run(NewRun.run_now(schedule, actor=None, now=NOW))
    queued_tasks()
    BackupScheduleRun.objects.filter(pk=failed.pk).update(status=RunStatus.FAILED)
    later = NOW + timedelta(minutes=2)
    waiting = create_run(NewRun.retry(failed, not_before=later, now=NOW))
    assert (waiting.trigger, waiting.attempt, waiting.retry_of_id) == (Trigger.RETRY, 2, failed.pk)
    assert (waiting.not_before, waiting.enqueued_at) == (later, None)
    assert queued_tasks() == []


def test_every_caller_meets_the_one_active_run_constraint_the_same_way(schedule) -> None:
    first = create_run(NewRun.run_now(schedule, actor=None))
    BackupScheduleRun.objects.filter(pk=first.pk).update(status=RunStatus.FAILED)
    waiting = create_run(NewRun.retry(first, not_before=NOW + timedelta(minutes=5)))
    for new in (NewRun.run_now(schedule, actor=None), NewRun.retry(first, not_before=NOW)):
        with pytest.raises(RunConflict) as caught:
            create_run(new)
        assert caught.value.active is not None
        assert (caught.value.active.code, caught.value.active.retry_pending) == (waiting.code, True)
    assert BackupScheduleRun.objects.count() == 2


def test_a_second_verify_of_a_set_names_the_first(schedule) -> None:
    done = create_run(NewRun.run_now(schedule, actor=None))
    BackupScheduleRun.objects.filter(pk=done.pk).update(status=RunStatus.SUCCEEDED)
    backup_set = make_stored_set(schedule, done)
    verify = create_run(NewRun.on_set(Operation.VERIFY, backup_set, schedule.pk, actor=None))
    assert (verify.operation, verify.subject_set_id, verify.tenant_id) == (
        Operation.VERIFY,
        backup_set.pk,
        schedule.tenant_id,
    )
    with pytest.raises(RunConflict) as caught:
        create_run(NewRun.on_set(Operation.VERIFY, backup_set, schedule.pk, actor=None))
    assert caught.value.active is not None and caught.value.active.code == verify.code
    create_run(NewRun.run_now(schedule, actor=None))  # a backup of the schedule is not held up by it


def test_a_conflict_is_still_refused_in_words_for_a_person(schedule) -> None:
    run_now(schedule, actor=None)
    with pytest.raises(RunRefused, match="already has a run queued or running"):
        run_now(schedule, actor=None)


@pytest.mark.parametrize(
    "fields",
    [
        {"trigger": Trigger.SCHEDULED},  # the dispatcher's
        {"trigger": Trigger.RETRY},  # a retry names its first attempt
        {"trigger": Trigger.MANUAL, "retry_of_id": 1, "attempt": 2},  # only a retry does
        {"trigger": Trigger.RETRY, "retry_of_id": 1},  # and is attempt 2 or later
        {"trigger": Trigger.MANUAL, "not_before": NOW},  # only an automatic retry waits
        {"trigger": Trigger.MANUAL, "operation": Operation.VERIFY},  # a verify names its set
        {"trigger": Trigger.MANUAL, "subject_set_id": 1},  # a backup does not
        {"trigger": Trigger.MANUAL, "operation": Operation.RESTORE, "subject_set_id": 1},  # a restore has a target
        {"trigger": Trigger.MANUAL, "restore_target": {"path": "x"}},  # only a restore
    ],
)
def test_a_new_run_that_breaks_a_rule_is_refused_before_the_database(fields) -> None:
    with pytest.raises(ValueError):
        NewRun(schedule_id=1, tenant_id=1, created_at=NOW, **fields)


def test_a_set_whose_schedule_was_deleted_makes_no_run(schedule) -> None:
    class Orphan:
        pk, tenant_id = 1, schedule.tenant_id

    with pytest.raises(ValueError, match="deleted"):
        NewRun.on_set(Operation.VERIFY, Orphan(), None, actor=None)
