"""Run now in a browser, executed by a real cluster (`manage.py runcluster`), watched on the
runs page without a reload: queued -> running -> succeeded.

The source is held under an exclusive SQLite lock while the run starts, so the real
SQLite engine waits inside its backup and the run stays `running` until the test lets
go: each state is seen for sure, whatever the machine's speed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import expect

from scheduling.models import BackupScheduleRun, RunStatus
from tests.browser.conftest import ROOT, log_in, screenshot
from tests.test_dispatch_processes import database_url

pytestmark = pytest.mark.browser

# Waits for the cluster to come up and the backup to finish: a slow shared machine is fine.
CLUSTER_TIMEOUT_MS = 90_000


@contextmanager
def cluster(settings) -> Iterator[Callable[[], str]]:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "BACKUPS_DIR": str(settings.BACKUPS_DIR),
        "SOURCE_ROOTS": ",".join(str(p) for p in settings.SOURCE_ROOTS),
        "Q_WORKERS": "1",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []

    def tail() -> str:
        return "".join(output)[-3000:]

    try:
        yield tail
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output.append(process.communicate(timeout=60)[0])
        except subprocess.TimeoutExpired:
            process.kill()
            output.append(process.communicate()[0])


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
    return table.get_by_role("row").nth(1).get_by_role("cell").nth(2)


def refresh_runs(page) -> None:  # type: ignore[no-untyped-def]
    """Ask for the runs table again without leaving the page: the filter form is an htmx
    form that swaps only the table. (When the runs page polls by itself, this only
    makes the next look come sooner.)"""
    page.get_by_role("button", name="Filter").click()


def wait_for_status(page, label: str, timeout_ms: int = CLUSTER_TIMEOUT_MS) -> None:  # type: ignore[no-untyped-def]
    deadline_polls = timeout_ms // 500
    for _ in range(deadline_polls):
        refresh_runs(page)
        try:
            expect(status_of_newest_run(page)).to_have_text(label, timeout=500)
            return
        except AssertionError:
            continue
    expect(status_of_newest_run(page)).to_have_text(label, timeout=1)


def test_run_now_goes_queued_running_succeeded_on_the_runs_page_without_a_reload(
    page, bob, tenant, source, schedule, settings
) -> None:
    log_in(page, bob)
    page.goto(f"/schedules/{schedule.code}/")
    with locked(Path(source.path)) as release:
        page.get_by_role("button", name="Run now", exact=True).click()
        expect(page.get_by_role("status").filter(has_text="queued")).to_contain_text("Run of “Nightly” queued.")
        history = page.get_by_role("region", name="History")
        expect(history.get_by_role("row").nth(1)).to_contain_text("Queued")
        expect(history.get_by_role("row").nth(1)).to_contain_text(f"Run now by {bob.username}")

        page.get_by_role("link", name="Runs", exact=True).click()
        expect(status_of_newest_run(page)).to_have_text("Queued")
        page.evaluate("window.__stillTheSamePage = true")
        swaps: list[str] = []
        page.on("request", lambda r: swaps.append(r.url) if r.headers.get("hx-request") == "true" else None)

        with cluster(settings) as output:
            try:
                wait_for_status(page, "Running")
                screenshot(page, "runs-running")
                run = BackupScheduleRun.objects.get(schedule=schedule)
                assert run.status == RunStatus.RUNNING  # held by the lock, not finished behind our back
                release()
                wait_for_status(page, "Succeeded")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\ncluster output:\n{output()}") from None
        assert page.evaluate("window.__stillTheSamePage === true"), "the runs page was reloaded"
        assert swaps, "the table was never refreshed by htmx"
    screenshot(page, "runs-succeeded")

    run = BackupScheduleRun.objects.get(schedule=schedule)
    assert (run.status, run.trigger, run.requested_by) == (RunStatus.SUCCEEDED, "manual", bob)
    assert run.backup_set.size > 0

    # The run's log, one click away.
    status_of_newest_run(page).locator("xpath=..").get_by_role("link").first.click()
    log = page.get_by_role("region", name="Log")
    expect(log).to_contain_text("Snapshot taken with the online backup API")
    expect(log).to_contain_text("Succeeded.")
    expect(page.get_by_role("listitem").filter(has_text="SHA-256")).to_contain_text(run.backup_set.items.get().sha256)
