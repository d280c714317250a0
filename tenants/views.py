"""Home: the tenant switcher of a member of several tenants."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET

from tenants.models import Membership, Role
from tenants.pages import AuthedRequest


@dataclass(frozen=True)
class TenantChoice:
    """One tenant on the home page."""

    code: UUID
    name: str
    role_label: str


@require_GET
@login_required
def home(request: AuthedRequest) -> HttpResponse:
    memberships = Membership.objects.filter(user=request.user).order_by("tenant__name", "tenant_id")
    choices = [
        TenantChoice(code=code, name=name, role_label=Role(role).label)
        for code, name, role in memberships.values_list("tenant__code", "tenant__name", "role")
    ]
    if len(choices) == 1:
        return redirect("schedules", tenant_code=choices[0].code)
    return render(request, "tenants/home.html", {"tenants": choices})
