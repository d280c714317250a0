"""Schedule pages: a tenant's list, one schedule's detail, and one small view per action."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from uuid import UUID

from cron_descriptor import ExpressionDescriptor, Options
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.http import require_http_methods, require_POST
from django.views.decorators.vary import vary_on_headers

from backups.models import BackupSet
from lib.slots import InvalidCadence, upcoming, validate
from scheduling.forms import WEEKDAY_CHOICES, ScheduleForm
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun, ScheduleKind
from scheduling.runs import RunRefused
from scheduling.runs import run_now as request_run
from scheduling.services import ScheduleInUse, delete_schedule, save_schedule, set_enabled, snapshot
from tenants.access import MANAGE, RUN, SEE, get_for_member, get_tenant_for_member
from tenants.views import AuthedRequest, paginate, tenant_page

SCHEDULES_PER_PAGE = 100
HISTORY_PER_PAGE = 20
UPCOMING_COUNT = 5
WEEKDAY_NAMES = dict(WEEKDAY_CHOICES)


def describe_cadence(schedule: BackupSchedule) -> SafeString:
    """The cadence in words, e.g. "Weekly on Mon, Thu at 03:00 (Europe/Berlin)"."""
    tz, at = schedule.timezone, schedule.time_of_day.strftime("%H:%M")
    if schedule.kind == ScheduleKind.DAILY:
        return format_html("Daily at {} ({})", at, tz)
    if schedule.kind == ScheduleKind.WEEKLY:
        days = ", ".join(WEEKDAY_NAMES[day] for day in sorted(schedule.weekdays or []) if day in WEEKDAY_NAMES)
        return format_html("Weekly on {} at {} ({})", days, at, tz)
    if schedule.kind == ScheduleKind.CRON:
        words = _cron_in_words(schedule.cron)
        if words:
            return format_html("Cron <code>{}</code> ({}): {}", schedule.cron, tz, words)
        return format_html("Cron <code>{}</code> ({})", schedule.cron, tz)
    if schedule.kind == ScheduleKind.EVERY_N_HOURS:
        if schedule.every_hours == 1:
            return mark_safe("Every hour")
        return format_html("Every {} hours", schedule.every_hours)
    return mark_safe("Never by itself (Run now only)")


@lru_cache(maxsize=1024)
def _cron_in_words(expression: str) -> str:
    options = Options()
    options.use_24hour_time_format = True
    try:
        words = ExpressionDescriptor(expression, options).get_description()
    except Exception:  # a description is a nicety; the expression itself is shown anyway
        return ""
    return words[:1].lower() + words[1:]


def upcoming_slots(schedule: BackupSchedule, now: datetime) -> list[datetime]:
    if not schedule.enabled or schedule.kind == ScheduleKind.DISABLED:
        return []
    try:
        validate(schedule.cadence)
    except InvalidCadence:
        return []
    return upcoming(schedule.cadence, now, UPCOMING_COUNT)


def _back_to(request: AuthedRequest, default: str) -> str:
    """The page a button came from (a `next` field), if it is one of ours."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


@login_required
def schedule_list(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant = get_tenant_for_member(request.user, tenant_code, SEE)
    queryset = BackupSchedule.objects.filter(tenant=tenant).prefetch_related("sources").order_by("name", "id")
    page = paginate(request, queryset, SCHEDULES_PER_PAGE)
    for schedule in page:
        schedule.cadence_text = describe_cadence(schedule)  # type: ignore[attr-defined]
    ctx = tenant_page(request, tenant, tenant.member_role, "schedules", page=page)  # type: ignore[attr-defined]
    return render(request, "scheduling/schedules.html", ctx)


@vary_on_headers("HX-Request")
@login_required
def schedule_detail(request: AuthedRequest, code: UUID) -> HttpResponse:
    schedule = get_for_member(request.user, BackupSchedule, code, SEE)
    tenant = schedule.tenant
    runs = (
        BackupScheduleRun.objects.filter(tenant=tenant, schedule=schedule)
        .select_related("requested_by")
        .order_by("-created_at", "-id")
    )
    ctx = tenant_page(
        request,
        tenant,
        schedule.member_role,  # type: ignore[attr-defined]
        "schedules",
        schedule=schedule,
        history=paginate(request, runs, HISTORY_PER_PAGE),
    )
    if request.htmx:
        return render(request, "scheduling/schedule_detail.html#history", ctx)
    ctx["sources"] = list(schedule.sources.order_by("name"))
    ctx["cadence_text"] = describe_cadence(schedule)
    ctx["upcoming"] = upcoming_slots(schedule, timezone.now())
    ctx["backup_sets"] = (
        BackupSet.objects.filter(tenant=tenant, schedule=schedule, deleted_at__isnull=True)
        .select_related("run")
        .prefetch_related("items")
    )
    return render(request, "scheduling/schedule_detail.html", ctx)


@require_http_methods(["GET", "POST"])
@login_required
def schedule_create(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant = get_tenant_for_member(request.user, tenant_code, MANAGE)
    # The tenant is set before validation: the name's uniqueness is per tenant.
    schedule = BackupSchedule(tenant=tenant)
    form = ScheduleForm(request.POST if request.method == "POST" else None, instance=schedule, tenant=tenant)
    if form.is_bound and form.is_valid():
        save_schedule(form.save(commit=False), None, request.user, sources=form.cleaned_data["sources"])
        messages.success(request, f"Schedule “{schedule.name}” created.")
        return redirect("schedule_detail", code=schedule.code)
    has_sources = tenant.sources.exists()
    ctx = tenant_page(request, tenant, tenant.member_role, "schedules", form=form, has_sources=has_sources)  # type: ignore[attr-defined]
    return render(request, "scheduling/schedule_form.html", ctx)


@require_http_methods(["GET", "POST"])
@login_required
def schedule_edit(request: AuthedRequest, code: UUID) -> HttpResponse:
    schedule = get_for_member(request.user, BackupSchedule, code, MANAGE)
    # Taken before the form writes its values into the instance.
    before, saved_name = snapshot(schedule), schedule.name
    form = ScheduleForm(request.POST if request.method == "POST" else None, instance=schedule, tenant=schedule.tenant)
    if form.is_bound and form.is_valid():
        save_schedule(form.save(commit=False), before, request.user, sources=form.cleaned_data["sources"])
        messages.success(request, f"Schedule “{schedule.name}” saved.")
        return redirect("schedule_detail", code=schedule.code)
    ctx = tenant_page(
        request,
        schedule.tenant,
        schedule.member_role,  # type: ignore[attr-defined]
        "schedules",
        form=form,
        schedule=schedule,
        saved_name=saved_name,
        has_sources=True,
    )
    return render(request, "scheduling/schedule_form.html", ctx)


@require_http_methods(["GET", "POST"])
@login_required
def schedule_delete(request: AuthedRequest, code: UUID) -> HttpResponse:
    schedule = get_for_member(request.user, BackupSchedule, code, MANAGE)
    tenant = schedule.tenant
    if request.method == "POST":  # delete_schedule itself refuses a schedule in use
        try:
            delete_schedule(schedule, request.user)
        except ScheduleInUse as exc:
            messages.error(request, str(exc))
            return redirect("schedule_detail", code=code)
        messages.success(request, f"Schedule “{schedule.name}” deleted.")
        return redirect("schedules", tenant_code=tenant.code)
    ctx = tenant_page(
        request,
        tenant,
        schedule.member_role,  # type: ignore[attr-defined]
        "schedules",
        schedule=schedule,
        set_count=BackupSet.objects.filter(tenant=tenant, run__schedule=schedule).count(),
        busy=BackupScheduleRun.objects.filter(tenant=tenant, schedule=schedule, status__in=ACTIVE_STATUSES).exists(),
        run_count=BackupScheduleRun.objects.filter(tenant=tenant, schedule=schedule).count(),
    )
    return render(request, "scheduling/schedule_delete.html", ctx)


@require_POST
@login_required
def schedule_toggle(request: AuthedRequest, code: UUID) -> HttpResponse:
    schedule = get_for_member(request.user, BackupSchedule, code, MANAGE)
    # The form says which state it wants, so a repeated submit does not flip it back.
    wanted = request.POST.get("enabled")
    enabled = wanted == "1" if wanted in ("0", "1") else not schedule.enabled
    if enabled != schedule.enabled:
        set_enabled(schedule, enabled, request.user)
    messages.success(request, f"Schedule “{schedule.name}” is {'enabled' if enabled else 'disabled'}.")
    return redirect(_back_to(request, reverse("schedule_detail", args=[schedule.code])))


@require_POST
@login_required
def schedule_run_now(request: AuthedRequest, code: UUID) -> HttpResponse:
    schedule = get_for_member(request.user, BackupSchedule, code, RUN)
    try:
        request_run(schedule, request.user)
    except RunRefused as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Run of “{schedule.name}” queued.")
    return redirect(_back_to(request, reverse("schedule_detail", args=[schedule.code])))
