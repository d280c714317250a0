"""Which time zone names a schedule may use, and which the zone pickers offer. Pure Python.

Accepted: every IANA name of the tz database, links included (a browser may report
Asia/Calcutta, an old schedule may say US/Eastern), except the names that are no
place: 'localtime' (each node's own /etc/localtime, so nodes would disagree),
'Factory' (tzdata's "zone not set" placeholder) and 'posixrules' (a build
default). Offered: the canonical zones, one line each in the tz database's
zone1970.tab and zone.tab (the latter keeps Europe/Oslo next to Europe/Berlin),
plus UTC.
"""

from __future__ import annotations

import zoneinfo
from functools import lru_cache
from importlib import resources
from pathlib import Path

NOT_ZONES = frozenset({"localtime", "Factory", "posixrules"})
TABLES = ("zone1970.tab", "zone.tab")


@lru_cache(maxsize=1)
def accepted_zone_names() -> frozenset[str]:
    return frozenset(
        name
        for name in zoneinfo.available_timezones()
        if name not in NOT_ZONES and not name.startswith(("posix/", "right/"))
    )


@lru_cache(maxsize=1)
def offered_zone_names() -> tuple[str, ...]:
    """Sorted; falls back to every accepted name where the tables cannot be found."""
    accepted = accepted_zone_names()
    names = {"UTC"} | {name for text in _tables() for name in _table_zones(text)}
    offered = names & accepted
    return tuple(sorted(offered if len(offered) > 1 else accepted))


def _table_zones(text: str) -> set[str]:
    # Tab-separated: country code(s), coordinates, zone name, comment.
    return {line.split("\t")[2] for line in text.splitlines() if line and not line.startswith("#")}


def _tables() -> list[str]:
    """The zone tables of the tz database zoneinfo reads: the system's, or the tzdata package's."""
    for directory in zoneinfo.TZPATH:
        found = [Path(directory, table) for table in TABLES if Path(directory, table).is_file()]
        if found:
            return [path.read_text(encoding="utf-8") for path in found]
    try:
        package = resources.files("tzdata.zoneinfo")
        return [package.joinpath(table).read_text(encoding="utf-8") for table in TABLES]
    except (ModuleNotFoundError, FileNotFoundError, OSError):
        return []
