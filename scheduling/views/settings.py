"""The tenant's Settings page: one compact row per schedule with its status (refreshed by
htmx polling), Run now, Enable/Disable, and its timing form, opened one at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST, require_safe
from django.views.decorators.vary import vary_on_headers

from lib.zones import offered_zone_names
from scheduling.forms import TimingForm, unbound_copy
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun
from scheduling.services import save_schedule, snapshot
from scheduling.views.common import ScheduleRow, schedule_row, toast
from tenants.access import MANAGE, SEE, get_for_member, get_tenant_for_member, role_allows
from tenants.models import Tenant
from tenants.pages import AuthedRequest, paginate, tenant_page

BLOCKS_PER_PAGE = 50
# How often the status areas refresh themselves (seconds).
POLL_SECONDS = 10


def prefix_for(schedule: BackupSchedule) -> str:
    """Several blocks share the page: each form's ids and names carry the schedule's code."""
    return f"s{schedule.code.hex}"


def timing_form(schedule: BackupSchedule, data: Any = None) -> TimingForm:
    form = TimingForm(data, instance=schedule, prefix=prefix_for(schedule))
    form.swap_fields_on_change(reverse("schedule_settings_fields", args=[schedule.code]))
    return form


def settings_context(
    request: AuthedRequest, tenant: Tenant, role: str, bound: TimingForm | None = None
) -> dict[str, Any]:
    """Every block of one page. Queries: the schedules, and one for their active runs."""
    can_manage = role_allows(role, MANAGE)
    page = paginate(request, BackupSchedule.objects.filter(tenant=tenant).order_by("name", "id"), BLOCKS_PER_PAGE)
    active = dict(
        BackupScheduleRun.objects.filter(
            tenant=tenant, schedule__in=[s.pk for s in page], status__in=ACTIVE_STATUSES
        ).values_list("schedule_id", "status")
    )
    now = timezone.now()
    blocks = []
    for schedule in page:
        form = None
        if bound is not None and bound.instance.pk == schedule.pk:
            form = bound
        elif can_manage:
            form = timing_form(schedule)
        blocks.append(Block(schedule_row(schedule, now), form, active.get(schedule.pk)))
    return tenant_page(
        request,
        tenant,
        role,
        "settings",
        page=page,
        blocks=blocks,
        poll_seconds=POLL_SECONDS,
        settings_url=reverse("tenant_settings", args=[tenant.code]),
        zone_names=offered_zone_names() if can_manage else (),
    )


@dataclass(frozen=True)
class Block:
    """One row of the page. `open`: its timing form shows (after a save from it); a form
    with errors always shows."""

    row: ScheduleRow
    form: TimingForm | None
    active: str | None  # the status of the schedule's queued or running run
    open: bool = False

    @property
    def schedule(self) -> BackupSchedule:
        return self.row.schedule


@require_safe
@vary_on_headers("HX-Request")
@login_required
def tenant_settings(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant, role = get_tenant_for_member(request.user, tenant_code, SEE)
    ctx = settings_context(request, tenant, role)
    if request.htmx and request.GET.get("part") == "status":  # the poll: every status area, out of band
        return render(request, "scheduling/settings.html#statuses", ctx)
    return render(request, "scheduling/settings.html", ctx)


@require_POST
@login_required
def schedule_settings_save(request: AuthedRequest, code: UUID) -> HttpResponse:
    """Save one block: the schedule's timing, through the same service as the full form."""
    schedule, role = get_for_member(request.user, BackupSchedule, code, MANAGE)
    tenant = schedule.tenant
    before = snapshot(schedule)
    form = timing_form(schedule, request.POST)
    if form.is_valid():
        save_schedule(form.save(commit=False), before, request.user)
        messages.success(request, f"Schedule “{schedule.name}” saved.")
        if not request.htmx:
            return redirect("tenant_settings", tenant_code=tenant.code)
        return _block_answer(request, schedule, role, timing_form(schedule))
    if request.htmx:  # the block with its errors; the saved values stay in the header and status
        fresh = BackupSchedule.objects.get(pk=schedule.pk)
        form.instance = fresh
        return _block_answer(request, fresh, role, form)
    return render(request, "scheduling/settings.html", settings_context(request, tenant, role, bound=form))


def _block_answer(request: AuthedRequest, schedule: BackupSchedule, role: str, form: TimingForm) -> HttpResponse:
    active = (
        BackupScheduleRun.objects.filter(tenant=schedule.tenant, schedule=schedule, status__in=ACTIVE_STATUSES)
        .values_list("status", flat=True)
        .first()
    )
    ctx = tenant_page(
        request,
        schedule.tenant,
        role,
        "settings",
        block=Block(schedule_row(schedule, timezone.now()), form, active, open=True),
        settings_url=reverse("tenant_settings", args=[schedule.tenant.code]),
        poll_seconds=POLL_SECONDS,
    )
    return toast(request, render_to_string("scheduling/settings.html#block", ctx, request=request))


@require_POST
@login_required
def schedule_settings_fields(request: AuthedRequest, code: UUID) -> HttpResponse:
    """A block's timing fields for the chosen strategy (htmx, on a change of strategy); saves nothing."""
    schedule = get_for_member(request.user, BackupSchedule, code, MANAGE).obj
    form = unbound_copy(timing_form(schedule, request.POST), instance=schedule, prefix=prefix_for(schedule))
    form.swap_fields_on_change(request.path)
    return render(request, "scheduling/settings.html#fields", {"form": form, "schedule": schedule})
