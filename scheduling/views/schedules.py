"""Schedule pages: a tenant's list, one schedule's detail, the form with its live preview,
and one small view per action."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, Sum
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import pluralize
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST, require_safe
from django.views.decorators.vary import vary_on_headers

from backups.models import BackupSet
from lib.slots import InvalidCadence, upcoming, validate
from lib.zones import offered_zone_names
from scheduling.deletion import delete_schedule_with_sets
from scheduling.forms import TIMING_FIELDS, ConfirmNameForm, ScheduleForm, unbound_copy
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun
from scheduling.presentation import describe_cadence, refusal_text
from scheduling.retention import live_sets, preview_retention
from scheduling.runs import RunRefused
from scheduling.runs import run_now as request_run
from scheduling.services import ScheduleInUse, delete_schedule, prepare, save_schedule, set_enabled, snapshot
from scheduling.views.common import history_context, list_context, row_answer, set_rows, toast
from tenants.access import ADMINISTER, MANAGE, RUN, SEE, get_for_member, get_tenant_for_member, role_allows
from tenants.models import Tenant
from tenants.pages import AuthedRequest, back_to, listing_template, tenant_page

UPCOMING_COUNT = 5


def upcoming_slots(schedule: BackupSchedule, now: datetime) -> list[datetime]:
    if not schedule.enabled:
        return []
    try:
        validate(schedule.cadence)
    except InvalidCadence:
        return []
    return upcoming(schedule.cadence, now, UPCOMING_COUNT)


@require_safe
@vary_on_headers("HX-Request")
@login_required
def schedule_list(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant, role = get_tenant_for_member(request.user, tenant_code, SEE)
    template = listing_template(request, "scheduling/schedules.html", "list")
    return render(request, template, list_context(request, tenant, role))


@require_safe
@vary_on_headers("HX-Request")
@login_required
def schedule_detail(request: AuthedRequest, code: UUID) -> HttpResponse:
    schedule, role = get_for_member(request.user, BackupSchedule, code, SEE)
    ctx = history_context(request, schedule, role)
    if request.htmx:
        return render(request, "scheduling/schedule_detail.html#history", ctx)
    ctx["sources"] = list(schedule.sources.order_by("name"))
    ctx["cadence_text"] = describe_cadence(schedule)
    ctx["upcoming"] = upcoming_slots(schedule, timezone.now())
    ctx["can_restore"] = role_allows(role, ADMINISTER)
    ctx["set_rows"] = set_rows(live_sets(schedule))
    return render(request, "scheduling/schedule_detail.html", ctx)


def form_page(request: AuthedRequest, tenant: Tenant, role: str, form: ScheduleForm, **extra: Any) -> dict[str, Any]:
    schedule = extra.get("schedule")
    query = f"?schedule={schedule.code}" if schedule else ""
    form.swap_fields_on_change(reverse("schedule_form_fields", args=[tenant.code]) + query)
    return tenant_page(
        request,
        tenant,
        role,
        "schedules",
        form=form,
        zone_names=offered_zone_names(),
        preview_url=reverse("schedule_preview", args=[tenant.code]) + query,
        preview=preview_of(form, extra.pop("before", None)),
        retention=retention_preview_of(form),
        **extra,
    )


@require_http_methods(["GET", "POST"])
@login_required
def schedule_create(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant, role = get_tenant_for_member(request.user, tenant_code, MANAGE)
    # The tenant is set before validation: the name's uniqueness is per tenant. A new
    # schedule starts in its creator's zone (the browser's, ViewerZoneMiddleware).
    schedule = BackupSchedule(tenant=tenant, timezone=timezone.get_current_timezone_name())
    form = ScheduleForm(request.POST if request.method == "POST" else None, instance=schedule, tenant=tenant)
    if form.is_bound and form.is_valid():
        save_schedule(form.save(commit=False), None, request.user, sources=form.cleaned_data["sources"])
        messages.success(request, f"Schedule “{schedule.name}” created.")
        return redirect("schedule_detail", code=schedule.code)
    ctx = form_page(request, tenant, role, form, has_sources=tenant.sources.exists())
    return render(request, "scheduling/schedule_form.html", ctx)


@require_http_methods(["GET", "POST"])
@login_required
def schedule_edit(request: AuthedRequest, code: UUID) -> HttpResponse:
    schedule, role = get_for_member(request.user, BackupSchedule, code, MANAGE)
    # Taken before the form writes its values into the instance.
    before, saved_name = snapshot(schedule), schedule.name
    form = ScheduleForm(request.POST if request.method == "POST" else None, instance=schedule, tenant=schedule.tenant)
    if form.is_bound and form.is_valid():
        save_schedule(form.save(commit=False), before, request.user, sources=form.cleaned_data["sources"])
        messages.success(request, f"Schedule “{schedule.name}” saved.")
        return redirect("schedule_detail", code=schedule.code)
    ctx = form_page(
        request, schedule.tenant, role, form, schedule=schedule, saved_name=saved_name, has_sources=True, before=before
    )
    return render(request, "scheduling/schedule_form.html", ctx)


def preview_of(form: ScheduleForm, before: dict[str, Any] | None) -> dict[str, Any]:
    """The next slots of the form's unsaved values, or the timing fields' errors.

    The slots come from the same code that saving uses (services.prepare sets the
    anchor of an every-N-hours schedule, lib.slots counts), so the preview cannot
    disagree with what the dispatcher will do.
    """
    if form.is_bound:  # unbound: the saved values (or the defaults) are in the instance already
        form.is_valid()
        errors = [(form[name].label, form.errors[name]) for name in TIMING_FIELDS if name in form.errors]
        if errors:
            return {"errors": errors}
    schedule = form.instance  # the form's values are in it, unsaved
    now = timezone.now()
    prepare(schedule, before, now)
    slots = upcoming(schedule.cadence, now, UPCOMING_COUNT)
    off = "Not enabled: it runs only when someone presses Run now; these slots apply once it is enabled."
    note = "" if schedule.enabled else off
    return {"slots": slots, "tz": schedule.timezone, "note": note or ("" if slots else "No slot in the next 5 years.")}


def _form_for_partial(request: AuthedRequest, tenant_code: UUID) -> tuple[ScheduleForm, dict[str, Any] | None, Tenant]:
    """The unsaved form of the create or edit page (`?schedule=<code>` for an edit)."""
    tenant = get_tenant_for_member(request.user, tenant_code, MANAGE).obj
    code = request.GET.get("schedule")
    if code:
        try:
            schedule = get_for_member(request.user, BackupSchedule, UUID(code), MANAGE).obj
        except ValueError:
            raise Http404 from None
        if schedule.tenant_id != tenant.pk:
            raise Http404
        before: dict[str, Any] | None = snapshot(schedule)
    else:
        schedule, before = BackupSchedule(tenant=tenant), None
    return ScheduleForm(request.POST, instance=schedule, tenant=tenant), before, tenant


RETENTION_FIELDS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "timezone")
# A schedule may have thousands of sets; the preview names this many of each kind, then counts.
RETENTION_SHOWN = 50


def retention_preview_of(form: ScheduleForm) -> dict[str, Any]:
    """What the form's unsaved retention policy would keep and delete of the schedule's sets.

    Empty for a new schedule (it has no sets). The decision comes from
    scheduling.retention.preview_retention, the code the run task prunes with, so the
    preview cannot disagree with what happens after the next successful backup.
    """
    schedule = form.instance
    if schedule.pk is None:
        return {}
    if form.is_bound:
        form.is_valid()  # cached: preview_of validated already
        errors = [(form[name].label, form.errors[name]) for name in RETENTION_FIELDS if name in form.errors]
        if errors:
            return {"errors": errors}
    try:
        result = preview_retention(schedule)
    except ValueError as exc:  # a policy or zone that is not one: said, never a 500
        return {"errors": [("Retention", [str(exc)])]}
    return {
        "result": result,
        "kept": result.kept[:RETENTION_SHOWN],
        "deleted": result.deleted[:RETENTION_SHOWN],
        "kept_more": max(0, len(result.kept) - RETENTION_SHOWN),
        "deleted_more": max(0, len(result.deleted) - RETENTION_SHOWN),
    }


@require_POST
@login_required
def schedule_preview(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    """The live preview: posted as the user types (htmx), never saves.

    The next slots go to #preview; the retention preview travels in the same answer
    as an out-of-band swap, so one request per keystroke updates both."""
    form, before, tenant = _form_for_partial(request, tenant_code)
    slots = render_to_string("scheduling/schedule_form.html#preview", {"preview": preview_of(form, before)}, request)
    if form.instance.pk is None:  # a new schedule's page has no #retention-preview to swap into
        return HttpResponse(slots)
    retention = render_to_string(
        "scheduling/schedule_form.html#retention", {"retention": retention_preview_of(form), "oob": True}, request
    )
    return HttpResponse(slots + retention)


@require_POST
@login_required
def schedule_form_fields(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    """The timing fields for the chosen strategy (htmx swaps them when the strategy changes)."""
    bound, _, tenant = _form_for_partial(request, tenant_code)
    form = unbound_copy(bound, instance=bound.instance, tenant=tenant)
    form.swap_fields_on_change(request.get_full_path())
    return render(request, "scheduling/schedule_form.html#timing", {"form": form})


@require_http_methods(["GET", "POST"])
@login_required
def schedule_delete(request: AuthedRequest, code: UUID) -> HttpResponse:
    """Delete a schedule (manager); one that made backup sets goes with them (owner, after
    typing its name)."""
    schedule, role = get_for_member(request.user, BackupSchedule, code, MANAGE)
    tenant = schedule.tenant
    made = BackupSet.objects.filter(tenant=tenant, run__schedule=schedule)
    has_sets = made.exists()
    form = ConfirmNameForm(request.POST or None, name=schedule.name) if has_sets else None
    if request.method == "POST" and form is None:  # delete_schedule itself refuses a schedule in use
        try:
            delete_schedule(schedule, request.user)
        except ScheduleInUse as exc:
            messages.error(request, str(exc))
            return redirect("schedule_detail", code=code)
        messages.success(request, f"Schedule “{schedule.name}” deleted.")
        return redirect("schedules", tenant_code=tenant.code)
    if request.method == "POST" and form is not None:
        if not role_allows(role, ADMINISTER):
            raise PermissionDenied("Deleting a schedule with its backup sets needs the Owner role.")
        if form.is_valid():
            try:
                count = delete_schedule_with_sets(schedule, request.user)
            except ScheduleInUse as exc:
                form.add_error(None, str(exc))
            else:
                done = f"Schedule “{schedule.name}” and its {count} backup set{pluralize(count)} deleted."
                messages.success(request, done)
                return redirect("schedules", tenant_code=tenant.code)
    live = made.filter(deleted_at__isnull=True).aggregate(
        count=Count("id"), size=Sum("size"), pinned=Count("id", filter=Q(pinned=True))
    )
    ctx = tenant_page(
        request,
        tenant,
        role,
        "schedules",
        schedule=schedule,
        has_sets=has_sets,
        set_count=live["count"],
        set_size=live["size"] or 0,
        pinned_count=live["pinned"],
        form=form,
        busy=BackupScheduleRun.objects.filter(tenant=tenant, schedule=schedule, status__in=ACTIVE_STATUSES).exists(),
        run_count=BackupScheduleRun.objects.filter(tenant=tenant, schedule=schedule).count(),
    )
    return render(request, "scheduling/schedule_delete.html", ctx)


@require_POST
@login_required
def schedule_toggle(request: AuthedRequest, code: UUID) -> HttpResponse:
    schedule, role = get_for_member(request.user, BackupSchedule, code, MANAGE)
    # The form says which state it wants, so a repeated submit does not flip it back.
    wanted = request.POST.get("enabled")
    enabled = wanted == "1" if wanted in ("0", "1") else not schedule.enabled
    if enabled != schedule.enabled:
        set_enabled(schedule, enabled, request.user)
    messages.success(request, f"Schedule “{schedule.name}” is {'enabled' if enabled else 'disabled'}.")
    if request.htmx:  # the list's row, redrawn in its new state
        return toast(request, row_answer(request, schedule, role))
    return redirect(back_to(request, reverse("schedule_detail", args=[schedule.code])))


@require_POST
@login_required
def schedule_run_now(request: AuthedRequest, code: UUID) -> HttpResponse:
    schedule, role = get_for_member(request.user, BackupSchedule, code, RUN)
    try:
        request_run(schedule, request.user)
    except RunRefused as exc:
        messages.error(request, refusal_text(exc, timezone.get_current_timezone_name(), timezone.now()))
    else:
        messages.success(request, f"Run of “{schedule.name}” queued.")
    if request.htmx:
        # The list's row or the schedule's history, redrawn with the new run (and refreshing
        # itself until it ends); anything else (the settings page) gets the toast alone.
        target = request.htmx.target or ""
        if target == f"row-{schedule.code}":
            return toast(request, row_answer(request, schedule, role, with_poller=True))
        if target == "history":
            ctx = history_context(request, schedule, role)
            return toast(request, render_to_string("scheduling/schedule_detail.html#history", ctx, request=request))
        return toast(request)
    return redirect(back_to(request, reverse("schedule_detail", args=[schedule.code])))
