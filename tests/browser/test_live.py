"""Live pages in a real browser with a real cluster (`manage.py runcluster`): a run appears and
is watched queued -> running -> succeeded without a reload on the schedules list, on the
schedule's page and on the runs page (which also picks up a run created after it was
opened); and every time reads on the browser's own clock (a Chicago browser here).

As in test_run_now.py, the SQLite source is held under an exclusive lock while the run
starts, so the run stays `running` until the test lets go.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import expect

from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus
from scheduling.runs import run_now
from tenants.models import AuditAction, AuditLog
from tests.browser.conftest import log_in, screenshot
from tests.browser.test_run_now import CLUSTER_TIMEOUT_MS, locked
from tests.helpers import runcluster

pytestmark = pytest.mark.browser

# 1 July 2026 17:04:05 UTC: 12:04:05 CDT in Chicago, 19:04:05 CEST in Berlin (the schedule's zone).
INSTANT = datetime(2026, 7, 1, 17, 4, 5, tzinfo=UTC)


def still_the_same_page(page) -> None:  # type: ignore[no-untyped-def]
    assert page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"


# ------------------------------------------------------------------ the viewer's clock


def test_a_chicago_browser_reads_every_time_on_its_own_clock(open_page, rita, tenant, schedule) -> None:
    BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=INSTANT)
    run = BackupScheduleRun.objects.create(
        tenant=tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=INSTANT, started_at=INSTANT
    )
    AuditLog.objects.create(tenant=tenant, action=AuditAction.RUN_CREATED, target_label="run", created_at=INSTANT)
    page = open_page(timezone_id="America/Chicago")
    log_in(page, rita)  # the login page's script already tells the server the zone
    tz = [cookie for cookie in page.context.cookies() if cookie["name"] == "tz"]
    assert [cookie["value"] for cookie in tz] == ["America%2FChicago"]  # encoded, as the server must decode it

    page.goto(f"/t/{tenant.code}/runs/")
    expect(page.get_by_text("Times are in your zone, America/Chicago.")).to_be_visible()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Nightly"))
    expect(row.get_by_role("cell").first).to_have_text("2026-07-01 12:04:05 CDT")

    page.goto(f"/schedules/{schedule.code}/")
    next_run = page.locator("dt:text-is('Next run') + dd")
    expect(next_run).to_contain_text("Wed 2026-07-01 12:04 CDT")
    expect(next_run).to_contain_text("Wed 2026-07-01 19:04 CEST (Europe/Berlin)")
    history = page.get_by_role("table", name=re.compile("Runs of Nightly"))
    expect(history).to_contain_text("2026-07-01 12:04:05 CDT")

    page.goto(f"/runs/{run.code}/")
    expect(page.get_by_role("list", name="Timeline")).to_contain_text("2026-07-01 12:04:05 CDT")

    page.goto(f"/t/{tenant.code}/audit/")
    expect(page.get_by_role("table")).to_contain_text("2026-07-01 12:04:05 CDT")
    screenshot(page, "audit-chicago")


def test_a_new_schedule_starts_in_the_browsers_zone(open_page, mia, tenant, source) -> None:
    # Chromium names India's zone by its old link, Asia/Calcutta (test_viewer_zone accepts
    # it); Tokyo has one name only.
    page = open_page(timezone_id="Asia/Tokyo")
    log_in(page, mia)
    page.goto(f"/t/{tenant.code}/schedules/new/")
    expect(page.get_by_label("Time zone")).to_have_value("Asia/Tokyo")


# ------------------------------------------------------------------ live pages


def test_run_now_on_the_schedules_list_is_watched_in_its_row_to_the_end(
    page, bob, tenant, source, schedule, settings, monkeypatch
) -> None:
    import scheduling.views.schedules as schedule_views

    monkeypatch.setattr(schedule_views, "POLL_SECONDS", 1)
    log_in(page, bob)
    page.goto(f"/t/{tenant.code}/schedules/")
    page.evaluate("window.__stillTheSamePage = true")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Nightly"))
    last_run = row.get_by_role("cell").nth(4)  # pick, name (a row header), sources, cadence, next, last
    expect(last_run).to_have_text("Never run")
    row.get_by_label("Select Nightly").check()  # a selection for a bulk action must survive the swaps

    with locked(Path(source.path)) as release:
        row.get_by_role("button", name="Run Nightly now").click()
        expect(last_run).to_contain_text("Queued")
        expect(page.get_by_text(re.compile(r"Updating every 1 s"))).to_be_visible()
        with runcluster(settings) as cluster:
            try:
                expect(last_run).to_contain_text("Running", timeout=CLUSTER_TIMEOUT_MS)
                screenshot(page, "schedules-running")
                release()
                expect(last_run).to_contain_text("Succeeded", timeout=CLUSTER_TIMEOUT_MS)
                expect(page.get_by_text(re.compile(r"Updating every"))).to_have_count(0)  # polling stopped
            except AssertionError as exc:
                raise AssertionError(f"{exc}\ncluster output:\n{cluster.output()}") from None
    still_the_same_page(page)
    expect(row.get_by_label("Select Nightly")).to_be_checked()
    # Focus came back to the pressed button after each swap of its row.
    assert page.evaluate("document.activeElement && document.activeElement.id") == f"run-{schedule.code}"
    assert BackupScheduleRun.objects.get(schedule=schedule).status == RunStatus.SUCCEEDED


def test_run_now_on_the_schedule_page_is_watched_in_its_history_to_the_end(
    page, bob, tenant, source, schedule, settings, monkeypatch
) -> None:
    import scheduling.views.schedules as schedule_views

    monkeypatch.setattr(schedule_views, "POLL_SECONDS", 1)
    log_in(page, bob)
    page.goto(f"/schedules/{schedule.code}/")
    page.evaluate("window.__stillTheSamePage = true")
    expect(page.get_by_text("No runs yet.")).to_be_visible()
    last_run = page.locator("dt:text-is('Last run') + dd")
    expect(last_run).to_contain_text("Never run")

    with locked(Path(source.path)) as release:
        page.get_by_role("button", name="Run now").click()
        history = page.get_by_role("table", name=re.compile("Runs of Nightly"))
        status = history.get_by_role("row").nth(1).get_by_role("cell").nth(1)
        expect(status).to_have_text("Queued")
        with runcluster(settings) as cluster:
            try:
                expect(status).to_have_text("Running", timeout=CLUSTER_TIMEOUT_MS)
                release()
                expect(status).to_have_text("Succeeded", timeout=CLUSTER_TIMEOUT_MS)
                expect(last_run).to_contain_text("Succeeded")
                expect(page.get_by_text(re.compile(r"Updating every"))).to_have_count(0)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\ncluster output:\n{cluster.output()}") from None
    still_the_same_page(page)
    screenshot(page, "schedule-history-succeeded")


def test_the_runs_page_shows_a_run_created_after_it_was_opened_and_follows_it(
    page, bob, tenant, source, schedule, settings, monkeypatch
) -> None:
    """Nothing active when the page opens: it only asks now and then whether a newer run
    matches its filters; one does (someone pressed Run now elsewhere), and the table shows
    it and follows it to the end, keeping the filters."""
    import scheduling.views.runs as run_views

    monkeypatch.setattr(run_views, "POLL_SECONDS", 1)
    monkeypatch.setattr(run_views, "NEWER_SECONDS", 1)
    log_in(page, bob)
    page.goto(f"/t/{tenant.code}/runs/?trigger=manual")
    page.evaluate("window.__stillTheSamePage = true")
    expect(page.get_by_text("No runs match these filters")).to_be_visible()
    page.get_by_label("Status").focus()

    with locked(Path(source.path)) as release:
        run_now(schedule, bob)  # pressed in another tab
        table = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Status"))
        status = table.get_by_role("row").nth(1).get_by_role("cell").nth(3)
        expect(status).to_have_text("Queued")
        with runcluster(settings) as cluster:
            try:
                expect(status).to_have_text("Running", timeout=CLUSTER_TIMEOUT_MS)
                release()
                expect(status).to_have_text("Succeeded", timeout=CLUSTER_TIMEOUT_MS)
                expect(page.get_by_text("Updating every 1 s")).to_have_count(0)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\ncluster output:\n{cluster.output()}") from None
    still_the_same_page(page)
    assert page.url.endswith("?trigger=manual")
    expect(page.get_by_label("Trigger")).to_have_value("manual")
    expect(page.get_by_label("Status")).to_be_focused()  # the form is never swapped
