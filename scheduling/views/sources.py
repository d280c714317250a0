"""Source pages: a tenant's sources, adding, editing, deleting and testing one.

They show and check the schedules using each source, so they sit in scheduling; what a source
is, its form and its connection check stay in backups."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from backups.connection import TooManyTests, is_stale, request_test
from backups.forms import SourceForm
from backups.models import BackupSource, SourceCheck
from backups.services import save_source, snapshot
from scheduling.sources import SourceInUse, delete_source, schedule_names
from tenants.access import MANAGE, RUN, SEE, get_for_member, get_tenant_for_member
from tenants.pages import AuthedRequest, tenant_page

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations


class _Counted(TypedDict):  # what source_list annotates
    schedule_count: int
    last_check_id: int | None


@dataclass
class SourceRow:
    source: BackupSource
    schedule_count: int
    check: SourceCheck | None  # the latest "Test connection", if any


@require_GET
@login_required
def source_list(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant, role = get_tenant_for_member(request.user, tenant_code, SEE)
    latest = SourceCheck.objects.filter(source=OuterRef("pk")).order_by("-created_at", "-id").values("id")[:1]
    sources: list[WithAnnotations[BackupSource, _Counted]] = list(
        BackupSource.objects.filter(tenant=tenant)
        .annotate(schedule_count=Count("schedules"), last_check_id=Subquery(latest))
        .order_by("name")
    )
    ids = [s.last_check_id for s in sources if s.last_check_id]
    checks: dict[int | None, SourceCheck] = {
        check.pk: check for check in SourceCheck.objects.filter(pk__in=ids).select_related("requested_by")
    }
    rows = [SourceRow(s, s.schedule_count, checks.get(s.last_check_id)) for s in sources]
    ctx = tenant_page(request, tenant, role, "sources", rows=rows)
    if ctx["can_manage"]:
        ctx["form"] = SourceForm(tenant=tenant)
    return render(request, "backups/sources.html", ctx)


@require_http_methods(["GET", "POST"])
@login_required
def source_create(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant, role = get_tenant_for_member(request.user, tenant_code, MANAGE)
    source = BackupSource(tenant=tenant)
    form = SourceForm(request.POST if request.method == "POST" else None, instance=source, tenant=tenant)
    if form.is_bound and form.is_valid():
        with transaction.atomic():
            save_source(form.save(commit=False), None, request.user)
        messages.success(request, f"Source “{source.name}” added.")
        for warning in form.warnings:
            messages.warning(request, warning)
        return redirect("sources", tenant_code=tenant.code)
    ctx = tenant_page(request, tenant, role, "sources", form=form)
    return render(request, "backups/source_form.html", ctx)


@require_http_methods(["GET", "POST"])
@login_required
def source_edit(request: AuthedRequest, code: UUID) -> HttpResponse:
    source, role = get_for_member(request.user, BackupSource, code, MANAGE)
    tenant = source.tenant
    before = snapshot(source)
    form = SourceForm(request.POST if request.method == "POST" else None, instance=source, tenant=tenant)
    if form.is_bound and form.is_valid():
        with transaction.atomic():
            save_source(form.save(commit=False), before, request.user)
        messages.success(request, f"Source “{source.name}” saved.")
        for warning in form.warnings:
            messages.warning(request, warning)
        return redirect("sources", tenant_code=tenant.code)
    ctx = tenant_page(request, tenant, role, "sources", form=form, source=source)
    return render(request, "backups/source_form.html", ctx)


@require_http_methods(["GET", "POST"])
@login_required
def source_delete(request: AuthedRequest, code: UUID) -> HttpResponse:
    source, role = get_for_member(request.user, BackupSource, code, MANAGE)
    tenant = source.tenant
    if request.method == "POST":
        try:
            delete_source(source, request.user)
        except SourceInUse as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"Source “{source.name}” deleted.")
        return redirect("sources", tenant_code=tenant.code)
    schedules = schedule_names(source)
    ctx = tenant_page(request, tenant, role, "sources", source=source, schedules=schedules)
    return render(request, "backups/source_delete.html", ctx)


@require_POST
@login_required
def source_test(request: AuthedRequest, code: UUID) -> HttpResponse:
    """Test connection: queued for a worker; htmx gets the result box, which polls until done."""
    source = get_for_member(request.user, BackupSource, code, RUN).obj
    try:
        check = request_test(source, request.user)
    except TooManyTests as exc:
        if request.htmx:
            ctx = {"source": source, "check": None, "refused": str(exc)}
            return render(request, "backups/source_check.html#check-result", ctx)  # htmx swaps only 2xx
        messages.error(request, str(exc))
        return redirect("sources", tenant_code=source.tenant.code)
    if request.htmx:
        return render(request, "backups/source_check.html#check-result", _check_context(source, check))
    messages.info(request, f"Testing “{source.name}”: the result shows beside it when a worker has done it.")
    return redirect("sources", tenant_code=source.tenant.code)


@require_GET
@vary_on_headers("HX-Request")
@login_required
def source_check(request: AuthedRequest, code: UUID) -> HttpResponse:
    """One test's result: the box alone for htmx's polling, else a page of its own."""
    check, role = get_for_member(request.user, SourceCheck, code, RUN)
    source = BackupSource.objects.get(pk=check.source_id)
    ctx = _check_context(source, check)
    if request.htmx:
        return render(request, "backups/source_check.html#check-result", ctx)
    page = tenant_page(request, check.tenant, role, "sources", **ctx)
    return render(request, "backups/source_check.html", page)


def _check_context(source: BackupSource, check: SourceCheck) -> dict[str, object]:
    return {"source": source, "check": check, "stale": is_stale(check)}
