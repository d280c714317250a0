"""Alerts people can live with, through the real worker path (execute_run, the dispatcher
releasing retries): a retried failure is told once, when its last attempt failed; a
schedule working again after failures people were told of says so once."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.core import mail
from django.db import transaction
from django.utils import timezone

from backups.errors import ErrorCode
from backups.models import BackupSource
from scheduling import worker
from scheduling.dispatch import ABANDONED_AFTER, run_pass
from scheduling.lifecycle import claim
from scheduling.models import (
    BackupSchedule,
    BackupScheduleRun,
    Notification,
    NotificationKind,
    RunStatus,
    ScheduleSource,
)
from scheduling.runs import retry, run_now
from scheduling.worker import execute_run
from tests.conftest import make_sqlite_database
from tests.helpers import drain, queued_tasks

NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)  # before the machine's own clock: runs stay in order


@pytest.fixture
def team(alice, mia, bob, rita):
    return {"alice": alice, "mia": mia, "bob": bob, "rita": rita}


@pytest.fixture
def timeouts(monkeypatch):
    """Every dump hits its time limit at once (TIMEOUT, retried) until `timeouts.stop()`."""
    # Imported first: it binds deadline_for when imported, and must keep the real one
    # for the tests after these (verify and restore).
    import scheduling.perform  # noqa: F401

    real = worker.deadline_for
    monkeypatch.setattr(worker, "deadline_for", lambda schedule: time.monotonic())

    class Switch:
        @staticmethod
        def stop() -> None:
            monkeypatch.setattr(worker, "deadline_for", real)

    return Switch


def notes(kind: str) -> list[Notification]:
    return list(Notification.objects.filter(kind=kind).order_by("user__username"))


def attempts_of(schedule: BackupSchedule, capture, stop_after: int | None = None) -> list[str]:  # type: ignore[no-untyped-def]
    """A Run now and every automatic retry that follows, each released by a dispatcher pass
    at its time and executed as a worker would. Returns each attempt's result."""
    results = []
    with time_machine.travel(NOW, tick=False), capture(execute=True):
        run = run_now(schedule, actor=None)
        results.append(execute_run(str(run.code)))
    queued_tasks()  # its task, executed above
    while pending := BackupScheduleRun.objects.filter(status=RunStatus.QUEUED).first():
        if stop_after is not None and len(results) == stop_after:
            break
        with time_machine.travel(pending.not_before, tick=True):
            with capture(execute=True):  # Redis: the task is pushed once the pass committed
                assert run_pass(pending.not_before).retries == 1
            with capture(execute=True):
                results += drain()
    return results


def press_run_now(schedule: BackupSchedule, capture) -> str:  # type: ignore[no-untyped-def]
    with capture(execute=True):
        run = run_now(schedule, actor=None)
        result = execute_run(str(run.code))
    queued_tasks()
    return result


# ---------------------------------------------------------------- failures, once


def test_a_retried_failure_is_told_once_after_its_last_attempt(
    team, schedule, timeouts, django_capture_on_commit_callbacks
) -> None:
    schedule.max_attempts = 3
    schedule.save()
    assert attempts_of(schedule, django_capture_on_commit_callbacks) == ["TIMEOUT"] * 3
    failed = notes(NotificationKind.RUN_FAILED)
    assert [note.user.username for note in failed] == ["alice", "bob", "mia", "rita"]  # once each
    last = BackupScheduleRun.objects.get(attempt=3)
    assert {note.run_id for note in failed} == {last.pk}
    assert failed[0].title == "Backup of “Nightly” failed after 3 attempts"
    assert failed[0].message.startswith("TIMEOUT: ")
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.org", "mia@example.org"]
    assert all("failed after 3 attempts" in m.subject for m in mail.outbox)
    assert "Attempt: 3" in mail.outbox[0].body


def test_a_failed_attempt_with_a_retry_pending_tells_nobody_yet(
    team, schedule, timeouts, django_capture_on_commit_callbacks
) -> None:
    schedule.max_attempts = 3
    schedule.save()
    assert attempts_of(schedule, django_capture_on_commit_callbacks, stop_after=2) == ["TIMEOUT"] * 2
    assert BackupScheduleRun.objects.filter(status=RunStatus.QUEUED, attempt=3).exists()
    assert notes(NotificationKind.RUN_FAILED) == [] and mail.outbox == []


def test_a_failure_without_retries_is_told_at_once_without_an_attempt_count(
    team, schedule, timeouts, django_capture_on_commit_callbacks
) -> None:
    schedule.max_attempts = 1
    schedule.save()
    assert attempts_of(schedule, django_capture_on_commit_callbacks) == ["TIMEOUT"]
    assert [note.title for note in notes(NotificationKind.RUN_FAILED)] == ["Backup of “Nightly” failed"] * 4
    assert len(mail.outbox) == 2


def test_a_chain_that_recovers_on_its_own_tells_nobody(
    team, schedule, timeouts, django_capture_on_commit_callbacks
) -> None:
    schedule.max_attempts = 3
    schedule.save()
    with time_machine.travel(NOW, tick=False), django_capture_on_commit_callbacks(execute=True):
        first = run_now(schedule, actor=None)
        assert execute_run(str(first.code)) == "TIMEOUT"
    queued_tasks()
    timeouts.stop()  # the source answers again
    pending = BackupScheduleRun.objects.get(status=RunStatus.QUEUED)
    with time_machine.travel(pending.not_before, tick=True):
        with django_capture_on_commit_callbacks(execute=True):
            run_pass(pending.not_before)
        with django_capture_on_commit_callbacks(execute=True):
            assert drain() == ["succeeded"]
    assert not Notification.objects.exclude(kind=NotificationKind.RUN_REQUESTED).exists()
    assert mail.outbox == []


# ---------------------------------------------------------------- recovery, once


def test_a_schedule_working_again_after_a_told_failure_says_so_once(
    team, schedule, django_capture_on_commit_callbacks
) -> None:
    path = Path(schedule.sources.get().path)
    path.unlink()
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "SOURCE_NOT_FOUND"  # never retried
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "SOURCE_NOT_FOUND"
    mail.outbox.clear()
    make_sqlite_database(path)
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"
    recovered = notes(NotificationKind.RUN_RECOVERED)
    assert [note.user.username for note in recovered] == ["alice", "bob", "mia", "rita"]
    assert recovered[0].title == "Backup of “Nightly” works again"
    assert recovered[0].message.startswith("It succeeded after 2 failed runs; the last failure was SOURCE_NOT_FOUND: ")
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.org", "mia@example.org"]
    assert mail.outbox[0].subject == "[Backups] Alice & Co: Backup of “Nightly” works again"

    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"  # and again: nothing new
    assert len(notes(NotificationKind.RUN_RECOVERED)) == 4 and len(mail.outbox) == 2


def test_recovery_after_a_chain_that_failed_counts_its_attempts(
    team, schedule, timeouts, django_capture_on_commit_callbacks
) -> None:
    schedule.max_attempts = 3
    schedule.save()
    attempts_of(schedule, django_capture_on_commit_callbacks)
    timeouts.stop()
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"
    (note,) = Notification.objects.filter(kind=NotificationKind.RUN_RECOVERED, user=team["rita"])
    assert note.message.startswith("It succeeded after 3 failed runs; the last failure was TIMEOUT: ")


def test_a_person_pressing_retry_after_a_told_failure_hears_of_the_recovery(
    team, schedule, django_capture_on_commit_callbacks
) -> None:
    path = Path(schedule.sources.get().path)
    path.unlink()
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "SOURCE_NOT_FOUND"
    make_sqlite_database(path)
    failed = BackupScheduleRun.objects.get(status=RunStatus.FAILED)
    with django_capture_on_commit_callbacks(execute=True):
        again = retry(failed, team["bob"])
        assert execute_run(str(again.code)) == "succeeded"
    assert len(notes(NotificationKind.RUN_RECOVERED)) == 4


def test_a_good_run_after_good_runs_tells_nobody(team, schedule, django_capture_on_commit_callbacks) -> None:
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"
    assert not Notification.objects.exclude(kind=NotificationKind.RUN_REQUESTED).exists()
    assert mail.outbox == []


def test_a_schedule_working_again_after_a_partial_run_says_so(
    team, tenant, schedule, settings, django_capture_on_commit_callbacks
) -> None:
    extra = make_sqlite_database(settings.SOURCE_ROOTS[0] / "stock.sqlite3")
    ScheduleSource.objects.create(
        schedule=schedule, source=BackupSource.objects.create(tenant=tenant, name="Stock", path=str(extra))
    )
    extra.unlink()
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "partial"
    assert len(notes(NotificationKind.RUN_PARTIAL)) == 4
    make_sqlite_database(extra)
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"
    (note,) = Notification.objects.filter(kind=NotificationKind.RUN_RECOVERED, user=team["bob"])
    assert note.message.startswith("It succeeded after 1 failed run; the last failure was SOURCE_NOT_FOUND: ")


def test_a_recovery_costs_the_same_queries_after_2_and_40_failed_runs(team, schedule) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from scheduling.notifications import notify_run_finished

    def queries_after(failures: int) -> int:
        BackupScheduleRun.objects.all().delete()
        for _ in range(failures):
            BackupScheduleRun.objects.create(
                tenant=schedule.tenant,
                schedule=schedule,
                status=RunStatus.FAILED,
                error_code=ErrorCode.SOURCE_NOT_FOUND,
                created_at=timezone.now(),
                finished_at=timezone.now(),
            )
        good = BackupScheduleRun.objects.create(
            tenant=schedule.tenant,
            schedule=schedule,
            status=RunStatus.SUCCEEDED,
            created_at=timezone.now(),
            finished_at=timezone.now(),
        )
        BackupSchedule.objects.filter(pk=schedule.pk).update(recovery_pending=True)  # the last failure was told
        with CaptureQueriesContext(connection) as queries:
            assert notify_run_finished(good) == 4
        return len(queries)

    assert queries_after(2) == queries_after(40)


# ---------------------------------------------------------------- runs given up for lost


def give_up_while_it_works(monkeypatch, then=None):  # type: ignore[no-untyped-def]
    """The dispatcher gives every run up for lost while its worker is in fact still on it
    (a stalled heartbeat, a paused VM), then `then()` runs, then the worker carries on."""
    real = worker._perform

    def perform(run, started, log, should_stop):  # type: ignore[no-untyped-def]
        with transaction.atomic():  # a pass commits before the worker carries on
            assert run_pass(timezone.now() + ABANDONED_AFTER + timedelta(minutes=1)).abandoned == 1
        if then is not None:
            then()
        return real(run, started, log, should_stop)

    monkeypatch.setattr(worker, "_perform", perform)


def lose_worker(run: BackupScheduleRun, capture) -> None:  # type: ignore[no-untyped-def]
    """The worker claimed `run` and was killed (OOM): no heartbeat, no finish; the next
    passes give it up."""
    started = timezone.now()
    assert claim(str(run.code), started)
    with capture(execute=True):
        assert run_pass(started + ABANDONED_AFTER + timedelta(minutes=1)).abandoned == 1


@pytest.fixture
def no_slots(schedule):  # type: ignore[no-untyped-def]
    """The schedule's own slots never come due in these passes (whatever the clock says)."""
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=None)
    return schedule


def test_a_run_whose_worker_died_is_told_like_a_last_failure(
    team, schedule, no_slots, django_capture_on_commit_callbacks
) -> None:
    run = run_now(schedule, actor=None)
    queued_tasks()
    lose_worker(run, django_capture_on_commit_callbacks)
    failed = notes(NotificationKind.RUN_FAILED)
    assert [note.user.username for note in failed] == ["alice", "bob", "mia", "rita"]
    assert {note.run_id for note in failed} == {run.pk}
    assert failed[0].title == "Backup of “Nightly” failed"
    assert failed[0].message.startswith("WORKER_LOST: The worker running this backup stopped responding")
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.org", "mia@example.org"]
    # And its source works: the next good backup says the schedule works again.
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"
    assert len(notes(NotificationKind.RUN_RECOVERED)) == 4


def test_a_retry_chain_whose_last_attempt_lost_its_worker_is_told_once(
    team, schedule, no_slots, timeouts, django_capture_on_commit_callbacks
) -> None:
    schedule.max_attempts = 3
    schedule.save(update_fields=["max_attempts"])
    assert attempts_of(schedule, django_capture_on_commit_callbacks, stop_after=1) == ["TIMEOUT"]
    second = BackupScheduleRun.objects.get(status=RunStatus.QUEUED)
    with django_capture_on_commit_callbacks(execute=True):
        assert run_pass(second.not_before).retries == 1
    queued_tasks()
    lose_worker(second, django_capture_on_commit_callbacks)
    failed = notes(NotificationKind.RUN_FAILED)
    assert [(note.user.username, note.run_id) for note in failed] == [
        (name, second.pk) for name in ("alice", "bob", "mia", "rita")
    ]
    assert failed[0].title == "Backup of “Nightly” failed after 2 attempts"
    assert not BackupScheduleRun.objects.filter(status=RunStatus.QUEUED).exists()  # never retried
    assert len(mail.outbox) == 2


def test_a_lost_run_whose_worker_fails_after_all_keeps_its_verdict_told_once_never_retried(
    team, schedule, no_slots, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    Path(schedule.sources.get().path).unlink()
    give_up_while_it_works(monkeypatch)
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "lost"
    run = BackupScheduleRun.objects.get()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "WORKER_LOST")  # the verdict stands
    assert "SOURCE_NOT_FOUND" in run.log  # what the worker really did stays readable
    failed = notes(NotificationKind.RUN_FAILED)
    assert len(failed) == 4 and failed[0].message.startswith("WORKER_LOST: ")  # told once, when given up
    assert len(mail.outbox) == 2


def test_a_lost_run_that_times_out_after_all_gets_no_retry_that_would_tell_again(
    team, schedule, no_slots, timeouts, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    give_up_while_it_works(monkeypatch)
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "lost"
    assert not BackupScheduleRun.objects.filter(status=RunStatus.QUEUED).exists()
    assert len(notes(NotificationKind.RUN_FAILED)) == 4


def test_a_lost_run_whose_worker_completes_after_all_keeps_no_set_and_the_next_good_run_says_it_works_again(
    team, schedule, no_slots, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    from backups.models import BackupItem, BackupSet

    real = worker._perform
    give_up_while_it_works(monkeypatch)
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "lost"
    lost = BackupScheduleRun.objects.get()
    assert (lost.status, lost.error_code, lost.backup_set_id) == (RunStatus.FAILED, "WORKER_LOST", None)
    assert "no longer running" in lost.log  # lifecycle.adopt refused it the set
    assert not BackupSet.objects.exists() and not BackupItem.objects.exists()
    assert notes(NotificationKind.RUN_RECOVERED) == []
    monkeypatch.setattr(worker, "_perform", real)  # the worker keeps its heartbeat now
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"
    recovered = notes(NotificationKind.RUN_RECOVERED)
    assert len(recovered) == 4
    assert recovered[0].message.startswith("It succeeded after 1 failed run; the last failure was WORKER_LOST")


def test_a_recovery_is_told_once_after_a_lost_run_and_a_later_failure(
    team, schedule, no_slots, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    """L is given up for lost (told); F fails (told); L's worker finishes after all (its
    verdict stands, nothing more told); the next good run S says it works again, once."""
    path = Path(schedule.sources.get().path)
    backup = path.read_bytes()

    def another_run_fails() -> None:
        path.unlink()
        monkeypatch.setattr(worker, "_perform", real)
        assert press_run_now(schedule, django_capture_on_commit_callbacks) == "SOURCE_NOT_FOUND"
        path.write_bytes(backup)

    real = worker._perform
    give_up_while_it_works(monkeypatch, then=another_run_fails)
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "lost"  # L, after all
    assert len(notes(NotificationKind.RUN_FAILED)) == 8  # L's and F's, to each of 4
    assert notes(NotificationKind.RUN_RECOVERED) == []
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"  # S
    recovered = notes(NotificationKind.RUN_RECOVERED)
    assert len(recovered) == 4
    assert recovered[0].message.startswith("It succeeded after 2 failed runs; the last failure was SOURCE_NOT_FOUND")
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"
    assert len(notes(NotificationKind.RUN_RECOVERED)) == 4


# ---------------------------------------------------------------- a canceled retry


@pytest.mark.parametrize("how", ["toggle", "form"])
def test_disabling_a_schedule_with_a_pending_retry_tells_the_failure_it_followed(
    team, schedule, timeouts, how, django_capture_on_commit_callbacks
) -> None:
    from scheduling.services import save_schedule, set_enabled, snapshot

    assert attempts_of(schedule, django_capture_on_commit_callbacks, stop_after=1) == ["TIMEOUT"]
    first = BackupScheduleRun.objects.get(attempt=1)
    assert notes(NotificationKind.RUN_FAILED) == []  # a retry was pending
    with django_capture_on_commit_callbacks(execute=True):
        if how == "toggle":
            set_enabled(schedule, False, team["bob"])
        else:
            before = snapshot(schedule)
            schedule.enabled = False
            save_schedule(schedule, before, team["bob"])
    assert BackupScheduleRun.objects.get(attempt=2).status == RunStatus.CANCELED
    failed = notes(NotificationKind.RUN_FAILED)
    assert [(note.user.username, note.run_id) for note in failed] == [
        (name, first.pk) for name in ("alice", "bob", "mia", "rita")
    ]
    assert failed[0].title == "Backup of “Nightly” failed; retry canceled"
    assert failed[0].message.startswith("TIMEOUT: ")
    assert failed[0].message.endswith("Its automatic retry was canceled when bob disabled the schedule.")
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.org", "mia@example.org"]
    assert "retry canceled" in mail.outbox[0].subject
    # Told, so the next good backup says it works again.
    timeouts.stop()
    assert press_run_now(schedule, django_capture_on_commit_callbacks) == "succeeded"
    assert len(notes(NotificationKind.RUN_RECOVERED)) == 4
