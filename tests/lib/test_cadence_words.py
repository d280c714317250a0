"""A cron cadence in words must say exactly the days and times the product runs.

The words are checked two ways against a year of the product's own slots
(lib.slots.next_slot, in UTC so no DST shift moves a day): the structured claim
`cron_words` returns (days, weekdays, months, AND or OR, times), and the English
itself, read back by `read_words` below, a reader written from the wording's
grammar (the phrases listed in its docstring), not from lib/cron_words.py. Which
days a claim means is worked out here from crontab(5)'s rule, not by lib.cron.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from itertools import product
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, example, given, settings

from lib.cron_words import cron_words
from lib.slots import Cadence, next_slot
from scheduling.models import BackupSchedule, ScheduleKind
from scheduling.presentation import describe_cadence
from tests.cron_strategies import expressions, frequent_days

YEAR = 2027
WEEKDAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]  # fmt: skip
TIMES_CHECKED_ON = 2  # run days whose every slot is compared (a frequent cron has 1,440 a day)


# ------------------------------------------------------------------ what the product runs


def _cursor(day: date, tz: tzinfo = UTC) -> datetime:
    """The last minute before `day` starts in `tz`: next_slot looks strictly after it."""
    return datetime.combine(day, time(0, 0), tzinfo=tz).astimezone(UTC) - timedelta(minutes=1)


def run_days(expression: str, zone_name: str = "UTC") -> set[date]:
    """The days (on the zone's calendar) with at least one slot in YEAR."""
    cadence, tz = Cadence(kind="cron", tz=zone_name, cron=expression), ZoneInfo(zone_name)
    days: set[date] = set()
    cursor = _cursor(date(YEAR, 1, 1), tz)
    while (slot := next_slot(cadence, cursor)) is not None and (local := slot.astimezone(tz).date()).year == YEAR:
        days.add(local)
        cursor = _cursor(local + timedelta(days=1), tz)  # one slot tells the day runs
    return days


def run_times(expression: str, day: date) -> set[tuple[int, int]]:
    cadence = Cadence(kind="cron", tz="UTC", cron=expression)
    times: set[tuple[int, int]] = set()
    cursor = _cursor(day)
    while (slot := next_slot(cadence, cursor)) is not None and slot.date() == day:
        times.add((slot.hour, slot.minute))
        cursor = slot
    return times


# ------------------------------------------------------------------ what the words say


def claimed_days(months: set[int], days: set[int], weekdays: set[int], either: bool) -> set[date]:
    """crontab(5): the month must match; then day-of-month and day-of-week, both or (`either`) one."""
    found = set()
    day = date(YEAR, 1, 1)
    while day.year == YEAR:
        in_days, in_weekdays = day.day in days, day.isoweekday() % 7 in weekdays
        if day.month in months and ((in_days or in_weekdays) if either else (in_days and in_weekdays)):
            found.add(day)
        day += timedelta(days=1)
    return found


def _numbers(text: str) -> set[int]:
    """ "1–7 and 15", "0, 7, 14, …, 56" (a series: the step from the first two)."""
    if "…" in text:
        shown = [int(part) for part in re.split(r", …, |, ", text)]
        return set(range(shown[0], shown[-1] + 1, shown[1] - shown[0]))
    values: set[int] = set()
    for part in re.split(r", | and ", text):
        first, _, last = part.partition("–")
        values.update(range(int(first), int(last or first) + 1))
    return values


def _names(text: str, names: list[str], base: int, joiner: str = "and") -> set[int]:
    """ "Monday to Friday and Sunday"; a range runs in reading order (Monday first for days)."""
    values: set[int] = set()
    order = names[1:] + names[:1] if base == 0 else names
    for part in re.split(rf", | {joiner} ", text):
        first, _, last = part.partition(" to ")
        start, end = order.index(first), order.index(last or first)
        values.update((names.index(order[i]) + base) for i in range(start, end + 1))
    return values


def _hhmm(text: str) -> tuple[int, int]:
    hour, minute = text.split(":")
    return int(hour), int(minute)


def _month_days(text: str) -> set[int]:
    if text.startswith("odd days of the month"):
        return set(range(1, 32, 2))
    if text.startswith("even days of the month"):
        return set(range(2, 32, 2))
    match = re.fullmatch(r"days? (.+) of the month", text)
    assert match, text
    return _numbers(match[1])


def read_times(text: str) -> set[tuple[int, int]]:
    """The time phrases: "At 02:05 and 14:05"; "Every hour at minute 5"; "Every [N hours|hour]
    from 09:30 to 17:30"; "At minute 5 past hours 1–3"; "Every minute", "Every N minutes",
    "At minutes 0–5", each optionally "in hour[s] <numbers>"."""
    all_hours, all_minutes = set(range(24)), set(range(60))
    if match := re.fullmatch(r"At (\d\d:\d\d(?:(?:, | and )\d\d:\d\d)*)", text):
        return {_hhmm(part) for part in re.split(r", | and ", match[1])}
    if match := re.fullmatch(r"Every hour at minute (\d+)", text):
        return set(product(all_hours, {int(match[1])}))
    if match := re.fullmatch(r"Every (?:hour|(\d+) hours) from (\d\d:\d\d) to (\d\d:\d\d)", text):
        (first, minute), (last, _) = _hhmm(match[2]), _hhmm(match[3])
        return set(product(range(first, last + 1, int(match[1] or 1)), {minute}))
    if match := re.fullmatch(r"At minute (\d+) past hours (.+)", text):
        return set(product(_numbers(match[2]), {int(match[1])}))
    match = re.fullmatch(r"(Every minute|Every (\d+) minutes|At minutes (.+?))(?: in hours? (.+))?", text)
    assert match, text
    minutes = all_minutes if match[1] == "Every minute" else set()
    minutes |= set(range(0, 60, int(match[2]))) if match[2] else set()
    minutes |= _numbers(match[3]) if match[3] else set()
    return set(product(_numbers(match[4]) if match[4] else all_hours, minutes))


def read_words(text: str) -> tuple[set[tuple[int, int]], set[date]]:
    """The English read back: (times of day, days of YEAR). Days: "every day" or nothing;
    "on <weekdays>"; "on <days of month>"; "on <days of month>, and on every <weekdays>" (OR);
    "on <days of month> that are [a ]<weekdays joined by or>"; "on the first <weekday> of the
    month"; then "in <months>"."""
    months, days, weekdays, either = set(range(1, 13)), set(range(1, 32)), set(range(7)), False
    if match := re.fullmatch(r"(.+?),? in ([A-Z][a-z]+(?:(?:, | and | to )[A-Z][a-z]+)*)", text):
        text, months = match[1], _names(match[2], MONTHS, 1)
    match = re.fullmatch(r"(.+?)(?: every day| on (.+))?", text)
    assert match, text
    head, day_text = match[1], match[2]
    if day_text:
        ordinal = re.fullmatch(r"the (first|second|third|fourth) ([A-Z][a-z]+) of the month", day_text)
        either_match = re.fullmatch(r"(.+), and on every (.+)", day_text)
        and_match = re.fullmatch(r"(.+) that are (?:a )?(.+)", day_text)
        if ordinal:
            week = ["first", "second", "third", "fourth"].index(ordinal[1])
            days, weekdays = set(range(7 * week + 1, 7 * week + 8)), {WEEKDAYS.index(ordinal[2])}
        elif either_match:
            days, weekdays, either = _month_days(either_match[1]), _names(either_match[2], WEEKDAYS, 0), True
        elif and_match:
            days, weekdays = _month_days(and_match[1]), _names(and_match[2], WEEKDAYS, 0, "or")
        elif "of the month" in day_text:
            days = _month_days(day_text)
        else:
            weekdays = _names(day_text, WEEKDAYS, 0)
    return read_times(head), claimed_days(months, days, weekdays, either)


def assert_words_tell_the_truth(expression: str) -> None:
    words = cron_words(expression)
    assert words is not None, expression
    days = run_days(expression)
    claimed = claimed_days(set(words.months), set(words.days), set(words.weekdays), words.either)
    assert claimed == days, (expression, words)
    read_times_, read_days = read_words(words.text)
    assert read_days == days, (expression, words.text)
    for day in sorted(days)[:TIMES_CHECKED_ON]:
        assert words.times == run_times(expression, day) == read_times_, (expression, words.text)


# ------------------------------------------------------------------ the checks


HAND_PICKED = [
    "1 1 1-7 * */7", "0 0 */2 * 1-5", "0 0 1,15 * 1", "0 4 15 * sun", "30 2 * * 1-5", "0 0 1-7 * 1",
    "0 0 8-14 * */7", "0 0 22-28 * */7,7", "0 0 * * 5-7", "0 0 * * 7", "0 0 * * sat,sun,mon", "0 0 1-31 * 1",
    "0 0 1 jan-mar,jul 1", "0 0 */3 * *", "0 0 2-31/2 * *", "0 0 1-10/4 * *", "0 0 29 2 *", "0 0 31 * *",
    "*/7 * * * *", "*/15 9-17 * * mon-fri", "0 */2 * * *", "0 9-17 * * *", "0 1,3,5,7-9 * * *", "30 2-2 * * *",
    "5,35 2,14 * * *", "0-5 1 * * *", "* * * * *", "@yearly", "@monthly", "@weekly", "@daily", "@hourly",
    "0 0 */2 * */2", "0 0 1-7,15 * */7", "0 0 5-5 JUN Sun", "0-49/7 * * * *", "0-55/5 * * * *",
]  # fmt: skip


@pytest.mark.parametrize("expression", HAND_PICKED)
def test_hand_picked_words_say_the_days_and_times_the_product_runs(expression: str) -> None:
    assert_words_tell_the_truth(expression)


@pytest.mark.parametrize(
    ("expression", "skipped"),
    [
        ("30 2 * * */7", set()),
        ("0 0 1-7 * */7", set()),
        ("0 2 29-31 3,10 *", set()),
        # Debian's rule for a job whose minute or hour starts with '*' (docs/scheduling.md, DST
        # rules): its times in the gap do not exist, so it does not run that day.
        ("*/20 2 * * *", {date(YEAR, 3, 28)}),
    ],
)
def test_the_words_keep_their_days_across_dst_changes(expression: str, skipped: set[date]) -> None:
    """Berlin's clocks jump over 02:00-03:00 on the last Sunday of March (28 March 2027) and repeat
    it on the last Sunday of October: a fixed-time 02:30 slot moves to 03:00 or runs once, the same day."""
    words = cron_words(expression)
    assert words is not None
    claimed = claimed_days(set(words.months), set(words.days), set(words.weekdays), words.either)
    assert claimed == read_words(words.text)[1]
    assert run_days(expression, "Europe/Berlin") == claimed - skipped


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=expressions(valid=True))
def test_generated_words_say_the_days_and_times_the_product_runs(expression: str) -> None:
    words = cron_words(expression)
    assume(words is not None and words.text != "Never (no such date)")  # the form refuses those
    assert_words_tell_the_truth(expression)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(day_fields=frequent_days())
@example(("1-7", "*/7"))
@example(("*/2", "1-5"))
def test_generated_day_fields_in_words_say_the_days_the_product_runs(day_fields: tuple[str, str]) -> None:
    assert_words_tell_the_truth(f"0 3 {day_fields[0]} * {day_fields[1]}")


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        # cron_descriptor said "between day 1 and 7 of the month, every 7 days of the week".
        ("1 1 1-7 * */7", "At 01:01 on the first Sunday of the month"),
        ("0 0 */2 * 1-5", "At 00:00 on odd days of the month (1, 3, 5, …) that are Monday to Friday"),
        ("0 0 1,15 * 1", "At 00:00 on days 1 and 15 of the month, and on every Monday"),
        ("0 0 1-7,15 * */7", "At 00:00 on days 1–7 and 15 of the month that are a Sunday"),
        (
            "0 0 */2 * */2",
            "At 00:00 on odd days of the month (1, 3, 5, …) that are Tuesday, Thursday, Saturday or Sunday",
        ),
        ("0 0 1-31 * 1", "At 00:00 every day"),  # both restricted: a full day-of-month lets every day in
        ("0 0 * * 5-7", "At 00:00 on Friday to Sunday"),  # 7 is Sunday
        ("0 0 5-5 JUN Sun", "At 00:00 on day 5 of the month, and on every Sunday, in June"),
        ("0 0 1-10/4 * *", "At 00:00 on days 1, 5 and 9 of the month"),
        ("0 0 */3 * *", "At 00:00 on days 1, 4, 7, …, 31 of the month"),
        ("30 2-2 * * *", "At 02:30 every day"),
        ("*/7 * * * *", "At minutes 0, 7, 14, …, 56"),  # not "every 7 minutes": 56 is followed by 0
        ("0-49/7 * * * *", "At minutes 0, 7, 14, …, 49"),
        ("0-55/5 * * * *", "Every 5 minutes"),
        ("*/15 9-17 * * mon-fri", "Every 15 minutes in hours 9–17 on Monday to Friday"),
        ("0 */2 * * *", "Every 2 hours from 00:00 to 22:00"),
        ("@yearly", "At 00:00 on day 1 of the month in January"),
        ("@weekly", "At 00:00 on Sunday"),
        ("@hourly", "Every hour at minute 0"),
    ],
)
def test_the_words_for_each_wording(expression: str, words: str) -> None:
    described = cron_words(expression)
    assert described is not None and described.text == words


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("1 1 1-7 * */7", "At 01:01 on the first Sunday of the month"),
        ("0 0 */2 * 1-5", "At 00:00 on odd days of the month (1, 3, 5, …) that are Monday to Friday"),
    ],
)
def test_a_cron_cadence_shows_its_words_beside_the_expression(expression: str, words: str) -> None:
    schedule = BackupSchedule(kind=ScheduleKind.CRON, cron=expression, timezone="Europe/Oslo")
    assert describe_cadence(schedule) == f"{words}, Europe/Oslo <code>{expression}</code>"


def test_a_refused_expression_shows_only_itself() -> None:
    schedule = BackupSchedule(kind=ScheduleKind.CRON, cron="0 0 L * *", timezone="UTC")
    assert cron_words("0 0 L * *") is None
    assert describe_cadence(schedule) == "Cron <code>0 0 L * *</code>, UTC"
