"""How long an automatic retry waits: capped exponential backoff with full jitter.

Full jitter (a uniform draw between 0 and the capped exponential) spreads the
retries of many runs that failed together (a database server restarting at 02:00
fails every schedule pointing at it), so they do not all come back in the same
second and fail again the same way. See the AWS Architecture Blog, "Exponential
Backoff And Jitter".
"""

from __future__ import annotations

import random
from datetime import timedelta

BASE_SECONDS = 30.0
FACTOR = 2.0
CAP_SECONDS = 15 * 60.0


def backoff_ceiling(
    attempt: int, base: float = BASE_SECONDS, factor: float = FACTOR, cap: float = CAP_SECONDS
) -> float:
    """The longest wait after failed attempt number `attempt` (1 = the first run)."""
    if attempt < 1:
        raise ValueError("attempts are counted from 1")
    # min() before the power would be wrong; the exponent is bounded instead, so a
    # large attempt number cannot overflow a float.
    exponent = min(attempt - 1, 64)
    return min(cap, base * factor**exponent)


def backoff_delay(
    attempt: int,
    rng: random.Random | None = None,
    base: float = BASE_SECONDS,
    factor: float = FACTOR,
    cap: float = CAP_SECONDS,
) -> timedelta:
    """A random wait in [0, backoff_ceiling(attempt)] before the next attempt."""
    ceiling = backoff_ceiling(attempt, base, factor, cap)
    draw = (rng or random).uniform(0.0, ceiling)
    return timedelta(seconds=draw)
