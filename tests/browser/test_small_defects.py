"""Small defects a new user hit, seen in a real browser: 24-hour time inputs under an en-US
locale, the bulk-delete confirmation, hints of hidden fields, the Settings page's height."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time

import pytest
from playwright.sync_api import expect

from scheduling.models import BackupSchedule
from tests.browser.conftest import TIMEOUT_MS, log_in, screenshot
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
    field.screenshot(path=str(_artifact("time-of-day-en-us")))
    us_page.get_by_role("button", name="Save changes").click()
    expect(us_page.get_by_role("heading", name=schedule.name, level=1)).to_be_visible()
    schedule.refresh_from_db()
    assert schedule.time_of_day == time(23, 45)
    screenshot(us_page, "schedule-after-24h-time")


def _artifact(name: str):  # type: ignore[no-untyped-def]
    from tests.browser.conftest import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


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
