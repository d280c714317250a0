"""Instants as a person reads them: on the wall clock of a zone, the viewer's or a schedule's.

Pure Python, no Django: the pages of every app (schedules, runs, the audit log,
notifications) print times through this one module, so they all agree, DST edges
included.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta, tzinfo
from urllib.parse import unquote

from lib.slots import InvalidCadence, all_zone_names, zone

# Set by static/js/app.js from Intl.DateTimeFormat, URL-encoded as a cookie value must be
# ("America%2FChicago"); read only if it names a real zone.
TZ_COOKIE = "tz"
# The longest IANA name is 32 characters; anything much longer is not worth decoding.
MAX_COOKIE_LENGTH = 100

# strftime rather than Django's `date` filter: a list of a hundred rows calls this twice a
# row (the filter costs several times as much), and the filter prints no abbreviation in an
# hour the clocks repeat, where the abbreviation is what tells "01:30 EDT" from "01:30 EST".
WALL_FORMAT = "%a %Y-%m-%d %H:%M %Z"
MINUTES = "%Y-%m-%d %H:%M %Z"
SECONDS = "%Y-%m-%d %H:%M:%S %Z"


def viewer_zone_name(cookie: str | None) -> str:
    """The zone a `tz` cookie names, exactly as the browser sends it (URL-encoded); UTC when
    it is absent, garbled or not a zone a schedule could use (lib/zones.py: every IANA name,
    links such as Asia/Calcutta included, never localtime, Factory or posixrules)."""
    if not cookie or len(cookie) > MAX_COOKIE_LENGTH:
        return "UTC"
    name = unquote(cookie).strip()
    if name not in all_zone_names():
        return "UTC"
    return name


def wall_text(instant: datetime | None, zone_name: str | tzinfo, fmt: str = WALL_FORMAT) -> str:
    """The instant on the wall clock of a zone, e.g. "Mon 2026-03-30 02:30 CEST"; "" for none."""
    if instant is None:
        return ""
    if isinstance(zone_name, tzinfo):
        tz: tzinfo = zone_name
    else:
        try:
            tz = zone(zone_name)
        except InvalidCadence:  # not a zone: nothing rather than a wrong time
            return ""
    return instant.astimezone(tz).strftime(fmt)


# The worker stamps each log line with the UTC time of day (backups.runlog.RunLog).
_LOG_STAMP = re.compile(r"(\d\d):(\d\d):(\d\d) ")
# A stamp up to this much later than the line after it is taken as the same day: lines
# from a second thread, or a clock a little apart, are not a midnight.
_SAME_DAY_SLACK = 600


def log_on_clock(log: str, written_until: datetime, zone_name: str) -> str:
    """A run's log with each line's stamp (HH:MM:SS, UTC) on the wall clock of `zone_name`.

    The stamps carry no date, and a shown log may be only its tail, so the days are found
    walking back from when the log was last written (`written_until`: the run's end, or now
    while it runs): a stamp later in the day than the line after it crossed a midnight."""
    if zone_name == "UTC" or not log:
        return log
    tz = zone(zone_name)
    anchor = written_until.astimezone(UTC)
    day, after = anchor.date(), _seconds(anchor.time())
    lines = log.split("\n")
    for index in range(len(lines) - 1, -1, -1):
        match = _LOG_STAMP.match(lines[index])
        if match is None:
            continue
        try:
            stamp = time(int(match[1]), int(match[2]), int(match[3]))
        except ValueError:  # not a stamp of ours
            continue
        if _seconds(stamp) - after > _SAME_DAY_SLACK:
            day -= timedelta(days=1)
        after = _seconds(stamp)
        local = datetime.combine(day, stamp, tzinfo=UTC).astimezone(tz)
        lines[index] = local.strftime("%H:%M:%S") + lines[index][8:]
    return "\n".join(lines)


def _seconds(moment: time) -> int:
    return moment.hour * 3600 + moment.minute * 60 + moment.second
