"""The main pages in a real browser: logging in, schedules, the schedule form, runs and their logs,
and what a read-only member sees (and cannot do by crafting a POST)."""

from __future__ import annotations

import re
from datetime import time, timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus, ScheduleKind
from tests.browser.conftest import csrf_post, log_in, screenshot

pytestmark = pytest.mark.browser


def make_run(schedule: BackupSchedule, status: str, minutes_ago: int, **fields) -> BackupScheduleRun:  # type: ignore[no-untyped-def]
    at = timezone.now() - timedelta(minutes=minutes_ago)
    return BackupScheduleRun.objects.create(
        tenant=schedule.tenant,
        schedule=schedule,
        status=status,
        slot=at,
        created_at=at,
        started_at=at,
        finished_at=at + timedelta(seconds=3),
        **fields,
    )


def choose_strategy(page, label: str) -> None:  # type: ignore[no-untyped-def]
    """Pick the strategy and, when the form redraws its timing fields with htmx, wait for
    that before typing into them: a late swap would replace the typed-in fields."""
    select = page.get_by_label("Strategy")
    if select.get_attribute("hx-post") or select.get_attribute("hx-get"):
        with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true"):
            select.select_option(label=label)
        page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")
    else:
        select.select_option(label=label)


def runs_table(page):  # type: ignore[no-untyped-def]
    return page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Status"))


# ------------------------------------------------------------------ logging in


def test_a_member_logs_in_through_the_form_and_lands_on_the_schedules_list(page, alice, tenant, schedule) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    screenshot(page, "login")
    log_in(page, alice)
    expect(page).to_have_url(re.compile(rf"/t/{tenant.code}/schedules/$"))
    expect(page.get_by_role("heading", name="Schedules", level=1)).to_be_visible()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Nightly"))
    expect(row).to_contain_text("Shop")
    expect(row).to_contain_text("At 02:30 every day, Europe/Berlin")
    expect(page.get_by_role("button", name=f"Log out {alice.username}")).to_be_visible()
    screenshot(page, "schedules")


def test_a_wrong_password_keeps_the_login_page_with_an_error(page, alice) -> None:
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/accounts/login/$"))
    expect(page.get_by_text("Please enter a correct username and password")).to_be_visible()
    expect(page.get_by_role("heading", name="Schedules")).to_have_count(0)


# ------------------------------------------------------------------ schedules


def test_a_manager_creates_a_daily_schedule_through_the_form(page, mia, tenant, source) -> None:
    log_in(page, mia)
    page.get_by_role("link", name="New schedule").click()
    expect(page.get_by_role("heading", name="New schedule")).to_be_visible()
    page.get_by_label("Name").fill("Evening copy")
    page.get_by_label("Shop").check()
    choose_strategy(page, "Daily")
    page.get_by_label("Time of day").fill("21:15")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Keep last N backups").fill("5")
    screenshot(page, "schedule-form")
    page.get_by_role("button", name="Create schedule").click()

    expect(page.get_by_role("heading", name="Evening copy", level=1)).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="created")).to_contain_text("Schedule “Evening copy” created.")
    expect(page.get_by_text("At 21:15 every day, Europe/Berlin")).to_be_visible()
    # Five upcoming slots, each the next evening at 21:15 Berlin time.
    expect(page.get_by_role("region", name="Upcoming").get_by_role("listitem")).to_have_count(5)
    screenshot(page, "schedule-detail")

    created = BackupSchedule.objects.get(tenant=tenant, name="Evening copy")
    assert (created.kind, created.time_of_day, created.timezone, created.keep_last) == (
        ScheduleKind.DAILY,
        time(21, 15),
        "Europe/Berlin",
        5,
    )
    assert list(created.sources.all()) == [source]
    assert created.next_run_at is not None


def test_the_schedule_form_shows_errors_next_to_the_fields_and_keeps_the_input(page, mia, tenant, source) -> None:
    log_in(page, mia)
    page.goto(f"/t/{tenant.code}/schedules/new/")
    page.get_by_label("Name").fill("Bad zone")
    page.get_by_label("Shop").check()
    choose_strategy(page, "Daily")
    page.get_by_label("Time of day").fill("03:00")
    page.get_by_label("Time zone").fill("Mars/Olympus")
    page.get_by_role("button", name="Create schedule").click()
    expect(page.get_by_role("alert")).to_contain_text("The schedule was not saved")
    # Next to the field: the input itself is marked invalid and described by its error.
    zone = page.get_by_label("Time zone")
    expect(zone).to_have_attribute("aria-invalid", "true")
    expect(zone).to_have_accessible_description(re.compile("Unknown time zone “Mars/Olympus”"))
    expect(page.get_by_label("Name")).not_to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Name")).to_have_value("Bad zone")
    assert not BackupSchedule.objects.filter(name="Bad zone").exists()


def test_opening_a_schedule_from_the_list_shows_its_history(page, rita, tenant, schedule) -> None:
    make_run(schedule, RunStatus.FAILED, 30, error_code="SOURCE_NOT_FOUND", error_message="gone away")
    log_in(page, rita)
    page.get_by_role("link", name="Nightly").click()
    expect(page.get_by_role("heading", name="Nightly", level=1)).to_be_visible()
    history = page.get_by_role("region", name="History")
    expect(history.get_by_role("row")).to_have_count(2)  # header + the one run
    expect(history).to_contain_text("SOURCE_NOT_FOUND gone away")


# ------------------------------------------------------------------ runs


def test_the_runs_list_filters_by_status_without_reloading_the_page(page, rita, tenant, schedule) -> None:
    for minutes in (50, 40, 30):
        make_run(schedule, RunStatus.SUCCEEDED, minutes)
    make_run(schedule, RunStatus.FAILED, 20, error_code="TIMEOUT", error_message="took too long")
    log_in(page, rita)
    page.get_by_role("link", name="Runs").click()
    expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    expect(runs_table(page).get_by_role("row")).to_have_count(5)
    screenshot(page, "runs")

    page.evaluate("window.__stillTheSamePage = true")
    page.get_by_label("Status").select_option(label="Failed")  # filters on change, by htmx
    expect(page).to_have_url(re.compile(r"[?&]status=failed"))
    expect(runs_table(page).get_by_role("row")).to_have_count(2)
    expect(runs_table(page)).to_contain_text("TIMEOUT")
    expect(runs_table(page)).not_to_contain_text("Succeeded")
    assert page.evaluate("window.__stillTheSamePage === true"), "the filter reloaded the whole page"
    screenshot(page, "runs-filtered")

    # The filtered URL is a real page too (a shared link, or the back button).
    page.reload()
    expect(page.get_by_label("Status")).to_have_value("failed")
    expect(runs_table(page).get_by_role("row")).to_have_count(2)


def test_a_runs_log_opens_from_the_runs_list(page, rita, tenant, schedule) -> None:
    make_run(
        schedule,
        RunStatus.FAILED,
        10,
        error_code="SOURCE_NOT_FOUND",
        error_message="The SQLite file /srv/shop.sqlite3 does not exist.",
        log="12:00:00 Run started.\n12:00:01 Failed: SOURCE_NOT_FOUND\n",
    )
    log_in(page, rita)
    page.goto(f"/t/{tenant.code}/runs/")
    runs_table(page).get_by_role("row").nth(1).get_by_role("link").first.click()
    expect(page.get_by_role("heading", name=re.compile("Backup of “Nightly”"))).to_be_visible()
    log = page.get_by_role("region", name="Log")
    expect(log).to_contain_text("12:00:00 Run started.")
    expect(log).to_contain_text("12:00:01 Failed: SOURCE_NOT_FOUND")
    screenshot(page, "run-detail")


# ------------------------------------------------------------------ read-only


# Buttons or links, by accessible name: the list's, the schedule page's, the failed run's.
LIST_ACTIONS = ("New schedule", "Run Nightly now", "Disable Nightly")
SCHEDULE_ACTIONS = ("Run now", "Edit", "Disable", "Delete")
RUN_ACTIONS = ("Retry",)


def count_actions(page, names: tuple[str, ...]) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {
        name: page.get_by_role("button", name=name, exact=True).count()
        + page.get_by_role("link", name=name, exact=True).count()
        for name in names
    }


def action_counts(page, schedule: BackupSchedule, run: BackupScheduleRun) -> list[dict[str, int]]:  # type: ignore[no-untyped-def]
    page.goto(f"/t/{schedule.tenant.code}/schedules/")
    expect(page.get_by_role("heading", name="Schedules", level=1)).to_be_visible()
    on_list = count_actions(page, LIST_ACTIONS)
    page.get_by_role("link", name="Nightly").click()
    expect(page.get_by_role("heading", name="Nightly", level=1)).to_be_visible()
    on_schedule = count_actions(page, SCHEDULE_ACTIONS)
    page.goto(f"/runs/{run.code}/")
    expect(page.get_by_role("heading", name=re.compile("Backup of"))).to_be_visible()
    return [on_list, on_schedule, count_actions(page, RUN_ACTIONS)]


def test_an_owner_sees_every_action_button(page, alice, tenant, schedule) -> None:
    """The control for the read-only test below: the same names do find the buttons."""
    failed = make_run(schedule, RunStatus.FAILED, 5, error_code="TIMEOUT")
    log_in(page, alice)
    assert action_counts(page, schedule, failed) == [
        dict.fromkeys(LIST_ACTIONS, 1),
        dict.fromkeys(SCHEDULE_ACTIONS, 1),
        dict.fromkeys(RUN_ACTIONS, 1),
    ]


def test_a_readonly_member_sees_no_action_buttons(page, rita, tenant, schedule) -> None:
    failed = make_run(schedule, RunStatus.FAILED, 5, error_code="TIMEOUT")
    log_in(page, rita)
    assert action_counts(page, schedule, failed) == [
        dict.fromkeys(LIST_ACTIONS, 0),
        dict.fromkeys(SCHEDULE_ACTIONS, 0),
        dict.fromkeys(RUN_ACTIONS, 0),
    ]
    page.goto(f"/schedules/{schedule.code}/")
    screenshot(page, "schedule-detail-readonly")


def test_a_readonly_member_who_posts_anyway_gets_403_and_nothing_changes(page, rita, tenant, schedule) -> None:
    failed = make_run(schedule, RunStatus.FAILED, 5, error_code="TIMEOUT")
    log_in(page, rita)
    page.goto(f"/schedules/{schedule.code}/")
    expect(page.get_by_role("heading", name="Nightly", level=1)).to_be_visible()
    attempts = {
        f"/schedules/{schedule.code}/run/": {},
        f"/runs/{failed.code}/retry/": {},
        f"/schedules/{schedule.code}/toggle/": {"enabled": "0"},
        f"/schedules/{schedule.code}/delete/": {},
        f"/schedules/{schedule.code}/edit/": {"name": "Renamed by rita"},
        f"/t/{tenant.code}/schedules/new/": {"name": "Created by rita"},
    }
    for path, data in attempts.items():
        response = csrf_post(page, path, data)
        assert response.status == 403, (path, response.status)
        # The role check said no, not the CSRF check.
        assert "role or higher" in response.text(), (path, response.text()[:500])
    assert BackupScheduleRun.objects.count() == 1
    schedule.refresh_from_db()
    assert (schedule.name, schedule.enabled) == ("Nightly", True)
    assert BackupSchedule.objects.count() == 1


def test_the_same_crafted_post_works_for_an_operator(page, bob, tenant, schedule) -> None:
    """The control for the test above: the POST helper itself passes Django's CSRF check."""
    log_in(page, bob)
    page.goto(f"/schedules/{schedule.code}/")
    response = csrf_post(page, f"/schedules/{schedule.code}/run/")
    assert response.status == 302, response.text()[:500]
    run = BackupScheduleRun.objects.get(schedule=schedule)
    assert (run.status, run.requested_by) == (RunStatus.QUEUED, bob)


# ------------------------------------------------------------------ the bell


def test_a_failure_while_a_page_stays_open_shows_in_the_bell_without_a_reload(page, rita, tenant, monkeypatch) -> None:
    import scheduling.notifications
    from scheduling.models import Notification, NotificationKind

    monkeypatch.setattr(scheduling.notifications, "BELL_POLL_SECONDS", 1)  # sooner than its 60 s
    log_in(page, rita)
    page.goto(f"/t/{tenant.code}/runs/")
    bell = page.get_by_role("link", name=re.compile("^Notifications"))
    expect(bell).to_have_accessible_name(re.compile("none unread"))
    page.evaluate("window.__stillTheSamePage = true")
    Notification.objects.create(
        tenant=tenant, user=rita, kind=NotificationKind.RUN_FAILED, message="Nightly failed.", created_at=timezone.now()
    )
    expect(bell).to_have_accessible_name(re.compile("1 unread"), timeout=15_000)
    assert page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"
    bell.click()  # still a plain link to the list
    expect(page.get_by_role("button", name=re.compile(r"^Mark read\s*: Nightly failed\.$"))).to_be_visible()
