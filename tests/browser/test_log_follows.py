"""A run's page follows its log while a real cluster (`manage.py runcluster`) runs the backup.

The schedule backs up two sources, each held back by the test rather than by any
sleep: a PostgreSQL table another session keeps locked (pg_dump waits on it, having
said on stderr what it read so far) and then a SQLite file under an exclusive lock.
The page must show the lines of each stage while the run is still running, on one
page load.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from scheduling.models import BackupScheduleRun, RunStatus, ScheduleSource
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tests.browser.conftest import log_in, screenshot
from tests.browser.test_run_now import CLUSTER_TIMEOUT_MS, locked
from tests.conftest import make_sqlite_database
from tests.helpers import runcluster
from tests.scheduling.test_run_log import locked_database, postgres_source

pytestmark = pytest.mark.browser


@pytest.mark.services
def test_the_run_page_shows_the_log_growing_while_a_slow_backup_runs(
    page, bob, tenant, source, schedule, settings, monkeypatch
) -> None:
    import scheduling.views.runs as run_views

    monkeypatch.setattr(run_views, "POLL_SECONDS", 1)  # the page's poll, sooner than its 3 s
    with locked_database() as (database, release_pg):
        run = _two_stage_run(bob, tenant, source, schedule, database)
        _watch(page, bob, run, source, settings, database, release_pg)
    screenshot(page, "run-log-finished")
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert run.log.index("reading user-defined tables") < run.log.index("Source “B Shop file”")


def _two_stage_run(bob, tenant, source, schedule, database: str) -> BackupScheduleRun:  # type: ignore[no-untyped-def]
    source.name = "B Shop file"
    source.save(update_fields=["name"])
    pg = postgres_source(tenant, database)
    pg.name = "A Shop PG"  # sources are backed up by name: this one first
    pg.save(update_fields=["name"])
    ScheduleSource.objects.create(schedule=schedule, source=pg)
    return run_now(schedule, bob)


def _watch(page, bob, run, source, settings, database: str, release_pg) -> None:  # type: ignore[no-untyped-def]
    log_in(page, bob)
    page.goto(f"/runs/{run.code}/")
    page.evaluate("window.__stillTheSamePage = true")
    expect(page.get_by_text("No log yet.")).to_be_visible()
    log = page.get_by_label("Run log")

    with locked(Path(source.path)) as release_file, runcluster(settings) as cluster:
        try:
            # Stage 1: pg_dump waits on the locked table; its own lines are on the page.
            expect(log).to_contain_text("pg_dump: reading user-defined tables", timeout=CLUSTER_TIMEOUT_MS)
            expect(log).to_contain_text(f"pg_dump of “{database}”")
            assert BackupScheduleRun.objects.get(pk=run.pk).status == RunStatus.RUNNING
            expect(log).not_to_contain_text("stored")
            screenshot(page, "run-log-stage-1")

            # Stage 2: the dump is stored, the SQLite file waits on its lock; the log grew.
            release_pg()
            expect(log).to_contain_text("“A Shop PG / ", timeout=CLUSTER_TIMEOUT_MS)
            expect(log).to_contain_text("Source “B Shop file”", timeout=CLUSTER_TIMEOUT_MS)
            expect(log).to_contain_text('pg_dump: dumping contents of table "public.orders"')
            assert BackupScheduleRun.objects.get(pk=run.pk).status == RunStatus.RUNNING
            expect(page.get_by_text("(follows the run)")).to_be_visible()
            screenshot(page, "run-log-stage-2")

            # The end: the whole log, and the page stops following.
            release_file()
            expect(log).to_contain_text("Succeeded.", timeout=CLUSTER_TIMEOUT_MS)
            expect(page.get_by_text("(follows the run)")).to_have_count(0)
        except AssertionError as exc:
            ended = BackupScheduleRun.objects.get(pk=run.pk)
            raise AssertionError(
                f"{exc}\nrun: {ended.status} {ended.error_code} {ended.error_message}\n{ended.log}\n"
                f"cluster output:\n{cluster.output()}"
            ) from None
    assert page.evaluate("window.__stillTheSamePage === true"), "the page was reloaded"


# ---------------------------------------------------------------- notifications and audit at 390 px


def _fits(page) -> None:  # type: ignore[no-untyped-def]
    """Nothing sticks out sideways: the page is usable without scrolling left and right."""
    width = page.evaluate("document.documentElement.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def test_notifications_have_short_titles_and_their_detail_one_click_away_at_390_and_1280_px(
    page, rita, alice, bob, tenant, source, schedule
) -> None:
    Path(source.path).unlink()  # the real worker path: a failure people are told of
    failed = run_now(schedule, bob)
    assert execute_run(str(failed.code)) == "SOURCE_NOT_FOUND"
    make_sqlite_database(Path(source.path))
    assert execute_run(str(run_now(schedule, bob).code)) == "succeeded"  # and the recovery
    log_in(page, rita)
    for width in (390, 1280):
        page.set_viewport_size({"width": width, "height": 844})
        page.goto(f"/t/{tenant.code}/notifications/")
        items = page.get_by_role("listitem").filter(has=page.get_by_role("link", name="Backup of “Nightly”"))
        expect(items).to_have_count(2)
        expect(page.get_by_role("link", name="Backup of “Nightly” works again")).to_be_visible()
        expect(page.get_by_role("link", name="Backup of “Nightly” failed", exact=True)).to_be_visible()
        expect(page.get_by_text("SOURCE_NOT_FOUND")).to_have_count(0)  # the detail is one click away
        _fits(page)
        screenshot(page, f"notifications-{width}")
    page.set_viewport_size({"width": 390, "height": 844})
    page.get_by_role("link", name="Backup of “Nightly” failed", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Backup of “Nightly” failed")
    expect(page.get_by_text("SOURCE_NOT_FOUND: ")).to_be_visible()
    _fits(page)
    screenshot(page, "notification-detail-390")
    page.get_by_role("link", name="Open the run and its log").click()
    expect(page).to_have_url(re.compile(rf"/runs/{failed.code}/$"))


def test_the_audit_log_reads_as_sentences_at_390_px(page, rita, bob, tenant, schedule) -> None:
    assert execute_run(str(run_now(schedule, bob).code)) == "succeeded"
    log_in(page, rita)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"/t/{tenant.code}/audit/")
    entries = page.get_by_role("list", name="Audit entries, page 1")
    expect(entries).to_contain_text("bob pressed Run now on “Nightly”.")
    expect(entries).not_to_contain_text("A worker started")
    _fits(page)
    screenshot(page, "audit-390")
    page.get_by_label("Show automatic entries").check()  # htmx redraws the list on change
    expect(entries).to_contain_text("A worker started the backup of “Nightly” (attempt 1).")
    expect(page).to_have_url(re.compile(r"automatic=on"))
    entries.get_by_text("Details").first.click()
    expect(entries.locator("pre.details").first).to_be_visible()
    _fits(page)
    screenshot(page, "audit-automatic-390")
