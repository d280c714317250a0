"""The time an automatic retry starts, as people are told it: the dispatcher pass that
releases it (passes run each minute at :00.5), in the viewer's zone, not its not_before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from hypothesis import given
from hypothesis import strategies as st

from lib.passes import first_pass_at
from scheduling.dispatch import run_pass
from scheduling.models import BackupScheduleRun
from tests.scheduling.test_retries import NOW, fail_first_attempt, timing_out  # noqa: F401  (fixture)


def passes_from(start: datetime):  # type: ignore[no-untyped-def]
    """The clock's passes, from the spec: half a second after every minute boundary."""
    at = start.replace(second=0, microsecond=500_000)
    while True:
        yield at
        at += timedelta(minutes=1)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_the_first_pass_is_the_earliest_clock_pass_not_before_the_instant(instant: datetime) -> None:
    expected = next(at for at in passes_from(instant - timedelta(minutes=1)) if at >= instant)
    assert first_pass_at(instant) == expected


def pending_retry(schedule, not_before: datetime) -> BackupScheduleRun:
    first = fail_first_attempt(schedule)
    retry = BackupScheduleRun.objects.get(retry_of=first)
    BackupScheduleRun.objects.filter(pk=retry.pk).update(not_before=not_before)
    retry.not_before = not_before
    return retry


@pytest.mark.usefixtures("timing_out")
def test_the_dispatcher_releases_a_retry_at_the_pass_the_message_names(
    schedule, django_capture_on_commit_callbacks
) -> None:
    retry = pending_retry(schedule, NOW + timedelta(seconds=45))
    released_at = None
    for at in passes_from(NOW):
        with django_capture_on_commit_callbacks(execute=True):
            if run_pass(at).retries:
                released_at = at
                break
    assert released_at == first_pass_at(retry.not_before) == NOW + timedelta(minutes=1, seconds=0.5)


@pytest.mark.usefixtures("timing_out")
def test_run_now_during_a_pending_retry_names_its_start_in_the_viewers_zone(client, bob, schedule) -> None:
    pending_retry(schedule, NOW + timedelta(seconds=45))  # released by the 03:01:00.5 pass
    client.force_login(bob)
    # A zone name with no "/" reaches the server as the browser wrote it (no %2F to decode).
    client.cookies["tz"] = "Japan"
    with time_machine.travel(NOW + timedelta(seconds=10), tick=False):
        response = client.post(f"/schedules/{schedule.code}/run/", follow=True)
    text = response.content.decode()
    assert "has an automatic retry pending; it starts at Tue 2026-11-24 12:01 JST (in under a minute)." in text


@pytest.mark.usefixtures("timing_out")
def test_the_bulk_summary_names_the_retrys_start_too(client, mia, schedule) -> None:
    pending_retry(schedule, NOW + timedelta(minutes=4, seconds=1))  # the 03:05:00.5 pass
    client.force_login(mia)
    client.cookies["tz"] = "UTC"
    with time_machine.travel(NOW, tick=False):
        response = client.post(
            f"/t/{schedule.tenant.code}/schedules/bulk/",
            {"action": "run", "schedules": [str(schedule.code)]},
            follow=True,
        )
    assert "Nightly: automatic retry pending, starts Tue 2026-11-24 03:05 UTC" in response.content.decode()
