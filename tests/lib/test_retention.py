"""Worked examples of lib.retention: each rule, the zone's local days, DST nights,
ISO weeks across New Year, pinned and partial sets. docs/retention.md tells the same story."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from lib.retention import (
    NOT_KEPT,
    PARTIAL_ALONE,
    PARTIAL_IN_WINDOW,
    PARTIAL_OUTSIDE,
    Policy,
    select_kept,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(text: str, zone: ZoneInfo = BERLIN, fold: int = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone, fold=fold).astimezone(UTC)


def nightly(first: str, last: str, at: str = "02:30") -> list[tuple[str, datetime, bool, bool]]:
    """One complete set a night at `at` Berlin time, keyed by its local date, newest first."""
    day, end = datetime.fromisoformat(first).date(), datetime.fromisoformat(last).date()
    sets = []
    while day <= end:
        sets.append((day.isoformat(), local(f"{day}T{at}"), True, False))
        day += timedelta(days=1)
    return sets[::-1]


def test_keep_last_keeps_the_newest_n_complete_sets() -> None:
    decision = select_kept(nightly("2026-11-20", "2026-11-26"), Policy(keep_last=3), "Europe/Berlin")
    assert decision.kept == {
        "2026-11-26": ("last 3",),
        "2026-11-25": ("last 3",),
        "2026-11-24": ("last 3",),
    }
    assert list(decision.deleted) == ["2026-11-23", "2026-11-22", "2026-11-21", "2026-11-20"]
    assert set(decision.deleted.values()) == {NOT_KEPT}


def test_the_worked_example_of_the_docs() -> None:
    # Nightly sets from 1 August to Thursday 26 November 2026, and
    # last 2, daily 3, weekly 2, monthly 3: docs/retention.md walks through it.
    sets = nightly("2026-08-01", "2026-11-26")
    policy = Policy(keep_last=2, keep_daily=3, keep_weekly=2, keep_monthly=3)
    decision = select_kept(sets, policy, "Europe/Berlin")
    assert decision.kept == {
        "2026-11-26": ("last 2", "daily 2026-11-26", "weekly 2026-W48", "monthly 2026-11"),
        "2026-11-25": ("last 2", "daily 2026-11-25"),
        "2026-11-24": ("daily 2026-11-24",),
        "2026-11-22": ("weekly 2026-W47",),  # the Sunday: newest of its Monday-to-Sunday week
        "2026-10-31": ("monthly 2026-10",),
        "2026-09-30": ("monthly 2026-09",),
    }
    assert len(decision.deleted) == len(sets) - 6
    assert policy.describe() == "last 2, daily 3, weekly 2, monthly 3"
    # The same nights with the 25th partial.
    sets = [(key, when, key != "2026-11-25", pinned) for key, when, _, pinned in sets]
    decision = select_kept(sets, policy, "Europe/Berlin")
    assert decision.kept == {
        "2026-11-26": ("last 2", "daily 2026-11-26", "weekly 2026-W48", "monthly 2026-11"),
        "2026-11-25": (PARTIAL_IN_WINDOW,),
        "2026-11-24": ("last 2", "daily 2026-11-24"),
        "2026-11-23": ("daily 2026-11-23",),
        "2026-11-22": ("weekly 2026-W47",),
        "2026-10-31": ("monthly 2026-10",),
        "2026-09-30": ("monthly 2026-09",),
    }


def test_rules_count_periods_that_have_a_set_not_calendar_periods_from_today() -> None:
    # Three sets weeks apart: "daily 3" keeps all three, as restic does; a gap in the
    # backups never makes retention delete the few there are.
    sets = [
        ("c", local("2026-11-26T02:30"), True, False),
        ("b", local("2026-10-01T02:30"), True, False),
        ("a", local("2026-06-01T02:30"), True, False),
    ]
    decision = select_kept(sets, Policy(keep_last=1, keep_daily=3), "Europe/Berlin")
    assert decision.kept == {
        "c": ("last 1", "daily 2026-11-26"),
        "b": ("daily 2026-10-01",),
        "a": ("daily 2026-06-01",),
    }


def test_a_day_is_the_local_calendar_date_not_the_utc_date() -> None:
    # 23:30 UTC on the 25th is 00:30 on the 26th in Berlin: the same day as noon of the 26th.
    sets = [
        ("noon", utc("2026-11-26T12:00"), True, False),
        ("just after midnight", utc("2026-11-25T23:30"), True, False),
        ("evening before", utc("2026-11-25T20:00"), True, False),
    ]
    decision = select_kept(sets, Policy(keep_last=1, keep_daily=2), "Europe/Berlin")
    assert decision.kept == {"noon": ("last 1", "daily 2026-11-26"), "evening before": ("daily 2026-11-25",)}
    assert list(decision.deleted) == ["just after midnight"]
    # In UTC the same sets fall on other days.
    in_utc = select_kept(sets, Policy(keep_last=1, keep_daily=2), "UTC")
    assert in_utc.kept == {"noon": ("last 1", "daily 2026-11-26"), "just after midnight": ("daily 2026-11-25",)}


def test_the_25_hour_day_of_a_fall_back_night_is_one_day() -> None:
    # Berlin, 25 October 2026: 02:30 happens twice (CEST, then CET). Both are the 25th,
    # as are 00:30 and 23:30 that day; 00:10 on the 26th is the next day.
    sets = [
        ("26th 00:10", local("2026-10-26T00:10"), True, False),
        ("25th 23:30", local("2026-10-25T23:30"), True, False),
        ("25th 02:30 CET", local("2026-10-25T02:30", fold=1), True, False),
        ("25th 02:30 CEST", local("2026-10-25T02:30", fold=0), True, False),
        ("25th 00:30", local("2026-10-25T00:30"), True, False),
        ("24th 23:50", local("2026-10-24T23:50"), True, False),
    ]
    assert sets[2][1] - sets[3][1] == timedelta(hours=1)
    decision = select_kept(sets, Policy(keep_last=1, keep_daily=3), "Europe/Berlin")
    assert decision.kept == {
        "26th 00:10": ("last 1", "daily 2026-10-26"),
        "25th 23:30": ("daily 2026-10-25",),
        "24th 23:50": ("daily 2026-10-24",),
    }


def test_the_23_and_a_half_hour_day_of_lord_howe_is_one_day() -> None:
    # Lord Howe Island moves from +10:30 to +11:00 at 02:00 on 4 October 2026.
    lord_howe = ZoneInfo("Australia/Lord_Howe")
    sets = [
        ("5th 00:10", utc("2026-10-04T13:10"), True, False),  # +11:00
        ("4th 23:50", utc("2026-10-04T12:50"), True, False),  # +11:00
        ("4th 00:10", utc("2026-10-03T13:40"), True, False),  # +10:30
        ("3rd 23:50", utc("2026-10-03T13:20"), True, False),  # +10:30
    ]
    assert sets[1][1].astimezone(lord_howe).utcoffset() == timedelta(hours=11)
    assert sets[2][1].astimezone(lord_howe).utcoffset() == timedelta(hours=10, minutes=30)
    decision = select_kept(sets, Policy(keep_last=1, keep_daily=3), "Australia/Lord_Howe")
    assert decision.kept == {
        "5th 00:10": ("last 1", "daily 2026-10-05"),
        "4th 23:50": ("daily 2026-10-04",),
        "3rd 23:50": ("daily 2026-10-03",),
    }
    assert list(decision.deleted) == ["4th 00:10"]


def test_the_most_recent_days_are_counted_by_the_calendar_when_the_date_goes_backwards() -> None:
    # St. John's fell back at 00:01 on 1 November 2009, to 23:01 on 31 October: a set
    # taken a minute before the change is dated 1 November, one taken after it 31 October.
    st_johns = ZoneInfo("America/St_Johns")
    change = utc("2009-11-01T02:31")
    sets = [
        ("31st 23:10 again", change + timedelta(minutes=9), True, False),
        ("1st 00:00:30", change - timedelta(seconds=30), True, False),
        ("31st 23:00", change - timedelta(hours=1, minutes=1), True, False),
    ]
    assert sets[0][1].astimezone(st_johns).date().isoformat() == "2009-10-31"
    assert sets[1][1].astimezone(st_johns).date().isoformat() == "2009-11-01"
    decision = select_kept(sets, Policy(keep_last=1, keep_daily=1), "America/St_Johns")
    assert decision.kept == {"31st 23:10 again": ("last 1",), "1st 00:00:30": ("daily 2009-11-01",)}


def test_weeks_are_iso_weeks_and_belong_to_the_iso_year() -> None:
    # Thursday 31 December 2026 and Friday 1 January 2027 are both in 2026-W53.
    sets = [
        ("fri 1 jan", local("2027-01-01T02:30"), True, False),
        ("thu 31 dec", local("2026-12-31T02:30"), True, False),
        ("sun 27 dec", local("2026-12-27T02:30"), True, False),
        ("mon 21 dec", local("2026-12-21T02:30"), True, False),
    ]
    weekly = select_kept(sets, Policy(keep_last=1, keep_weekly=2), "Europe/Berlin")
    assert weekly.kept == {"fri 1 jan": ("last 1", "weekly 2026-W53"), "sun 27 dec": ("weekly 2026-W52",)}
    yearly = select_kept(sets, Policy(keep_last=1, keep_yearly=5), "Europe/Berlin")
    assert yearly.kept == {"fri 1 jan": ("last 1", "yearly 2027"), "thu 31 dec": ("yearly 2026",)}


def test_months_are_local_months() -> None:
    # 03:00 UTC on 1 December is still 30 November in New York.
    new_york = ZoneInfo("America/New_York")
    sets = [
        ("dec", local("2026-12-01T12:00", new_york), True, False),
        ("nov 30 evening", utc("2026-12-01T03:00"), True, False),
        ("nov 29", local("2026-11-29T12:00", new_york), True, False),
    ]
    decision = select_kept(sets, Policy(keep_last=1, keep_monthly=2), "America/New_York")
    assert decision.kept == {"dec": ("last 1", "monthly 2026-12"), "nov 30 evening": ("monthly 2026-11",)}


def test_pinned_sets_are_always_kept_and_still_count_for_the_rules() -> None:
    sets = [
        ("new", local("2026-11-26T02:30"), True, True),
        ("mid", local("2026-11-25T02:30"), True, False),
        ("old", local("2025-01-10T02:30"), True, True),
        ("older", local("2025-01-09T02:30"), True, False),
    ]
    decision = select_kept(sets, Policy(keep_last=1, keep_daily=2), "Europe/Berlin")
    assert decision.kept == {
        "new": ("last 1", "daily 2026-11-26", "pinned"),
        "mid": ("daily 2026-11-25",),
        "old": ("pinned",),
    }
    assert list(decision.deleted) == ["older"]


def test_partial_sets_count_for_no_rule_and_go_once_older_than_the_oldest_kept_complete_set() -> None:
    sets = [
        ("partial newest", local("2026-11-26T02:30"), False, False),
        ("complete 25th", local("2026-11-25T02:30"), True, False),
        ("partial 24th", local("2026-11-24T02:30"), False, False),
        ("complete 23rd", local("2026-11-23T02:30"), True, False),
        ("partial 22nd", local("2026-11-22T02:30"), False, False),
        ("partial 21st pinned", local("2026-11-21T02:30"), False, True),
        ("complete 20th", local("2026-11-20T02:30"), True, False),
    ]
    decision = select_kept(sets, Policy(keep_last=2, keep_daily=1), "Europe/Berlin")
    assert decision.kept == {
        # The newest thing there is, though partial: it may hold the only copy of a source.
        "partial newest": (PARTIAL_IN_WINDOW,),
        # The 26th has no complete set, so "daily 1" is the 25th.
        "complete 25th": ("last 2", "daily 2026-11-25"),
        "partial 24th": (PARTIAL_IN_WINDOW,),
        "complete 23rd": ("last 2",),
        "partial 21st pinned": ("pinned",),
    }
    assert decision.deleted == {"partial 22nd": PARTIAL_OUTSIDE, "complete 20th": NOT_KEPT}


def test_partial_sets_are_all_kept_while_there_is_no_complete_set() -> None:
    sets = [(n, local(f"2026-11-2{n}T02:30"), False, False) for n in range(5, 0, -1)]
    decision = select_kept(sets, Policy(keep_last=1), "Europe/Berlin")
    assert decision.kept == {n: (PARTIAL_ALONE,) for n in range(5, 0, -1)}
    assert decision.deleted == {}


def test_a_pinned_set_does_not_stretch_the_window_for_partial_sets() -> None:
    sets = [
        ("complete new", local("2026-11-26T02:30"), True, False),
        ("partial", local("2026-06-01T02:30"), False, False),
        ("pinned old", local("2025-01-01T02:30"), True, True),
    ]
    decision = select_kept(sets, Policy(keep_last=1), "Europe/Berlin")
    assert list(decision.kept) == ["complete new", "pinned old"]
    assert decision.deleted == {"partial": PARTIAL_OUTSIDE}


def test_a_partial_set_as_old_as_the_oldest_kept_complete_set_is_kept() -> None:
    same = local("2026-11-25T02:30")
    sets = [("complete", same, True, False), ("partial", same, False, False)]
    assert list(select_kept(sets, Policy(keep_last=1), "UTC").kept) == ["complete", "partial"]


def test_of_sets_taken_at_the_same_instant_the_one_given_first_is_the_newer() -> None:
    same = local("2026-11-26T02:30")
    sets = [("first", same, True, False), ("second", same, True, False)]
    assert list(select_kept(sets, Policy(keep_last=1), "UTC").kept) == ["first"]
    assert list(select_kept(sets[::-1], Policy(keep_last=1), "UTC").kept) == ["second"]


def test_no_sets_means_nothing_to_decide() -> None:
    decision = select_kept([], Policy(keep_last=3, keep_daily=7), "Europe/Berlin")
    assert decision.kept == {} and decision.deleted == {}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"keep_last": 0}, "keep_last must be at least 1"),
        ({"keep_daily": -1}, "keep_daily must be a whole number"),
        ({"keep_weekly": 1.5}, "keep_weekly must be a whole number"),
        ({"keep_yearly": True}, "keep_yearly must be a whole number"),
    ],
)
def test_a_policy_that_could_delete_everything_is_refused(fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        Policy(**fields)


def test_bad_input_is_refused_with_a_clear_message() -> None:
    when = utc("2026-11-26T00:00")
    with pytest.raises(ValueError, match="Unknown time zone “Mars/Base”"):
        select_kept([("a", when, True, False)], Policy(), "Mars/Base")
    with pytest.raises(ValueError, match="aware datetime"):
        select_kept([("a", when.replace(tzinfo=None), True, False)], Policy(), "UTC")
    with pytest.raises(ValueError, match="appear once"):
        select_kept([("a", when, True, False), ("a", when, True, False)], Policy(), "UTC")


def sets_to_prune(sets, keep_last: int) -> list:
    """Keep-last-N alone, as select_kept answers it (ties broken by the order given)."""
    decision = select_kept([(key, at, True, False) for key, at in sets], Policy(keep_last=max(keep_last, 1)), UTC)
    return list(decision.deleted)


def test_sets_to_prune_still_answers_keep_last_n() -> None:
    now = utc("2026-11-26T00:00")
    sets = [(n, now - timedelta(days=n)) for n in range(5)]
    assert sets_to_prune(sets, 2) == [2, 3, 4]
    assert sets_to_prune(sets, 0) == [1, 2, 3, 4]  # the newest set is never pruned
    assert sets_to_prune([("x", now), ("y", now)], 1) == ["y"]
