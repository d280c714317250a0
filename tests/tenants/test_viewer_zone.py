"""The viewer's zone: the `tz` cookie exactly as static/js/app.js writes it (URL-encoded),
and every page that prints a time printing it on that clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from lib.wallclock import viewer_zone_name, wall_text
from scheduling.models import BackupSchedule, BackupScheduleRun, Notification, NotificationKind, RunStatus
from tenants.models import AuditAction, AuditLog

# encodeURIComponent("America/Chicago"), as the browser sends it back.
CHICAGO = "America%2FChicago"
# 1 July 2026 17:04:05 UTC: 12:04:05 CDT in Chicago, 19:04:05 CEST in Berlin.
INSTANT = datetime(2026, 7, 1, 17, 4, 5, tzinfo=UTC)


def shown(html: str) -> str:
    """The page less its machine-readable instants and tooltips (those stay UTC on purpose)."""
    return re.sub(r'(datetime|title)="[^"]*"', "", html)


@pytest.mark.parametrize(
    "cookie, zone",
    [
        ("America%2FChicago", "America/Chicago"),
        ("America%2FArgentina%2FBuenos_Aires", "America/Argentina/Buenos_Aires"),
        ("Europe/Berlin", "Europe/Berlin"),  # a hand-made cookie, not encoded
        ("Asia%2FCalcutta", "Asia/Calcutta"),  # what Chromium reports for India: a tz database link
        ("posixrules", "UTC"),
        ("posix%2FEurope%2FBerlin", "UTC"),
        ("UTC", "UTC"),
        ("", "UTC"),
        (None, "UTC"),
        ("localtime", "UTC"),
        ("Factory", "UTC"),
        ("america%2Fchicago", "UTC"),  # zone names are case-sensitive files
        ("%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "UTC"),
        ("America%2FChicago%00", "UTC"),
        ("%E2%82%AC", "UTC"),
        ("%", "UTC"),
        ("A" * 5000, "UTC"),
    ],
)
def test_the_cookie_names_a_real_zone_or_reads_as_utc(cookie, zone) -> None:
    assert viewer_zone_name(cookie) == zone


def test_the_middleware_activates_the_zone_for_the_request_only(client, rita, tenant) -> None:
    client.force_login(rita)
    client.cookies["tz"] = CHICAGO
    response = client.get(f"/t/{tenant.code}/audit/")
    assert response.status_code == 200
    assert "Times are in your zone, America/Chicago." in response.text
    assert timezone.get_current_timezone_name() == "UTC"  # deactivated after the response


def test_the_audit_log_prints_times_on_the_viewers_clock(client, rita, tenant) -> None:
    AuditLog.objects.create(tenant=tenant, action=AuditAction.RUN_CREATED, target_label="x", created_at=INSTANT)
    client.force_login(rita)
    client.cookies["tz"] = CHICAGO
    text = client.get(f"/t/{tenant.code}/audit/?automatic=on").text  # run.created is an automatic entry
    assert "2026-07-01 12:04:05 CDT" in text and "17:04" not in shown(text)
    assert '<time datetime="2026-07-01T17:04:05+00:00">' in text  # the machine-readable instant stays UTC


def test_notifications_print_times_on_the_viewers_clock(client, rita, tenant) -> None:
    Notification.objects.create(
        tenant=tenant, user=rita, kind=NotificationKind.RUN_FAILED, message="It failed.", created_at=INSTANT
    )
    client.force_login(rita)
    client.cookies["tz"] = CHICAGO
    text = client.get(f"/t/{tenant.code}/notifications/").text
    assert "2026-07-01 12:04 CDT" in text and "17:04" not in shown(text)
    assert "Times are in your zone, America/Chicago." in text


def test_the_schedule_page_prints_the_viewers_clock_first_and_the_schedules_beside_it(client, rita, schedule) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=INSTANT)
    BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, slot=INSTANT, created_at=INSTANT
    )
    client.force_login(rita)
    client.cookies["tz"] = CHICAGO
    text = client.get(f"/schedules/{schedule.code}/").text
    next_run = text[text.index("<dt>Next run</dt>") : text.index("<dt>Last run</dt>")]
    assert next_run.index("Wed 2026-07-01 12:04 CDT") < next_run.index("Wed 2026-07-01 19:04 CEST (Europe/Berlin)")
    history = text[text.index('id="history"') :]
    assert "2026-07-01 12:04:05 CDT" in history and "17:04" not in shown(history)


def test_a_viewer_in_the_schedules_own_zone_sees_each_time_once(client, rita, schedule) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=INSTANT)
    client.force_login(rita)
    client.cookies["tz"] = "Europe%2FBerlin"
    text = client.get(f"/schedules/{schedule.code}/").text
    next_run = text[text.index("<dt>Next run</dt>") : text.index("<dt>Last run</dt>")]
    assert next_run.count("19:04 CEST") == 1 and "(Europe/Berlin)" not in next_run


def test_the_repeated_hour_reads_twice_differently_on_the_viewers_clock(client, rita, tenant, schedule) -> None:
    # 1 November 2026, New York falls back: 01:30 happens at 05:30 and at 06:30 UTC.
    for hour in (5, 6):
        at = datetime(2026, 11, 1, hour, 30, tzinfo=UTC)
        BackupScheduleRun.objects.create(
            tenant=tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=at, started_at=at
        )
    client.force_login(rita)
    client.cookies["tz"] = "America%2FNew_York"
    text = client.get(f"/t/{tenant.code}/runs/").text
    assert text.index("2026-11-01 01:30:00 EST") < text.index("2026-11-01 01:30:00 EDT")  # newest first
    assert wall_text(datetime(2026, 11, 1, 5, 30, tzinfo=UTC), "America/New_York") == "Sun 2026-11-01 01:30 EDT"
