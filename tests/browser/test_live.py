"""Live pages in a real browser with a real cluster (`manage.py runcluster`): a run appears and
is watched queued -> running -> succeeded without a reload on the schedules list, on the
schedule's page and on the runs page (which also picks up a run created after it was
opened); and every time reads on the browser's own clock (a Chicago browser here).

As in test_run_now.py, the SQLite source is held under an exclusive lock while the run
starts, so the run stays `running` until the test lets go.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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

    page.goto(f"/t/{tenant.code}/audit/?automatic=on")  # run.created is an automatic entry
    expect(page.get_by_role("list", name=re.compile("Audit entries"))).to_contain_text("2026-07-01 12:04:05 CDT")
    screenshot(page, "audit-chicago")


def test_a_new_schedule_starts_in_the_browsers_zone(open_page, mia, tenant, source) -> None:
    # Chromium names India's zone by its old link, Asia/Calcutta (test_viewer_zone accepts
    # it); Tokyo has one name only.
    page = open_page(timezone_id="Asia/Tokyo")
    log_in(page, mia)
    page.goto(f"/t/{tenant.code}/schedules/new/")
    expect(page.get_by_label("Time zone")).to_have_value("Asia/Tokyo")


# ------------------------------------------------------------------ live pages


def open_live(page, user, url: str) -> None:  # type: ignore[no-untyped-def]
    """Log in, open `url`, and mark the page so a reload would show."""
    log_in(page, user)
    page.goto(url)
    page.evaluate("window.__stillTheSamePage = true")


def watch_run(settings, source, status, start: Callable[[], object]) -> None:  # type: ignore[no-untyped-def]
    """With the source held, `start` a run; watch `status` read Queued, then Running while a
    real cluster works on it, then Succeeded once the source is let go; then the page must
    have stopped polling. All on one page load."""
    page = status.page
    with locked(Path(source.path)) as release:
        start()
        expect(status).to_contain_text("Queued")
        with runcluster(settings) as cluster:
            try:
                expect(status).to_contain_text("Running", timeout=CLUSTER_TIMEOUT_MS)
                release()
                expect(status).to_contain_text("Succeeded", timeout=CLUSTER_TIMEOUT_MS)
                expect(page.get_by_text(re.compile(r"Updating every"))).to_have_count(0)  # polling stopped
            except AssertionError as exc:
                raise AssertionError(f"{exc}\ncluster output:\n{cluster.output()}") from None
    assert page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"


def test_run_now_on_the_schedules_list_is_watched_in_its_row_to_the_end(
    page, bob, tenant, source, schedule, settings, monkeypatch
) -> None:
    import scheduling.views.common as schedule_views

    monkeypatch.setattr(schedule_views, "POLL_SECONDS", 1)
    open_live(page, bob, f"/t/{tenant.code}/schedules/")
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Nightly"))
    last_run = row.get_by_role("cell").nth(4)  # pick, name (a row header), sources, cadence, next, last
    expect(last_run).to_have_text("Never run")
    row.get_by_label("Select Nightly").check()  # a selection for a bulk action must survive the swaps

    watch_run(settings, source, last_run, row.get_by_role("button", name="Run Nightly now").click)
    expect(row.get_by_label("Select Nightly")).to_be_checked()
    # Focus came back to the pressed button after each swap of its row.
    assert page.evaluate("document.activeElement && document.activeElement.id") == f"run-{schedule.code}"
    assert BackupScheduleRun.objects.get(schedule=schedule).status == RunStatus.SUCCEEDED
    screenshot(page, "schedules-succeeded")


def test_run_now_on_the_schedule_page_is_watched_in_its_history_to_the_end(
    page, bob, tenant, source, schedule, settings, monkeypatch
) -> None:
    import scheduling.views.common as schedule_views

    monkeypatch.setattr(schedule_views, "POLL_SECONDS", 1)
    open_live(page, bob, f"/schedules/{schedule.code}/")
    expect(page.get_by_text("No runs yet.")).to_be_visible()
    last_run = page.locator("dt:text-is('Last run') + dd")
    expect(last_run).to_contain_text("Never run")
    history = page.get_by_role("table", name=re.compile("Runs of Nightly"))
    status = history.get_by_role("row").nth(1).get_by_role("cell").nth(1)

    watch_run(settings, source, status, page.get_by_role("button", name="Run now").click)
    expect(last_run).to_contain_text("Succeeded")
    screenshot(page, "schedule-history-succeeded")


def test_the_runs_page_shows_a_run_created_after_it_was_opened_and_follows_it(
    page, bob, tenant, source, schedule, settings, monkeypatch
) -> None:
    """Nothing active when the page opens: it only asks now and then whether a newer run
    matches its filters; one does (someone pressed Run now elsewhere), and the table shows
    it and follows it to the end, keeping the filters and the focus."""
    import scheduling.views.runs as run_views

    monkeypatch.setattr(run_views, "POLL_SECONDS", 1)
    monkeypatch.setattr(run_views, "NEWER_SECONDS", 1)
    open_live(page, bob, f"/t/{tenant.code}/runs/?trigger=manual")
    expect(page.get_by_text("No runs match these filters")).to_be_visible()
    page.get_by_label("Status").focus()
    table = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Status"))
    status = table.get_by_role("row").nth(1).get_by_role("cell").nth(3)

    watch_run(settings, source, status, lambda: run_now(schedule, bob))  # pressed in another tab
    assert page.url.endswith("?trigger=manual")
    expect(page.get_by_label("Trigger")).to_have_value("manual")
    expect(page.get_by_label("Status")).to_be_focused()  # the form is never swapped
