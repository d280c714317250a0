"""What base.html shows on every tenant page that tenants.pages cannot know: whether
scheduled backups are starting (the banner)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from scheduling.health import cached_dispatcher_health


def dispatcher_health(request: HttpRequest) -> dict[str, Any]:
    # Lazy: only a page that shows the banner (one inside a tenant) asks; cached per
    # process for a few seconds, so no query on most pages.
    return {"dispatcher_health": SimpleLazyObject(cached_dispatcher_health)}
