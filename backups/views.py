"""Source pages: a tenant's sources, adding, editing, deleting and testing one."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from backups.connection import test_connection
from backups.forms import SourceForm
from backups.models import BackupSource
from backups.services import SourceInUse, delete_source, save_source, snapshot
from tenants.access import MANAGE, RUN, SEE, get_for_member, get_tenant_for_member
from tenants.views import AuthedRequest, tenant_page


@require_GET
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


@require_http_methods(["GET", "POST"])
@login_required
def source_edit(request: AuthedRequest, code: UUID) -> HttpResponse:
    source = get_for_member(request.user, BackupSource, code, MANAGE)
    tenant = source.tenant
    before = snapshot(source)
    form = SourceForm(request.POST if request.method == "POST" else None, instance=source, tenant=tenant)
    if form.is_bound and form.is_valid():
        with transaction.atomic():
            save_source(form.save(commit=False), before, request.user)
        messages.success(request, f"Source “{source.name}” saved.")
        return redirect("sources", tenant_code=tenant.code)
    ctx = tenant_page(request, tenant, source.member_role, "sources", form=form, source=source)  # type: ignore[attr-defined]
    return render(request, "backups/source_form.html", ctx)


@require_http_methods(["GET", "POST"])
@login_required
def source_delete(request: AuthedRequest, code: UUID) -> HttpResponse:
    source = get_for_member(request.user, BackupSource, code, MANAGE)
    tenant = source.tenant
    if request.method == "POST":
        try:
            delete_source(source, request.user)
        except SourceInUse as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Source “{source.name}” deleted.")
        return redirect("sources", tenant_code=tenant.code)
    schedules = list(source.schedules.order_by("name").values_list("name", flat=True))
    ctx = tenant_page(request, tenant, source.member_role, "sources", source=source, schedules=schedules)  # type: ignore[attr-defined]
    return render(request, "backups/source_delete.html", ctx)


@require_POST
@login_required
def source_test(request: AuthedRequest, code: UUID) -> HttpResponse:
    """Test connection: the result as a fragment for htmx, else as a message on the list."""
    source = get_for_member(request.user, BackupSource, code, RUN)
    result = test_connection(source, request.user)
    if request.htmx:
        return render(request, "backups/sources.html#test-result", {"source": source, "result": result})
    notify = messages.success if result.ok else messages.error
    notify(request, f"Test of “{source.name}”: {result.message}")
    return redirect("sources", tenant_code=source.tenant.code)
