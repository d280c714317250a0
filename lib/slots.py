"""Slot math: when does a schedule fire next? Pure Python, no Django.

Every instant here is an aware UTC datetime at minute precision. Schedules are
computed in their own IANA zone and converted to UTC at once.

DST rules (docs/scheduling.md has the worked examples):

* Fixed-time schedules (daily, weekly, and cron expressions whose minute and
  hour fields do not start with ``*``) run once per local wall time. A wall time
  that does not exist that day (spring forward) runs at the first valid minute
  after the gap; a wall time that occurs twice (fall back) runs at its first
  occurrence only.
* Schedules that repeat within an hour (cron with ``*`` or ``*/n`` in the minute
  or hour field) tick in real elapsed time: every instant whose local wall time
  matches is a slot, so they run in both copies of a repeated hour and not at
  all in a skipped one. This is Debian cron's rule.
* Every N hours is anchored to a fixed UTC instant: slots are anchor + k*N hours.
  Restarts and edits of other fields do not move it.

lib/cron.py parses cron expressions as Vixie cron does and walks *naive* local
wall times (plain calendar arithmetic); mapping wall times to instants is done
here, once for every kind of schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from lib import cron, zones

MINUTE = timedelta(minutes=1)
# The widest backward jump of a zone's offset we look behind for (Antarctica/Troll
# moves by two hours). Wildcard schedules look back this far near a transition.
MAX_FOLD = timedelta(hours=3)
# Offsets are probed this often to find transitions between two instants.
PROBE_STEP = timedelta(hours=12)
# How far upcoming() looks ahead (a cron walk gives up after cron.WALK_YEARS).
HORIZON = timedelta(days=366 * 5)

KINDS = ("disabled", "daily", "weekly", "cron", "every_n_hours")
MIN_EVERY_HOURS, MAX_EVERY_HOURS = 1, 168
# The longest time limit of a run (a schedule's time_limit_minutes); the storage sweep
# (backups.sweep) counts on no write lasting longer.
MAX_TIME_LIMIT_MINUTES = 24 * 60


@dataclass(frozen=True)
class Cadence:
    """What a schedule's slot math needs, nothing more (hashable, so cacheable)."""

    kind: str
    tz: str = "UTC"
    time_of_day: time = time(0, 0)
    weekdays: frozenset[int] = field(default_factory=frozenset)  # 0 = Monday
    cron: str = ""
    every_hours: int = 24
    anchor: datetime | None = None  # UTC, for every_n_hours


class InvalidCadence(ValueError):
    """The cadence cannot be scheduled; the message is fit for a user."""


def floor_minute(instant: datetime) -> datetime:
    return instant.replace(second=0, microsecond=0)


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    # Only real IANA names: 'localtime' is whatever each node's /etc/localtime says,
    # and 'Factory' is a placeholder, not a place.
    if name in zones.accepted_zone_names():
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise InvalidCadence(f"Unknown time zone {name!r}. Use an IANA name such as Europe/Berlin.")


def all_zone_names() -> frozenset[str]:
    """Every zone name a schedule (or a viewer's cookie) may use: see lib/zones.py."""
    return zones.accepted_zone_names()


def parse_cron(expression: str) -> cron.CronSpec:
    """The parsed expression, or InvalidCadence with cron's own message."""
    try:
        return cron.parse(expression)
    except cron.CronError as exc:
        raise InvalidCadence(f"Invalid cron expression {' '.join(expression.split())!r}: {exc}") from None


def normalize_cron(expression: str) -> str:
    """Return the five-field form of a cron expression, or raise InvalidCadence."""
    return parse_cron(expression).text


def repeats_within_hour(expression: str) -> bool:
    """Debian cron's test: a '*' leading the minute or hour field means 'frequent'."""
    return parse_cron(expression).frequent


def validate(cadence: Cadence) -> None:
    """Raise InvalidCadence with a user-facing message if the cadence is unusable."""
    if cadence.kind not in KINDS:
        raise InvalidCadence(f"Unknown schedule kind {cadence.kind!r}.")
    zone(cadence.tz)
    if cadence.kind == "weekly":
        if not cadence.weekdays:
            raise InvalidCadence("A weekly schedule needs at least one weekday.")
        if not cadence.weekdays <= set(range(7)):
            raise InvalidCadence("Weekdays are numbered 0 (Monday) to 6 (Sunday).")
    if cadence.kind == "every_n_hours":
        if not MIN_EVERY_HOURS <= cadence.every_hours <= MAX_EVERY_HOURS:
            raise InvalidCadence(f"Every N hours takes N from {MIN_EVERY_HOURS} to {MAX_EVERY_HOURS}.")
        if cadence.anchor is None:
            raise InvalidCadence("An every-N-hours schedule needs an anchor instant.")
    if cadence.kind == "cron" and not parse_cron(cadence.cron).can_match():
        raise InvalidCadence(f"The cron expression {cadence.cron!r} never matches a real date.")


def default_anchor(time_of_day: time, tz: str, today: datetime) -> datetime:
    """The first anchor of an every-N-hours schedule: its time of day, on `today`'s date."""
    local_day = today.astimezone(zone(tz)).date()
    return _first_instant(datetime.combine(local_day, time_of_day), zone(tz))


# --------------------------------------------------------------------------- #
# Public entry points


def next_slot(cadence: Cadence, after: datetime) -> datetime | None:
    """The first slot strictly after `after` (aware), or None if there is none."""
    after = after.astimezone(UTC)
    if cadence.kind == "disabled":
        return None
    if cadence.kind == "every_n_hours":
        return _next_interval_slot(cadence, after)
    tz = zone(cadence.tz)
    matches = lambda start: _wall_matches(cadence, start)  # noqa: E731
    if cadence.kind == "cron" and repeats_within_hour(cadence.cron):
        return _next_elapsed_slot(matches, tz, after)
    return _next_fixed_slot(matches, tz, after)


def slots_between(cadence: Cadence, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """Slots in (after, until], at most `limit` of them, in order."""
    found: list[datetime] = []
    cursor = after
    while len(found) < limit:
        slot = next_slot(cadence, cursor)
        if slot is None or slot > until:
            break
        found.append(slot)
        cursor = slot
    return found


def upcoming(cadence: Cadence, after: datetime, count: int) -> list[datetime]:
    return slots_between(cadence, after, after + HORIZON, count)


# --------------------------------------------------------------------------- #
# Wall-time generators: ascending naive local datetimes strictly after `start`


# The wall-clock times a cadence matches from a start on, in order.
Matches = Callable[[datetime], Iterator[datetime]]


def _wall_matches(cadence: Cadence, start: datetime) -> Iterator[datetime]:
    if cadence.kind == "cron":
        return parse_cron(cadence.cron).walls_after(start)
    weekdays = frozenset(range(7)) if cadence.kind == "daily" else cadence.weekdays
    if not weekdays:
        return iter(())
    return _weekday_walls(cadence.time_of_day, weekdays, start)


def _weekday_walls(at: time, weekdays: frozenset[int], start: datetime) -> Iterator[datetime]:
    day = start.date()
    at = at.replace(second=0, microsecond=0)
    while True:
        wall = datetime.combine(day, at)
        if wall > start and day.weekday() in weekdays:
            yield wall
        day += timedelta(days=1)


# --------------------------------------------------------------------------- #
# Mapping wall times to instants


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


def _offset(instant: datetime, tz: ZoneInfo) -> timedelta:
    return instant.astimezone(tz).utcoffset() or timedelta(0)


def _first_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first instant showing `wall`, or the end of the gap that swallowed it."""
    candidate = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(candidate, tz) == wall:
        return candidate
    # `wall` falls in a gap: fold=0 used the offset before the jump, fold=1 the one
    # after, so the transition lies between the two readings.
    low = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)
    low, high = min(low, candidate), max(low, candidate)
    return _transition_between(low, high, tz)


def _transition_between(low: datetime, high: datetime, tz: ZoneInfo) -> datetime:
    """The first minute in (low, high] whose offset differs from low's."""
    before = _offset(low, tz)
    while high - low > MINUTE:
        middle = floor_minute(low + (high - low) / 2)
        if middle <= low:
            middle = low + MINUTE
        if _offset(middle, tz) == before:
            low = middle
        else:
            high = middle
    return high


def _instants_of(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """Every instant whose local wall time is `wall`: none, one or two."""
    found = []
    for fold in (0, 1):
        instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if _wall(instant, tz) == wall and instant not in found:
            found.append(instant)
    return sorted(found)


def _steady_between(start: datetime, end: datetime, tz: ZoneInfo) -> bool:
    """True if the zone's offset does not change in [start, end]."""
    offset = _offset(start, tz)
    probe = start + PROBE_STEP
    while probe < end:
        if _offset(probe, tz) != offset:
            return False
        probe += PROBE_STEP
    return _offset(end, tz) == offset


def _next_fixed_slot(matches: Matches, tz: ZoneInfo, after: datetime) -> datetime | None:
    # `_first_instant` never decreases as the wall time grows, and every wall time
    # up to after's own maps to an instant <= after, so the first match whose
    # instant lies after `after` is the answer.
    for wall in matches(_wall(after, tz)):
        instant = _first_instant(wall, tz)
        if instant > after:
            return instant
    return None


def _next_elapsed_slot(matches: Matches, tz: ZoneInfo, after: datetime) -> datetime | None:
    start_wall = _wall(after, tz)
    for wall in matches(start_wall):
        # Fast path: the offset holds still from `after` to the candidate, so wall
        # time and real time advance together and nothing in between can match.
        instants = _instants_of(wall, tz)
        if len(instants) == 1 and _steady_between(after, instants[0], tz):
            return instants[0]
        break
    return _next_elapsed_slot_near_transition(matches, tz, after)


def _next_elapsed_slot_near_transition(matches: Matches, tz: ZoneInfo, after: datetime) -> datetime | None:
    # Near a fall-back, a wall time earlier than after's own can recur later, so
    # walk from a little before and keep the earliest instant past `after`.
    best: datetime | None = None
    for wall in matches(_wall(after, tz) - MAX_FOLD - MINUTE):
        if best is not None and wall > _wall(best, tz) + MAX_FOLD:
            break
        for instant in _instants_of(wall, tz):
            if instant > after and (best is None or instant < best):
                best = instant
    return best


def _next_interval_slot(cadence: Cadence, after: datetime) -> datetime:
    assert cadence.anchor is not None
    anchor = floor_minute(cadence.anchor.astimezone(UTC))
    step = timedelta(hours=cadence.every_hours)
    periods = (after - anchor) // step
    return anchor + (periods + 1) * step
