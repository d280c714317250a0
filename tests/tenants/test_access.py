from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import Http404

from scheduling.models import BackupSchedule
from tenants.access import MANAGE, RUN, SEE, get_for_member, get_tenant_for_member, role_allows, tenants_of
from tenants.models import Role


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.READONLY, {SEE}),
        (Role.OPERATOR, {SEE, RUN}),
        (Role.MANAGER, {SEE, RUN, MANAGE}),
        (Role.OWNER, {SEE, RUN, MANAGE, Role.OWNER}),
    ],
)
def test_the_role_matrix_is_ordered(role: str, allowed: set[str]) -> None:
    for need in (SEE, RUN, MANAGE, Role.OWNER):
        assert role_allows(role, need) is (need in allowed)


def test_it_returns_the_object_to_a_member_with_the_role(schedule, bob) -> None:
    assert get_for_member(bob, BackupSchedule, schedule.code, RUN).obj == schedule


def test_it_returns_the_members_role_with_the_object_in_one_query(
    schedule, bob, tenant, django_assert_num_queries
) -> None:
    with django_assert_num_queries(1):
        found, role = get_for_member(bob, BackupSchedule, schedule.code, RUN)
        assert found.tenant == tenant  # the tenant is joined in too
    assert (found, role) == (schedule, Role.OPERATOR)
    assert not hasattr(found, "member_role")  # the role travels beside the object, not on it
    assert get_tenant_for_member(bob, tenant.code).role == Role.OPERATOR


def test_it_gives_outsiders_404(schedule, charlie) -> None:
    with pytest.raises(Http404):
        get_for_member(charlie, BackupSchedule, schedule.code, SEE)


def test_it_gives_a_too_low_role_403(schedule, rita) -> None:
    assert get_for_member(rita, BackupSchedule, schedule.code, SEE).obj == schedule
    with pytest.raises(PermissionDenied):
        get_for_member(rita, BackupSchedule, schedule.code, RUN)


def test_staff_are_not_members_by_being_staff(schedule, tenant) -> None:
    admin = User.objects.create_superuser("root", "root@example.org", "x")
    with pytest.raises(Http404):
        get_for_member(admin, BackupSchedule, schedule.code, SEE)
    with pytest.raises(Http404):
        get_tenant_for_member(admin, tenant.code)
    assert list(tenants_of(admin)) == []


def test_anonymous_users_get_404(schedule) -> None:
    with pytest.raises(Http404):
        get_for_member(AnonymousUser(), BackupSchedule, schedule.code, SEE)


def test_tenants_of_lists_each_tenant_with_the_users_role(alice, charlie, tenant) -> None:
    from tenants.models import Membership

    Membership.objects.create(user=charlie, tenant=tenant, role=Role.READONLY)
    roles = {t.name: t.member_role for t in tenants_of(charlie)}
    assert roles == {"Charlie's": Role.OWNER, tenant.name: Role.READONLY}
