"""`{% wall instant %}`: an instant on the viewer's wall clock (or a named zone's), as every page prints it."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.utils import timezone

from lib.wallclock import MINUTES, SECONDS, WALL_FORMAT, wall_text

register = template.Library()


@register.simple_tag
def wall(instant: datetime | None, zone_name: str = "", seconds: bool = False, day: bool = False) -> str:
    """ "2026-03-30 02:30 CDT" in the viewer's zone (ViewerZoneMiddleware), or in `zone_name`;
    `seconds` adds seconds, `day` the weekday. "" for no instant."""
    fmt = SECONDS if seconds else WALL_FORMAT if day else MINUTES
    return wall_text(instant, zone_name or timezone.get_current_timezone(), fmt)
