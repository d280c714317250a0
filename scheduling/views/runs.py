"""Run pages: a tenant's runs (every operation, filtered and sorted), one run with its
log, and Retry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from uuid import UUID

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import F, FloatField, Func, OrderBy, Q, QuerySet
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from backups.models import BackupSet
from lib.wallclock import SECONDS, log_on_clock, wall_text
from scheduling.models import ACTIVE_STATUSES, BackupSchedule, BackupScheduleRun, Operation, RunStatus, Trigger
from scheduling.presentation import refusal_text, trigger_text
from scheduling.runs import RETRYABLE, RunRefused, retry
from tenants.access import RUN, SEE, get_for_member, get_tenant_for_member
from tenants.pages import AuthedRequest, ListFilterForm, Window, listing_template, tenant_page, window

RUNS_PER_PAGE = 50
# How often the browser asks again while a shown run is queued or running (htmx `every`).
POLL_SECONDS = 3
# While nothing shown is active, the first page only asks this often whether a run newer
# than its newest has come (one indexed EXISTS, answered 204 when none has).
NEWER_SECONDS = 10
# The log viewer shows the end of a very long log; the whole log stays in the database.
LOG_TAIL_CHARS = 200_000


# Each sort with its tie-break, so equal values keep one order from page to page.
class RunSeconds(Func):
    """finished_at - started_at in seconds (NULL until both are set), for sorting.

    Django's own datetime subtraction calls a Python function per row on SQLite,
    which made sorting 5,000 rows take ~60 ms; julianday() is native."""

    template = "EXTRACT(EPOCH FROM (%(expressions)s))"
    arg_joiner = " - "
    output_field = FloatField()

    def __init__(self) -> None:
        super().__init__(F("finished_at"), F("started_at"))

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(
            compiler, connection, template="((julianday(%(expressions)s)) * 86400.0)", arg_joiner=") - julianday("
        )


SORTS: dict[str, tuple[str, list[OrderBy | str]]] = {
    # Both along scheduling_run_tenant_time (or scheduling_run_schedule_time with a schedule).
    "-created": ("Newest first", ["-created_at", "-id"]),
    "created": ("Oldest first", ["created_at", "id"]),
    # The others sort the filtered rows: narrow by schedule or dates for a huge history.
    "-started": ("Started, latest first", [F("started_at").desc(nulls_last=True), "-id"]),
    "started": ("Started, earliest first", [F("started_at").asc(nulls_last=True), "id"]),
    "-duration": ("Longest first", [F("run_duration").desc(nulls_last=True), "-id"]),
    "duration": ("Shortest first", [F("run_duration").asc(nulls_last=True), "id"]),
    "status": ("Status A–Z", ["status", "-created_at", "-id"]),
    "-status": ("Status Z–A", ["-status", "-created_at", "-id"]),
}
DEFAULT_SORT = "-created"
INDEXED_SORTS = ("-created", "created")
# Sorts no index serves look at this many of the newest matching runs.
SORT_WINDOW = 5_000
FILTERS = ("schedule", "status", "trigger", "operation", "date_from", "date_to")
# Column heads that sort: the column, its key.
SORTABLE_COLUMNS = {"created": "created", "started": "started", "duration": "duration", "status": "status"}


class RunFilterForm(ListFilterForm):
    # Checked against the tenant's schedules in clean_schedule (and offered as a select).
    schedule = forms.CharField(required=False, label="Schedule", widget=forms.Select)
    status = forms.ChoiceField(required=False, label="Status", choices=[("", "Any status"), *RunStatus.choices])
    trigger = forms.ChoiceField(required=False, label="Trigger", choices=[("", "Any trigger"), *Trigger.choices])
    operation = forms.ChoiceField(
        required=False, label="Operation", choices=[("", "Any operation"), *Operation.choices]
    )
    sort = forms.ChoiceField(required=False, label="Sort", choices=[(key, label) for key, (label, _) in SORTS.items()])

    def __init__(self, *args: Any, schedules: list[BackupSchedule], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schedules = {str(schedule.code): schedule for schedule in schedules}
        widget = self.fields["schedule"].widget
        assert isinstance(widget, forms.Select)
        widget.choices = [("", "Any schedule")] + [(code, s.name) for code, s in self.schedules.items()]

    def clean_schedule(self) -> str:
        # Any spelling of the UUID; an unknown one is named, not a 404 (it is only a filter).
        value = self.cleaned_data.get("schedule", "").strip()
        if not value:
            return ""
        try:
            code = str(UUID(value))
        except ValueError:
            raise forms.ValidationError("That is not a schedule of this tenant.") from None
        if code not in self.schedules:
            raise forms.ValidationError("That is not a schedule of this tenant.")
        return code


def matching_runs(tenant_id: int, form: RunFilterForm) -> QuerySet[BackupScheduleRun]:
    """The runs the filters let through, unordered."""
    schedule_code = form.value("schedule")
    if schedule_code:
        # The schedule is this tenant's (the form only knows the tenant's schedules), and
        # a run's tenant is its schedule's: filtering by schedule alone lets the planner
        # walk scheduling_run_schedule_time instead of the whole tenant's runs.
        runs = BackupScheduleRun.objects.filter(schedule=form.schedules[schedule_code])
    else:
        # Along scheduling_run_tenant_time (scheduling_run_tenant_status with a status).
        runs = BackupScheduleRun.objects.filter(tenant_id=tenant_id)
    for name in ("status", "trigger", "operation"):
        if value := form.value(name):
            runs = runs.filter(**{name: value})
    lower, upper = form.date_bounds()
    if lower:
        runs = runs.filter(created_at__gte=lower)
    if upper:
        runs = runs.filter(created_at__lt=upper)
    return runs


# What templates/scheduling/runs.html and run_row read; anything else would cost a query a row.
ROW_COLUMNS = (
    "code",
    "tenant_id",
    "schedule_id",
    "requested_by_id",
    "status",
    "trigger",
    "operation",
    "attempt",
    "bytes_written",
    "error_code",
    "error_message",
    "created_at",
    "started_at",
    "finished_at",
    "schedule__code",
    "schedule__name",
    "requested_by__username",
)


def filtered_runs(tenant_id: int, form: RunFilterForm) -> QuerySet[BackupScheduleRun]:
    """The page's query: matching runs in the chosen order, with what the rows show."""
    runs = matching_runs(tenant_id, form)
    sort = form.value("sort") or DEFAULT_SORT
    if sort not in INDEXED_SORTS:
        # No index orders by these: sort the newest SORT_WINDOW matches, not a whole
        # history of a million runs (seconds per page). The page says so when it cuts.
        newest = runs.order_by("-created_at", "-id").values("pk")[:SORT_WINDOW]
        runs = BackupScheduleRun.objects.filter(pk__in=newest)
    if sort.lstrip("-") == "duration":
        runs = runs.annotate(run_duration=RunSeconds())
    # Only the columns a row shows: the log can be megabytes, and every column loaded is
    # converted in Python for each of the page's rows (a sizeable part of its time).
    return runs.select_related("schedule", "requested_by").only(*ROW_COLUMNS).order_by(*SORTS[sort][1])


def window_is_cut(tenant_id: int, form: RunFilterForm) -> bool:
    """Whether more runs match than a non-indexed sort looks at (one short index walk)."""
    if (form.value("sort") or DEFAULT_SORT) in INDEXED_SORTS:
        return False
    beyond = matching_runs(tenant_id, form).order_by("-created_at", "-id").values_list("pk")
    return len(beyond[SORT_WINDOW : SORT_WINDOW + 1]) == 1


@require_GET
@vary_on_headers("HX-Request")
@login_required
def run_list(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    """The runs, filtered and sorted, and how the page stays current without a reload:

    * while a run shown is queued or running, the table asks again every POLL_SECONDS;
    * once nothing shown is active, the first page asks every NEWER_SECONDS only whether a
      run matching its filters was created after its newest (`?newer_than=`): 204 while
      none was; otherwise an `HX-Trigger: runs-changed` header makes the table redraw itself
      (and, with the new run queued, poll again). Later pages never poll for new runs (they
      would shift under the reader).
    """
    tenant, role = get_tenant_for_member(request.user, tenant_code, SEE)
    schedules = list(BackupSchedule.objects.filter(tenant=tenant).only("code", "name").order_by("name"))
    form = RunFilterForm(request.GET, schedules=schedules)
    form.is_valid()
    if "newer_than" in request.GET:
        if _has_newer(tenant.pk, form, request.GET["newer_than"]):
            return HttpResponse(status=204, headers={"HX-Trigger": "runs-changed"})
        return HttpResponse(status=204)
    page = window(filtered_runs(tenant.pk, form), form.value("page") or 1, RUNS_PER_PAGE)
    viewer_tz = timezone.get_current_timezone()
    sort = form.value("sort") or DEFAULT_SORT
    # Poll only while something shown can still change.
    poll = any(run.status in ACTIVE_STATUSES for run in page)
    ctx = tenant_page(
        request,
        tenant,
        role,
        "runs",
        page=page,
        rows=[run_row(run, viewer_tz) for run in page],
        form=form,
        problems=form.problems(),
        current=form.current(),
        choices=form.choices(),
        filtered=any(form.value(name) for name in FILTERS),
        sort=sort,
        sort_label=SORTS[sort][0],
        sort_window=SORT_WINDOW if window_is_cut(tenant.pk, form) else None,
        columns=_column_sorts(sort),
        poll=poll,
        poll_seconds=POLL_SECONDS,
        newer_url=None if poll or page.number > 1 else _newer_url(request, tenant.pk, form, page),
        newer_seconds=NEWER_SECONDS,
        # Row links without a reverse() per row.
        run_url=_url_prefix("run_detail"),
        schedule_url=_url_prefix("schedule_detail"),
    )
    return render(request, listing_template(request, "scheduling/runs.html", "run-table"), ctx)


def _newer_url(request: AuthedRequest, tenant_id: int, form: RunFilterForm, page: Window) -> str:
    """This page's URL asking whether a run newer than the newest matching one has come. Newest
    first, that is the first row; otherwise one short walk of scheduling_run_tenant_time."""
    newest: datetime | None
    if (form.value("sort") or DEFAULT_SORT) == DEFAULT_SORT and page.object_list:
        newest = page.object_list[0].created_at
    else:
        runs = matching_runs(tenant_id, form).order_by("-created_at", "-id")
        newest = runs.values_list("created_at", flat=True).first()
    query = request.GET.copy()
    query["newer_than"] = newest.isoformat() if newest else ""
    return f"{request.path}?{query.urlencode()}"


def _has_newer(tenant_id: int, form: RunFilterForm, newer_than: str) -> bool:
    runs = matching_runs(tenant_id, form)
    if newer_than:
        try:
            since = datetime.fromisoformat(newer_than)
        except ValueError:  # not ours: say "changed", and the table redraws with a good one
            return True
        if since.tzinfo is None:
            since = since.replace(tzinfo=UTC)
        runs = runs.filter(created_at__gt=since)
    return runs.exists()


_ZERO = UUID(int=0)


def _url_prefix(name: str) -> str:
    """The URL of a route taking only a code, up to the code: "/runs/" for run_detail."""
    url = reverse(name, args=[_ZERO])
    return url[: url.index(str(_ZERO))]


@dataclass(frozen=True)
class RunRow:
    """A row of the runs table: the run and what the row prints besides its fields."""

    run: BackupScheduleRun
    active: bool
    created_text: str
    started_text: str
    duration_text: str
    size_text: str
    trigger_text: str


def run_row(run: BackupScheduleRun, tz: tzinfo) -> RunRow:
    """What a row prints, formatted once in Python (cheaper than template filters per cell),
    on the viewer's clock."""
    return RunRow(
        run=run,
        active=run.status in ACTIVE_STATUSES,
        created_text=wall_text(run.created_at, tz, SECONDS),
        started_text=wall_text(run.started_at, tz, SECONDS) or "—",
        duration_text=duration_text(run.duration) or "—",
        size_text=filesizeformat(run.bytes_written) if run.bytes_written else "—",
        trigger_text=trigger_text(run),
    )


def duration_text(value: timedelta | None) -> str:
    """A duration as a person reads it at a glance: "2 h 05 min", "3 min 07 s", "12 s", "0.4 s"."""
    if value is None:
        return ""
    seconds = value.total_seconds()
    if seconds < 10:
        return f"{max(seconds, 0):.1f} s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02} min"
    if minutes:
        return f"{minutes} min {secs:02} s"
    return f"{secs} s"


def _column_sorts(sort: str) -> dict[str, dict[str, str]]:
    """For each sortable column: the sort its head link asks for, and its aria-sort state."""
    out = {}
    for column, key in SORTABLE_COLUMNS.items():
        if sort == key:
            out[column] = {"next": f"-{key}", "aria": "ascending"}
        elif sort == f"-{key}":
            out[column] = {"next": key, "aria": "descending"}
        else:
            # A first click shows the newest / longest / latest first; status reads A–Z.
            out[column] = {"next": key if key == "status" else f"-{key}", "aria": ""}
    return out


@require_GET
@vary_on_headers("HX-Request")
@login_required
def run_detail(request: AuthedRequest, code: UUID) -> HttpResponse:
    run, role = get_for_member(request.user, BackupScheduleRun, code, SEE)
    active = run.status in ACTIVE_STATUSES
    if request.htmx and not request.htmx.boosted:
        # The poll of a queued or running run: only what changes.
        ctx = {"run": run, "active": active, "poll_seconds": POLL_SECONDS, **_log_context(run), **_sets(run)}
        return render(request, "scheduling/run_detail.html#live", ctx)
    first_id = run.retry_of_id or run.pk
    # The attempts chain: Retry always points at the first run (scheduling.runs.retry).
    attempts = list(
        BackupScheduleRun.objects.filter(Q(pk=first_id) | Q(retry_of_id=first_id), tenant_id=run.tenant_id)
        .only("code", "status", "attempt", "created_at", "trigger", "retry_of_id")
        .order_by("attempt", "created_at", "id")
    )
    ctx = tenant_page(
        request,
        run.tenant,
        role,
        "runs",
        run=run,
        schedule=run.schedule,
        trigger_text=trigger_text(run),
        **_sets(run),
        attempts=attempts if len(attempts) > 1 else [],
        retryable=run.status in RETRYABLE,
        active=active,
        poll_seconds=POLL_SECONDS,
        **_log_context(run),
    )
    return render(request, "scheduling/run_detail.html", ctx)


def _sets(run: BackupScheduleRun) -> dict[str, BackupSet | None]:
    """The set a backup made (`backup_set`), or the one a verify or restore acts on (both
    `backup_set`, for its items, and `subject_set`), with its items: one query and a prefetch."""
    sets = BackupSet.objects.filter(tenant_id=run.tenant_id).prefetch_related("items")
    if run.operation == Operation.BACKUP:
        return {"backup_set": sets.filter(run=run).first(), "subject_set": None}
    subject = sets.filter(pk=run.subject_set_id).select_related("run").first() if run.subject_set_id else None
    return {"backup_set": subject, "subject_set": subject}


def _log_context(run: BackupScheduleRun) -> dict[str, Any]:
    """What the live part shows besides the run: the log's tail and the duration in words."""
    log = run.log
    cut = len(log) > LOG_TAIL_CHARS
    shown = log[-LOG_TAIL_CHARS:] if cut else log
    written_until = run.finished_at or timezone.now()
    return {
        "log_text": log_on_clock(shown, written_until, timezone.get_current_timezone_name()),
        "log_cut": cut,
        "log_size": len(log),
        "duration_text": duration_text(run.duration),
    }


@require_POST
@login_required
def run_retry(request: AuthedRequest, code: UUID) -> HttpResponse:
    run = get_for_member(request.user, BackupScheduleRun, code, RUN).obj
    try:
        new_run = retry(run, request.user)
    except RunRefused as exc:
        messages.error(request, refusal_text(exc, timezone.get_current_timezone_name(), timezone.now()))
        return redirect("run_detail", code=run.code)
    messages.success(request, f"Retry queued (attempt {new_run.attempt}).")
    return redirect("run_detail", code=new_run.code)
