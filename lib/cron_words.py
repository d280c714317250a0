"""A cron expression in words, built from the value sets lib/cron.py computes. Pure Python.

Written from the parsed sets rather than from the text (cron_descriptor reads the
text and knows nothing of Vixie's day rule: it worded ``1 1 1-7 * */7`` as "between
day 1 and 7 of the month, every 7 days of the week", where Vixie runs the first
Sunday of each month). Each phrase is made from a few runs of values (one value, a
range, or an arithmetic series), and `CronWords` also carries the sets those runs
stand for, so a test can check what the words claim against the slots the product
computes, without reading English.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from itertools import product

from lib.cron import CronError, parse

DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")  # Vixie's 0-6
MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
               "November", "December")  # fmt: skip
ORDINALS = ("first", "second", "third", "fourth")
ALL_DAYS = frozenset(range(1, 32))
ALL_WEEKDAYS = frozenset(range(7))
ALL_MONTHS = frozenset(range(1, 13))
LIST_TIMES = 4  # up to this many times of day are written out, "At 02:00 and 14:00"


@dataclass(frozen=True)
class CronWords:
    """The words, and what they say: a day runs if its month is in `months` and its day of
    month is in `days` and (or, if `either`) its weekday (0 = Sunday) is in `weekdays`;
    on such a day the times are `times`, (hour, minute) pairs."""

    text: str
    times: frozenset[tuple[int, int]]
    days: frozenset[int]
    weekdays: frozenset[int]
    months: frozenset[int]
    either: bool


@dataclass(frozen=True)
class _Run:
    first: int
    last: int
    step: int = 1

    @property
    def values(self) -> range:
        return range(self.first, self.last + 1, self.step)


def _runs(values: frozenset[int] | tuple[int, ...], order: tuple[int, ...] | None = None) -> list[_Run]:
    """Values as few runs as a reader takes in: one series if they are one (numbers only), else
    ranges of three or more neighbours and single values. `order` lays named values out in the
    order they are read (weekdays Monday first), so a range can pass the field's end."""
    ranked = sorted(order.index(value) for value in values) if order else sorted(values)
    if len(ranked) >= 4 and not order:
        step = ranked[1] - ranked[0]
        if step > 1 and all(b - a == step for a, b in zip(ranked, ranked[1:], strict=False)):
            return [_Run(ranked[0], ranked[-1], step)]
    runs: list[_Run] = []
    start = 0
    for index in range(1, len(ranked) + 1):
        if index == len(ranked) or ranked[index] != ranked[index - 1] + 1:
            piece = ranked[start:index]
            if len(piece) >= 3:
                runs.append(_Run(piece[0], piece[-1]))
            else:
                runs.extend(_Run(value, value) for value in piece)
            start = index
    if order:
        return [_Run(order[run.first], order[run.last], run.step) for run in runs]
    return runs


def _claimed(runs: list[_Run], order: tuple[int, ...] | None = None) -> frozenset[int]:
    if order:
        return frozenset(order[i] for run in runs for i in range(order.index(run.first), order.index(run.last) + 1))
    return frozenset(value for run in runs for value in run.values)


def _join(words: list[str], last: str = "and") -> str:
    if len(words) <= 1:
        return "".join(words)
    return f"{', '.join(words[:-1])} {last} {words[-1]}"


def _numbers(runs: list[_Run]) -> str:
    """1–7 and 15; 0, 7, 14, …, 56."""
    if len(runs) == 1 and runs[0].step > 1:
        shown = runs[0].values
        return f"{shown[0]}, {shown[1]}, {shown[2]}, …, {shown[-1]}"
    return _join([str(run.first) if run.first == run.last else f"{run.first}–{run.last}" for run in runs])


def _names(runs: list[_Run], names: tuple[str, ...], last: str = "and") -> str:
    """Monday to Friday and Sunday."""
    return _join([names[r.first] if r.first == r.last else f"{names[r.first]} to {names[r.last]}" for r in runs], last)


def _hhmm(hour: int, minute: int) -> str:
    return f"{hour:02d}:{minute:02d}"


def _time_words(minutes: tuple[int, ...], hours: tuple[int, ...]) -> tuple[str, frozenset[tuple[int, int]], bool]:
    """The times of day: words, the (hour, minute) pairs they claim, and whether they are a
    short list of times (which then reads "every day" when no day is named)."""
    if len(minutes) * len(hours) <= LIST_TIMES:
        pairs = sorted(product(hours, minutes))
        return f"At {_join([_hhmm(h, m) for h, m in pairs])}", frozenset(pairs), True
    hour_runs = _runs(hours)
    claimed_hours = _claimed(hour_runs)
    if len(minutes) == 1:
        (minute,) = minutes
        pairs_of = frozenset(product(claimed_hours, [minute]))
        if len(claimed_hours) == 24:
            return f"Every hour at minute {minute}", pairs_of, False
        if len(hour_runs) == 1:
            run = hour_runs[0]
            every = "Every hour" if run.step == 1 else f"Every {run.step} hours"
            return f"{every} from {_hhmm(run.first, minute)} to {_hhmm(run.last, minute)}", pairs_of, False
        return f"At minute {minute} past hours {_numbers(hour_runs)}", pairs_of, False
    minute_runs = _runs(minutes)
    claimed_minutes = _claimed(minute_runs)
    step = minute_runs[0].step
    if len(claimed_minutes) == 60:
        words = "Every minute"
    elif len(minute_runs) == 1 and minute_runs[0].first == 0 and 60 % step == 0 and len(claimed_minutes) == 60 // step:
        words = f"Every {step} minutes"  # evenly spaced across the hour boundary too
    else:
        words = f"At minutes {_numbers(minute_runs)}"
    if len(claimed_hours) < 24:
        plural = "hour" if len(claimed_hours) == 1 else "hours"
        words += f" in {plural} {_numbers(hour_runs)}"
    return words, frozenset(product(claimed_hours, claimed_minutes)), False


def _month_days(runs: list[_Run]) -> str:
    claimed = _claimed(runs)
    if claimed == frozenset(range(1, 32, 2)):
        return "odd days of the month (1, 3, 5, …)"
    if claimed == frozenset(range(2, 32, 2)):
        return "even days of the month (2, 4, 6, …)"
    plural = "day" if len(claimed) == 1 else "days"
    return f"{plural} {_numbers(runs)} of the month"


# Weekdays in the order a week is read, so fri-sun (5-7) is one range.
_WEEK_ORDER = (1, 2, 3, 4, 5, 6, 0)
_YEAR_ORDER = tuple(range(1, 13))


@lru_cache(maxsize=1024)
def cron_words(expression: str) -> CronWords | None:
    """The expression in words, or None if it is not one lib/cron.py accepts."""
    try:
        spec = parse(expression)
    except CronError:
        return None
    if not spec.can_match():
        return CronWords("Never (no such date)", frozenset(), frozenset(), frozenset(), frozenset(), False)
    time_text, times, listed = _time_words(spec.minutes, spec.hours)
    day_runs = _runs(spec.days)
    week_runs = _runs(spec.weekdays, _WEEK_ORDER)
    month_runs = _runs(spec.months, _YEAR_ORDER)
    days, weekdays, months = _claimed(day_runs), _claimed(week_runs, _WEEK_ORDER), _claimed(month_runs, _YEAR_ORDER)
    either = False
    every_day = (days == ALL_DAYS, weekdays == ALL_WEEKDAYS)
    # Under the AND rule both fields must be full; under OR one full field lets every day in.
    if all(every_day) or (not spec.days_and and any(every_day)):
        day_text = "every day" if listed else ""
        days, weekdays = ALL_DAYS, ALL_WEEKDAYS
    elif not spec.days_and:  # Vixie: neither field starts with '*', so either may match
        day_text = f"on {_month_days(day_runs)}, and on every {_names(week_runs, DAY_NAMES)}"
        either = True
    elif weekdays == ALL_WEEKDAYS:
        day_text = f"on {_month_days(day_runs)}"
    elif days == ALL_DAYS:
        day_text = f"on {_names(week_runs, DAY_NAMES)}"
    elif len(weekdays) == 1 and any(days == frozenset(range(7 * k + 1, 7 * k + 8)) for k in range(4)):
        # Days 7k+1 to 7k+7 hold each weekday exactly once: the (k+1)th of that weekday.
        (weekday,) = weekdays
        day_text = f"on the {ORDINALS[(min(days) - 1) // 7]} {DAY_NAMES[weekday]} of the month"
    else:
        one = "a " if len(weekdays) == 1 else ""
        day_text = f"on {_month_days(day_runs)} that are {one}{_names(week_runs, DAY_NAMES, 'or')}"
    parts = [time_text, day_text]
    if months != ALL_MONTHS:
        parts[-1] += "," if either else ""
        parts.append(f"in {_names(month_runs, ('',) + MONTH_NAMES)}")
    return CronWords(" ".join(part for part in parts if part), times, days, weekdays, months, either)
