"""The list pages at a phone's width (390 px) and a laptop's (1280 px): nothing pushes the page
sideways, and each row's status and actions are on screen. Screenshots of each in
test-artifacts/screenshots/ (narrow-*.png, wide-*.png)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from backups.models import BackupSource, SourceKind
from scheduling.models import BackupScheduleRun, RunStatus
from tests.browser.conftest import log_in, screenshot

pytestmark = pytest.mark.browser

WIDTHS = {"narrow": 390, "wide": 1280}


def assert_fits(page, width: int) -> None:  # type: ignore[no-untyped-def]
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= width, f"the page is {overflow} px wide in a {width} px window"


def assert_on_screen(locator, width: int) -> None:  # type: ignore[no-untyped-def]
    expect(locator).to_be_visible()
    box = locator.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, box


@pytest.mark.parametrize("size", WIDTHS)
def test_the_list_pages_fit_the_window_with_status_and_actions_in_view(
    open_page, alice, tenant, source, schedule, size
) -> None:
    width = WIDTHS[size]
    now = timezone.now()
    BackupScheduleRun.objects.create(
        tenant=tenant,
        schedule=schedule,
        status=RunStatus.FAILED,
        created_at=now - timedelta(minutes=5),
        started_at=now - timedelta(minutes=5),
        finished_at=now - timedelta(minutes=4),
        error_code="CONNECTION_FAILED",
        error_message="Could not connect to server db-primary-replica-02.internal.example.com:5432 " * 3,
    )
    BackupSource.objects.create(
        tenant=tenant,
        name="Warehouse",
        kind=SourceKind.POSTGRES,
        host="warehouse-primary.internal.example.com",
        port=5432,
        username="backup_operator_account",
        database="warehouse_reporting_production",
    )
    page = open_page(width=width)
    log_in(page, alice)

    page.goto(f"/t/{tenant.code}/schedules/")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Nightly"))
    assert_fits(page, width)
    assert_on_screen(row.get_by_role("button", name="Run Nightly now"), width)
    assert_on_screen(row.get_by_role("button", name="Disable Nightly"), width)
    assert_on_screen(row.get_by_text("Never run"), width)
    screenshot(page, f"{size}-schedules")

    page.goto(f"/t/{tenant.code}/runs/")
    assert_fits(page, width)
    assert_on_screen(page.locator(".runs-table .badge-failed"), width)
    screenshot(page, f"{size}-runs")

    page.goto(f"/t/{tenant.code}/sources/")
    row = page.get_by_role("row").filter(has_text="Warehouse")
    assert_fits(page, width)
    assert_on_screen(row.get_by_role("link", name="Edit Warehouse"), width)
    assert_on_screen(row.get_by_role("button", name="Test connection of Warehouse"), width)
    screenshot(page, f"{size}-sources")

    page.goto(f"/schedules/{schedule.code}/")
    assert_fits(page, width)
    assert_on_screen(page.locator(".history-table .badge-failed"), width)
    screenshot(page, f"{size}-schedule")


@pytest.mark.parametrize("size", WIDTHS)
def test_a_schedule_with_the_longest_name_allowed_pushes_no_page_sideways(
    open_page, alice, tenant, source, schedule, size
) -> None:
    width = WIDTHS[size]
    schedule.name = "x" * 200  # the longest the field takes, with no place to break a line
    schedule.save(update_fields=["name"])
    BackupScheduleRun.objects.create(
        tenant=tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    page = open_page(width=width)
    log_in(page, alice)
    for path in (
        f"/t/{tenant.code}/schedules/",
        f"/t/{tenant.code}/runs/",
        f"/t/{tenant.code}/settings/",
        f"/schedules/{schedule.code}/",
    ):
        page.goto(path)
        widest = page.evaluate(
            """() => [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth)
              .slice(0, 3).map(e => e.tagName + '.' + e.className)"""
        )
        assert page.evaluate("document.documentElement.scrollWidth") <= width, (path, widest)
    screenshot(page, f"{size}-long-name-schedule")
