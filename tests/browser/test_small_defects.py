"""Small defects a new user hit, seen in a real browser: 24-hour time inputs under an en-US
locale, the bulk-delete confirmation, hints of hidden fields, the Settings page's height."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import time

import pytest
from playwright.sync_api import expect

from scheduling.models import BackupSchedule
from tests.browser.conftest import SCREENSHOTS, TIMEOUT_MS, log_in, screenshot
from tests.helpers import make_schedule

pytestmark = pytest.mark.browser


@pytest.fixture
def us_page(browser, live_server) -> Iterator:
    """A browser whose locale would show <input type="time"> as 02:30 AM."""
    context = browser.new_context(
        base_url=live_server.url,
        viewport={"width": 1280, "height": 900},
        locale="en-US",
        timezone_id="America/New_York",
    )
    context.set_default_timeout(TIMEOUT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda message: message.type == "error" and errors.append(message.text))
    yield tab
    context.close()
    assert not errors, errors


def test_the_time_of_day_reads_24_hour_in_an_en_us_browser(us_page, mia, schedule) -> None:
    schedule.time_of_day = time(14, 5)
    schedule.save()
    log_in(us_page, mia)
    us_page.goto(f"/schedules/{schedule.code}/edit/")
    field = us_page.get_by_label("Time of day")
    # A time input keeps "14:05" as its value but draws "02:05 PM": its type decides.
    assert field.evaluate("el => el.type") == "text"
    expect(field).to_have_value("14:05")
    field.fill("23:45")
    expect(field).to_have_value("23:45")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    field.screenshot(path=str(SCREENSHOTS / "time-of-day-en-us.png"))
    us_page.get_by_role("button", name="Save changes").click()
    expect(us_page.get_by_role("heading", name=schedule.name, level=1)).to_be_visible()
    schedule.refresh_from_db()
    assert schedule.time_of_day == time(23, 45)
    screenshot(us_page, "schedule-after-24h-time")


# ------------------------------------------------------------------ bulk confirmation


def _bulk_page(page, user, tenant, names):  # type: ignore[no-untyped-def]
    log_in(page, user)
    page.goto(f"/t/{tenant.code}/schedules/")
    for name in names:
        page.get_by_label(f"Select {name}").check()


def test_bulk_delete_asks_naming_the_action_and_the_count(page, mia, tenant, schedule, source) -> None:
    for name in ("Hourly", "Weekly"):
        make_schedule(tenant, source, name=name)
    _bulk_page(page, mia, tenant, ["Hourly", "Weekly"])
    page.get_by_label("With the selected schedules").select_option(label="Delete")
    asked: list[str] = []

    def dismiss(dialog) -> None:  # type: ignore[no-untyped-def]
        asked.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_label("Select Hourly")).to_be_checked()  # nothing sent
    assert asked == ["Delete 2 selected schedules and their run history? Schedules with backup sets are kept."]
    assert BackupSchedule.objects.filter(name__in=["Hourly", "Weekly"]).count() == 2

    page.get_by_label("Select Weekly").uncheck()
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("link", name="Hourly")).to_have_count(0)
    assert asked[-1] == "Delete 1 selected schedule and their run history? Schedules with backup sets are kept."
    assert set(BackupSchedule.objects.values_list("name", flat=True)) == {"Nightly", "Weekly"}


def test_bulk_actions_ask_nothing_when_nothing_is_selected(page, mia, tenant, schedule) -> None:
    _bulk_page(page, mia, tenant, [])
    page.get_by_label("With the selected schedules").select_option(label="Delete")
    asked: list[str] = []
    page.on("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#messages")).to_contain_text("Select at least one schedule.")
    assert asked == []
    assert BackupSchedule.objects.filter(pk=schedule.pk).exists()


def test_an_operators_run_now_in_bulk_names_the_count(page, bob, tenant, schedule) -> None:
    _bulk_page(page, bob, tenant, ["Nightly"])
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.accept()))
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#messages")).to_contain_text("Nightly: queued")
    assert asked == ["Run 1 selected schedule now?"]


# ------------------------------------------------------------------ hints of hidden fields


def test_a_field_shown_only_for_its_strategy_does_not_say_so(page, mia, tenant, source) -> None:
    log_in(page, mia)
    page.goto(f"/t/{tenant.code}/schedules/new/")
    strategy = page.get_by_label("Strategy")
    with page.expect_response(lambda r: r.request.headers.get("hx-request") == "true"):
        strategy.select_option(label="Weekly")
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")
    weekdays = page.locator(".field-weekdays")
    expect(weekdays).to_be_visible()
    expect(page.locator(".field-cron")).to_be_hidden()
    assert "Weekly only" not in weekdays.inner_text()
    time_field = page.locator(".field-time_of_day")
    assert "Daily, Weekly" not in time_field.inner_text() and "24-hour HH:MM" in time_field.inner_text()
    assert [o for o in strategy.locator("option").all_inner_texts()] == [
        "Daily",
        "Weekly",
        "Cron expression",
        "Every N hours",
    ]
    screenshot(page, "schedule-form-weekly")


# ------------------------------------------------------------------ the Settings page


def settings_with_13_schedules(page, mia, tenant, source):  # type: ignore[no-untyped-def]
    for i in range(13):
        make_schedule(tenant, source, name=f"Schedule {i:02}", kind="weekly", weekdays=[0, 3])
    log_in(page, mia)
    page.goto(f"/t/{tenant.code}/settings/")
    expect(page.get_by_role("region", name="Schedule 12")).to_be_visible()


def test_the_settings_page_is_one_compact_row_per_schedule(page, mia, tenant, source) -> None:
    settings_with_13_schedules(page, mia, tenant, source)
    height = page.evaluate("document.documentElement.scrollHeight")
    (SCREENSHOTS / "settings-height.txt").write_text(f"{height}\n")
    screenshot(page, "settings-13-schedules")
    # Every row shows its name, cadence and status; no timing form until one is opened.
    assert page.locator(".status-area").count() == 13
    expect(page.get_by_role("button", name=re.compile(r"^Save "))).to_have_count(0)
    assert height < 2000, f"the page is {height} px tall with 13 schedules"


def test_one_schedules_timing_form_is_open_at_a_time(page, mia, tenant, source) -> None:
    settings_with_13_schedules(page, mia, tenant, source)
    page.get_by_text("Change when Schedule 03 runs").click()
    expect(page.get_by_role("button", name="Save Schedule 03")).to_be_visible()
    page.get_by_text("Change when Schedule 07 runs").click()
    expect(page.get_by_role("button", name="Save Schedule 07")).to_be_visible()
    expect(page.get_by_role("button", name="Save Schedule 03")).to_be_hidden()
    assert page.locator("details.block-edit[open]").count() == 1
    # Saving keeps the block open, with the result in a toast.
    block = page.get_by_role("region", name="Schedule 07")
    block.get_by_label("Time of day").fill("04:45")
    block.get_by_role("button", name="Save Schedule 07").click()
    expect(page.locator("#messages")).to_contain_text("Schedule “Schedule 07” saved.")
    expect(
        page.get_by_role("region", name="Schedule 07").get_by_role("button", name="Save Schedule 07")
    ).to_be_visible()
    assert BackupSchedule.objects.get(name="Schedule 07").time_of_day == time(4, 45)
