"""The one place that decides who may see and do what in a tenant.

Outsiders get 404 (they must not learn that an object exists), members whose role
is too low get 403. Views and management commands both come through here.
"""

from __future__ import annotations

from typing import Generic, NamedTuple, TypeVar

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import F, QuerySet
from django.http import Http404

from tenants.models import Role, Tenant

ROLE_RANK: dict[str, int] = {Role.READONLY: 0, Role.OPERATOR: 1, Role.MANAGER: 2, Role.OWNER: 3}

# What each role may do, by the least role that may. docs/roles.md shows the same table.
SEE = Role.READONLY
RUN = Role.OPERATOR  # Run now, Retry
MANAGE = Role.MANAGER  # schedules, sources, retention
ADMINISTER = Role.OWNER  # members, restore

ModelT = TypeVar("ModelT", bound=models.Model)
AnyUser = User | AnonymousUser


def role_allows(role: str | None, min_role: str) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK[min_role]


def tenants_of(user: AnyUser) -> QuerySet[Tenant]:
    if not user.is_authenticated:
        return Tenant.objects.none()
    return Tenant.objects.filter(memberships__user=user).annotate(member_role=F("memberships__role"))


class Granted(NamedTuple, Generic[ModelT]):
    """An object a member may reach, with the member's role in its tenant (what the page's
    buttons depend on): `schedule, role = get_for_member(...)`."""

    obj: ModelT
    role: str


def get_tenant_for_member(user: AnyUser, code: object, min_role: str = SEE) -> Granted[Tenant]:
    return get_for_member(user, Tenant, code, min_role, tenant_path="")


def get_for_member(
    user: AnyUser, model: type[ModelT], code: object, min_role: str = SEE, tenant_path: str = "tenant__"
) -> Granted[ModelT]:
    """The object with this code and the role of `user` in its tenant, if `user` is a member
    with at least `min_role`.

    One query: the membership is joined in, its role annotated.
    """
    if not user.is_authenticated:
        raise Http404
    queryset = model._default_manager.filter(code=code, **{f"{tenant_path}memberships__user": user}).annotate(
        member_role=F(f"{tenant_path}memberships__role")
    )
    if tenant_path:
        queryset = queryset.select_related("tenant")
    obj = queryset.first()
    if obj is None:
        raise Http404
    # Taken off the instance: the role travels beside the object, not as an attribute patched onto it.
    role: str = vars(obj).pop("member_role")
    if not role_allows(role, min_role):
        raise PermissionDenied(f"This needs the {Role(min_role).label} role or higher.")
    return Granted(obj, role)
