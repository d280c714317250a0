"""Home (tenant switcher), the audit log, and what every tenant page shares."""

from __future__ import annotations

import json
from typing import Any, TypeVar
from uuid import UUID

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Page, Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.vary import vary_on_headers
from django_htmx.middleware import HtmxDetails

from scheduling.dispatch import dispatcher_disabled_message
from tenants.access import MANAGE, RUN, SEE, get_tenant_for_member, role_allows, tenants_of
from tenants.models import AuditAction, AuditLog, Role, Tenant

ModelT = TypeVar("ModelT", bound=Model)


class AuthedRequest(HttpRequest):
    """What a view behind @login_required gets (HtmxMiddleware adds `htmx`)."""

    user: User
    htmx: HtmxDetails


def tenant_page(request: AuthedRequest, tenant: Tenant, role: str, section: str, **extra: Any) -> dict[str, Any]:
    """The context every page inside a tenant needs: the nav, the role's buttons, the dispatcher banner."""
    return {
        "tenant": tenant,
        "role": role,
        "role_label": Role(role).label,
        "can_run": role_allows(role, RUN),
        "can_manage": role_allows(role, MANAGE),
        "section": section,
        "several_tenants": tenants_of(request.user).count() > 1,
        "dispatcher_message": None if settings.DISPATCHER_ENABLED else dispatcher_disabled_message(),
        **extra,
    }


def paginate(request: HttpRequest, queryset: QuerySet[ModelT], per_page: int) -> Page:
    # get_page() turns a bad or too-large ?page= into the first or last page, never a 404.
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


@login_required
def home(request: AuthedRequest) -> HttpResponse:
    tenants = list(tenants_of(request.user))
    if len(tenants) == 1:
        return redirect("schedules", tenant_code=tenants[0].code)
    for tenant in tenants:
        tenant.role_label = Role(tenant.member_role).label  # type: ignore[attr-defined]
    return render(request, "tenants/home.html", {"tenants": tenants})


AUDIT_PER_PAGE = 50


@vary_on_headers("HX-Request")
@login_required
def audit_log(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant = get_tenant_for_member(request.user, tenant_code, SEE)
    entries = AuditLog.objects.filter(tenant=tenant).select_related("actor").order_by("-created_at", "-id")
    page = paginate(request, entries, AUDIT_PER_PAGE)
    for entry in page:
        entry.details_text = json.dumps(entry.details, indent=2, ensure_ascii=False)  # type: ignore[attr-defined]
        entry.target_url = _target_url(entry)  # type: ignore[attr-defined]
    ctx = tenant_page(request, tenant, tenant.member_role, "audit", page=page)  # type: ignore[attr-defined]
    template = "tenants/audit_log.html#entries" if request.htmx else "tenants/audit_log.html"
    return render(request, template, ctx)


def _target_url(entry: AuditLog) -> str | None:
    """Where the entry's target lives, if it is a page of its own that still exists."""
    if entry.target_code is None:
        return None
    if entry.target_type in ("backupschedulerun", "dispatch"):
        return reverse("run_detail", args=[entry.target_code])
    if entry.target_type == "backupschedule" and entry.action != AuditAction.SCHEDULE_DELETED:
        return reverse("schedule_detail", args=[entry.target_code])
    return None
