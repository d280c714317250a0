"""A test oracle for cron expressions, written from crontab(5) and Vixie cron's entry.c, not from lib/cron.py.

It reads a field the way Vixie's get_list/get_range/get_number do: a character
scanner that takes '*' or an alphanumeric word (a number, or a three-letter name
looked up case-insensitively in Vixie's own tables, where Sunday stands at 0
and again at 7), then an optional '-' and a second word, then an optional '/'
and a step (digits only). Values go into a bit list per field; bits 0 and 7 of
the day of week are one day. The day rule is cron.c's: when the day-of-month
or day-of-week field begins with '*', both must match, otherwise either.

On top of Vixie, the refusals the project documents (docs/scheduling.md): both
ends of a range inside the field, no backwards range, no step of 0 or larger
than the field, no @reboot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

MONTH_NAMES = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
DOW_NAMES = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
# (low, high, names) as in Vixie's cron.h FIRST_*/LAST_* and entry.c's name tables.
LIMITS = [(0, 59, None), (0, 23, None), (1, 31, None), (1, 12, MONTH_NAMES), (0, 7, DOW_NAMES)]
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


class Refused(Exception):
    pass


@dataclass
class Entry:
    bits: list[list[bool]]  # minute, hour, dom, month, dow; index = value
    dom_star: bool
    dow_star: bool
    min_star: bool
    hr_star: bool

    def day_ok(self, day: date) -> bool:
        dom, month, dow = self.bits[2], self.bits[3], self.bits[4]
        if not month[day.month]:
            return False
        weekday = day.isoweekday() % 7  # Sunday 0
        if self.dom_star or self.dow_star:
            return dow[weekday] and dom[day.day]
        return dow[weekday] or dom[day.day]

    def matches(self, wall: datetime) -> bool:
        return self.bits[0][wall.minute] and self.bits[1][wall.hour] and self.day_ok(wall.date())

    @property
    def frequent(self) -> bool:
        return self.min_star or self.hr_star


def read_entry(expression: str) -> Entry:
    """Parse, or raise Refused."""
    words = expression.split()
    if len(words) == 1 and words[0].startswith("@"):
        if words[0] not in MACROS:  # entry.c compares them with strcmp: lower case only
            raise Refused
        words = MACROS[words[0]].split()
    if len(words) != 5:
        raise Refused
    bits = [_read_field(word, *limits) for word, limits in zip(words, LIMITS, strict=True)]
    if bits[4][0] or bits[4][7]:
        bits[4][0] = bits[4][7] = True
    return Entry(bits, words[2][0] == "*", words[4][0] == "*", words[0][0] == "*", words[1][0] == "*")


def _read_field(text: str, low: int, high: int, names: list[str] | None) -> list[bool]:
    bits = [False] * (high + 1)
    scanner = _Scanner(text)
    while True:
        _read_range(scanner, bits, low, high, names)
        ch = scanner.take()
        if ch == "":
            return bits
        if ch != ",":
            raise Refused


def _read_range(scanner: _Scanner, bits: list[bool], low: int, high: int, names: list[str] | None) -> None:
    if scanner.peek() == "*":
        scanner.take()
        first, last = low, high
    else:
        first = _read_number(scanner, low, names)
        if scanner.peek() != "-":
            if scanner.peek() == "/":  # Vixie: a lone number cannot take a step
                raise Refused
            _check(first, low, high)
            bits[first] = True
            return
        scanner.take()
        last = _read_number(scanner, low, names)
    _check(first, low, high)
    _check(last, low, high)
    if last < first:
        raise Refused
    step = 1
    if scanner.peek() == "/":
        scanner.take()
        step = _read_number(scanner, 0, None)
        if step == 0 or step > high - low + 1:
            raise Refused
    value = first
    while value <= last:
        bits[value] = True
        value += step


def _read_number(scanner: _Scanner, low: int, names: list[str] | None) -> int:
    word = ""
    while scanner.peek() != "" and scanner.peek() in "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ":
        word += scanner.take()
    if word == "":
        raise Refused
    if names:
        for index, name in enumerate(names):
            if name.lower() == word.lower():
                return index + low
    if all(ch in "0123456789" for ch in word) and len(word) < 10:
        return int(word)
    raise Refused


def _check(value: int, low: int, high: int) -> None:
    if value < low or value > high:
        raise Refused


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def peek(self) -> str:
        return self.text[self.at : self.at + 1]

    def take(self) -> str:
        ch = self.peek()
        self.at += len(ch)
        return ch
