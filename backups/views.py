"""Source pages: a tenant's sources and adding one."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from backups.forms import SourceForm
from backups.models import BackupSource
from backups.services import save_source
from tenants.access import MANAGE, SEE, get_tenant_for_member
from tenants.views import AuthedRequest, tenant_page


@login_required
def source_list(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant = get_tenant_for_member(request.user, tenant_code, SEE)
    sources = BackupSource.objects.filter(tenant=tenant).annotate(schedule_count=Count("schedules")).order_by("name")
    ctx = tenant_page(request, tenant, tenant.member_role, "sources", sources=sources)  # type: ignore[attr-defined]
    if ctx["can_manage"]:
        ctx["form"] = SourceForm(tenant=tenant)
    return render(request, "backups/sources.html", ctx)


@require_http_methods(["GET", "POST"])
@login_required
def source_create(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant = get_tenant_for_member(request.user, tenant_code, MANAGE)
    source = BackupSource(tenant=tenant)
    form = SourceForm(request.POST if request.method == "POST" else None, instance=source, tenant=tenant)
    if form.is_bound and form.is_valid():
        with transaction.atomic():
            save_source(form.save(commit=False), None, request.user)
        messages.success(request, f"Source “{source.name}” added.")
        return redirect("sources", tenant_code=tenant.code)
    ctx = tenant_page(request, tenant, tenant.member_role, "sources", form=form)  # type: ignore[attr-defined]
    return render(request, "backups/source_form.html", ctx)
