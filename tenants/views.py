"""Home (tenant switcher), the audit log, and what every tenant page shares."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar
from uuid import UUID

from django import forms
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Page, Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers
from django_htmx.middleware import HtmxDetails

from scheduling.health import cached_dispatcher_health
from tenants.access import MANAGE, RUN, SEE, get_tenant_for_member, role_allows, tenants_of
from tenants.audit import AUTOMATIC_ACTIONS
from tenants.audit_text import load_names, sentence
from tenants.models import AUTOMATIC_ACTION_VALUES, AuditAction, AuditLog, Membership, Notification, Role, Tenant

ModelT = TypeVar("ModelT", bound=Model)

# The bell shows "99+" beyond this: the count reads at most this many index entries.
UNREAD_CAP = 100
# Every page asks for the bell's count again this often (notifications/bell.html).
BELL_POLL_SECONDS = 60


class AuthedRequest(HttpRequest):
    """What a view behind @login_required gets (HtmxMiddleware adds `htmx`)."""

    user: User
    htmx: HtmxDetails


def unread_count(user: User, tenant: Tenant) -> int:
    """Unread notifications, capped: one COUNT over the partial index tenants_notif_unread."""
    return Notification.objects.filter(user=user, tenant=tenant, read_at__isnull=True)[:UNREAD_CAP].count()


def bell_context(user: User, tenant: Tenant) -> dict[str, Any]:
    """What notifications/bell.html needs, on a page or alone (its poll, a mark-read answer)."""
    return {"unread": unread_count(user, tenant), "unread_cap": UNREAD_CAP, "bell_poll_seconds": BELL_POLL_SECONDS}


# The list page of each nav section, for the tenant switcher.
SECTION_URLS = {"runs": "runs", "sources": "sources", "audit": "audit_log", "notifications": "notifications"}


def tenant_page(request: AuthedRequest, tenant: Tenant, role: str, section: str, **extra: Any) -> dict[str, Any]:
    """The context every page inside a tenant needs: the nav, the switcher, the bell, the role's
    buttons, the scheduler-health banner. Two queries, whatever the page (the health is cached)."""
    my_tenants = list(tenants_of(request.user).only("code", "name"))
    # The switcher keeps the section: from one tenant's runs to another's runs.
    url_name = SECTION_URLS.get(section, "schedules")
    for other in my_tenants:
        other.switch_url = reverse(url_name, args=[other.code])  # type: ignore[attr-defined]
    return {
        "tenant": tenant,
        "role": role,
        "role_label": Role(role).label,
        "can_run": role_allows(role, RUN),
        "can_manage": role_allows(role, MANAGE),
        "section": section,
        "my_tenants": my_tenants,
        "several_tenants": len(my_tenants) > 1,
        **bell_context(request.user, tenant),
        # Cached per process for a few seconds: no query on most pages.
        "dispatcher_health": cached_dispatcher_health(),
        **extra,
    }


def back_to(request: HttpRequest, default: str) -> str:
    """The page a button came from (a `next` field), if it is one of ours."""
    target = request.POST.get("next", "")
    # A path of ours only: redirect() would read any other word as a view name to reverse
    # (a 500 for next=anything).
    if target.startswith("/") and url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
        return target
    return default


def paginate(request: HttpRequest, queryset: QuerySet[ModelT], per_page: int) -> Page:
    # get_page() turns a bad or too-large ?page= into the first or last page, never a 404.
    return Paginator(queryset, per_page).get_page(request.GET.get("page"))


# ------------------------------------------------------------------ long lists

MAX_PAGE = 10_000


@dataclass
class Window:
    """One page of a long list, without a total: counting a tenant's million runs on every
    page view would cost more than the page itself. Fetches one row more than it shows to
    know whether there is a next page."""

    object_list: list[Any]
    number: int
    has_next: bool
    per_page: int

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def next_page_number(self) -> int:
        return self.number + 1

    @property
    def previous_page_number(self) -> int:
        return self.number - 1

    @property
    def first_index(self) -> int:
        return (self.number - 1) * self.per_page + 1

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.object_list) - 1

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.object_list)

    def __len__(self) -> int:
        return len(self.object_list)


def window(queryset: QuerySet[ModelT], number: int, per_page: int) -> Window:
    offset = (number - 1) * per_page
    rows = list(queryset[offset : offset + per_page + 1])
    return Window(object_list=rows[:per_page], number=number, has_next=len(rows) > per_page, per_page=per_page)


# date_bounds() adds a day to "to": 9999-12-31 would overflow datetime. Midnight of
# 0001-01-01 on a clock east of UTC lies before datetime's first instant in UTC.
LATEST_DAY = date.max - timedelta(days=1)
EARLIEST_DAY = date.min + timedelta(days=1)


def _before_the_end(value: date) -> None:
    if value > LATEST_DAY:
        raise forms.ValidationError(f"Pick a day up to {LATEST_DAY.isoformat()}.")
    if value < EARLIEST_DAY:
        raise forms.ValidationError(f"Pick a day from {EARLIEST_DAY.isoformat()} on.")


class ListFilterForm(forms.Form):
    """What list pages share: a page number and a from/to date range (days on the viewer's
    clock, both inclusive: the times the list prints are on it too)."""

    page = forms.IntegerField(required=False, min_value=1, max_value=MAX_PAGE, label="Page")
    date_from = forms.DateField(
        required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}), validators=[_before_the_end]
    )
    date_to = forms.DateField(
        required=False, label="To", widget=forms.DateInput(attrs={"type": "date"}), validators=[_before_the_end]
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("date_from"), data.get("date_to")
        if start and end and start > end:
            self.add_error("date_to", "“To” must be on or after “From”.")
            data.pop("date_to", None)
        return data

    def problems(self) -> list[str]:
        """The errors as sentences naming the field, for a message above the list."""
        out = []
        for name, errors in self.errors.items():
            label = self.fields[name].label if name in self.fields else None
            for error in errors:
                out.append(f"{label}: {error}" if label else str(error))
        return out

    def value(self, name: str) -> Any:
        """The cleaned value, or None when it was missing or invalid (that filter is then off)."""
        self.is_valid()  # validates once; invalid fields are left out of cleaned_data
        return self.cleaned_data.get(name)

    def current(self) -> dict[str, str]:
        """Each filter's value in force, as the form controls show it ("" when off)."""
        out = {}
        for name in self.fields:
            value = self.value(name)
            out[name] = "" if value is None else value.isoformat() if isinstance(value, date) else str(value)
        return out

    def choices(self) -> dict[str, list[tuple[str, str]]]:
        """Each select's options (rendered by includes/filter_select.html, not by the widget)."""
        out = {}
        for name, form_field in self.fields.items():
            widget = form_field.widget
            if isinstance(widget, forms.Select):
                out[name] = [(str(value), str(label)) for value, label in widget.choices]
        return out

    def date_bounds(self) -> tuple[datetime | None, datetime | None]:
        """[from 00:00, the day after `to` 00:00): a half-open range the time indexes can use, in
        the viewer's zone (ViewerZoneMiddleware; UTC without one)."""
        start: date | None = self.value("date_from")
        end: date | None = self.value("date_to")
        tz = timezone.get_current_timezone()
        lower = datetime.combine(start, time(0), tzinfo=tz) if start else None
        upper = datetime.combine(end + timedelta(days=1), time(0), tzinfo=tz) if end else None
        return lower, upper


def listing_template(request: AuthedRequest, template: str, partial: str) -> str:
    return f"{template}#{partial}" if request.htmx and not request.htmx.boosted else template


# ------------------------------------------------------------------ home


@require_GET
@login_required
def home(request: AuthedRequest) -> HttpResponse:
    tenants = list(tenants_of(request.user))
    if len(tenants) == 1:
        return redirect("schedules", tenant_code=tenants[0].code)
    for tenant in tenants:
        tenant.role_label = Role(tenant.member_role).label  # type: ignore[attr-defined]
    return render(request, "tenants/home.html", {"tenants": tenants})


# ------------------------------------------------------------------ audit log

AUDIT_PER_PAGE = 50
SYSTEM_ACTOR = "system"


class AuditFilterForm(ListFilterForm):
    actor = forms.ChoiceField(required=False, label="Who")
    action = forms.ChoiceField(required=False, label="Action", choices=[("", "Any action"), *AuditAction.choices])
    automatic = forms.BooleanField(required=False, label="Show automatic entries")

    def __init__(self, *args: Any, usernames: list[str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        actor_field = self.fields["actor"]
        assert isinstance(actor_field, forms.ChoiceField)
        actor_field.choices = [("", "Anyone"), (SYSTEM_ACTOR, "system (dispatcher, worker)")] + [
            (name, name) for name in usernames
        ]


@require_GET
@vary_on_headers("HX-Request")
@login_required
def audit_log(request: AuthedRequest, tenant_code: UUID) -> HttpResponse:
    tenant, role = get_tenant_for_member(request.user, tenant_code, SEE)
    # Current members only: someone who left shows up in old entries but is not offered here.
    members = dict(
        Membership.objects.filter(tenant=tenant).order_by("user__username").values_list("user__username", "user_id")
    )
    form = AuditFilterForm(request.GET, usernames=list(members))
    form.is_valid()
    # Along tenants_audit_tenant_time, newest first; the filters narrow the walk.
    entries = AuditLog.objects.filter(tenant=tenant)
    actor = form.value("actor")
    if actor == SYSTEM_ACTOR:
        entries = entries.filter(actor__isnull=True)
    elif actor:
        entries = entries.filter(actor_id=members[actor])
    action = form.value("action")
    if action:
        entries = entries.filter(action=action)
    # People's actions first: what the dispatcher and workers write (thousands a day)
    # only when asked for, by the checkbox or by filtering for the system or its actions.
    automatic = bool(form.value("automatic")) or actor == SYSTEM_ACTOR or action in AUTOMATIC_ACTIONS
    if not automatic:
        # The index's own list, in its order: the planner matches the predicate as written.
        entries = entries.exclude(action__in=AUTOMATIC_ACTION_VALUES)  # along tenants_audit_people
    lower, upper = form.date_bounds()
    if lower:
        entries = entries.filter(created_at__gte=lower)
    if upper:
        entries = entries.filter(created_at__lt=upper)
    entries = entries.select_related("actor").order_by("-created_at", "-id")
    page = window(entries, form.value("page") or 1, AUDIT_PER_PAGE)
    names = load_names(tenant.pk, page)
    page.object_list = [
        AuditRow(
            entry=entry,
            text=sentence(entry, names),
            automatic=entry.action in AUTOMATIC_ACTIONS,
            details_text=json.dumps(entry.details, indent=2, ensure_ascii=False) if entry.details else "",
            target_url=_target_url(entry),
        )
        for entry in page
    ]
    filtered = any(form.value(name) for name in ("actor", "action", "date_from", "date_to"))
    ctx = tenant_page(
        request,
        tenant,
        role,
        "audit",
        page=page,
        form=form,
        problems=form.problems(),
        filtered=filtered,
        automatic=automatic,
        current=form.current(),
        choices=form.choices(),
    )
    return render(request, listing_template(request, "tenants/audit_log.html", "entries"), ctx)


@dataclass
class AuditRow:
    """One line of the audit page: the entry, its sentence, its details on demand."""

    entry: AuditLog
    text: str
    automatic: bool
    details_text: str
    target_url: str | None


def _target_url(entry: AuditLog) -> str | None:
    """Where the entry's target lives, if it is a page of its own that still exists."""
    if entry.target_code is None:
        return None
    if entry.target_type in ("backupschedulerun", "dispatch"):
        return reverse("run_detail", args=[entry.target_code])
    if entry.target_type == "backupschedule" and entry.action != AuditAction.SCHEDULE_DELETED:
        return reverse("schedule_detail", args=[entry.target_code])
    return None
