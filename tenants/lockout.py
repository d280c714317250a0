"""Login throttling around django-axes: who the client is, and the audit entry of a lock.

A lock is not any one tenant's event, yet the audit log is per tenant (AuditLog.tenant
is required). So a locked username that belongs to a user gets one entry in each tenant
that user is a member of, where that tenant's members see it; a lock of an unknown
username, or of a user in no tenant, is only logged (logger "tenants.lockout").
The password tried is never recorded (axes leaves it out too).
"""

from __future__ import annotations

import logging
from typing import Any

from axes.helpers import get_failure_limit
from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth import get_user_model
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
    limit = get_failure_limit(request, getattr(request, "axes_credentials", None))
    # axes signals again on every attempt during the lock; only the one that locked counts.
    if getattr(request, "axes_failures_since_start", limit) != limit:
        return
    minutes = _lock_minutes()
    user = get_user_model().objects.filter(username=username).first() if username else None
    tenant_ids = list(Membership.objects.filter(user=user).values_list("tenant_id", flat=True)) if user else []
    log.warning(
        "login locked for %d minutes after %d failures: username %r, address %s, path %s",
        minutes,
        limit,
        username,
        ip_address,
        request.path,
    )
    for tenant_id in tenant_ids:
        record(
            tenant_id,
            AuditAction.LOGIN_LOCKED,
            user,
            ip_address=ip_address,
            failures=limit,
            locked_minutes=minutes,
            login_page="admin" if request.path == reverse("admin:login") else "app",
        )
