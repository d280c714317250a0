"""Login throttling around django-axes: who the client is, and the audit entry of a lock.

A lock is not any one tenant's event, yet the audit log is per tenant (AuditLog.tenant
is required). So a locked username that belongs to a user gets one entry in each tenant
that user is a member of, where that tenant's members see it; a lock of an address (many
usernames tried from one place), of an unknown username, or of a user in no tenant is
only logged (logger "tenants.lockout").
The password tried is never recorded (axes leaves it out too).
"""

from __future__ import annotations

import logging
from typing import Any

from axes.helpers import get_failure_limit
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Sum
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from tenants.audit import record
from tenants.models import AuditAction, Membership

log = logging.getLogger(__name__)


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT proxies that each
    append to X-Forwarded-For, the address the outermost of them saw. Entries further
    left were written by the client and are never believed."""
    count = settings.TRUSTED_PROXY_COUNT
    remote = request.META.get("REMOTE_ADDR")
    if not count:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    return forwarded[-count] if len(forwarded) >= count else remote


def lockout_page(request: HttpRequest, original_response: Any = None, credentials: Any = None) -> HttpResponse:
    """The page a locked-out login gets: 429 and how long to wait (no hint whether the user exists)."""
    return render(
        request,
        "registration/locked_out.html",
        {"minutes": _lock_minutes(), "failure_limit": get_failure_limit(request, credentials)},
        status=429,
    )


def _lock_minutes() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)


@receiver(user_locked_out, dispatch_uid="tenants.lockout.audit")
def audit_lockout(sender: Any, request: HttpRequest, username: str | None, ip_address: str | None, **kw: Any) -> None:
    """axes signals on every failed try while a username or an address is locked; each
    lock is told once, on the try that reached the limit for that username or address."""
    limit = get_failure_limit(request, getattr(request, "axes_credentials", None))
    minutes = _lock_minutes()
    page = "admin" if request.path == reverse("admin:login") else "app"
    if _failures(ip_address=ip_address) == limit:
        log.warning(
            "login locked for %d minutes: address %s after %d failures (%s login)", minutes, ip_address, limit, page
        )
    if not username or _failures(username=username) != limit:
        return
    log.warning("login locked for %d minutes: username %r after %d failures (%s login)", minutes, username, limit, page)
    user = get_user_model().objects.filter(username=username).first()
    for tenant_id in Membership.objects.filter(user=user).values_list("tenant_id", flat=True) if user else []:
        record(
            tenant_id,
            AuditAction.LOGIN_LOCKED,
            user,
            ip_address=ip_address,
            failures=limit,
            locked_minutes=minutes,
            login_page=page,
        )


def _failures(**parameter: str | None) -> int:
    """Failed logins counted for one lockout parameter (a username, or an address) now."""
    attempts = AccessAttempt.objects.filter(**parameter)
    return attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
