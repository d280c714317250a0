"""What every page inside a tenant shares: the request type, the page context (nav, tenant
switcher, role), links back, and long lists (pages without totals, the date-range filter).

The page header's bell and the scheduler-health banner are scheduling's (its template tag
and context processor), so this module knows tenants only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar

from django import forms
from django.contrib.auth.models import User
from django.core.paginator import Page, Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.middleware import HtmxDetails

from tenants.access import MANAGE, RUN, role_allows, tenants_of
from tenants.models import Role, Tenant

ModelT = TypeVar("ModelT", bound=Model)


class AuthedRequest(HttpRequest):
    """What a view behind @login_required gets (HtmxMiddleware adds `htmx`)."""

    user: User
    htmx: HtmxDetails


# The list page of each nav section, for the tenant switcher.
SECTION_URLS = {"runs": "runs", "sources": "sources", "audit": "audit_log", "notifications": "notifications"}


@dataclass(frozen=True)
class SwitchLink:
    """One tenant in the header's switcher."""

    pk: int
    name: str
    switch_url: str


def tenant_page(request: AuthedRequest, tenant: Tenant, role: str, section: str, **extra: Any) -> dict[str, Any]:
    """The context every page inside a tenant needs: the nav, the switcher, the role's buttons.
    One query, whatever the page; the header adds the bell's count (one more) and the
    scheduler-health banner (cached)."""
    # The switcher keeps the section: from one tenant's runs to another's runs.
    url_name = SECTION_URLS.get(section, "schedules")
    my_tenants = [
        SwitchLink(pk=other.pk, name=other.name, switch_url=reverse(url_name, args=[other.code]))
        for other in tenants_of(request.user).only("code", "name")
    ]
    return {
        "tenant": tenant,
        "role": role,
        "role_label": Role(role).label,
        "can_run": role_allows(role, RUN),
        "can_manage": role_allows(role, MANAGE),
        "section": section,
        "my_tenants": my_tenants,
        "several_tenants": len(my_tenants) > 1,
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

    def __iter__(self) -> Iterator[Any]:
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
