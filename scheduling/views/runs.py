"""Run pages: a tenant's runs, one run with its log, and Retry."""

from __future__ import annotations

from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST
from django.views.decorators.vary import vary_on_headers

from backups.models import BackupSet
from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.runs import RETRYABLE, RunRefused, retry
from tenants.access import RUN, SEE, get_for_member, get_tenant_for_member
from tenants.views import AuthedRequest, paginate, tenant_page

RUNS_PER_PAGE = 50


@vary_on_headers("HX-Request")
@login_required
def run_list(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant = get_tenant_for_member(request.user, tenant_code, SEE)
    # Newest first along scheduling_run_tenant_time; the joins keep it one query per page.
    queryset = (
        BackupScheduleRun.objects.filter(tenant=tenant)
        .select_related("schedule", "requested_by")
        .order_by("-created_at", "-id")
    )
    status = request.GET.get("status", "")
    if status in RunStatus.values:
        queryset = queryset.filter(status=status)
    else:
        status = ""
    ctx = tenant_page(
        request,
        tenant,
        tenant.member_role,  # type: ignore[attr-defined]
        "runs",
        page=paginate(request, queryset, RUNS_PER_PAGE),
        status=status,
        statuses=RunStatus.choices,
    )
    template = "scheduling/runs.html#run-table" if request.htmx else "scheduling/runs.html"
    return render(request, template, ctx)


@login_required
def run_detail(request: AuthedRequest, code: UUID) -> HttpResponse:
    run = get_for_member(request.user, BackupScheduleRun, code, SEE)
    ctx = tenant_page(
        request,
        run.tenant,
        run.member_role,  # type: ignore[attr-defined]
        "runs",
        run=run,
        schedule=run.schedule,
        backup_set=BackupSet.objects.filter(tenant=run.tenant, run=run).prefetch_related("items").first(),
        retryable=run.status in RETRYABLE,
    )
    return render(request, "scheduling/run_detail.html", ctx)


@require_POST
@login_required
def run_retry(request: AuthedRequest, code: UUID) -> HttpResponse:
    run = get_for_member(request.user, BackupScheduleRun, code, RUN)
    try:
        new_run = retry(run, request.user)
    except RunRefused as exc:
        messages.error(request, str(exc))
        return redirect("run_detail", code=run.code)
    messages.success(request, f"Retry queued (attempt {new_run.attempt}).")
    return redirect("run_detail", code=new_run.code)
