"""When the dispatcher's minute passes happen, for telling people when something starts.

The clock (scheduling/clock.py) starts one pass OFFSET_SECONDS after every minute
boundary. A waiting automatic retry is released by the first pass whose "now" is at
or after its `not_before`, so that pass, not `not_before`, is when it starts.
"""

from __future__ import annotations

from datetime import datetime, timedelta

# After the boundary, so a slot due at :00 is due by the time the pass looks.
OFFSET_SECONDS = 0.5


def first_pass_at(instant: datetime) -> datetime:
    """The start of the first pass at or after `instant`."""
    this_minute = instant.replace(second=0, microsecond=0) + timedelta(seconds=OFFSET_SECONDS)
    return this_minute if this_minute >= instant else this_minute + timedelta(minutes=1)
