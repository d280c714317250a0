"""The audit log page: a tenant's entries as sentences (scheduling/audit_text.py), people's
actions first, the system's behind a checkbox."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET
from django.views.decorators.vary import vary_on_headers

from scheduling.audit_text import load_names, sentence
from tenants.access import SEE, get_tenant_for_member
from tenants.audit import AUTOMATIC_ACTIONS
from tenants.models import AUTOMATIC_ACTION_VALUES, AuditAction, AuditLog, Membership
from tenants.pages import AuthedRequest, ListFilterForm, listing_template, tenant_page, window

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
    return render(request, listing_template(request, "scheduling/audit_log.html", "entries"), ctx)


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
