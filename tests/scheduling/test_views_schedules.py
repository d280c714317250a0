from __future__ import annotations

import re
from datetime import time

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backups.models import BackupSet
from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus, ScheduleKind, ScheduleSource, Trigger
from scheduling.presentation import describe_cadence
from scheduling.runs import run_now
from tenants.models import AuditAction, AuditLog
from tests.helpers import make_stored_set


def valid_data(source, **changes) -> dict:
    data = {
        "name": "Hourly",
        "sources": [str(source.code)],
        "kind": ScheduleKind.DAILY,
        "time_of_day": "02:30",
        "cron": "",
        "every_hours": "24",
        "timezone": "UTC",
        "enabled": "on",
        "keep_last": "7",
        "keep_daily": "0",
        "keep_weekly": "0",
        "keep_monthly": "0",
        "keep_yearly": "0",
        "time_limit_minutes": "360",
        "max_attempts": "3",
    }
    data.update(changes)
    return data


def make_backup_set(schedule) -> BackupSet:
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    return make_stored_set(schedule, run)


def preview_slots(html: str) -> list:
    """The instants a preview lists (its <time datetime> values)."""
    from datetime import datetime

    return [datetime.fromisoformat(value) for value in re.findall(r'<time datetime="([^"]+)">', html)]


def assert_login_redirect(response) -> None:
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


# ------------------------------------------------------------------ cadence in words


def test_a_daily_cadence_reads_with_its_time_and_zone(schedule) -> None:
    assert describe_cadence(schedule) == "At 02:30 every day, Europe/Berlin"


def test_a_weekly_cadence_names_its_days() -> None:
    schedule = BackupSchedule(
        kind=ScheduleKind.WEEKLY, weekdays=[3, 0], time_of_day=time(2, 30), timezone="Europe/Berlin"
    )
    assert describe_cadence(schedule) == "At 02:30 on Monday and Thursday, Europe/Berlin"
    schedule.weekdays = [4, 0, 2]
    assert describe_cadence(schedule) == "At 02:30 on Monday, Wednesday and Friday, Europe/Berlin"


def test_a_cron_cadence_shows_the_expression_and_its_meaning() -> None:
    schedule = BackupSchedule(kind=ScheduleKind.CRON, cron="*/2 * * * *", timezone="UTC")
    assert describe_cadence(schedule) == "Every 2 minutes, UTC <code>*/2 * * * *</code>"
    schedule.cron = "30 2 * * 1-5"
    assert describe_cadence(schedule) == "At 02:30 on Monday to Friday, UTC <code>30 2 * * 1-5</code>"


def test_a_cron_expression_is_escaped() -> None:
    schedule = BackupSchedule(kind=ScheduleKind.CRON, cron="<b>", timezone="UTC")
    assert "<b>" not in describe_cadence(schedule)


def test_an_every_n_hours_cadence_says_how_often() -> None:
    schedule = BackupSchedule(kind=ScheduleKind.EVERY_N_HOURS, every_hours=6, time_of_day=time(1, 0), timezone="UTC")
    assert describe_cadence(schedule) == "Every 6 hours from 01:00, UTC"
    schedule.every_hours = 1
    assert describe_cadence(schedule) == "Every hour from 01:00, UTC"


# ------------------------------------------------------------------ list


def test_the_list_shows_schedules_to_a_readonly_member(client, rita, tenant, schedule) -> None:
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/schedules/")
    assert response.status_code == 200
    assert "Nightly" in response.text
    assert "At 02:30 every day, Europe/Berlin" in response.text
    assert "UTC" in response.text and "(Europe/Berlin)" in response.text
    assert "Never run" in response.text


def test_the_list_shows_the_last_run_and_its_status(client, rita, tenant, schedule) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(last_run_at=timezone.now(), last_status=RunStatus.FAILED)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/schedules/")
    assert 'class="badge badge-failed">Failed<' in response.text


def test_the_list_shows_buttons_by_role(client, rita, bob, mia, tenant, schedule) -> None:
    url = f"/t/{tenant.code}/schedules/"
    client.force_login(rita)
    text = client.get(url).text
    assert "New schedule" not in text and "Run now" not in text and "Disable" not in text
    client.force_login(bob)
    text = client.get(url).text
    assert "Run now" in text and "New schedule" not in text and "Disable" not in text
    client.force_login(mia)
    text = client.get(url).text
    assert "Run now" in text and "New schedule" in text and "Disable" in text


def test_the_list_shows_only_the_tenants_schedules(client, charlie, schedule) -> None:
    own = charlie.memberships.get().tenant
    client.force_login(charlie)
    response = client.get(f"/t/{own.code}/schedules/")
    assert response.status_code == 200
    assert "Nightly" not in response.text


def test_the_list_warns_when_the_dispatcher_is_off(client, rita, tenant, schedule, settings) -> None:
    client.force_login(rita)
    assert "Dispatcher off" not in client.get(f"/t/{tenant.code}/schedules/").text
    settings.DISPATCHER_ENABLED = False
    response = client.get(f"/t/{tenant.code}/schedules/")
    assert "DISPATCHER_ENABLED=false" in response.text


def test_the_list_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.get(f"/t/{tenant.code}/schedules/").status_code == 404


def test_the_list_requires_login(client, tenant) -> None:
    assert_login_redirect(client.get(f"/t/{tenant.code}/schedules/"))


def test_the_list_costs_the_same_queries_for_5_and_50_schedules(client, rita, tenant, source) -> None:
    client.force_login(rita)
    url = f"/t/{tenant.code}/schedules/"

    def queries_with(count: int) -> int:
        existing = BackupSchedule.objects.count()
        made = BackupSchedule.objects.bulk_create(
            BackupSchedule(
                tenant=tenant,
                name=f"S{existing + i:03}",
                kind=[ScheduleKind.DAILY, ScheduleKind.WEEKLY, ScheduleKind.CRON][i % 3],
                weekdays=[1],
                cron="0 * * * *",
                last_status=RunStatus.SUCCEEDED,
                last_run_at=timezone.now(),
                next_run_at=timezone.now(),
            )
            for i in range(count - existing)
        )
        ScheduleSource.objects.bulk_create(ScheduleSource(schedule=s, source=source) for s in made)
        cache.clear()  # the scheduler's health is read once per few seconds: count it each time
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200
        assert response.text.count("/schedules/") >= count
        return len(queries)

    assert queries_with(5) == queries_with(50)


# ------------------------------------------------------------------ detail


def test_the_detail_shows_fields_upcoming_slots_history_and_sets(client, rita, schedule) -> None:
    backup_set = make_backup_set(schedule)
    client.force_login(rita)
    response = client.get(f"/schedules/{schedule.code}/")
    assert response.status_code == 200
    assert "At 02:30 every day, Europe/Berlin" in response.text
    assert response.context["upcoming"] and len(response.context["upcoming"]) == 5
    assert response.text.count("<li><time") == 5
    assert backup_set.items.get().sha256 in response.text
    assert "1.2\xa0KB" in response.text
    assert f"/runs/{backup_set.run.code}/" in response.text


def test_the_detail_shows_no_upcoming_slot_when_disabled(client, rita, schedule) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(enabled=False)
    client.force_login(rita)
    response = client.get(f"/schedules/{schedule.code}/")
    assert response.context["upcoming"] == []
    assert "The schedule is disabled" in response.text


def test_the_detail_shows_buttons_by_role(client, rita, bob, mia, schedule) -> None:
    url = f"/schedules/{schedule.code}/"
    client.force_login(rita)
    text = client.get(url).text
    assert "Run now" not in text and "Edit" not in text and "Delete" not in text
    client.force_login(bob)
    text = client.get(url).text
    assert "Run now" in text and "Edit" not in text and "Delete" not in text
    client.force_login(mia)
    text = client.get(url).text
    assert "Run now" in text and "Edit" in text and "Delete" in text and "Disable" in text


def test_the_detail_pages_its_history(client, rita, schedule) -> None:
    now = timezone.now()
    BackupScheduleRun.objects.bulk_create(
        BackupScheduleRun(
            tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=now, error_message=f"r{i}"
        )
        for i in range(25)
    )
    client.force_login(rita)
    first = client.get(f"/schedules/{schedule.code}/")
    assert len(first.context["history"].object_list) == 20
    second = client.get(f"/schedules/{schedule.code}/?page=2", headers={"HX-Request": "true"})
    assert len(second.context["history"].object_list) == 5
    assert "<html" not in second.text and 'id="history"' in second.text


def test_the_detail_checks_ownership(client, charlie, schedule) -> None:
    client.force_login(charlie)
    assert client.get(f"/schedules/{schedule.code}/").status_code == 404


def test_the_detail_requires_login(client, schedule) -> None:
    assert_login_redirect(client.get(f"/schedules/{schedule.code}/"))


def test_an_unknown_schedule_is_404(client, alice) -> None:
    client.force_login(alice)
    assert client.get("/schedules/00000000-0000-0000-0000-000000000000/").status_code == 404


# ------------------------------------------------------------------ create


def test_a_manager_creates_a_schedule(client, mia, tenant, source) -> None:
    client.force_login(mia)
    assert client.get(f"/t/{tenant.code}/schedules/new/").status_code == 200
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source))
    created = BackupSchedule.objects.get(name="Hourly")
    assert response.status_code == 302
    assert response.url == f"/schedules/{created.code}/"
    assert created.tenant == tenant and created.next_run_at is not None
    assert AuditLog.objects.filter(action=AuditAction.SCHEDULE_CREATED, actor=mia).exists()


def test_an_owner_creates_a_weekly_schedule(client, alice, tenant, source) -> None:
    client.force_login(alice)
    data = valid_data(source, kind=ScheduleKind.WEEKLY, weekdays=["0", "3"], timezone="Europe/Berlin")
    client.post(f"/t/{tenant.code}/schedules/new/", data)
    created = BackupSchedule.objects.get(name="Hourly")
    assert created.weekdays == [0, 3]


def test_creating_tells_when_the_tenant_has_no_source(client, mia, tenant) -> None:
    client.force_login(mia)
    response = client.get(f"/t/{tenant.code}/schedules/new/")
    assert "has no backup source yet" in response.text


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kind": "cron", "cron": "61 * * * *"}, "Invalid cron expression"),
        ({"kind": "cron", "cron": "every day"}, "A cron expression has five fields"),
        ({"timezone": "Mars/Olympus"}, "Unknown time zone"),
        ({"kind": "every_n_hours", "every_hours": "0"}, "N must be between 1 and 168 hours."),
        ({"kind": "every_n_hours", "every_hours": "169"}, "N must be between 1 and 168 hours."),
        ({"kind": "weekly"}, "Pick at least one weekday for a weekly schedule."),
        ({"keep_last": "0"}, "Keep at least 1 backup."),
        ({"time_of_day": "25:99"}, "Enter a 24-hour time as HH:MM"),
        ({"name": ""}, "This field is required."),
    ],
)
def test_creating_shows_form_errors_and_saves_nothing(client, mia, tenant, source, changes, message) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source, **changes))
    assert response.status_code == 200
    assert message in response.text
    assert "The schedule was not saved" in response.text
    assert not BackupSchedule.objects.exists()
    assert not AuditLog.objects.exists()


def test_creating_rejects_a_name_taken_in_the_tenant(client, mia, tenant, source, schedule) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source, name="Nightly"))
    assert response.status_code == 200
    assert "already has this name" in response.text
    assert BackupSchedule.objects.count() == 1


def test_creating_rejects_another_tenants_source(client, mia, tenant, charlie, settings) -> None:
    from backups.models import BackupSource

    foreign = BackupSource.objects.create(tenant=charlie.memberships.get().tenant, name="Theirs", path="/x")
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(foreign))
    assert response.status_code == 200
    assert "Select a valid choice" in response.text
    assert not BackupSchedule.objects.exists()


def test_the_source_checkboxes_carry_codes_not_database_ids(client, mia, tenant, source) -> None:
    import re

    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/schedules/new/").text
    values = re.findall(r'<input type="checkbox" name="sources" value="([^"]*)"', page)
    assert values == [str(source.code)]
    # A database id is no longer a way to name a source.
    response = client.post(f"/t/{tenant.code}/schedules/new/", {**valid_data(source), "sources": [str(source.pk)]})
    assert response.status_code == 200 and not BackupSchedule.objects.exists()


def test_the_edit_page_ticks_the_schedules_sources_by_code(client, mia, schedule, source) -> None:
    client.force_login(mia)
    import re

    page = client.get(f"/schedules/{schedule.code}/edit/").text
    boxes = re.findall(r'<input type="checkbox" name="sources"[^>]*>', page)
    assert len(boxes) == 1 and f'value="{source.code}"' in boxes[0] and " checked" in boxes[0]


def test_creating_requires_manager(client, bob, tenant, source) -> None:
    client.force_login(bob)
    assert client.get(f"/t/{tenant.code}/schedules/new/").status_code == 403
    assert client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source)).status_code == 403
    assert not BackupSchedule.objects.exists()


def test_creating_checks_ownership(client, charlie, tenant, source) -> None:
    client.force_login(charlie)
    assert client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source)).status_code == 404
    assert not BackupSchedule.objects.exists()


def test_creating_requires_login(client, tenant) -> None:
    assert_login_redirect(client.get(f"/t/{tenant.code}/schedules/new/"))


# ------------------------------------------------------------------ edit


def test_a_manager_edits_a_schedule(client, mia, schedule, source) -> None:
    client.force_login(mia)
    url = f"/schedules/{schedule.code}/edit/"
    page = client.get(url)
    assert page.status_code == 200
    assert 'value="Nightly"' in page.text
    response = client.post(url, valid_data(source, name="Nightly", time_of_day="04:15", timezone="Europe/Berlin"))
    assert response.status_code == 302
    schedule.refresh_from_db()
    assert schedule.time_of_day == time(4, 15)
    entry = AuditLog.objects.get(action=AuditAction.SCHEDULE_UPDATED)
    assert entry.actor == mia
    assert entry.details["changes"]["time_of_day"] == ["02:30:00", "04:15:00"]


def test_editing_with_errors_changes_nothing(client, mia, schedule, source) -> None:
    client.force_login(mia)
    response = client.post(
        f"/schedules/{schedule.code}/edit/", valid_data(source, name="Renamed", kind="cron", cron="nope")
    )
    assert response.status_code == 200
    assert "A cron expression has five fields" in response.text
    assert "Edit “Nightly”" in response.text
    schedule.refresh_from_db()
    assert (schedule.name, schedule.kind) == ("Nightly", ScheduleKind.DAILY)
    assert not AuditLog.objects.filter(action=AuditAction.SCHEDULE_UPDATED).exists()


def test_editing_requires_manager(client, bob, schedule, source) -> None:
    client.force_login(bob)
    assert client.get(f"/schedules/{schedule.code}/edit/").status_code == 403
    assert client.post(f"/schedules/{schedule.code}/edit/", valid_data(source)).status_code == 403
    schedule.refresh_from_db()
    assert schedule.name == "Nightly"


def test_editing_checks_ownership(client, charlie, schedule, source) -> None:
    client.force_login(charlie)
    assert client.post(f"/schedules/{schedule.code}/edit/", valid_data(source)).status_code == 404


def test_editing_requires_login(client, schedule) -> None:
    assert_login_redirect(client.get(f"/schedules/{schedule.code}/edit/"))


# ------------------------------------------------------------------ delete


def test_a_manager_deletes_a_schedule_after_confirming(client, mia, schedule, tenant) -> None:
    client.force_login(mia)
    page = client.get(f"/schedules/{schedule.code}/delete/")
    assert page.status_code == 200
    assert "Delete schedule" in page.text
    assert BackupSchedule.objects.exists()
    response = client.post(f"/schedules/{schedule.code}/delete/")
    assert response.status_code == 302
    assert response.url == f"/t/{tenant.code}/schedules/"
    assert not BackupSchedule.objects.exists()
    assert AuditLog.objects.filter(action=AuditAction.SCHEDULE_DELETED, actor=mia).exists()


def test_a_manager_cannot_delete_a_schedule_with_backup_sets(client, mia, schedule) -> None:
    make_backup_set(schedule)
    client.force_login(mia)
    assert "Only an owner of the tenant can delete" in client.get(f"/schedules/{schedule.code}/delete/").text
    response = client.post(f"/schedules/{schedule.code}/delete/", {"confirm": schedule.name})
    assert response.status_code == 403
    assert BackupSchedule.objects.filter(pk=schedule.pk).exists()
    assert not AuditLog.objects.filter(action=AuditAction.SCHEDULE_DELETED).exists()


def test_a_schedule_with_an_active_run_is_not_deleted(client, mia, schedule) -> None:
    run_now(schedule, actor=None)
    client.force_login(mia)
    response = client.post(f"/schedules/{schedule.code}/delete/", follow=True)
    assert "has a run queued or running" in response.text
    assert BackupSchedule.objects.filter(pk=schedule.pk).exists()


def test_deleting_requires_manager(client, bob, schedule) -> None:
    client.force_login(bob)
    assert client.get(f"/schedules/{schedule.code}/delete/").status_code == 403
    assert client.post(f"/schedules/{schedule.code}/delete/").status_code == 403
    assert BackupSchedule.objects.exists()


def test_deleting_checks_ownership(client, charlie, schedule) -> None:
    client.force_login(charlie)
    assert client.post(f"/schedules/{schedule.code}/delete/").status_code == 404
    assert BackupSchedule.objects.exists()


def test_deleting_requires_login(client, schedule) -> None:
    assert_login_redirect(client.post(f"/schedules/{schedule.code}/delete/"))
    assert BackupSchedule.objects.exists()


# ------------------------------------------------------------------ toggle


def test_a_manager_disables_and_enables_a_schedule(client, mia, schedule) -> None:
    client.force_login(mia)
    response = client.post(f"/schedules/{schedule.code}/toggle/", {"enabled": "0"})
    assert response.status_code == 302
    assert response.url == f"/schedules/{schedule.code}/"
    schedule.refresh_from_db()
    assert not schedule.enabled and schedule.next_run_at is None
    client.post(f"/schedules/{schedule.code}/toggle/", {"enabled": "1"})
    schedule.refresh_from_db()
    assert schedule.enabled and schedule.next_run_at is not None
    actions = list(AuditLog.objects.filter(actor=mia).values_list("action", flat=True))
    assert sorted(actions) == [AuditAction.SCHEDULE_DISABLED, AuditAction.SCHEDULE_ENABLED]


def test_toggling_twice_to_the_same_state_changes_nothing_the_second_time(client, mia, schedule) -> None:
    client.force_login(mia)
    client.post(f"/schedules/{schedule.code}/toggle/", {"enabled": "0"})
    client.post(f"/schedules/{schedule.code}/toggle/", {"enabled": "0"})
    schedule.refresh_from_db()
    assert not schedule.enabled
    assert AuditLog.objects.filter(action=AuditAction.SCHEDULE_DISABLED).count() == 1


def test_toggling_goes_back_to_a_local_page_only(client, mia, schedule, tenant) -> None:
    client.force_login(mia)
    back = client.post(f"/schedules/{schedule.code}/toggle/", {"next": f"/t/{tenant.code}/schedules/"})
    assert back.url == f"/t/{tenant.code}/schedules/"
    away = client.post(f"/schedules/{schedule.code}/toggle/", {"next": "https://evil.example/"})
    assert away.url == f"/schedules/{schedule.code}/"


def test_toggling_requires_manager(client, bob, schedule) -> None:
    client.force_login(bob)
    assert client.post(f"/schedules/{schedule.code}/toggle/", {"enabled": "0"}).status_code == 403
    schedule.refresh_from_db()
    assert schedule.enabled


def test_toggling_checks_ownership(client, charlie, schedule) -> None:
    client.force_login(charlie)
    assert client.post(f"/schedules/{schedule.code}/toggle/", {"enabled": "0"}).status_code == 404


def test_toggling_rejects_get(client, mia, schedule) -> None:
    client.force_login(mia)
    assert client.get(f"/schedules/{schedule.code}/toggle/").status_code == 405


def test_toggling_requires_login(client, schedule) -> None:
    assert_login_redirect(client.post(f"/schedules/{schedule.code}/toggle/", {"enabled": "0"}))
    schedule.refresh_from_db()
    assert schedule.enabled


# ------------------------------------------------------------------ run now


def test_an_operator_runs_a_schedule_now(client, bob, schedule) -> None:
    client.force_login(bob)
    response = client.post(f"/schedules/{schedule.code}/run/", follow=True)
    assert response.status_code == 200
    assert "Run of “Nightly” queued." in response.text
    run = BackupScheduleRun.objects.get()
    assert (run.trigger, run.status, run.requested_by) == (Trigger.MANUAL, RunStatus.QUEUED, bob)
    assert AuditLog.objects.filter(action=AuditAction.RUN_NOW, actor=bob).exists()


def test_run_now_while_a_run_is_active_shows_the_refusal(client, bob, schedule) -> None:
    run_now(schedule, actor=None)
    client.force_login(bob)
    response = client.post(f"/schedules/{schedule.code}/run/", follow=True)
    assert response.status_code == 200
    assert "already has a run queued or running" in response.text
    assert BackupScheduleRun.objects.count() == 1


def test_run_now_requires_operator(client, rita, schedule) -> None:
    client.force_login(rita)
    assert client.post(f"/schedules/{schedule.code}/run/").status_code == 403
    assert not BackupScheduleRun.objects.exists()


def test_run_now_checks_ownership(client, charlie, schedule) -> None:
    client.force_login(charlie)
    assert client.post(f"/schedules/{schedule.code}/run/").status_code == 404
    assert not BackupScheduleRun.objects.exists()


def test_run_now_rejects_get(client, bob, schedule) -> None:
    client.force_login(bob)
    assert client.get(f"/schedules/{schedule.code}/run/").status_code == 405
    assert not BackupScheduleRun.objects.exists()


def test_run_now_requires_login(client, schedule) -> None:
    assert_login_redirect(client.post(f"/schedules/{schedule.code}/run/"))
    assert not BackupScheduleRun.objects.exists()


# ------------------------------------------------------------------ presentation helpers


def test_relative_times_read_as_the_largest_whole_unit() -> None:
    from datetime import timedelta

    from scheduling.presentation import relative

    now = timezone.now()
    assert relative(now + timedelta(hours=3, minutes=59), now) == "in 3 hours"
    assert relative(now + timedelta(minutes=1), now) == "in 1 minute"
    assert relative(now + timedelta(days=2, hours=5), now) == "in 2 days"
    assert relative(now + timedelta(seconds=20), now) == "in under a minute"
    assert relative(now - timedelta(minutes=5), now) == "5 minutes ago"
    assert relative(now - timedelta(seconds=5), now) == "just now"
    assert relative(now, now) == "just now"  # was "in under a minute"
    assert relative(None, now) == ""


# ------------------------------------------------------------------ list: zones, htmx


# The cookie exactly as static/js/app.js writes it: encodeURIComponent("America/New_York").
NEW_YORK_COOKIE = "America%2FNew_York"


def test_the_list_shows_the_next_run_in_the_viewers_zone_first(client, rita, tenant, schedule) -> None:
    from datetime import UTC, datetime

    # 02:30 in Berlin on 1 July 2026 is 00:30 UTC, 20:30 the day before in New York.
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=datetime(2026, 7, 1, 0, 30, tzinfo=UTC))
    client.force_login(rita)
    client.cookies["tz"] = NEW_YORK_COOKIE
    text = client.get(f"/t/{tenant.code}/schedules/").text
    viewer = text.index("Tue 2026-06-30 20:30 EDT")
    own = text.index("Wed 2026-07-01 02:30 CEST")
    assert viewer < own  # the viewer's clock first, the schedule's beside it
    assert "(Europe/Berlin)" in text
    assert '<span class="relative">' in text


@pytest.mark.parametrize(
    "cookie",
    ["Mars%2FOlympus", "Mars/Olympus", "localtime", "Factory", "%2E%2E%2Fetc%2Fpasswd", "America%2F" * 40, "%ZZ"],
)
def test_the_list_reads_a_cookie_that_is_no_real_zone_as_utc(client, rita, tenant, schedule, cookie) -> None:
    from datetime import UTC, datetime

    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=datetime(2026, 7, 1, 0, 30, tzinfo=UTC))
    client.force_login(rita)
    client.cookies["tz"] = cookie
    response = client.get(f"/t/{tenant.code}/schedules/")
    assert response.status_code == 200
    assert "Olympus" not in response.text and "passwd" not in response.text
    assert "Wed 2026-07-01 00:30 UTC" in response.text


def test_the_list_answers_htmx_with_the_list_alone(client, rita, tenant, schedule) -> None:
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/schedules/?page=1", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text
    assert response.text.lstrip().startswith('<div id="schedule-list">')
    assert "Nightly" in response.text
    assert "HX-Request" in response["Vary"]


def test_the_list_offers_bulk_actions_by_role(client, rita, bob, mia, tenant, schedule) -> None:
    url = f"/t/{tenant.code}/schedules/"
    client.force_login(rita)
    assert 'id="bulk-form"' not in client.get(url).text
    client.force_login(bob)
    text = client.get(url).text
    assert '<option value="run">Run now</option>' in text and 'value="delete"' not in text
    client.force_login(mia)
    text = client.get(url).text
    assert all(f'<option value="{action}">' in text for action in ("run", "enable", "disable", "delete"))


def test_toggling_with_htmx_redraws_the_row_and_shows_a_toast(client, mia, schedule, tenant) -> None:
    client.force_login(mia)
    response = client.post(
        f"/schedules/{schedule.code}/toggle/",
        {"enabled": "0", "next": f"/t/{tenant.code}/schedules/"},
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert "<html" not in response.text
    assert response.text.lstrip().startswith(f'<tr id="row-{schedule.code}">')
    assert ">Enable</button>" in response.text
    assert 'hx-swap-oob="innerHTML:#messages"' in response.text
    assert "Schedule “Nightly” is disabled." in response.text
    schedule.refresh_from_db()
    assert not schedule.enabled


def test_run_now_with_htmx_answers_with_a_toast(client, bob, schedule) -> None:
    client.force_login(bob)
    response = client.post(f"/schedules/{schedule.code}/run/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert 'hx-swap-oob="innerHTML:#messages"' in response.text
    assert "Run of “Nightly” queued." in response.text
    assert BackupScheduleRun.objects.count() == 1
    again = client.post(f"/schedules/{schedule.code}/run/", headers={"HX-Request": "true"})
    assert "already has a run queued or running" in again.text
    assert "message-error" in again.text
    assert BackupScheduleRun.objects.count() == 1


def poller(text: str) -> str:
    start = text.index('<div id="schedule-poll"')
    return text[start : text.index(">", start) + 1]


def test_run_now_from_a_list_row_redraws_the_row_queued_and_starts_the_poller(client, bob, tenant, schedule) -> None:
    client.force_login(bob)
    list_url = f"/t/{tenant.code}/schedules/?page=1"
    page = client.get(list_url).text
    assert "Never run" in page and "hx-trigger" not in poller(page)  # nothing active: no polling
    assert f'hx-target="#row-{schedule.code}"' in page and f'id="run-{schedule.code}"' in page

    response = client.post(
        f"/schedules/{schedule.code}/run/",
        {"next": list_url},
        headers={"HX-Request": "true", "HX-Target": f"row-{schedule.code}"},
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<tr id="row-{schedule.code}">')
    row = response.text[: response.text.index("</tr>")]
    assert '<span class="badge badge-queued">Queued</span>' in row and "Never run" not in row
    # The row's checkbox survives the swaps (a selection for a bulk action is kept).
    assert f'id="pick-{schedule.code}" aria-label="Select Nightly" hx-preserve="true"' in row
    started = poller(response.text)
    assert 'hx-swap-oob="true"' in started and 'hx-trigger="every 3s"' in started
    assert f'hx-get="{list_url}"' in started and 'hx-select="#schedule-rows"' in started
    assert "Run of “Nightly” queued." in response.text


def test_the_list_polls_while_a_row_is_active_and_stops_after(client, rita, tenant, schedule) -> None:
    from scheduling.lifecycle import claim, finish

    client.force_login(rita)
    url = f"/t/{tenant.code}/schedules/"
    run = run_now(schedule, actor=None)
    queued = client.get(url, headers={"HX-Request": "true"}).text
    assert 'hx-trigger="every 3s"' in poller(queued) and "badge-queued" in queued
    claim(str(run.code), timezone.now())
    running = client.get(url, headers={"HX-Request": "true"}).text
    assert '<span class="badge badge-running">Running</span>' in running and "every 3s" in poller(running)
    run.refresh_from_db()
    finish(run, RunStatus.SUCCEEDED, log="done")
    done = client.get(url, headers={"HX-Request": "true"}).text
    assert "hx-trigger" not in poller(done)  # nothing active: the poller it brings is idle
    assert '<span class="badge badge-succeeded">Succeeded</span>' in done


def test_the_list_with_active_runs_costs_the_same_queries_for_5_and_50_schedules(client, rita, tenant, source) -> None:
    from tests.helpers import make_schedule

    client.force_login(rita)
    url = f"/t/{tenant.code}/schedules/"

    def queries_with(count: int) -> int:
        for i in range(BackupSchedule.objects.count(), count):
            run_now(make_schedule(tenant, source, name=f"S{i:03}"), actor=None)
        cache.clear()
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, headers={"HX-Request": "true"})
        assert response.text.count("badge-queued") == count
        return len(queries)

    assert queries_with(5) == queries_with(50)


def test_run_now_from_the_schedule_page_redraws_its_history_which_polls_until_the_run_ends(
    client, bob, schedule
) -> None:
    from scheduling.lifecycle import claim, finish

    client.force_login(bob)
    page = client.get(f"/schedules/{schedule.code}/").text
    history = page[page.index('<div id="history"') :]
    assert history.startswith('<div id="history">')  # nothing active: no polling
    response = client.post(f"/schedules/{schedule.code}/run/", headers={"HX-Request": "true", "HX-Target": "history"})
    assert response.text.lstrip().startswith(
        f'<div id="history" hx-get="/schedules/{schedule.code}/" hx-trigger="every 3s"'
    )
    assert "Queued" in response.text and "Run of “Nightly” queued." in response.text
    run = BackupScheduleRun.objects.get()
    claim(str(run.code), timezone.now())
    run.refresh_from_db()
    finish(run, RunStatus.FAILED, log="x", error_code="TIMEOUT", error_message="Took too long.")
    poll = client.get(f"/schedules/{schedule.code}/", headers={"HX-Request": "true"}).text
    assert poll.lstrip().startswith('<div id="history">')  # ended: the poll stops
    assert "TIMEOUT" in poll and "Failed" in poll
    # The summary's last run follows, out of band.
    assert '<dd id="last-run" hx-swap-oob="true">' in poll


def test_a_new_schedule_starts_in_its_creators_zone(client, mia, tenant, source) -> None:
    client.force_login(mia)
    client.cookies["tz"] = "America%2FChicago"  # as app.js writes it
    text = client.get(f"/t/{tenant.code}/schedules/new/").text
    assert re.search(r'name="timezone" value="America/Chicago"', text)
    client.cookies["tz"] = "Factory"
    assert re.search(r'name="timezone" value="UTC"', client.get(f"/t/{tenant.code}/schedules/new/").text)


def test_run_now_without_htmx_goes_back_to_the_page_it_came_from(client, bob, schedule, tenant) -> None:
    client.force_login(bob)
    response = client.post(f"/schedules/{schedule.code}/run/", {"next": f"/t/{tenant.code}/settings/"})
    assert response.status_code == 302
    assert response.url == f"/t/{tenant.code}/settings/"


# ------------------------------------------------------------------ form: strategy fields, preview


def test_the_form_shows_every_timing_field_with_a_hint_and_marks_the_unneeded(client, mia, tenant, source) -> None:
    client.force_login(mia)
    text = client.get(f"/t/{tenant.code}/schedules/new/").text
    for name in ("time_of_day", "weekdays", "cron", "every_hours", "timezone"):
        assert f"field-{name}" in text
    assert '<span class="strategy-hint">Cron expression only.</span>' in text and "Weekly only." in text
    assert '<div class="field field-cron" data-unneeded>' in text
    assert '<div class="field field-time_of_day">' in text
    assert '<datalist id="tz-names">' in text and '<option value="Europe/Berlin">' in text
    assert 'list="tz-names"' in text
    assert f'hx-post="/t/{tenant.code}/schedules/fields/"' in text
    assert f'hx-post="/t/{tenant.code}/schedules/preview/"' in text
    for name in ("keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "time_limit_minutes", "max_attempts"):
        assert f'name="{name}"' in text


def test_the_form_page_previews_the_saved_values(client, mia, schedule) -> None:
    client.force_login(mia)
    response = client.get(f"/schedules/{schedule.code}/edit/")
    slots = response.context["preview"]["slots"]
    assert len(slots) == 5
    assert slots[0] == schedule.next_run_at
    assert f'hx-post="/t/{schedule.tenant.code}/schedules/preview/?schedule={schedule.code}"' in response.text


def test_changing_the_strategy_returns_its_fields_without_errors(client, mia, tenant, source) -> None:
    client.force_login(mia)
    data = valid_data(source, kind="cron", cron="", time_of_day="04:45")
    response = client.post(f"/t/{tenant.code}/schedules/fields/", data, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text
    assert response.text.lstrip().startswith('<div id="timing-fields"')
    assert '<div class="field field-cron">' in response.text
    assert '<div class="field field-time_of_day" data-unneeded>' in response.text
    assert 'value="04:45"' in response.text  # what was typed survives the swap
    assert "errorlist" not in response.text


def test_the_preview_lists_the_next_five_runs_on_the_viewers_clock_and_the_zones(client, mia, tenant, source) -> None:
    client.force_login(mia)
    data = valid_data(source, kind="weekly", weekdays=["0", "3"], time_of_day="02:30", timezone="Europe/Berlin")
    response = client.post(f"/t/{tenant.code}/schedules/preview/", data, headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text
    slots = preview_slots(response.text)
    assert len(slots) == 5
    from zoneinfo import ZoneInfo

    berlin = [slot.astimezone(ZoneInfo("Europe/Berlin")) for slot in slots]
    assert all(local.weekday() in (0, 3) and (local.hour, local.minute) == (2, 30) for local in berlin)
    assert response.text.count("<tr>") == 6  # the head and five slots
    # Without a zone cookie the viewer's clock is UTC: that column first, the schedule's beside it.
    assert response.text.index("Your time (UTC)</th>") < response.text.index("Europe/Berlin (the schedule's zone)</th>")
    assert not BackupSchedule.objects.exists()  # a preview never saves


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"kind": "cron", "cron": "61 * * * *"}, "Invalid cron expression"),
        ({"kind": "cron", "cron": "every day"}, "A cron expression has five fields"),
        ({"kind": "cron", "cron": "0 0 31 2 *"}, "never matches a real date"),
        ({"timezone": "Mars/Olympus"}, "Unknown time zone"),
        ({"kind": "every_n_hours", "every_hours": "0"}, "N must be between 1 and 168 hours."),
        ({"kind": "weekly"}, "Pick at least one weekday"),
        ({"time_of_day": "25:99"}, "Enter a 24-hour time as HH:MM"),
        ({"kind": "nonsense"}, "Select a valid choice"),
    ],
)
def test_the_preview_shows_invalid_values_inline_not_a_500(client, mia, tenant, source, changes, message) -> None:
    client.force_login(mia)
    response = client.post(
        f"/t/{tenant.code}/schedules/preview/", valid_data(source, **changes), headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    assert 'class="preview-errors"' in response.text
    assert message in response.text
    assert "<table" not in response.text


def test_the_preview_ignores_errors_of_fields_that_do_not_time_runs(client, mia, tenant, source) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source, name="", keep_last="0"))
    assert len(preview_slots(response.text)) == 5


def test_the_preview_of_a_schedule_not_enabled_says_it_runs_only_on_demand(client, mia, tenant, source) -> None:
    client.force_login(mia)
    data = valid_data(source)
    del data["enabled"]  # an unticked checkbox is not posted
    response = client.post(f"/t/{tenant.code}/schedules/preview/", data)
    assert "runs only when someone presses Run now" in response.text


def test_the_preview_of_an_edit_keeps_the_every_n_hours_grid(client, mia, tenant, source) -> None:
    from datetime import timedelta

    from scheduling.services import save_schedule

    item = BackupSchedule(tenant=tenant, name="Sixes", kind=ScheduleKind.EVERY_N_HOURS, every_hours=6)
    save_schedule(item, None, actor=None, sources=[source])
    # An old anchor at an odd minute: a preview that re-anchored would land elsewhere.
    anchor = timezone.now().replace(second=0, microsecond=0) - timedelta(days=30, minutes=17)
    BackupSchedule.objects.filter(pk=item.pk).update(anchor_at=anchor)
    client.force_login(mia)
    data = valid_data(source, name="Sixes (renamed)", kind="every_n_hours", every_hours="6", time_of_day="02:00")
    response = client.post(f"/t/{tenant.code}/schedules/preview/?schedule={item.code}", data)
    slots = preview_slots(response.text)
    assert len(slots) == 5
    assert all((slot - anchor) % timedelta(hours=6) == timedelta(0) for slot in slots)
    item.refresh_from_db()
    assert item.name == "Sixes" and item.anchor_at == anchor


def test_the_preview_requires_manager(client, bob, tenant, source) -> None:
    client.force_login(bob)
    assert client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source)).status_code == 403
    assert client.post(f"/t/{tenant.code}/schedules/fields/", valid_data(source)).status_code == 403


def test_the_preview_checks_ownership(client, charlie, tenant, source, schedule) -> None:
    client.force_login(charlie)
    assert client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source)).status_code == 404
    assert client.post(f"/t/{tenant.code}/schedules/fields/", valid_data(source)).status_code == 404
    own = charlie.memberships.get().tenant
    # Charlie's own tenant, Alice's schedule: still not found.
    url = f"/t/{own.code}/schedules/preview/?schedule={schedule.code}"
    assert client.post(url, valid_data(source)).status_code == 404


def test_the_preview_refuses_a_malformed_schedule_code(client, mia, tenant, source) -> None:
    client.force_login(mia)
    assert client.post(f"/t/{tenant.code}/schedules/preview/?schedule=nope", valid_data(source)).status_code == 404


def test_the_preview_rejects_get(client, mia, tenant) -> None:
    client.force_login(mia)
    assert client.get(f"/t/{tenant.code}/schedules/preview/").status_code == 405
    assert client.get(f"/t/{tenant.code}/schedules/fields/").status_code == 405


def test_the_preview_requires_login(client, tenant, source) -> None:
    assert_login_redirect(client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source)))
    assert_login_redirect(client.post(f"/t/{tenant.code}/schedules/fields/", valid_data(source)))


def test_a_rejected_submission_shows_an_unneeded_field_that_has_an_error(client, mia, tenant, source) -> None:
    client.force_login(mia)
    # A daily schedule does not use N, but a bad N is still refused: its field must not stay hidden.
    response = client.post(f"/t/{tenant.code}/schedules/new/", valid_data(source, kind="daily", every_hours="0"))
    assert '<div class="field field-every_hours">' in response.text
    assert '<div class="field field-cron" data-unneeded>' in response.text
    assert "N must be between 1 and 168 hours." in response.text


def test_the_preview_of_a_utc_schedule_shows_one_column(client, mia, tenant, source) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/schedules/preview/", valid_data(source, timezone="UTC"))
    assert len(preview_slots(response.text)) == 5
    assert response.text.count("<th ") == 1


def test_the_detail_run_now_button_redraws_the_history_with_htmx(client, bob, schedule) -> None:
    client.force_login(bob)
    text = client.get(f"/schedules/{schedule.code}/").text
    assert f'hx-post="/schedules/{schedule.code}/run/" hx-target="#history" hx-swap="outerHTML"' in text


def test_the_list_and_the_detail_reject_post(client, mia, tenant, schedule) -> None:
    client.force_login(mia)
    assert client.post(f"/t/{tenant.code}/schedules/").status_code == 405
    assert client.post(f"/schedules/{schedule.code}/").status_code == 405


def test_the_form_pages_reject_other_methods(client, mia, tenant, schedule) -> None:
    client.force_login(mia)
    assert client.put(f"/t/{tenant.code}/schedules/new/").status_code == 405
    assert client.put(f"/schedules/{schedule.code}/edit/").status_code == 405
    assert client.put(f"/schedules/{schedule.code}/delete/").status_code == 405
    assert BackupSchedule.objects.filter(pk=schedule.pk).exists()


def test_a_slot_in_the_past_reads_as_due(client, rita, tenant, schedule) -> None:
    from datetime import timedelta

    import time_machine

    client.force_login(rita)
    now = timezone.now()
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=now - timedelta(minutes=5))
    with time_machine.travel(now, tick=False):
        text = client.get(f"/t/{tenant.code}/schedules/").text
    assert '<span class="relative">due, 5 minutes ago</span>' in text


# ------------------------------------------------------------------ row texts made in Python


def test_the_row_links_and_buttons_go_to_the_schedules_own_routes(client, mia, tenant, schedule) -> None:
    from django.urls import reverse

    client.force_login(mia)
    text = client.get(f"/t/{tenant.code}/schedules/").text
    for route in ("schedule_detail", "schedule_toggle", "schedule_run_now"):
        assert f'"{reverse(route, args=[schedule.code])}"' in text, route


@pytest.mark.parametrize("zone_name", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"])
def test_the_wall_clock_text_reads_as_djangos_date_filter(zone_name) -> None:
    """The list formats next runs with strftime rather than the `timezone` and `date`
    filters (cheaper per row); it must print the same, DST edges included. Found by this
    test: the filters print no abbreviation in a repeated hour."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from django.template.defaultfilters import date as date_filter
    from django.utils.timezone import localtime
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from scheduling.presentation import WALL_FORMAT, wall_text

    # A busy machine must not fail it: generating integers is never the slow part.
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.integers(min_value=0, max_value=40 * 365 * 24 * 60))
    def check(minutes: int) -> None:
        instant = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes, seconds=minutes % 60)
        local = localtime(instant, ZoneInfo(zone_name))
        expected = date_filter(local, "D Y-m-d H:i T")
        if expected.endswith(" "):
            # Django prints no abbreviation in an hour the clocks repeat; we print the one
            # in force, which tells the two readings of that hour apart (next test).
            expected += local.tzname() or ""
        assert wall_text(instant, zone_name) == expected
        assert wall_text(instant, zone_name, WALL_FORMAT) == expected

    check()


def test_the_repeated_hour_of_a_fall_back_reads_twice_differently() -> None:
    from datetime import UTC, datetime

    from scheduling.presentation import wall_text

    first, second = datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert wall_text(first, "America/New_York") == "Sun 2026-11-01 01:30 EDT"
    assert wall_text(second, "America/New_York") == "Sun 2026-11-01 01:30 EST"


def test_the_wall_clock_text_of_nothing_or_of_no_zone_is_empty() -> None:
    from datetime import UTC, datetime

    from scheduling.presentation import wall_text

    assert wall_text(None, "UTC") == ""
    assert wall_text(datetime(2026, 1, 1, tzinfo=UTC), "Mars/Olympus") == ""
