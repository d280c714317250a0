"""scheduling/notifications.py: who hears about what, in the app and by e-mail."""

from __future__ import annotations

import logging

import pytest
from django.core import mail
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backups.models import BackupSource
from scheduling.models import BackupScheduleRun, Notification, NotificationKind, Operation, RunStatus, Trigger
from scheduling.notifications import notify_run_finished, notify_run_requested, notify_slots_missed
from scheduling.runs import retry, run_now
from tenants.models import AuditAction, AuditLog, Membership, Role
from tests.conftest import make_user, member
from tests.helpers import make_schedule

SECRET = "s3cret-Pa55word"


@pytest.fixture
def team(alice, mia, bob, rita):
    return {"alice": alice, "mia": mia, "bob": bob, "rita": rita}


def finished(schedule, status=RunStatus.FAILED, **fields) -> BackupScheduleRun:
    fields.setdefault("error_code", "AUTH_FAILED")
    fields.setdefault("error_message", "The server refused the login of user “backup”.")
    return BackupScheduleRun.objects.create(
        tenant=schedule.tenant,
        schedule=schedule,
        status=status,
        created_at=timezone.now(),
        started_at=timezone.now(),
        finished_at=timezone.now(),
        **fields,
    )


def missed(schedule, slot_offset_minutes: int = 0, count: int = 1) -> BackupScheduleRun:
    slot = timezone.now().replace(microsecond=0) - timezone.timedelta(hours=1, minutes=slot_offset_minutes)
    return BackupScheduleRun.objects.create(
        tenant=schedule.tenant,
        schedule=schedule,
        status=RunStatus.MISSED,
        slot=slot,
        created_at=timezone.now(),
        missed_count=count,
        error_message=f"Missed {count} slot(s): the dispatcher was not running.",
    )


def recipients(kind: str) -> set[str]:
    return set(Notification.objects.filter(kind=kind).values_list("user__username", flat=True))


# ------------------------------------------------------------------ failed and partial runs


def test_a_failed_run_notifies_every_member(team, schedule, charlie, django_capture_on_commit_callbacks) -> None:
    run = finished(schedule)
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_run_finished(run) == 4
    assert recipients(NotificationKind.RUN_FAILED) == {"alice", "mia", "bob", "rita"}  # not charlie
    note = Notification.objects.filter(user=team["rita"]).get()
    assert note.run == run and note.tenant == schedule.tenant and note.read_at is None
    assert note.title == "Backup of “Nightly” failed"  # the list's line; the detail one click away:
    assert note.message == "AUTH_FAILED: The server refused the login of user “backup”."


def test_a_failed_run_is_mailed_to_managers_and_owners_only(team, schedule, django_capture_on_commit_callbacks) -> None:
    run = finished(schedule)
    with django_capture_on_commit_callbacks(execute=True):
        notify_run_finished(run)
    assert sorted(message.to[0] for message in mail.outbox) == ["alice@example.org", "mia@example.org"]
    # One message each: members do not see each other's addresses.
    assert all(len(message.to) == 1 and not message.cc and not message.bcc for message in mail.outbox)
    message = mail.outbox[0]
    assert message.subject == "[Backups] Alice & Co: Backup of “Nightly” failed"
    assert "AUTH_FAILED: The server refused the login" in message.body
    assert f"http://127.0.0.1:8000/runs/{run.code}/" in message.body
    assert message.from_email == "backups@localhost"
    entry = AuditLog.objects.get(action=AuditAction.NOTIFICATION_SENT)
    assert entry.target_code == run.code
    assert entry.details == {"kind": "run_failed", "sent": 2, "recipients": ["alice", "mia"]}


def test_the_sender_and_site_come_from_settings(team, schedule, settings, django_capture_on_commit_callbacks) -> None:
    settings.DEFAULT_FROM_EMAIL = "Backups <noreply@backups.example>"
    settings.SITE_URL = "https://backups.example/"
    settings.EMAIL_SUBJECT_PREFIX = ""
    run = finished(schedule)
    with django_capture_on_commit_callbacks(execute=True):
        notify_run_finished(run)
    assert mail.outbox[0].from_email == "Backups <noreply@backups.example>"
    assert mail.outbox[0].subject.startswith("Alice & Co:")
    assert f"https://backups.example/runs/{run.code}/" in mail.outbox[0].body


def test_e_mail_can_be_turned_off(team, schedule, settings, django_capture_on_commit_callbacks) -> None:
    settings.EMAIL_NOTIFICATIONS = False
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_run_finished(finished(schedule)) == 4
    assert mail.outbox == []


def test_members_without_an_address_or_inactive_get_no_mail(team, schedule, django_capture_on_commit_callbacks) -> None:
    team["mia"].email = ""
    team["mia"].save(update_fields=["email"])
    team["alice"].is_active = False
    team["alice"].save(update_fields=["is_active"])
    with django_capture_on_commit_callbacks(execute=True):
        notify_run_finished(finished(schedule))
    assert mail.outbox == []
    assert recipients(NotificationKind.RUN_FAILED) == {"mia", "bob", "rita"}


def test_a_partial_run_notifies_and_mails_like_a_failure(team, schedule, django_capture_on_commit_callbacks) -> None:
    run = finished(schedule, status=RunStatus.PARTIAL, error_code="", error_message="")
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_run_finished(run) == 4
    note = Notification.objects.filter(user=team["bob"]).get()
    assert note.kind == NotificationKind.RUN_PARTIAL
    assert (note.title, note.message) == ("Backup of “Nightly” partly failed", "Some items were not stored.")
    assert len(mail.outbox) == 2


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.CANCELED, RunStatus.SKIPPED])
def test_other_outcomes_notify_nobody(team, schedule, status, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_run_finished(finished(schedule, status=status, error_code="", error_message="")) == 0
    assert not Notification.objects.exists() and mail.outbox == []


def test_a_failed_verification_names_itself(team, schedule, django_capture_on_commit_callbacks) -> None:
    run = finished(schedule, operation=Operation.VERIFY, error_code="CHECKSUM_MISMATCH", error_message="")
    with django_capture_on_commit_callbacks(execute=True):
        notify_run_finished(run)
    note = Notification.objects.first()
    assert (note.title, note.message) == ("Verification for “Nightly” failed", "CHECKSUM_MISMATCH")


def test_a_finished_restore_tells_the_requester_and_the_managers(
    team, schedule, django_capture_on_commit_callbacks
) -> None:
    run = finished(
        schedule,
        status=RunStatus.SUCCEEDED,
        operation=Operation.RESTORE,
        requested_by=team["bob"],
        error_code="",
        error_message="",
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_run_finished(run) == 3
    assert recipients(NotificationKind.RESTORE_FINISHED) == {"alice", "mia", "bob"}
    assert mail.outbox == []


def test_no_secret_reaches_a_notification_or_an_e_mail(team, schedule, django_capture_on_commit_callbacks) -> None:
    source = BackupSource.objects.create(
        tenant=schedule.tenant,
        name="Orders DB",
        kind="postgres",
        host="127.0.0.1",
        port=5432,
        database="orders",
        username="backup",
        password_encrypted=f"token-{SECRET}",
    )
    schedule.sources.add(source)
    run = finished(schedule)
    with django_capture_on_commit_callbacks(execute=True):
        notify_run_finished(run)
    texts = [n.title + n.message for n in Notification.objects.all()] + [m.subject + m.body for m in mail.outbox]
    texts += [str(entry.details) for entry in AuditLog.objects.all()]
    assert texts and not any(SECRET in text or source.password_encrypted in text for text in texts)


def test_a_mail_server_that_is_down_is_logged_not_raised(
    team, schedule, settings, caplog, django_capture_on_commit_callbacks
) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", 9, 2  # nothing listens
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = "mailer", SECRET
    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        assert notify_run_finished(finished(schedule)) == 4
    assert "notification e-mail (run_failed) not sent: ConnectionRefusedError" in caplog.text
    assert SECRET not in caplog.text
    assert not AuditLog.objects.filter(action=AuditAction.NOTIFICATION_SENT).exists()


def test_a_rolled_back_transaction_sends_no_mail(team, schedule, django_capture_on_commit_callbacks) -> None:
    run = finished(schedule)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                notify_run_finished(run)
                raise RuntimeError("the pass failed")
        except RuntimeError:
            pass
    assert callbacks == [] and mail.outbox == []
    assert not Notification.objects.exists()


def test_notifying_costs_the_same_queries_for_2_and_20_members(
    tenant, schedule, django_capture_on_commit_callbacks
) -> None:
    def queries_with(count: int) -> int:
        Notification.objects.all().delete()
        AuditLog.objects.all().delete()
        mail.outbox.clear()
        existing = Membership.objects.filter(tenant=tenant).count()
        for i in range(existing, count):
            member(tenant, f"member{i}", Role.MANAGER if i % 2 else Role.OPERATOR)
        run = finished(schedule)
        run = BackupScheduleRun.objects.select_related("schedule", "tenant").get(pk=run.pk)
        with CaptureQueriesContext(connection) as queries, django_capture_on_commit_callbacks(execute=True):
            notify_run_finished(run)
        assert Notification.objects.filter(run=run).count() == count
        return len(queries)

    assert queries_with(2) == queries_with(20)


# ------------------------------------------------------------------ missed slots


def test_missed_slots_make_one_notification_per_member_for_the_pass(
    team, tenant, schedule, source, django_capture_on_commit_callbacks
) -> None:
    weekly = make_schedule(tenant, source, name="Weekly")
    runs = [missed(schedule, count=3), missed(weekly)]
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_slots_missed(tenant.pk, [run.code.hex for run in runs]) == 4
    note = Notification.objects.get(user=team["rita"])
    assert note.kind == NotificationKind.SLOT_MISSED
    assert note.message == "4 backup slots missed: “Nightly”, “Weekly”."
    assert note.run is None  # several runs: the mail links the filtered list
    assert sorted(m.to[0] for m in mail.outbox) == ["alice@example.org", "mia@example.org"]
    assert f"/t/{tenant.code}/runs/?status=missed" in mail.outbox[0].body
    assert "Weekly: Missed 1 slot(s)" in mail.outbox[0].body


def test_one_missed_slot_links_its_run(team, tenant, schedule, django_capture_on_commit_callbacks) -> None:
    run = missed(schedule)
    with django_capture_on_commit_callbacks(execute=True):
        notify_slots_missed(tenant.pk, [run.pk])
    assert Notification.objects.get(user=team["bob"]).run == run
    assert Notification.objects.get(user=team["bob"]).message == "1 backup slot missed: “Nightly”."
    assert f"/runs/{run.code}/" in mail.outbox[0].body


def test_missed_slots_of_another_tenant_or_other_runs_are_ignored(
    team, tenant, schedule, charlie, django_capture_on_commit_callbacks
) -> None:
    own = charlie.memberships.get().tenant
    theirs = make_schedule(own, None, name="Charlie's")
    their_missed = missed(theirs)
    succeeded = finished(schedule, status=RunStatus.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_slots_missed(tenant.pk, [their_missed.pk, succeeded.code]) == 0
        assert notify_slots_missed(tenant.pk, []) == 0
    assert not Notification.objects.exists() and mail.outbox == []


def test_a_pass_missing_many_schedules_names_a_few(team, tenant, source, django_capture_on_commit_callbacks) -> None:
    runs = [missed(make_schedule(tenant, source, name=f"S{i:02}")) for i in range(8)]
    with django_capture_on_commit_callbacks(execute=True):
        notify_slots_missed(tenant.pk, [run.pk for run in runs])
    assert Notification.objects.get(user=team["rita"]).message == (
        "8 backup slots missed: “S00”, “S01”, “S02”, “S03”, “S04” and 3 more."
    )


# ------------------------------------------------------------------ requests


def test_run_now_tells_managers_and_owners_but_not_the_one_who_pressed(team, schedule) -> None:
    run_now(schedule, team["bob"])  # Run now itself notifies
    assert recipients(NotificationKind.RUN_REQUESTED) == {"alice", "mia"}
    assert Notification.objects.filter(user=team["alice"]).get().message == "bob pressed Run now on “Nightly”."
    assert mail.outbox == []


def test_a_manager_pressing_retry_is_not_told_about_it(team, schedule) -> None:
    failed = finished(schedule)
    run = retry(failed, team["mia"])  # Retry itself notifies
    assert run.trigger == Trigger.RETRY
    (told,) = Notification.objects.filter(run=run)
    assert told.user == team["alice"] and told.message == "mia asked for a retry of “Nightly”."


def test_a_request_by_the_system_tells_every_manager(team, schedule) -> None:
    run = run_now(schedule, None)
    assert Notification.objects.filter(run=run).count() == 2
    assert Notification.objects.filter(user=team["mia"]).get().message == "The system pressed Run now on “Nightly”."


def test_a_lone_member_gets_nothing_for_their_own_request(tenant, schedule) -> None:
    owner = make_user("solo")
    Membership.objects.create(user=owner, tenant=tenant, role=Role.OWNER)
    assert notify_run_requested(run_now(schedule, owner), owner) == 0
