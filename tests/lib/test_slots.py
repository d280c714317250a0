"""Worked examples of the slot rules, one DST night at a time."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from lib.slots import Cadence, InvalidCadence, next_slot, slots_between, validate


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def berlin_daily(hour: int, minute: int) -> Cadence:
    return Cadence("daily", "Europe/Berlin", time_of_day=time(hour, minute))


# Berlin, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
# Berlin, 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC).


def test_daily_in_the_spring_gap_runs_once_at_the_first_minute_after_it() -> None:
    slots = slots_between(berlin_daily(2, 30), utc(2026, 3, 27, 12), utc(2026, 3, 31, 12), 10)
    assert slots == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 0),  # 02:30 does not exist: 03:00 CEST
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]


def test_daily_in_the_repeated_autumn_hour_runs_once_at_the_first_occurrence() -> None:
    slots = slots_between(berlin_daily(2, 30), utc(2026, 10, 23, 12), utc(2026, 10, 26, 12), 10)
    assert slots == [
        utc(2026, 10, 24, 0, 30),  # 02:30 CEST
        utc(2026, 10, 25, 0, 30),  # first 02:30 (CEST); the second, 01:30 UTC, is not run
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
    ]


def test_a_pass_inside_the_repeated_hour_does_not_run_the_second_copy() -> None:
    # The dispatcher looks for the next slot after 00:30 UTC, the first 02:30.
    assert next_slot(berlin_daily(2, 30), utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 26, 1, 30)
    assert next_slot(berlin_daily(2, 30), utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 26, 1, 30)


def test_fixed_cron_in_the_repeated_autumn_hour_runs_once() -> None:
    """The wall time 02:30 shows twice that night; the walk maps it to its first instant only."""
    start = utc(2026, 10, 24, 10)
    ours = slots_between(Cadence("cron", "Europe/Berlin", cron="30 2 * * *"), start, start + timedelta(days=3), 3)
    assert ours == [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), utc(2026, 10, 27, 1, 30)]


def test_frequent_cron_ticks_in_real_time_through_the_repeated_hour() -> None:
    cadence = Cadence("cron", "Europe/Berlin", cron="*/30 * * * *")
    slots = slots_between(cadence, utc(2026, 10, 24, 23, 59), utc(2026, 10, 25, 2, 0), 20)
    assert slots == [utc(2026, 10, 25, 0, 0) + timedelta(minutes=30 * k) for k in range(5)]


def test_frequent_cron_skips_nothing_in_real_time_through_the_gap() -> None:
    cadence = Cadence("cron", "Europe/Berlin", cron="0 * * * *")
    slots = slots_between(cadence, utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 3, 0), 20)
    # 01:00 CET, then 03:00 CEST (02:00 never shows), 04:00, 05:00: one hour apart each.
    assert slots == [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2), utc(2026, 3, 29, 3)]


def test_fixed_cron_with_two_times_in_the_gap_runs_once() -> None:
    cadence = Cadence("cron", "Europe/Berlin", cron="15,45 2 * * *")
    slots = slots_between(cadence, utc(2026, 3, 28, 23), utc(2026, 3, 29, 23), 10)
    assert slots == [utc(2026, 3, 29, 1, 0)]


def test_new_york_and_lord_howe_half_hour_shift() -> None:
    ny = Cadence("weekly", "America/New_York", time_of_day=time(2, 15), weekdays=frozenset({6}))
    assert next_slot(ny, utc(2026, 3, 7)) == utc(2026, 3, 8, 7, 0)  # 03:00 EDT, after the gap
    lord_howe = Cadence("daily", "Australia/Lord_Howe", time_of_day=time(1, 45))
    # 2026-04-05 02:00 LHDT (+11) falls back to 01:30 LHST (+10:30): 01:45 happens twice.
    slots = slots_between(lord_howe, utc(2026, 4, 3, 12), utc(2026, 4, 5, 16), 5)
    # The second 01:45 (15:15 UTC on the 4th) is not run; the 6th at 01:45 LHST is.
    assert slots == [utc(2026, 4, 3, 14, 45), utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]


def test_every_n_hours_is_anchored_and_ignores_the_clock_change() -> None:
    cadence = Cadence("every_n_hours", "Europe/Berlin", every_hours=6, anchor=utc(2026, 1, 1, 3, 0))
    slots = slots_between(cadence, utc(2026, 3, 28, 22), utc(2026, 3, 29, 16), 10)
    assert slots == [utc(2026, 3, 29, 3), utc(2026, 3, 29, 9), utc(2026, 3, 29, 15)]
    # Asking again from any point in between gives the same grid.
    assert next_slot(cadence, utc(2026, 3, 29, 4, 17, 33)) == utc(2026, 3, 29, 9)


def test_disabled_has_no_slot() -> None:
    assert next_slot(Cadence("disabled"), utc(2026, 1, 1)) is None


@pytest.mark.parametrize(
    ("cadence", "message"),
    [
        (Cadence("cron", cron="61 * * * *"), "Minute 61 is out of range"),
        (Cadence("cron", cron="* * * *"), "five fields"),
        (Cadence("cron", cron="0 0 31 2 *"), "never matches"),
        (Cadence("daily", tz="Mars/Olympus"), "Unknown time zone"),
        (Cadence("weekly"), "at least one weekday"),
        (Cadence("every_n_hours", every_hours=0, anchor=utc(2026, 1, 1)), "from 1 to 168"),
        (Cadence("every_n_hours", every_hours=169, anchor=utc(2026, 1, 1)), "from 1 to 168"),
    ],
)
def test_validate_rejects_bad_input_with_a_clear_message(cadence: Cadence, message: str) -> None:
    with pytest.raises(InvalidCadence, match=message):
        validate(cadence)
