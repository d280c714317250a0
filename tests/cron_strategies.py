"""Hypothesis strategies for cron expressions: Vixie's grammar, valid or deliberately not."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.vixie_oracle import DOW_NAMES, LIMITS, MONTH_NAMES

# Things other crons accept and ours must refuse, and plain typos.
JUNK = ["R", "H", "H/15", "r(0-5)", "L", "LW", "15W", "5L", "3#2", "?", "5/10", "*-3", "-5", "", "1-", "mon-", "0x1",
        "99999999", "*5", "1--2", "1-2-3", "*/", "/5", "2/", "monday", "１"]  # fmt: skip


def _case(draw: st.DrawFn, name: str) -> str:
    return "".join(ch.upper() if draw(st.booleans()) else ch.lower() for ch in name)


@st.composite
def value(draw: st.DrawFn, field: int, valid: bool, near: list[int] | None = None) -> str:
    low, high, names = LIMITS[field]
    if names and draw(st.integers(0, 3)) == 0:
        return _case(draw, draw(st.sampled_from(MONTH_NAMES if field == 3 else DOW_NAMES)))
    if near and draw(st.booleans()):
        return str(draw(st.sampled_from(near)))
    number = draw(st.integers(low, high) if valid else st.integers(max(0, low - 2), high + 3))
    return f"0{number}" if draw(st.integers(0, 9)) == 0 else str(number)  # Vixie reads 05 as 5


def number(text: str, field: int) -> int:
    """A value as the grammar reads it: a number, or a name's number."""
    names = LIMITS[field][2]
    for index, name in enumerate(names or []):
        if name.lower() == text.lower():
            return index + LIMITS[field][0]
    return int(text)


@st.composite
def item(draw: st.DrawFn, field: int, valid: bool, near: list[int] | None = None) -> str:
    low, high, _ = LIMITS[field]
    size = high - low + 1
    if not valid and draw(st.integers(0, 5)) == 0:
        return draw(st.sampled_from(JUNK))
    step = draw(st.integers(1, size) if valid else st.sampled_from([0, 1, 2, 3, size - 1, size, size + 1, 1000]))
    shape = draw(st.sampled_from(["*", "*/n", "a", "a", "a-b", "a-b/n"]))
    if shape == "*":
        return "*"
    if shape == "*/n":
        return f"*/{step}"
    a = draw(value(field, valid, near))
    if shape == "a":
        return a
    b = draw(value(field, valid, near))
    if valid and number(b, field) < number(a, field):
        a, b = b, a
    return f"{a}-{b}" if shape == "a-b" else f"{a}-{b}/{step}"


@st.composite
def field_text(draw: st.DrawFn, field: int, valid: bool, near: list[int] | None = None) -> str:
    return ",".join(draw(st.lists(item(field, valid, near), min_size=1, max_size=3)))


@st.composite
def expressions(draw: st.DrawFn, valid: bool = True, hours: list[int] | None = None) -> str:
    """Five fields; with valid=False, often not a cron expression at all."""
    if not valid and draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(["@daily", "@HOURLY", "@weekly", "@monthly", "@yearly", "@annually",
                                     "@midnight", "@reboot", "@every", "1 2 3 4", "1 2 3 4 5 6", ""]))  # fmt: skip
    fields = [draw(field_text(index, valid, hours if index == 1 else None)) for index in range(5)]
    return " ".join(fields)


@st.composite
def frequent_days(draw: st.DrawFn) -> tuple[str, str]:
    """Day fields that match often enough for a week-long brute-force search, both day rules."""
    dom = draw(st.sampled_from(["*", "*", "*/2", "*/3", "1-15", "*/10,20-31"]) | field_text(2, True))
    dow = draw(st.sampled_from(["*", "*", "1-5", "*/7", "mon-fri", "SAT,sun", "0", "7", "*/2"]) | field_text(4, True))
    return dom, dow
