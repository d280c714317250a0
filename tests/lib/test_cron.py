"""Regressions: cron expressions read as Vixie/Debian cron reads them, and what is refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lib.slots import Cadence, InvalidCadence, slots_between, validate
from lib.zones import accepted_zone_names, offered_zone_names


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def first_slots(expression: str, tz: str = "UTC", count: int = 4) -> list[str]:
    cadence = Cadence("cron", tz, cron=expression)
    validate(cadence)
    slots = slots_between(cadence, utc(2026, 5, 31, 23, 59), utc(2027, 6, 1), count)
    return [slot.strftime("%a %Y-%m-%d %H:%M") for slot in slots]


# June 2026 starts on a Monday.


def test_a_single_value_range_is_that_value_not_the_whole_field() -> None:
    assert first_slots("30 2-2 * * *", count=2) == ["Mon 2026-06-01 02:30", "Tue 2026-06-02 02:30"]
    assert first_slots("0 3 * * 1-1", count=2) == ["Mon 2026-06-01 03:00", "Mon 2026-06-08 03:00"]
    assert first_slots("0 0 * * 7-7", count=2) == ["Sun 2026-06-07 00:00", "Sun 2026-06-14 00:00"]


def test_a_day_field_starting_with_a_star_makes_both_day_fields_count() -> None:
    # The first Sunday of each month: day 1-7 AND Sunday.
    assert first_slots("1 1 1-7 * */7", count=3) == [
        "Sun 2026-06-07 01:01",
        "Sun 2026-07-05 01:01",
        "Sun 2026-08-02 01:01",
    ]
    # Odd days that are weekdays.
    assert first_slots("0 0 */2 * 1-5") == [
        "Mon 2026-06-01 00:00",
        "Wed 2026-06-03 00:00",
        "Fri 2026-06-05 00:00",
        "Tue 2026-06-09 00:00",
    ]


def test_lower_case_macros_stand_for_their_fields() -> None:
    assert first_slots("@daily", count=2) == ["Mon 2026-06-01 00:00", "Tue 2026-06-02 00:00"]
    assert first_slots("@weekly", count=1) == ["Sun 2026-06-07 00:00"]


def test_two_restricted_day_fields_still_combine_with_or() -> None:
    # The 15th, or any Sunday.
    assert first_slots("0 4 15 * sun") == [
        "Sun 2026-06-07 04:00",
        "Sun 2026-06-14 04:00",
        "Mon 2026-06-15 04:00",
        "Sun 2026-06-21 04:00",
    ]


def test_names_are_case_insensitive_and_may_form_ranges() -> None:
    assert first_slots("0 6 * JUL-aug Mon-FRI", count=2) == ["Wed 2026-07-01 06:00", "Thu 2026-07-02 06:00"]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("R 2 * * *", "Random (R) and hashed (H) values are not supported: every node must compute the same times"),
        ("H 2 * * *", "Random (R) and hashed (H) values are not supported"),
        ("H/15 * * * *", "Random (R) and hashed (H) values are not supported"),
        ("5-1 * * * *", "Range 5-1 runs backwards; cron does not wrap ranges"),
        ("0 22-2 * * *", "Range 22-2 runs backwards; cron does not wrap ranges (write 22-23,0-2)"),
        ("*/61 * * * *", "Step 61 is larger than the minute field (0-59)"),
        ("0-59/1000 * * * *", "Step 1000 is larger than the minute field (0-59)"),
        ("*/0 * * * *", "a step must be at least 1"),
        ("99 99 * * *", "Minute 99 is out of range (0-59)"),
        ("0 24 * * *", "Hour 24 is out of range (0-23)"),
        ("0 0 0 * *", "Day-of-month 0 is out of range (1-31)"),
        ("0 0 * 13 *", "Month 13 is out of range (1-12)"),
        ("0 0 * * 8", "Day-of-week 8 is out of range (0-7)"),
        ("0 0 * foo *", "Month 'foo' is not a number or a name (jan-dec)"),
        ("5/10 * * * *", "a step needs a range, e.g. 5-59/10 or */10"),
        ("0 0 1,,2 * *", "empty list item"),
        ("0 0 L * *", "L, W, # and ? (last day, nearest weekday, nth weekday) are not part of Vixie cron"),
        ("0 0 * * 5#2", "are not part of Vixie cron"),
        ("0 0 15W * *", "are not part of Vixie cron"),
        ("0 0 ? * *", "are not part of Vixie cron"),
        ("@reboot", "@reboot is not a schedule"),
        ("@DAILY", "Macros are written in lower case, as cron reads them: '@daily'"),
        ("@Hourly", "Macros are written in lower case, as cron reads them: '@hourly'"),
        ("@fortnightly", "Unknown macro '@fortnightly'"),
        ("0 0 * * * 2026", "five fields"),
        ("0 0 31 2 *", "never matches a real date"),
    ],
)
def test_it_refuses_what_vixie_cron_would_not_run_in_its_own_words(expression: str, message: str) -> None:
    with pytest.raises(InvalidCadence) as refused:
        validate(Cadence("cron", "UTC", cron=expression))
    assert message in str(refused.value)
    assert "not acceptable" not in str(refused.value)  # croniter's wording


@pytest.mark.parametrize("name", ["localtime", "Factory", "posixrules", "posix/Europe/Berlin", "Mars/Olympus"])
def test_zones_that_are_no_place_are_refused(name: str) -> None:
    with pytest.raises(InvalidCadence, match="Unknown time zone"):
        validate(Cadence("daily", name))
    assert name not in accepted_zone_names()
    assert name not in offered_zone_names()


def test_the_offered_zones_are_canonical_and_links_are_still_accepted() -> None:
    offered = offered_zone_names()
    assert list(offered) == sorted(offered)
    assert {"UTC", "Europe/Berlin", "Europe/Oslo", "America/New_York", "Australia/Lord_Howe"} <= set(offered)
    assert "US/Eastern" not in offered and "Asia/Calcutta" not in offered  # old links, not offered ...
    assert {"US/Eastern", "Asia/Calcutta", "Etc/UTC"} <= accepted_zone_names()  # ... but still accepted
    assert set(offered) <= accepted_zone_names()
    validate(Cadence("daily", "Asia/Calcutta"))
