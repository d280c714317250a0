from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus, ScheduleKind
from scheduling.runs import run_now
from tenants.models import AuditAction, AuditLog
from tests.helpers import make_schedule


def settings_url(tenant) -> str:
    return f"/t/{tenant.code}/settings/"


def block_data(schedule, **changes) -> dict:
    """A settings block's fields, named with the block's prefix."""
    values = {
        "kind": ScheduleKind.DAILY,
        "time_of_day": "02:30",
        "cron": "",
        "every_hours": "24",
        "timezone": "Europe/Berlin",
    }
    values.update(changes)
    return {f"s{schedule.code.hex}-{name}": value for name, value in values.items()}


def assert_login_redirect(response) -> None:
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


# ------------------------------------------------------------------ the page


def test_a_readonly_member_sees_the_status_only(client, rita, tenant, schedule) -> None:
    client.force_login(rita)
    response = client.get(settings_url(tenant))
    assert response.status_code == 200
    text = response.text
    assert "Nightly" in text and "At 02:30 every day, Europe/Berlin" in text
    assert f'id="status-{schedule.code}"' in text
    assert "Never run" in text
    assert ">in " in text  # the next run's ETA
    assert "Run now" not in text and "<select" not in text and "Save" not in text


def test_an_operator_gets_run_now_but_no_form(client, bob, tenant, schedule) -> None:
    client.force_login(bob)
    text = client.get(settings_url(tenant)).text
    assert f'action="/schedules/{schedule.code}/run/"' in text
    assert f'hx-post="/schedules/{schedule.code}/run/"' in text
    assert "Save Nightly" not in text


def test_a_manager_gets_a_form_per_schedule(client, mia, tenant, schedule, source) -> None:
    other = make_schedule(tenant, source, name="Weekly", kind=ScheduleKind.WEEKLY, weekdays=[0, 3])
    client.force_login(mia)
    text = client.get(settings_url(tenant)).text
    assert "Save Nightly" in text and "Save Weekly" in text
    # Each block's fields carry its schedule's code, so ids never clash.
    assert f'id="id_s{schedule.code.hex}-kind"' in text and f'id="id_s{other.code.hex}-kind"' in text
    assert f'hx-post="/schedules/{schedule.code}/settings/fields/"' in text
    assert f'<div id="timing-s{schedule.code.hex}" class="timing-fields">' in text
    assert '<datalist id="tz-names">' in text


def test_the_status_shows_the_last_result_and_an_active_run(client, rita, tenant, schedule) -> None:
    now = timezone.now()
    BackupSchedule.objects.filter(pk=schedule.pk).update(last_run_at=now, last_status=RunStatus.FAILED)
    run_now(schedule, actor=None)
    client.force_login(rita)
    with time_machine.travel(now, tick=False):
        text = client.get(settings_url(tenant)).text
    assert 'class="badge badge-failed">Failed<' in text
    assert "just now" in text
    assert 'Now: <span class="badge badge-queued">Queued</span>' in text


def test_the_page_polls_its_status_areas(client, rita, tenant, schedule) -> None:
    client.force_login(rita)
    text = client.get(settings_url(tenant)).text
    assert 'hx-get="?part=status" hx-trigger="every 10s" hx-swap="none"' in text


def test_the_poll_answers_with_every_status_area_out_of_band(client, rita, tenant, schedule, source) -> None:
    other = make_schedule(tenant, source, name="Other")
    client.force_login(rita)
    response = client.get(settings_url(tenant) + "?part=status", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text and "<form" not in response.text
    for item in (schedule, other):
        assert f'<div id="status-{item.code}" class="status-area" hx-swap-oob="true">' in response.text
    assert "HX-Request" in response["Vary"]


def test_the_page_and_its_poll_cost_the_same_queries_for_5_and_50_schedules(client, mia, tenant, source) -> None:
    client.force_login(mia)

    def queries_with(count: int, url: str, **headers: str) -> int:
        existing = BackupSchedule.objects.count()
        for i in range(existing, count):
            schedule = make_schedule(
                tenant,
                source,
                name=f"S{i:03}",
                kind=[ScheduleKind.DAILY, ScheduleKind.WEEKLY, ScheduleKind.CRON][i % 3],
                weekdays=[1],
                cron="0 * * * *",
                last_status=RunStatus.SUCCEEDED,
                last_run_at=timezone.now(),
                next_run_at=timezone.now(),
            )
            if i % 2:
                BackupScheduleRun.objects.create(
                    tenant=tenant, schedule=schedule, status=RunStatus.RUNNING, created_at=timezone.now()
                )
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url, headers=headers)
        assert response.status_code == 200
        assert response.text.count('class="status-area"') == count
        return len(queries)

    page = settings_url(tenant)
    assert queries_with(5, page) == queries_with(50, page)
    poll = page + "?part=status"
    BackupSchedule.objects.all().delete()
    assert queries_with(5, poll, HX_Request="true") == queries_with(50, poll, HX_Request="true")


def test_the_page_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.get(settings_url(tenant)).status_code == 404


def test_the_page_rejects_post(client, mia, tenant) -> None:
    client.force_login(mia)
    assert client.post(settings_url(tenant)).status_code == 405


def test_the_page_requires_login(client, tenant) -> None:
    assert_login_redirect(client.get(settings_url(tenant)))


# ------------------------------------------------------------------ saving a block


def test_a_manager_saves_a_block_through_the_service(client, mia, tenant, schedule) -> None:
    client.force_login(mia)
    response = client.post(
        f"/schedules/{schedule.code}/settings/",
        block_data(schedule, kind=ScheduleKind.WEEKLY, weekdays=["0", "3"], time_of_day="04:15"),
    )
    assert response.status_code == 302
    assert response.url == settings_url(tenant)
    schedule.refresh_from_db()
    assert (schedule.kind, schedule.weekdays, schedule.time_of_day) == (ScheduleKind.WEEKLY, [0, 3], time(4, 15))
    assert schedule.next_run_at is not None
    local = schedule.next_run_at.astimezone(ZoneInfo("Europe/Berlin"))
    assert (local.weekday() in (0, 3), local.hour, local.minute) == (True, 4, 15)
    entry = AuditLog.objects.get(action=AuditAction.SCHEDULE_UPDATED)
    assert entry.actor == mia
    assert entry.details["changes"]["kind"] == ["daily", "weekly"]
    assert "Schedule “Nightly” saved." in client.get(settings_url(tenant)).text


def test_saving_a_block_with_htmx_redraws_the_block_and_shows_a_toast(client, mia, tenant, schedule) -> None:
    client.force_login(mia)
    response = client.post(
        f"/schedules/{schedule.code}/settings/",
        block_data(schedule, kind=ScheduleKind.CRON, cron="15 3 * * 1-5"),
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert "<html" not in response.text
    assert response.text.lstrip().startswith(f'<section class="settings-block" id="block-{schedule.code}"')
    assert "At 03:15 on Monday to Friday, Europe/Berlin" in response.text
    assert 'hx-swap-oob="innerHTML:#messages"' in response.text and "saved." in response.text
    schedule.refresh_from_db()
    assert schedule.cron == "15 3 * * 1-5"


def test_a_block_with_an_invalid_cron_shows_the_error_inline_and_saves_nothing(client, mia, tenant, schedule) -> None:
    client.force_login(mia)
    data = block_data(schedule, kind=ScheduleKind.CRON, cron="61 * * * *")
    plain = client.post(f"/schedules/{schedule.code}/settings/", data)
    assert plain.status_code == 200
    assert "Invalid cron expression" in plain.text and "Not saved" in plain.text
    assert "<html" in plain.text  # the whole page, with the other blocks
    htmx = client.post(f"/schedules/{schedule.code}/settings/", data, headers={"HX-Request": "true"})
    assert htmx.status_code == 200
    assert "Invalid cron expression" in htmx.text and "<html" not in htmx.text
    assert "At 02:30 every day, Europe/Berlin" in htmx.text  # the header shows what is saved
    schedule.refresh_from_db()
    assert schedule.kind == ScheduleKind.DAILY
    assert not AuditLog.objects.filter(action=AuditAction.SCHEDULE_UPDATED).exists()


def test_a_block_with_an_unknown_zone_is_refused(client, mia, schedule) -> None:
    client.force_login(mia)
    response = client.post(f"/schedules/{schedule.code}/settings/", block_data(schedule, timezone="Mars/Olympus"))
    assert response.status_code == 200
    assert "Unknown time zone" in response.text
    schedule.refresh_from_db()
    assert schedule.timezone == "Europe/Berlin"


def test_saving_a_block_requires_manager(client, bob, schedule) -> None:
    client.force_login(bob)
    response = client.post(f"/schedules/{schedule.code}/settings/", block_data(schedule, time_of_day="05:00"))
    assert response.status_code == 403
    schedule.refresh_from_db()
    assert schedule.time_of_day == time(2, 30)


def test_saving_a_block_checks_ownership(client, charlie, schedule) -> None:
    client.force_login(charlie)
    assert client.post(f"/schedules/{schedule.code}/settings/", block_data(schedule)).status_code == 404


def test_saving_a_block_rejects_get(client, mia, schedule) -> None:
    client.force_login(mia)
    assert client.get(f"/schedules/{schedule.code}/settings/").status_code == 405


def test_saving_a_block_requires_login(client, schedule) -> None:
    assert_login_redirect(client.post(f"/schedules/{schedule.code}/settings/", block_data(schedule)))


# ------------------------------------------------------------------ a block's strategy fields


def test_a_blocks_fields_follow_its_strategy(client, mia, schedule) -> None:
    client.force_login(mia)
    response = client.post(
        f"/schedules/{schedule.code}/settings/fields/",
        block_data(schedule, kind=ScheduleKind.EVERY_N_HOURS, every_hours="6"),
        headers={"HX-Request": "true"},
    )
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<div id="timing-s{schedule.code.hex}"')
    assert '<div class="field field-every_hours">' in response.text
    assert '<div class="field field-weekdays" data-unneeded>' in response.text
    assert 'value="6"' in response.text
    schedule.refresh_from_db()
    assert schedule.kind == ScheduleKind.DAILY


def test_a_blocks_fields_require_manager(client, bob, schedule) -> None:
    client.force_login(bob)
    assert client.post(f"/schedules/{schedule.code}/settings/fields/", block_data(schedule)).status_code == 403


def test_a_blocks_fields_check_ownership(client, charlie, schedule) -> None:
    client.force_login(charlie)
    assert client.post(f"/schedules/{schedule.code}/settings/fields/", block_data(schedule)).status_code == 404


def test_a_blocks_fields_reject_get(client, mia, schedule) -> None:
    client.force_login(mia)
    assert client.get(f"/schedules/{schedule.code}/settings/fields/").status_code == 405


def test_a_blocks_fields_require_login(client, schedule) -> None:
    assert_login_redirect(client.post(f"/schedules/{schedule.code}/settings/fields/", block_data(schedule)))


# ------------------------------------------------------------------ run now from the page


def test_run_now_from_the_page_without_js_comes_back_with_a_message(client, bob, tenant, schedule) -> None:
    client.force_login(bob)
    response = client.post(f"/schedules/{schedule.code}/run/", {"next": settings_url(tenant)}, follow=True)
    assert response.redirect_chain[-1][0] == settings_url(tenant)
    assert "Run of “Nightly” queued." in response.text
    assert 'Now: <span class="badge badge-queued">Queued</span>' in response.text


def test_the_next_run_reads_on_the_viewers_clock_with_the_schedules_beside_it(client, mia, tenant, schedule) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=datetime(2026, 7, 1, 0, 30, tzinfo=UTC))
    client.force_login(mia)
    client.cookies["tz"] = "Asia%2FKolkata"  # as static/js/app.js writes it
    text = client.get(settings_url(tenant)).text
    assert "(Wed 2026-07-01 06:00 IST; Wed 2026-07-01 02:30 CEST in Europe/Berlin)" in text
