"""Small defects a new user hit, seen in a real browser: 24-hour time inputs under an en-US
locale, the bulk-delete confirmation, hints of hidden fields, the Settings page's height."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import time

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import TIMEOUT_MS, log_in, screenshot

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
