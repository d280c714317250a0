"""Run now in a browser, executed by a real cluster (`manage.py runcluster`), watched without a
reload on the page that polls (the tenant's Settings page): queued -> running -> succeeded.

The source is held under an exclusive SQLite lock while the run starts, so the real
SQLite engine waits inside its backup and the run stays `running` until the test lets
go: each state is seen for sure, whatever the machine's speed.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import expect

from scheduling.models import BackupScheduleRun, RunStatus
from tests.browser.conftest import log_in, screenshot
from tests.helpers import runcluster

pytestmark = pytest.mark.browser

# Waits for the cluster to come up and the backup to finish: a slow shared machine is fine.
CLUSTER_TIMEOUT_MS = 90_000


@contextmanager
def locked(path: Path) -> Iterator[Callable[[], None]]:
    """An exclusive lock on a SQLite file: readers (the backup) wait until release() is called."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        if connection.in_transaction:
            connection.execute("ROLLBACK")

    try:
        yield release
    finally:
        release()
        connection.close()


def status_of_newest_run(page):  # type: ignore[no-untyped-def]
    table = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Status"))
    return table.get_by_role("row").nth(1).get_by_role("cell").nth(3)  # Created, Schedule, Operation, Status


def test_run_now_goes_queued_running_succeeded_on_the_settings_page_without_a_reload(
    page, bob, tenant, source, schedule, settings, monkeypatch
) -> None:
    """The tenant's Settings page polls its status areas; Run now there is an htmx button.
    The whole way, press included, happens on one page load."""
    import scheduling.views.settings as settings_views

    monkeypatch.setattr(settings_views, "POLL_SECONDS", 1)  # the page's poll, sooner than its 10 s
    log_in(page, bob)
    page.goto(f"/t/{tenant.code}/settings/")
    block = page.get_by_role("region", name="Nightly")
    expect(block.get_by_role("definition").first).to_contain_text("Never run")
    page.evaluate("window.__stillTheSamePage = true")

    with locked(Path(source.path)) as release:
        block.get_by_role("button", name="Run Nightly now").click()
        expect(page.get_by_role("status").filter(has_text="queued")).to_contain_text("Run of “Nightly” queued.")
        expect(block.get_by_text(re.compile(r"Now:\s*Queued"))).to_be_visible()
        screenshot(page, "settings-queued")

        with runcluster(settings) as cluster:
            try:
                expect(block.get_by_text(re.compile(r"Now:\s*Running"))).to_be_visible(timeout=CLUSTER_TIMEOUT_MS)
                screenshot(page, "settings-running")
                run = BackupScheduleRun.objects.get(schedule=schedule)
                assert run.status == RunStatus.RUNNING  # held by the lock, not finished behind our back
                release()
                expect(block.get_by_role("definition").first).to_contain_text("Succeeded", timeout=CLUSTER_TIMEOUT_MS)
                expect(block.get_by_text(re.compile(r"Now:"))).to_have_count(0)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\ncluster output:\n{cluster.output()}") from None
    assert page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"
    screenshot(page, "settings-succeeded")

    run = BackupScheduleRun.objects.get(schedule=schedule)
    assert (run.status, run.trigger, run.requested_by) == (RunStatus.SUCCEEDED, "manual", bob)
    assert run.backup_set.size > 0

    # On the runs page, and its log one click away.
    page.get_by_role("link", name="Runs", exact=True).click()
    expect(status_of_newest_run(page)).to_have_text("Succeeded")
    status_of_newest_run(page).locator("xpath=..").get_by_role("link").first.click()
    log = page.get_by_role("region", name="Log")
    expect(log).to_contain_text("Snapshot taken with the online backup API")
    expect(log).to_contain_text("Succeeded.")
    items = page.get_by_role("table", name="Items of the backup set")
    expect(items).to_contain_text(run.backup_set.items.get().sha256)
    screenshot(page, "run-succeeded")


def test_run_now_from_the_schedules_list_is_watched_queued_running_succeeded_on_the_runs_page(
    page, bob, tenant, source, schedule, settings, monkeypatch
) -> None:
    """The runs page polls its table while a row is queued or running, keeping the filters;
    the row changes state in place, on one page load."""
    import scheduling.views.runs as run_views

    monkeypatch.setattr(run_views, "POLL_SECONDS", 1)  # the page's poll, sooner than its 3 s
    log_in(page, bob)
    page.goto(f"/t/{tenant.code}/schedules/")

    with locked(Path(source.path)) as release:
        page.get_by_role("button", name="Run Nightly now").click()
        expect(page.get_by_role("status").filter(has_text="queued")).to_contain_text("Run of “Nightly” queued.")
        # Filtered to manual runs: the poll must keep the filter.
        page.goto(f"/t/{tenant.code}/runs/?trigger=manual")
        page.evaluate("window.__stillTheSamePage = true")
        row_status = status_of_newest_run(page)
        expect(row_status).to_have_text("Queued")
        expect(page.get_by_text("Updating every 1 s")).to_be_visible()
        screenshot(page, "runs-queued")

        with runcluster(settings) as cluster:
            try:
                expect(row_status).to_have_text("Running", timeout=CLUSTER_TIMEOUT_MS)
                screenshot(page, "runs-running")
                assert BackupScheduleRun.objects.get(schedule=schedule).status == RunStatus.RUNNING
                release()
                expect(row_status).to_have_text("Succeeded", timeout=CLUSTER_TIMEOUT_MS)
                # Nothing left to change: the table stops polling.
                expect(page.get_by_text("Updating every 1 s")).to_have_count(0)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\ncluster output:\n{cluster.output()}") from None
    assert page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"
    assert page.url.endswith("?trigger=manual")
    expect(page.get_by_label("Trigger")).to_have_value("manual")
    screenshot(page, "runs-succeeded")
