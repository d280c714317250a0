"""Property tests: lib.slots.next_slot against a brute-force, minute-by-minute oracle.

The oracle shares no code with lib.slots or lib.cron: cron expressions are read
by tests/vixie_oracle.py (written from crontab(5) and Vixie's entry.c), and DST
behaviour is decided by walking real UTC minutes and remembering which local
wall times have already shown, which is the rule in its plainest form.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, available_timezones

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib.slots import Cadence, next_slot
from tests.cron_strategies import field_text, frequent_days
from tests.vixie_oracle import read_entry

MINUTE = timedelta(minutes=1)
ORACLE_HORIZON = timedelta(days=8)
DST_ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Santiago",
    "America/Havana",
    "Australia/Lord_Howe",
    "Australia/Sydney",
    "Pacific/Chatham",
    "Antarctica/Troll",
    "Asia/Tehran",
    "Africa/Casablanca",
    "Pacific/Apia",
    "America/St_Johns",
    "Europe/Dublin",
]
ALL_ZONES = sorted(z for z in available_timezones() if "/" in z and not z.startswith(("posix/", "right/")))


# ----------------------------------------------------------------------------- oracle


def oracle_next(cadence: Cadence, after: datetime) -> datetime | None:
    if cadence.kind == "every_n_hours":
        assert cadence.anchor is not None
        step_minutes = cadence.every_hours * 60
        instant = after.replace(second=0, microsecond=0) + MINUTE
        while True:
            if int((instant - cadence.anchor).total_seconds() // 60) % step_minutes == 0:
                return instant
            instant += MINUTE

    tz = ZoneInfo(cadence.tz)
    if cadence.kind == "cron":
        entry = read_entry(cadence.cron)
        matches, frequent = entry.matches, entry.frequent
    else:
        days = set(range(7)) if cadence.kind == "daily" else set(cadence.weekdays)
        at = cadence.time_of_day

        def matches(wall: datetime) -> bool:
            return wall.hour == at.hour and wall.minute == at.minute and wall.weekday() in days

        frequent = False

    def wall_of(instant: datetime) -> datetime:
        return instant.astimezone(tz).replace(tzinfo=None)

    seen: set[datetime] = set()
    instant = after.replace(second=0, microsecond=0) - timedelta(hours=4)
    previous: datetime | None = None
    while instant <= after + ORACLE_HORIZON:
        wall = wall_of(instant)
        if instant > after:
            if frequent:
                if matches(wall):
                    return instant
            else:
                hit = matches(wall) and wall not in seen
                if not hit and previous is not None and wall - previous > MINUTE:
                    skipped = previous + MINUTE
                    while skipped < wall and not hit:
                        hit = matches(skipped) and skipped not in seen
                        skipped += MINUTE
                if hit:
                    return instant
        seen.add(wall)
        previous = wall
        instant += MINUTE
    return None


# ----------------------------------------------------------------------------- strategies


@lru_cache(maxsize=4096)
def transitions(zone_name: str, year: int) -> tuple[datetime, ...]:
    tz = ZoneInfo(zone_name)
    found = []
    probe = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    offset = probe.astimezone(tz).utcoffset()
    while probe < end:
        following = probe + timedelta(hours=6)
        if following.astimezone(tz).utcoffset() != offset:
            low, high = probe, following
            while high - low > MINUTE:
                middle = low + (high - low) / 2
                if middle.astimezone(tz).utcoffset() == offset:
                    low = middle
                else:
                    high = middle
            found.append(high.replace(second=0, microsecond=0))
            offset = following.astimezone(tz).utcoffset()
        probe = following
    return tuple(found)


@st.composite
def instants(draw, zone_name: str) -> tuple[datetime, list[int]]:
    """An instant, often within a day of a transition, and the local hours around it."""
    year = draw(st.integers(2000, 2037))
    near = transitions(zone_name, year)
    if near and draw(st.booleans()):
        base = draw(st.sampled_from(near))
        after = base + timedelta(minutes=draw(st.integers(-26 * 60, 2 * 60)), seconds=draw(st.integers(0, 59)))
        tz = ZoneInfo(zone_name)
        hours = sorted({(base + timedelta(minutes=m)).astimezone(tz).hour for m in (-90, -30, 0, 30, 90)})
        return after, hours
    start = datetime(year, 1, 1, tzinfo=UTC)
    after = start + timedelta(minutes=draw(st.integers(0, 365 * 24 * 60)), seconds=draw(st.integers(0, 59)))
    return after, [0, 1, 2, 3]


zones = st.one_of(st.sampled_from(DST_ZONES), st.sampled_from(ALL_ZONES))
minutes = st.sampled_from([0, 15, 30, 45, 59]) | st.integers(0, 59)


def hours_near(hint: list[int]) -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, 23), st.sampled_from(hint), st.sampled_from(hint))


@st.composite
def cron_expressions(draw, hint: list[int]) -> str:
    """Any Vixie expression, hours often near the transition, days that match within a week."""
    minute = draw(st.sampled_from(["0", "30", "*/15", "*", "0,30", "5-10", "59"]) | field_text(0, True))
    hour = draw(st.sampled_from(["*", "*/2", "1-3", "0-23/6"]) | field_text(1, True, hint))
    dom, dow = draw(frequent_days())
    month = draw(st.sampled_from(["*", "*", "*", "*/2", "jan-DEC", "1-12"]))
    return f"{minute} {hour} {dom} {month} {dow}"


@st.composite
def cadences(draw, tz: str, hint: list[int]) -> Cadence:
    times_of_day = st.builds(time, hours_near(hint), minutes)
    kind = draw(st.sampled_from(["daily", "weekly", "cron", "cron", "every_n_hours"]))
    if kind == "daily":
        return Cadence(kind, tz, time_of_day=draw(times_of_day))
    if kind == "weekly":
        days = draw(st.frozensets(st.integers(0, 6), min_size=1))
        return Cadence(kind, tz, time_of_day=draw(times_of_day), weekdays=days)
    if kind == "cron":
        return Cadence(kind, tz, cron=draw(cron_expressions(hint)))
    anchor = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=draw(st.integers(0, 10**6)))
    return Cadence(kind, tz, every_hours=draw(st.integers(1, 168)), anchor=anchor)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_next_slot_matches_the_brute_force_oracle(data) -> None:
    tz = data.draw(zones)
    after, hint = data.draw(instants(tz))
    cadence = data.draw(cadences(tz, hint))
    expected = oracle_next(cadence, after)
    got = next_slot(cadence, after)
    if expected is None:
        assert got is None or got > after + ORACLE_HORIZON
    else:
        assert got == expected, (cadence, after)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_consecutive_slots_match_the_oracle_across_dst_nights(data) -> None:
    """Walk several slots in a row through a transition: no slot skipped or doubled."""
    tz = data.draw(st.sampled_from(DST_ZONES))
    year = data.draw(st.integers(2000, 2037))
    near = transitions(tz, year) or (datetime(year, 6, 1, tzinfo=UTC),)
    transition = data.draw(st.sampled_from(near))
    hint = sorted({(transition + timedelta(minutes=m)).astimezone(ZoneInfo(tz)).hour for m in (-90, -30, 0, 30)})
    cadence = data.draw(cadences(tz, hint).filter(lambda c: c.kind != "every_n_hours"))
    cursor = transition - timedelta(hours=data.draw(st.integers(1, 30)))
    for _ in range(4):
        expected = oracle_next(cadence, cursor)
        got = next_slot(cadence, cursor)
        if expected is None:  # nothing within the oracle's week
            assert got is None or got > cursor + ORACLE_HORIZON, (cadence, cursor)
            break
        assert got == expected, (cadence, cursor)
        cursor = got
