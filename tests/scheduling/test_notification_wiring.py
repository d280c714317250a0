"""The worker, the dispatcher and Run now tell people through scheduling.notifications."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from django.core import mail

from scheduling.dispatch import run_pass
from scheduling.models import BackupSchedule, Notification, NotificationKind, RunStatus
from scheduling.runs import run_now
from scheduling.worker import execute_run


def test_a_failed_backup_tells_every_member_and_mails_the_managers(
    schedule, alice, mia, bob, rita, django_capture_on_commit_callbacks
) -> None:
    Path(schedule.sources.get().path).unlink()
    run = run_now(schedule, actor=bob)
    with django_capture_on_commit_callbacks(execute=True):
        assert execute_run(str(run.code)) == "SOURCE_NOT_FOUND"
    told = Notification.objects.filter(kind=NotificationKind.RUN_FAILED, run=run)
    assert {n.user.username for n in told} == {"alice", "mia", "bob", "rita"}
    assert sorted(address for message in mail.outbox for address in message.to) == [
        "alice@example.org",
        "mia@example.org",
    ]


def test_a_good_backup_tells_nobody_it_succeeded(schedule, alice, rita) -> None:
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    assert not Notification.objects.filter(run=run).exclude(kind=NotificationKind.RUN_REQUESTED).exists()


def test_run_now_tells_the_managers(schedule, alice, bob) -> None:
    run = run_now(schedule, actor=bob)
    assert Notification.objects.get(run=run).user == alice


def test_missed_slots_of_a_dispatcher_pass_are_announced_once_per_member(
    schedule, alice, rita, django_capture_on_commit_callbacks
) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=datetime(2026, 11, 20, 1, 30, tzinfo=UTC))
    with django_capture_on_commit_callbacks(execute=True):
        report = run_pass(datetime(2026, 11, 24, 1, 32, tzinfo=UTC))
    assert report.missed == 1
    told = Notification.objects.filter(kind=NotificationKind.SLOT_MISSED)
    assert {n.user.username for n in told} == {"alice", "rita"}
    assert told.first().run.status == RunStatus.MISSED
