"""The viewer's time zone for the whole request, so every page prints times on the viewer's clock."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from lib.slots import zone
from lib.wallclock import TZ_COOKIE, viewer_zone_name


class ViewerZoneMiddleware:
    """Activates the zone the browser's `tz` cookie names (UTC without one): `localtime`, the
    `date` filter and lib.wallclock's texts then read in it on every page, htmx parts included.
    Reads a cookie only: no query."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        timezone.activate(zone(viewer_zone_name(request.COOKIES.get(TZ_COOKIE))))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
