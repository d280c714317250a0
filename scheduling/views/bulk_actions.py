"""Bulk actions on the schedule list: run now, enable, disable, delete several at once.

Each schedule goes through the same service as its own button, so each is audited
and refused for the same reasons; the answer says what happened to each one.
"""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from scheduling.models import BackupSchedule
from scheduling.presentation import wall_text
from scheduling.runs import RetryPending, RunRefused, run_now
from scheduling.services import ScheduleInUse, delete_schedule, set_enabled
from scheduling.views.common import BULK_ACTIONS, list_context, toast
from tenants.access import RUN, get_tenant_for_member, role_allows
from tenants.models import Role, Tenant
from tenants.pages import AuthedRequest, back_to

# Most schedules a single request acts on: each one is a transaction and an audit entry.
MAX_SELECTED = 500


def _run(schedule: BackupSchedule, request: AuthedRequest) -> str:
    try:
        run_now(schedule, request.user)
    except RetryPending as exc:
        return f"automatic retry pending, starts {wall_text(exc.starts_at, timezone.get_current_timezone_name())}"
    except RunRefused:
        return "already running"
    return "queued"


def _enable(schedule: BackupSchedule, request: AuthedRequest) -> str:
    if schedule.enabled:
        return "already enabled"
    set_enabled(schedule, True, request.user)
    return "enabled"


def _disable(schedule: BackupSchedule, request: AuthedRequest) -> str:
    if not schedule.enabled:
        return "already disabled"
    set_enabled(schedule, False, request.user)
    return "disabled"


def _delete(schedule: BackupSchedule, request: AuthedRequest) -> str:
    try:
        delete_schedule(schedule, request.user)
    except ScheduleInUse as exc:
        return f"{exc.short}, kept"
    return "deleted"


# What each action of the menu (common.BULK_ACTIONS) does to one schedule.
APPLY: dict[str, Callable[[BackupSchedule, AuthedRequest], str]] = {
    "run": _run,
    "enable": _enable,
    "disable": _disable,
    "delete": _delete,
}


def _codes(values: list[str]) -> list[UUID] | None:
    try:
        return [UUID(value) for value in values]
    except ValueError:
        return None


@require_POST
@login_required
def schedule_bulk(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant, role = get_tenant_for_member(request.user, tenant_code, RUN)
    list_url = reverse("schedules", args=[tenant.code])
    key = request.POST.get("action", "")
    action = BULK_ACTIONS.get(key)
    codes = _codes(request.POST.getlist("schedules"))
    problem = ""
    if action is None:
        problem = "Pick an action: run now, enable, disable or delete."
    elif codes is None:
        problem = "The selection is not valid; reload the page and select again."
    elif not codes:
        problem = "Select at least one schedule."
    elif len(codes) > MAX_SELECTED:
        problem = f"Select at most {MAX_SELECTED} schedules at a time."
    if problem or action is None or codes is None:
        messages.error(request, problem)
        return _answer(request, tenant, role, list_url)
    label, least = action
    apply = APPLY[key]
    if not role_allows(role, least):
        raise PermissionDenied(f"{label} needs the {Role(least).label} role or higher.")
    # Scoped to the tenant: a code of another tenant's schedule is simply not found.
    found = BackupSchedule.objects.filter(tenant=tenant, code__in=set(codes)).select_related("tenant")
    by_code = {schedule.code: schedule for schedule in found}
    for code in dict.fromkeys(codes):  # once each, in the order shown
        schedule = by_code.get(code)
        if schedule is None:
            messages.warning(request, "A selected schedule no longer exists.")
            continue
        outcome = apply(schedule, request)
        level = messages.SUCCESS if outcome in ("queued", "enabled", "disabled", "deleted") else messages.WARNING
        messages.add_message(request, level, f"{schedule.name}: {outcome}")
    return _answer(request, tenant, role, list_url)


def _answer(request: AuthedRequest, tenant: Tenant, role: str, list_url: str) -> HttpResponse:
    """htmx: the list redrawn with the summary as a toast; otherwise back to the list."""
    if request.htmx:
        ctx = list_context(request, tenant, role)
        listing = render_to_string("scheduling/schedules.html#list", ctx, request=request)
        return toast(request, listing)
    return redirect(back_to(request, list_url))
