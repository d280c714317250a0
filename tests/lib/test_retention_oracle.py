"""Property tests: lib.retention.select_kept against a brute-force oracle.

The oracle shares no code with lib.retention. Where select_kept groups sets into
buckets and sorts the buckets, the oracle walks the calendar backwards one local
day (Monday, month, year) at a time from the newest complete set, and for each
period scans every set for the ones that fall in it. It finds a set's local date
through datetime.fromtimestamp and labels ISO weeks from their Thursday, instead
of astimezone and isocalendar. Only the tie rule is shared: on equal times the
set given first is the newer one.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.retention import Policy, select_kept

ZONES = [
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Pacific/Chatham",  # UTC+12:45 / +13:45
    "America/Santiago",  # changes at local midnight: some days have no 00:00
    "America/Sao_Paulo",  # had DST at midnight until 2019
    # Until 2011 fell back at 00:01 to 23:01 of the day before: the local date went
    # backwards, so "the most recent days" by the calendar and by the clock differ.
    "America/St_Johns",
    "Asia/Kolkata",
    "UTC",
]
RANGE_START = datetime(2005, 1, 1, tzinfo=UTC)
RANGE_END = datetime(2028, 12, 31, tzinfo=UTC)


# ----------------------------------------------------------------------------- oracle


def local_date(instant: datetime, zone: ZoneInfo) -> date:
    return datetime.fromtimestamp(instant.timestamp(), zone).date()


def iso_week_label(monday: date) -> str:
    # A week belongs to the ISO year of its Thursday; week 1 holds that year's first Thursday.
    thursday = monday + timedelta(days=3)
    week = (thursday - date(thursday.year, 1, 1)).days // 7 + 1
    return f"{thursday.year}-W{week:02d}"


def oracle(sets: list[tuple[int, datetime, bool, bool]], policy: Policy, zone_name: str):
    zone = ZoneInfo(zone_name)
    position = {key: index for index, (key, *_) in enumerate(sets)}

    def newest(candidates):
        best = None
        for candidate in candidates:
            if best is None:
                best = candidate
                continue
            if candidate[1] > best[1] or (candidate[1] == best[1] and position[candidate[0]] < position[best[0]]):
                best = candidate
        return best

    complete = [s for s in sets if s[2]]
    kept: dict[int, set[str]] = {}

    # Keep last N: take the newest remaining complete set, N times.
    pool = list(complete)
    for _ in range(policy.keep_last):
        if not pool:
            break
        pick = newest(pool)
        kept.setdefault(pick[0], set()).add(f"last {policy.keep_last}")
        pool.remove(pick)

    if complete:
        dates = {s[0]: local_date(s[1], zone) for s in complete}
        last_day, first_day = max(dates.values()), min(dates.values())

        def walk(wanted, periods, name):
            found = 0
            for start, end, label in periods:
                if found == wanted or end < first_day:
                    return
                inside = [s for s in complete if start <= dates[s[0]] <= end]
                if inside:
                    kept.setdefault(newest(inside)[0], set()).add(f"{name} {label}")
                    found += 1

        def days():
            day = last_day
            while True:
                yield day, day, day.isoformat()
                day -= timedelta(days=1)

        def weeks():
            monday = last_day - timedelta(days=last_day.weekday())
            while True:
                yield monday, monday + timedelta(days=6), iso_week_label(monday)
                monday -= timedelta(days=7)

        def months():
            year, month = last_day.year, last_day.month
            while True:
                following = date(year + (month == 12), month % 12 + 1, 1)
                yield date(year, month, 1), following - timedelta(days=1), f"{year:04d}-{month:02d}"
                year, month = (year, month - 1) if month > 1 else (year - 1, 12)

        def years():
            year = last_day.year
            while True:
                yield date(year, 1, 1), date(year, 12, 31), f"{year:04d}"
                year -= 1

        walk(policy.keep_daily, days(), "daily")
        walk(policy.keep_weekly, weeks(), "weekly")
        walk(policy.keep_monthly, months(), "monthly")
        walk(policy.keep_yearly, years(), "yearly")

    kept_complete_times = [s[1] for s in complete if s[0] in kept]
    for key, created_at, is_complete, pinned in sets:
        if not is_complete:
            if not kept_complete_times:
                kept.setdefault(key, set()).add("incomplete, no complete set to replace it")
            elif any(t <= created_at for t in kept_complete_times):
                kept.setdefault(key, set()).add("incomplete, not older than the oldest kept complete set")
        if pinned:
            kept.setdefault(key, set()).add("pinned")
    deleted = {s[0] for s in sets} - set(kept)
    return kept, deleted


# ----------------------------------------------------------------------------- strategies


@lru_cache
def transitions(zone_name: str) -> list[datetime]:
    """UTC instants where the zone's offset changes, within the test range."""
    zone = ZoneInfo(zone_name)
    found = []
    step = timedelta(hours=6)
    cursor = RANGE_START
    offset = cursor.astimezone(zone).utcoffset()
    while cursor < RANGE_END:
        following = cursor + step
        if following.astimezone(zone).utcoffset() != offset:
            low, high = cursor, following
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(high.replace(second=0, microsecond=0))
            offset = following.astimezone(zone).utcoffset()
        cursor = following
    return found or [datetime(2026, 11, 26, tzinfo=UTC)]


@st.composite
def scenarios(draw):
    zone = draw(st.sampled_from(ZONES))
    seconds_in_range = int((RANGE_END - RANGE_START).total_seconds())
    anchor = draw(
        st.one_of(
            st.sampled_from(transitions(zone)),
            st.integers(0, seconds_in_range).map(lambda s: RANGE_START + timedelta(seconds=s)),
        )
    )
    # From a few hours (everything in one or two days) to a few years.
    span = draw(st.sampled_from([6 * 3600, 3 * 86400, 20 * 86400, 90 * 86400, 400 * 86400, 1500 * 86400]))
    # Coarse steps make sets share an instant (ties) or sit on the hour of a transition.
    grain = draw(st.sampled_from([1, 60, 1800, 3600, 6 * 3600]))
    # Or seconds from the anchor, to land on both sides of a transition, even the
    # single minute that St. John's showed before falling back across midnight.
    offsets = draw(
        st.lists(
            st.one_of(st.integers(-span // grain, span // grain).map(lambda n: n * grain), st.integers(-90, 3700)),
            max_size=40,
        )
    )
    sets = []
    for key, offset in enumerate(offsets):
        complete = draw(st.integers(0, 4)) > 0
        pinned = draw(st.integers(0, 6)) == 0
        sets.append((key, anchor + timedelta(seconds=offset), complete, pinned))
    counts = st.one_of(st.just(0), st.integers(1, 12))
    policy = Policy(
        keep_last=draw(st.integers(1, 6)),
        keep_daily=draw(counts),
        keep_weekly=draw(counts),
        keep_monthly=draw(counts),
        keep_yearly=draw(st.one_of(st.just(0), st.integers(1, 4))),
    )
    return sets, policy, zone


def as_sets(decision):
    return {key: set(reasons) for key, reasons in decision.kept.items()}, set(decision.deleted)


# ----------------------------------------------------------------------------- properties


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_select_kept_matches_the_calendar_walking_oracle(scenario) -> None:
    sets, policy, zone = scenario
    assert as_sets(select_kept(sets, policy, zone)) == oracle(sets, policy, zone)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_set_is_kept_or_deleted_and_the_safety_rules_hold(scenario) -> None:
    sets, policy, zone = scenario
    decision = select_kept(sets, policy, zone)
    assert set(decision.kept).isdisjoint(decision.deleted)
    assert set(decision.kept) | set(decision.deleted) == {s[0] for s in sets}
    assert all(reasons for reasons in decision.kept.values())
    assert all(s[0] in decision.kept for s in sets if s[3]), "a pinned set was deleted"
    if sets:
        # The newest thing there is stays, complete or not; so does the newest complete set.
        newest_overall = max(sets, key=lambda s: (s[1], -s[0]))
        assert newest_overall[0] in decision.kept
        complete = [s for s in sets if s[2]]
        if complete:
            assert max(complete, key=lambda s: (s[1], -s[0]))[0] in decision.kept
    # Both orders are newest first.
    times = {s[0]: s[1] for s in sets}
    for keys in (list(decision.kept), list(decision.deleted)):
        assert [times[k] for k in keys] == sorted((times[k] for k in keys), reverse=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_pruning_again_right_after_deletes_nothing_more(scenario) -> None:
    sets, policy, zone = scenario
    first = select_kept(sets, policy, zone)
    survivors = [s for s in sets if s[0] in first.kept]
    second = select_kept(survivors, policy, zone)
    assert second.deleted == {}
    assert second.kept == first.kept


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.integers(1, 400 * 86400), st.booleans())
def test_a_newer_backup_never_brings_back_a_set_already_due_for_deletion(scenario, later, complete) -> None:
    # So two retention passes that saw different sets never delete, together, more than
    # the later one would alone.
    sets, policy, zone = scenario
    before = select_kept(sets, policy, zone)
    newest = max((s[1] for s in sets), default=RANGE_START)
    after = select_kept([*sets, (len(sets), newest + timedelta(seconds=later), complete, False)], policy, zone)
    assert set(before.deleted) <= set(after.deleted)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.randoms(use_true_random=False))
def test_the_input_order_does_not_matter_when_times_differ(scenario, rng: random.Random) -> None:
    sets, policy, zone = scenario
    by_time: dict[datetime, tuple[int, datetime, bool, bool]] = {}
    for s in sets:
        by_time.setdefault(s[1], s)
    distinct = list(by_time.values())
    shuffled = list(distinct)
    rng.shuffle(shuffled)
    assert select_kept(shuffled, policy, zone) == select_kept(distinct, policy, zone)


@pytest.mark.parametrize("zone", ZONES)
def test_the_oracle_finds_transitions_in_zones_that_have_them(zone) -> None:
    # Guards the strategy: a zone list whose transitions silently vanished would
    # leave the DST nights untested.
    if zone in ("UTC", "Asia/Kolkata"):
        assert transitions(zone) == [datetime(2026, 11, 26, tzinfo=UTC)]
    else:
        assert len(transitions(zone)) >= 4


def regressing_transitions(zone_name: str) -> list[datetime]:
    """Transitions after which the local date is the day before (fall back across midnight)."""
    zone = ZoneInfo(zone_name)
    return [t for t in transitions(zone_name) if local_date(t, zone) < local_date(t - timedelta(seconds=1), zone)]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_oracle_agrees_when_the_local_date_goes_backwards(data) -> None:
    zone = "America/St_Johns"
    anchor = data.draw(st.sampled_from(regressing_transitions(zone)))
    offsets = data.draw(st.lists(st.integers(-120, 3700), min_size=1, max_size=12))
    sets = [
        (key, anchor + timedelta(seconds=offset), data.draw(st.booleans()), False) for key, offset in enumerate(offsets)
    ]
    policy = Policy(keep_last=1, keep_daily=data.draw(st.integers(0, 2)), keep_weekly=data.draw(st.integers(0, 1)))
    assert as_sets(select_kept(sets, policy, zone)) == oracle(sets, policy, zone)
