"""Cron expressions exactly as Vixie/Debian cron reads them (crontab(5)). Pure Python.

Five fields: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or jan-dec,
day-of-week 0-7 (0 and 7 are Sunday) or sun-sat. Each field is a comma list of
``*``, ``*/step``, ``n``, ``a-b`` or ``a-b/step``; names are case-insensitive and
may stand wherever a number does (not as a step). The @-macros are accepted,
in lower case only (cron compares them case-sensitively), except @reboot.

The day rule is Vixie's: if the day-of-month or the day-of-week field *starts
with* ``*``, a day must match both fields; otherwise either field may match.

Refused, each with its own message: what Vixie refuses (out-of-range values, a
step without a range like ``5/10``, anything that is not a number or a name), and
what other crons accept but Vixie does not, because accepting it would run
backups at times nobody wrote: ranges that run backwards (``22-2`` does not
wrap), steps larger than the field, random and hashed values (``R``, ``H``,
different on every node) and Quartz's ``L``, ``W``, ``#`` and ``?``.

Parsing is separate from walking so that a wall-time walk reuses a parsed
expression; both work on naive local wall times (lib/slots.py maps them to
instants).
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# A wall-time walk gives up after this many years without a match. The rarest
# expression that can match (29 February on one weekday) recurs within 40 years;
# a full Gregorian cycle is 400.
WALK_YEARS = 400
FIVE_FIELDS = "A cron expression has five fields: minute hour day-of-month month day-of-week, e.g. '30 2 * * 1-5'."
RANDOM_REFUSED = "Random (R) and hashed (H) values are not supported: every node must compute the same times."
QUARTZ_REFUSED = (
    "{field} {item!r}: L, W, # and ? (last day, nearest weekday, nth weekday) are not part of Vixie cron "
    "and are not supported."
)


class CronError(ValueError):
    """The expression is not one Vixie cron would run; the message is fit for a user."""


@dataclass(frozen=True)
class _Field:
    label: str  # as it starts a sentence
    low: int
    high: int
    names: tuple[str, ...] = ()
    name_base: int = 0  # the number of names[0]

    @property
    def span(self) -> str:
        return f"{self.low}-{self.high}"


FIELDS = (
    _Field("Minute", 0, 59),
    _Field("Hour", 0, 23),
    _Field("Day-of-month", 1, 31),
    _Field("Month", 1, 12, MONTH_NAMES, 1),
    _Field("Day-of-week", 0, 7, DAY_NAMES, 0),
)
# Quartz's forms: L, 5L, L-3, 15W, LW (and # or ? anywhere in an item).
_QUARTZ_TOKEN = re.compile(r"^(\d*L|L-?\d*|\d*W|LW)$", re.IGNORECASE)
_NUMBER = re.compile(r"^[0-9]+$")
_MAX_DIGITS = 6  # anything longer is out of range in every field; keeps int() cheap


@dataclass(frozen=True)
class CronSpec:
    """A parsed expression: the sets of values each field allows."""

    text: str  # the five fields, single spaces, macros expanded
    minutes: tuple[int, ...]  # ascending
    hours: tuple[int, ...]  # ascending
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 is folded into 0)
    days_and: bool  # a day field starts with '*': both day fields must match
    frequent: bool  # the minute or hour field starts with '*' (Debian's wildcard job)

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.weekday() + 1) % 7 in self.weekdays
        return (in_days and in_weekdays) if self.days_and else (in_days or in_weekdays)

    def can_match(self) -> bool:
        """False if no real date ever matches (e.g. 31 February with '*' as day-of-week).

        Only the AND rule can fail: every (month, day) pair falls on every weekday
        over the years, and under the OR rule any weekday of an allowed month matches.
        """
        if not self.days_and:
            return True
        return any(day <= calendar.monthrange(2000, month)[1] for month in self.months for day in self.days)

    def walls_after(self, start: datetime) -> Iterator[datetime]:
        """Matching naive wall times strictly after `start`, ascending."""
        if not self.can_match():
            return
        day = start.date()
        last_year = start.year + WALK_YEARS
        try:
            while day.year <= last_year:
                if day.month not in self.months:
                    day = (day.replace(day=1) + timedelta(days=32)).replace(day=1)
                    continue
                if self.day_matches(day):
                    yield from self._times_of(day, start)
                day += timedelta(days=1)
        except OverflowError:  # walked past year 9999
            return

    def _times_of(self, day: date, start: datetime) -> Iterator[datetime]:
        hours: tuple[int, ...] = self.hours
        if day == start.date():
            hours = hours[bisect_left(hours, start.hour) :]
        for hour in hours:
            minutes: tuple[int, ...] = self.minutes
            if day == start.date() and hour == start.hour:
                minutes = minutes[bisect_right(minutes, start.minute) :]
            for minute in minutes:
                yield datetime(day.year, day.month, day.day, hour, minute)


@lru_cache(maxsize=4096)
def parse(expression: str) -> CronSpec:
    """Parse a cron expression, or raise CronError saying what is wrong with it."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() == "@reboot":
            raise CronError("@reboot is not a schedule: a backup needs times to run at.")
        if text not in MACROS:
            # Vixie and Debian compare macros with strcmp: @DAILY is not @daily to them.
            if text.lower() in MACROS:
                raise CronError(f"Macros are written in lower case, as cron reads them: {text.lower()!r}.")
            raise CronError(f"Unknown macro {text!r}. Use {', '.join(MACROS)}.")
        text = MACROS[text]
    parts = text.split(" ")
    if len(parts) != 5 or not text:
        raise CronError(FIVE_FIELDS)
    minutes, hours, days, months, weekdays = (
        _parse_field(part, field) for part, field in zip(parts, FIELDS, strict=True)
    )
    return CronSpec(
        text=text,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(day % 7 for day in weekdays),
        days_and=parts[2].startswith("*") or parts[4].startswith("*"),
        frequent=parts[0].startswith("*") or parts[1].startswith("*"),
    )


def _parse_field(text: str, field: _Field) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        values.update(_parse_item(item, field))
    return values


def _parse_item(item: str, field: _Field) -> range:
    if not item:
        raise CronError(f"{field.label} field has an empty list item (two commas, or one at an end).")
    if item[0] in "RrHh":
        raise CronError(RANDOM_REFUSED)
    if "#" in item or "?" in item or any(_QUARTZ_TOKEN.match(token) for token in re.split("[-/]", item)):
        raise CronError(QUARTZ_REFUSED.format(field=field.label, item=item))
    body, slash, step_text = item.partition("/")
    if body == "*":
        first, last = field.low, field.high
    else:
        start_text, dash, end_text = body.partition("-")
        first = _value(start_text, field)
        if not dash:
            if slash:
                example = f"{body}-{field.high}/{step_text} or */{step_text}"
                raise CronError(f"{field.label} {item!r}: a step needs a range, e.g. {example}.")
            return range(first, first + 1)
        last = _value(end_text, field)
        if last < first:
            raise CronError(
                f"Range {body} runs backwards; cron does not wrap ranges "
                f"(write {start_text}-{field.high},{field.low}-{end_text})."
            )
    step = 1
    if slash:
        if not _NUMBER.match(step_text):
            raise CronError(f"{field.label} {item!r}: the step after '/' must be a number.")
        step = int(step_text) if len(step_text) <= _MAX_DIGITS else 10**_MAX_DIGITS
        if step < 1:
            raise CronError(f"{field.label} {item!r}: a step must be at least 1.")
        if step > field.high - field.low + 1:
            shown = step_text if len(step_text) <= _MAX_DIGITS else f"{step_text[:_MAX_DIGITS]}…"
            raise CronError(f"Step {shown} is larger than the {field.label.lower()} field ({field.span}).")
    return range(first, last + 1, step)


def _value(text: str, field: _Field) -> int:
    lowered = text.lower()
    if lowered in field.names:
        return field.names.index(lowered) + field.name_base
    if not _NUMBER.match(text):
        names = f" or a name ({field.names[0]}-{field.names[-1]})" if field.names else ""
        shown = text or "(nothing)"
        raise CronError(f"{field.label} {shown!r} is not a number{names}.")
    if len(text) > _MAX_DIGITS or not field.low <= int(text) <= field.high:
        shown = text if len(text) <= _MAX_DIGITS else f"{text[:_MAX_DIGITS]}…"
        raise CronError(f"{field.label} {shown} is out of range ({field.span}).")
    return int(text)
