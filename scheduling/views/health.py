"""/healthz: for load balancers and uptime monitors, no login. It tells whether the
database answers and whether scheduled backups are starting (scheduling/health.py);
it names no tenant and no schedule."""

from __future__ import annotations

from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from scheduling.health import dispatcher_health


@require_safe
@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        health = dispatcher_health()
    except DatabaseError:
        return JsonResponse({"ok": False, "database": "unreachable", "dispatcher": None}, status=503)
    return JsonResponse(
        {"ok": health.ok, "database": "ok", "dispatcher": health.as_json()}, status=200 if health.ok else 503
    )
