"""What the schedule, run, set and settings pages share: the toast, the schedule list with
its rows and poller, a schedule's run history, the rows of a schedule's sets table and the
bulk-action menu. The page modules import from here, never from each other.

Rows are small dataclasses holding the model instance and the texts made for it, so a
template reads `row.schedule.name` beside `row.next_iso` and no attribute is patched onto
a model instance.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from backups.models import BackupSet
from lib.wallclock import MINUTES
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun, RunStatus
from scheduling.presentation import describe_cadence, relative, trigger_text, utc_iso, wall_text
from tenants.access import MANAGE, RUN, role_allows
from tenants.models import Role, Tenant
from tenants.pages import AuthedRequest, back_to, paginate, tenant_page

SCHEDULES_PER_PAGE = 100
HISTORY_PER_PAGE = 20
# How often the list's rows and a schedule's history refresh while a run is queued or running.
POLL_SECONDS = 3


def toast(request: AuthedRequest, body: str = "") -> HttpResponse:
    """An htmx answer: `body` for the target, plus the pending messages swapped into #messages."""
    fragment = render_to_string("scheduling/schedule_toast.html", request=request)
    return HttpResponse(body + fragment)


# ---------------------------------------------------------------- schedule rows


@dataclass(frozen=True)
class ScheduleRow:
    """What a row of the list or a settings block shows besides the schedule's fields."""

    schedule: BackupSchedule
    cadence_text: SafeString
    # The row's other URLs (toggle/, run/) hang off this one: one reverse() a row, not four.
    detail_url: str
    next_iso: str
    next_local_text: str
    next_viewer_text: str
    next_relative: str
    last_iso: str
    last_utc_text: str
    last_viewer_text: str
    last_relative: str
    active_status: str  # the status of the schedule's queued or running run, or ""
    active_label: str


def schedule_row(
    schedule: BackupSchedule, now: datetime, viewer_tz: str | None = None, active: str | None = None
) -> ScheduleRow:
    """The row of `schedule` (no queries). The texts are made here rather than by template
    filters: this runs once per row of a list.

    `viewer_tz` is the viewer's zone (the active one by default); `active`, the status of the
    schedule's queued or running run, if it has one."""
    viewer_tz = viewer_tz or timezone.get_current_timezone_name()
    next_in = relative(schedule.next_run_at, now)
    # A slot in the past is due and waits for the dispatcher (off, or catching up).
    if schedule.next_run_at is not None and schedule.next_run_at < now:
        next_in = f"due, {next_in}"
    return ScheduleRow(
        schedule=schedule,
        cadence_text=describe_cadence(schedule),
        detail_url=reverse("schedule_detail", args=[schedule.code]),
        next_iso=utc_iso(schedule.next_run_at),
        next_local_text=wall_text(schedule.next_run_at, schedule.timezone),
        next_viewer_text=wall_text(schedule.next_run_at, viewer_tz),
        next_relative=next_in,
        last_iso=utc_iso(schedule.last_run_at),
        last_utc_text=wall_text(schedule.last_run_at, "UTC", "%Y-%m-%d %H:%M"),
        last_viewer_text=wall_text(schedule.last_run_at, viewer_tz, MINUTES),
        last_relative=relative(schedule.last_run_at, now),
        active_status=active or "",
        active_label=RunStatus(active).label if active else "",
    )


def active_runs(schedules: list[BackupSchedule]) -> dict[int, str]:
    """Each schedule's queued or running run's status: one query for a page of schedules of
    one tenant, along scheduling_run_tenant_status. A backup wins over a verify or restore of
    the same schedule: "backup" sorts first, and later rows overwrite earlier ones."""
    if not schedules:
        return {}
    rows = (
        BackupScheduleRun.objects.filter(
            tenant_id=schedules[0].tenant_id, schedule__in=[s.pk for s in schedules], status__in=ACTIVE_STATUSES
        )
        .order_by("-operation")
        .values_list("schedule_id", "status")
    )
    return dict(rows)


# ---------------------------------------------------------------- bulk-action menu

# action -> (label, least role); scheduling.views.bulk_actions says what each does to a schedule.
BULK_ACTIONS: dict[str, tuple[str, Role]] = {
    "run": ("Run now", RUN),
    "enable": ("Enable", MANAGE),
    "disable": ("Disable", MANAGE),
    "delete": ("Delete", MANAGE),
}
# What the browser asks before it sends the action: schedules.js puts in the number
# selected ({count}) and the plural ending ({s}), and asks nothing when none is.
BULK_QUESTIONS = {
    "run": "Run {count} selected schedule{s} now?",
    "enable": "Enable {count} selected schedule{s}? Their next slots will run.",
    "disable": "Disable {count} selected schedule{s}? They will not run until enabled again.",
    "delete": "Delete {count} selected schedule{s} and their run history? Schedules with backup sets are kept.",
}


def bulk_actions_for(role: str) -> list[tuple[str, str, str]]:
    """The actions a member with `role` may pick, for the list's select: key, label, question."""
    return [
        (key, label, BULK_QUESTIONS[key]) for key, (label, least) in BULK_ACTIONS.items() if role_allows(role, least)
    ]


# ---------------------------------------------------------------- the schedule list


def list_context(request: AuthedRequest, tenant: Tenant, role: str) -> dict[str, Any]:
    queryset = BackupSchedule.objects.filter(tenant=tenant).prefetch_related("sources").order_by("name", "id")
    page = paginate(request, queryset, SCHEDULES_PER_PAGE)
    now, viewer_tz = timezone.now(), timezone.get_current_timezone_name()
    active = active_runs(list(page))
    rows = [schedule_row(schedule, now, viewer_tz, active.get(schedule.pk)) for schedule in page]
    list_url = reverse("schedules", args=[tenant.code])
    # Where a row's buttons come back to, and what the poller asks again: this page of the
    # list (a bulk POST redraws the first page).
    next_url = request.get_full_path() if request.path == list_url else list_url
    return tenant_page(
        request,
        tenant,
        role,
        "schedules",
        page=page,
        rows=rows,
        viewer_tz=viewer_tz,
        bulk_actions=bulk_actions_for(role),
        next_url=next_url,
        # The rows refresh while one of them has a queued or running run, and stop after.
        poll=poll_context(next_url, bool(active)),
    )


def poll_context(list_url: str, active: bool) -> dict[str, Any]:
    """The list's poller (schedules.html#poller): it asks `list_url` again while `active`."""
    return {"url": list_url, "active": active, "seconds": POLL_SECONDS}


def row_answer(request: AuthedRequest, schedule: BackupSchedule, role: str, with_poller: bool = False) -> str:
    """One row of the list, as a button in it gets it back; `with_poller` also (re)starts the
    list's poller, out of band, so the row follows its new run."""
    active = active_runs([schedule]).get(schedule.pk)
    next_url = back_to(request, reverse("schedules", args=[schedule.tenant.code]))
    ctx = tenant_page(
        request,
        schedule.tenant,
        role,
        "schedules",
        row=schedule_row(schedule, timezone.now(), active=active),
        viewer_tz=timezone.get_current_timezone_name(),
        bulk_actions=bulk_actions_for(role),
        next_url=next_url,
    )
    row = render_to_string("scheduling/schedules.html#row", ctx, request=request)
    if not with_poller or not active:
        return row
    poller = {"poll": poll_context(next_url, True), "oob": True}
    return row + render_to_string("scheduling/schedules.html#poller", poller, request=request)


# ---------------------------------------------------------------- a schedule's history


@dataclass(frozen=True)
class HistoryRow:
    run: BackupScheduleRun
    trigger_text: str


def history_context(request: AuthedRequest, schedule: BackupSchedule, role: str) -> dict[str, Any]:
    """The schedule's page up to its run history, which refreshes itself (htmx) while a run
    shown on it is queued or running, and stops after."""
    runs = (
        BackupScheduleRun.objects.filter(tenant=schedule.tenant, schedule=schedule)
        .select_related("requested_by")
        .order_by("-created_at", "-id")
    )
    history = paginate(request, runs, HISTORY_PER_PAGE)
    page_query = f"?page={history.number}" if history.number > 1 else ""
    return tenant_page(
        request,
        schedule.tenant,
        role,
        "schedules",
        schedule=schedule,
        history=history,
        history_rows=[HistoryRow(run, trigger_text(run)) for run in history],
        history_url=reverse("schedule_detail", args=[schedule.code]) + page_query,
        history_active=any(run.status in ACTIVE_STATUSES for run in history),
        poll_seconds=POLL_SECONDS,
    )


# ---------------------------------------------------------------- a schedule's sets


@dataclass(frozen=True)
class SetRow:
    """A row of the schedule page's sets table: the set, and the verify or restore runs
    queued or running on it (linked from the row)."""

    backup_set: BackupSet
    active_operations: list[BackupScheduleRun]


def set_rows(sets: QuerySet[BackupSet]) -> list[SetRow]:
    """The rows of `sets`, in a fixed number of queries: the sets with their runs, their
    items, and the active verify or restore runs on any of them."""
    listed = list(sets.select_related("run").prefetch_related("items"))
    if not listed:
        return []
    operations: dict[int, list[BackupScheduleRun]] = defaultdict(list)
    active = BackupScheduleRun.objects.filter(subject_set__in=[s.pk for s in listed], status__in=ACTIVE_STATUSES)
    for run in active.order_by("-created_at", "-id"):
        if run.subject_set_id is not None:
            operations[run.subject_set_id].append(run)
    return [SetRow(each, operations.get(each.pk, [])) for each in listed]
