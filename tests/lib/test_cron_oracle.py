"""Property tests: lib.cron against the Vixie oracle in tests/vixie_oracle.py.

Two questions, each over hypothesis-generated expressions: does the product accept
exactly what the grammar accepts, and does an accepted expression match exactly the
wall times the grammar says, for years ahead (so day-of-month, day-of-week and
month rules show, which a week-long brute force in test_slots_oracle.py cannot)?
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from lib import cron
from tests.cron_strategies import expressions, number
from tests.vixie_oracle import Refused, read_entry

WALLS = 30
HORIZON_YEARS = 40  # 29 February on one weekday recurs within this


def oracle_walls(expression: str, start: datetime) -> list[datetime]:
    entry = read_entry(expression)
    found: list[datetime] = []
    day = start.date()
    while len(found) < WALLS and day.year <= start.year + HORIZON_YEARS:
        if entry.day_ok(day):
            for hour in range(24):
                for minute in range(60):
                    wall = datetime(day.year, day.month, day.day, hour, minute)
                    if wall > start and entry.matches(wall) and len(found) < WALLS:
                        found.append(wall)
        day += timedelta(days=1)
    return found


def product_walls(expression: str, start: datetime) -> list[datetime]:
    found: list[datetime] = []
    for wall in cron.parse(expression).walls_after(start):
        if wall.year > start.year + HORIZON_YEARS or len(found) == WALLS:
            break
        found.append(wall)
    return found


starts = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 12, 31))


@settings(max_examples=600, deadline=None)
@given(expression=expressions(valid=False) | expressions(valid=True))
@example("30 2-2 * * *")
@example("0 22-2 * * *")
@example("*/61 * * * *")
@example("R 2 * * *")
@example("0 0 * jan-Mar sun-sat/2")
def test_it_accepts_exactly_what_the_grammar_accepts(expression: str) -> None:
    try:
        read_entry(expression)
        oracle_accepts = True
    except Refused:
        oracle_accepts = False
    try:
        cron.parse(expression)
        accepted, message = True, ""
    except cron.CronError as exc:
        accepted, message = False, str(exc)
    assert accepted == oracle_accepts, (expression, message)
    if not accepted:  # our own sentence, not a library's
        assert message.endswith(".") and "not acceptable" not in message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=expressions(valid=True), start=starts)
@example("1 1 1-7 * */7", datetime(2026, 1, 1))
@example("0 0 */2 * 1-5", datetime(2026, 1, 1))
@example("0 0 29 2 */7", datetime(2005, 1, 1))
def test_accepted_expressions_match_the_wall_times_the_grammar_says(expression: str, start: datetime) -> None:
    assert product_walls(expression, start) == oracle_walls(expression, start), expression


@pytest.mark.parametrize(
    ("expression", "first"),
    [
        ("1 1 1-7 * */7", ["2026-01-04 01:01", "2026-02-01 01:01", "2026-03-01 01:01"]),  # first Sunday
        ("0 0 */2 * 1-5", ["2026-01-01 00:00", "2026-01-05 00:00", "2026-01-07 00:00"]),  # odd days, Mon-Fri
        ("0 0 1-7 * 1", ["2026-01-01 00:00", "2026-01-02 00:00", "2026-01-03 00:00"]),  # OR: both restricted
    ],
)
def test_the_oracle_itself_reads_the_day_rule_as_crontab_5_says(expression: str, first: list[str]) -> None:
    """The oracle is checked against hand-worked calendars (January 2026 starts on a Thursday)."""
    walls = oracle_walls(expression, datetime(2026, 1, 1) - timedelta(minutes=1))
    assert [wall.strftime("%Y-%m-%d %H:%M") for wall in walls[:3]] == first


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expression=expressions(valid=True), start=starts)
def test_a_second_opinion_healthchecks_cronsim_reads_them_alike(expression: str, start: datetime) -> None:
    """cronsim follows Debian cron too; where the oracle and lib/cron.py share a misreading, it would differ.

    Except in one place, where cronsim departs from Vixie: it reads a one-value range with a
    step, `0-0/1`, as `0/1` (every value from 0), the way croniter reads `2-2`.
    """
    from cronsim import CronSim

    assume(not _one_value_range_with_step(expression))

    theirs: list[datetime] = []
    for wall in CronSim(expression, start.replace(second=0)):  # naive: plain calendar walk, no DST fix-up
        if wall.year > start.year + HORIZON_YEARS or len(theirs) == WALLS:
            break
        theirs.append(wall)
    assert product_walls(expression, start.replace(second=0)) == theirs, expression


def _one_value_range_with_step(expression: str) -> bool:
    for index, text in enumerate(expression.split()):
        for item in text.split(","):
            body, slash, _ = item.partition("/")
            first, dash, last = body.partition("-")
            if slash and dash and number(first, index) == number(last, index):
                return True
    return False


def test_cronsim_departs_from_vixie_on_a_one_value_range_with_a_step() -> None:
    """Why the second opinion skips those: Vixie's loop from 0 to 0 sets hour 0 only."""
    from cronsim import CronSim

    start = datetime(2026, 1, 1)
    assert [wall.hour for wall in product_walls("0 0-0/1 * * *", start)[:2]] == [0, 0]
    assert [wall.hour for wall in oracle_walls("0 0-0/1 * * *", start)[:2]] == [0, 0]
    assert next(CronSim("0 0-0/1 * * *", start)).hour == 1
