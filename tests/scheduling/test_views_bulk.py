from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.utils import timezone

from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus, Trigger
from scheduling.runs import run_now
from tenants.models import AuditAction, AuditLog
from tests.helpers import make_schedule, make_stored_set


def bulk_url(tenant) -> str:
    return f"/t/{tenant.code}/schedules/bulk/"


def summary(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@pytest.fixture
def three(tenant, source, schedule) -> tuple[BackupSchedule, BackupSchedule, BackupSchedule]:
    """Nightly (free), Weekly (a run already queued), Old (has a backup set)."""
    weekly = make_schedule(tenant, source, name="Weekly")
    run_now(weekly, actor=None)
    old = make_schedule(tenant, source, name="Old", enabled=False)
    run = BackupScheduleRun.objects.create(
        tenant=tenant, schedule=old, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    make_stored_set(old, run)
    return schedule, weekly, old


def post(client, tenant, action: str, schedules, **extra):
    data = {"action": action, "schedules": [str(s.code) for s in schedules]}
    return client.post(bulk_url(tenant), data, **extra)


def test_bulk_run_now_says_what_happened_to_each(client, bob, tenant, three) -> None:
    nightly, weekly, _ = three
    client.force_login(bob)
    response = post(client, tenant, "run", [nightly, weekly])
    assert response.status_code == 302
    assert response.url == f"/t/{tenant.code}/schedules/"
    assert summary(response) == ["Nightly: queued", "Weekly: already running"]
    assert BackupScheduleRun.objects.filter(schedule=nightly, trigger=Trigger.MANUAL, requested_by=bob).count() == 1
    assert BackupScheduleRun.objects.filter(schedule=weekly).count() == 1
    assert AuditLog.objects.filter(action=AuditAction.RUN_NOW, actor=bob).count() == 1


def test_bulk_delete_keeps_a_schedule_with_backup_sets(client, mia, tenant, three, source) -> None:
    nightly, weekly, old = three
    spare = make_schedule(tenant, source, name="Spare")
    client.force_login(mia)
    response = post(client, tenant, "delete", [old, spare, weekly])
    assert summary(response) == [
        "Old: has backup sets, kept",
        "Spare: deleted",
        "Weekly: has a run queued or running, kept",
    ]
    assert set(BackupSchedule.objects.values_list("name", flat=True)) == {"Nightly", "Weekly", "Old"}
    deleted = AuditLog.objects.get(action=AuditAction.SCHEDULE_DELETED)
    assert (deleted.actor, deleted.target_code) == (mia, spare.code)


def test_bulk_enable_and_disable_report_schedules_already_so(client, mia, tenant, three) -> None:
    nightly, _, old = three
    client.force_login(mia)
    assert summary(post(client, tenant, "enable", [nightly, old])) == ["Nightly: already enabled", "Old: enabled"]
    old.refresh_from_db()
    assert old.enabled and old.next_run_at is not None
    client.get(f"/t/{tenant.code}/schedules/")  # shows (and so uses up) the first summary
    assert summary(post(client, tenant, "disable", [nightly, old])) == ["Nightly: disabled", "Old: disabled"]
    nightly.refresh_from_db()
    assert not nightly.enabled and nightly.next_run_at is None
    actions = sorted(AuditLog.objects.filter(actor=mia).values_list("action", flat=True))
    expected = [AuditAction.SCHEDULE_ENABLED, AuditAction.SCHEDULE_DISABLED, AuditAction.SCHEDULE_DISABLED]
    assert actions == sorted(expected)


def test_bulk_acts_once_per_schedule_selected_twice(client, mia, tenant, schedule) -> None:
    client.force_login(mia)
    response = post(client, tenant, "disable", [schedule, schedule])
    assert summary(response) == ["Nightly: disabled"]
    assert AuditLog.objects.filter(action=AuditAction.SCHEDULE_DISABLED).count() == 1


def test_bulk_with_htmx_redraws_the_list_with_the_summary_as_a_toast(client, bob, tenant, three) -> None:
    nightly, weekly, _ = three
    client.force_login(bob)
    response = post(client, tenant, "run", [nightly, weekly], headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text
    assert response.text.lstrip().startswith('<div id="schedule-list">')
    assert 'hx-swap-oob="innerHTML:#messages"' in response.text
    assert "Nightly: queued" in response.text and "Weekly: already running" in response.text
    # Row buttons in the redrawn list still come back to the list, not to the bulk URL.
    assert f'name="next" value="/t/{tenant.code}/schedules/"' in response.text


def test_bulk_never_touches_another_tenants_schedule(client, mia, tenant, schedule, charlie) -> None:
    theirs = make_schedule(charlie.memberships.get().tenant, None, name="Theirs")
    client.force_login(mia)
    response = post(client, tenant, "disable", [theirs, schedule])
    assert summary(response) == ["A selected schedule no longer exists.", "Nightly: disabled"]
    theirs.refresh_from_db()
    assert theirs.enabled


@pytest.mark.parametrize(
    "data, message",
    [
        ({"action": "explode", "schedules": []}, "Pick an action"),
        ({"schedules": []}, "Pick an action"),
        ({"action": "run", "schedules": ["not-a-code"]}, "The selection is not valid"),
        ({"action": "run"}, "Select at least one schedule."),
    ],
)
def test_bulk_explains_bad_input_and_does_nothing(client, mia, tenant, schedule, data, message) -> None:
    client.force_login(mia)
    response = client.post(bulk_url(tenant), data)
    assert response.status_code == 302
    assert any(message in line for line in summary(response))
    assert not BackupScheduleRun.objects.exists()
    assert not AuditLog.objects.filter(actor=mia).exists()


def test_bulk_refuses_too_many_at_once(client, mia, tenant, schedule) -> None:
    client.force_login(mia)
    codes = [str(schedule.code)] * 501
    response = client.post(bulk_url(tenant), {"action": "disable", "schedules": codes})
    assert summary(response) == ["Select at most 500 schedules at a time."]
    schedule.refresh_from_db()
    assert schedule.enabled


@pytest.mark.parametrize("action", ["enable", "disable", "delete"])
def test_bulk_management_actions_require_manager(client, bob, tenant, schedule, action) -> None:
    client.force_login(bob)
    assert post(client, tenant, action, [schedule]).status_code == 403
    assert BackupSchedule.objects.filter(pk=schedule.pk, enabled=True).exists()
    assert not AuditLog.objects.filter(actor=bob).exists()


def test_bulk_run_now_requires_operator(client, rita, tenant, schedule) -> None:
    client.force_login(rita)
    assert post(client, tenant, "run", [schedule]).status_code == 403
    assert not BackupScheduleRun.objects.exists()


def test_bulk_checks_ownership(client, charlie, tenant, schedule) -> None:
    client.force_login(charlie)
    assert post(client, tenant, "disable", [schedule]).status_code == 404
    schedule.refresh_from_db()
    assert schedule.enabled


def test_bulk_rejects_get(client, mia, tenant) -> None:
    client.force_login(mia)
    assert client.get(bulk_url(tenant)).status_code == 405


def test_bulk_requires_login(client, tenant, schedule) -> None:
    response = post(client, tenant, "disable", [schedule])
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")
    schedule.refresh_from_db()
    assert schedule.enabled
