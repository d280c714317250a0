"""The run log's stamps (UTC times of day, no date) read on the viewer's clock."""

from __future__ import annotations

from datetime import UTC, datetime

from django.utils import timezone

from lib.wallclock import log_on_clock
from scheduling.models import BackupScheduleRun, RunStatus

LOG = "23:59:58 Run started.\n  a continuation line\n00:00:03 Source “Shop” (SQLite).\n00:00:04 Succeeded."
ENDED = datetime(2026, 7, 1, 0, 0, 5, tzinfo=UTC)


def test_each_stamp_moves_to_the_viewers_clock_across_midnight() -> None:
    # Kolkata is 5:30 ahead: 23:59:58 UTC on June 30 is 05:29:58 on July 1, 00:00:03 is 05:30:03.
    assert log_on_clock(LOG, ENDED, "Asia/Kolkata").splitlines() == [
        "05:29:58 Run started.",
        "  a continuation line",
        "05:30:03 Source “Shop” (SQLite).",
        "05:30:04 Succeeded.",
    ]


def test_a_zone_behind_utc_and_a_dst_offset() -> None:
    # Chicago in July is CDT, five hours behind.
    assert log_on_clock(LOG, ENDED, "America/Chicago").splitlines()[0] == "18:59:58 Run started."
    assert log_on_clock(LOG, ENDED, "UTC") == LOG


def test_a_tail_days_after_the_start_is_dated_from_its_end() -> None:
    # Three days after the run started, across the spring change in Berlin (2027-03-28,
    # 01:00 UTC: CET -> CEST).
    tail = "00:59:59 12.0 MB written so far.\n01:00:00 12.5 MB written so far."
    assert log_on_clock(tail, datetime(2027, 3, 28, 1, 0, 30, tzinfo=UTC), "Europe/Berlin").splitlines() == [
        "01:59:59 12.0 MB written so far.",
        "03:00:00 12.5 MB written so far.",
    ]


def test_lines_a_little_out_of_order_are_the_same_day_and_other_text_is_left_alone() -> None:
    log = "10:00:05 from the tool's reader\n10:00:04 from the worker\n99:99:99 not a stamp\nno stamp"
    shown = log_on_clock(log, datetime(2026, 1, 5, 10, 0, 6, tzinfo=UTC), "Asia/Tokyo").splitlines()
    assert shown == ["19:00:05 from the tool's reader", "19:00:04 from the worker", "99:99:99 not a stamp", "no stamp"]


def test_the_run_page_shows_the_log_on_the_viewers_clock(client, rita, tenant, schedule) -> None:
    run = BackupScheduleRun.objects.create(
        tenant=tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=ENDED, finished_at=ENDED, log=LOG
    )
    client.force_login(rita)
    client.cookies["tz"] = "Asia%2FKolkata"  # as static/js/app.js writes it
    text = client.get(f"/runs/{run.code}/").text
    assert "05:30:03 Source “Shop” (SQLite)." in text and "00:00:03 Source" not in text
    assert timezone.get_current_timezone_name() == "UTC"
