"""Every URL of the project, walked from the resolver, against the role matrix of
docs/roles.md (tenants/access.py's SEE, RUN, MANAGE, ADMINISTER): for each role, an
outsider (a member of another tenant only), staff (members of nothing) and anonymous,
by GET and by POST with a valid CSRF token as a browser sends it.

A URL nobody classified fails: adding a page means saying here who may reach it.
Another tenant's codes swapped into any URL, form field, filter or bulk list change
nothing of that tenant and show nothing of it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.shortcuts import resolve_url
from django.urls import resolve, reverse
from django_q.models import OrmQ

from scheduling.models import BackupSchedule
from tenants.access import ADMINISTER, MANAGE, RUN, SEE, role_allows
from tenants.models import Role
from tests.site_map import (
    ALL_ROLES,
    Browser,
    Route,
    Side,
    World,
    forms_on,
    make_world,
    rolled_back,
    routes,
    rows_of,
    url_for,
)

# What a URL allows, besides a least tenant role (SEE ... ADMINISTER).
NOT_ALLOWED = "405 for everyone"  # the method is refused before anything is looked up
PUBLIC = "public"  # no login needed
LOGGED_IN = "logged-in"  # any signed-in user, no tenant involved
LOGGED_IN_405 = "logged-in, then 405"  # Django's "done" pages: login first, then the method is refused
STAFF = "staff-only"  # the Django admin: staff only, everyone else to the admin's login page
ADMIN_LOGOUT = "admin logout"  # anyone but staff: to the admin's index (its login page)


@dataclass(frozen=True)
class Rule:
    get: str
    post: str
    names: str = ""  # what the URL's `code` is the code of


# Every URL name of the project: (GET, POST, what `code` names). From docs/roles.md:
# see = SEE, Run now / Retry / verify / Test connection = RUN, create / edit / delete /
# enable / pin = MANAGE, restore = ADMINISTER. Notifications are each member's own.
URLS: dict[str, Rule] = {
    "home": Rule(LOGGED_IN, NOT_ALLOWED),
    "healthz": Rule(PUBLIC, NOT_ALLOWED),
    "audit_log": Rule(SEE, NOT_ALLOWED),
    "notifications": Rule(SEE, NOT_ALLOWED),
    "notifications_read_all": Rule(NOT_ALLOWED, SEE),
    "notification_bell": Rule(SEE, NOT_ALLOWED),
    "notification_read": Rule(NOT_ALLOWED, SEE, "notification"),
    "notification_detail": Rule(SEE, NOT_ALLOWED, "notification"),
    "schedules": Rule(SEE, NOT_ALLOWED),
    "schedule_create": Rule(MANAGE, MANAGE),
    "schedule_bulk": Rule(NOT_ALLOWED, RUN),  # each action then asks its own role (test_views_bulk)
    "schedule_preview": Rule(NOT_ALLOWED, MANAGE),
    "schedule_form_fields": Rule(NOT_ALLOWED, MANAGE),
    "tenant_settings": Rule(SEE, NOT_ALLOWED),
    "runs": Rule(SEE, NOT_ALLOWED),
    "schedule_detail": Rule(SEE, NOT_ALLOWED, "schedule"),
    "schedule_edit": Rule(MANAGE, MANAGE, "schedule"),
    # The world's schedule made a backup set: deleting it with its sets is the owner's
    # (one that never made a set is the manager's: test_a_schedule_without_sets_...).
    "schedule_delete": Rule(MANAGE, ADMINISTER, "schedule"),
    "schedule_toggle": Rule(NOT_ALLOWED, MANAGE, "schedule"),
    "schedule_run_now": Rule(NOT_ALLOWED, RUN, "schedule"),
    "schedule_settings_save": Rule(NOT_ALLOWED, MANAGE, "schedule"),
    "schedule_settings_fields": Rule(NOT_ALLOWED, MANAGE, "schedule"),
    "run_detail": Rule(SEE, NOT_ALLOWED, "run"),
    "run_retry": Rule(NOT_ALLOWED, RUN, "run"),
    "set_pin": Rule(NOT_ALLOWED, MANAGE, "set"),
    "set_unpin": Rule(NOT_ALLOWED, MANAGE, "set"),
    "set_verify": Rule(NOT_ALLOWED, RUN, "set"),
    "set_delete": Rule(NOT_ALLOWED, MANAGE, "set"),
    "set_restore": Rule(ADMINISTER, ADMINISTER, "set"),
    "set_restore_item": Rule(ADMINISTER, ADMINISTER, "set"),
    "sources": Rule(SEE, NOT_ALLOWED),
    "source_create": Rule(MANAGE, MANAGE),
    "source_edit": Rule(MANAGE, MANAGE, "source"),
    "source_delete": Rule(MANAGE, MANAGE, "source"),
    "source_test": Rule(NOT_ALLOWED, RUN, "source"),
    "source_check": Rule(RUN, NOT_ALLOWED, "check"),  # a Test connection's result, for who may test
    # django.contrib.auth.urls
    "login": Rule(PUBLIC, PUBLIC),
    "logout": Rule(NOT_ALLOWED, PUBLIC),
    "password_change": Rule(LOGGED_IN, LOGGED_IN),
    "password_change_done": Rule(LOGGED_IN, LOGGED_IN_405),
    "password_reset": Rule(PUBLIC, PUBLIC),
    "password_reset_done": Rule(PUBLIC, NOT_ALLOWED),
    "password_reset_confirm": Rule(PUBLIC, PUBLIC),
    "password_reset_complete": Rule(PUBLIC, NOT_ALLOWED),
    # The Django admin: every page of it is staff-only (below), but these.
    "admin:login": Rule(PUBLIC, PUBLIC),
    "admin:logout": Rule(ADMIN_LOGOUT, ADMIN_LOGOUT),
}
# Every other page of these namespaces, whatever models are registered.
NAMESPACES: dict[str, Rule] = {"admin": Rule(STAFF, STAFF)}

# Known failures being fixed on other branches; the integrator empties this after merging.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}

ROUTES = routes()
TENANT_ROLES = [role for role in (SEE, RUN, MANAGE, ADMINISTER)]
assert TENANT_ROLES == [Role.READONLY, Role.OPERATOR, Role.MANAGER, Role.OWNER]


def rule_for(route: Route) -> Rule | None:
    return URLS.get(route.name) or NAMESPACES.get(route.namespace)


def cases() -> list[Any]:
    out = []
    for route in ROUTES:
        for method in ("GET", "POST"):
            reason = KNOWN_FAILURES.get((route.name, method))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            out.append(pytest.param(route.name, method, id=f"{route.name}-{method}", marks=marks))
    return out


@pytest.fixture
def world(db, settings) -> World:
    return make_world(settings)


def test_every_url_of_the_project_is_classified() -> None:
    unclassified = [f"{route.name} ({route.route})" for route in ROUTES if rule_for(route) is None]
    assert not unclassified, f"classify this URL in tests/test_access_matrix.py URLS: {unclassified}"
    stale = sorted(set(URLS) - {route.name for route in ROUTES})
    assert not stale, f"these URL names no longer exist: {stale}"


def test_the_walk_finds_every_kind_of_url() -> None:
    """The walk reaches included URL lists and namespaces, not only the root's own."""
    names = {route.name for route in ROUTES}
    assert {"schedule_edit", "source_test", "notification_read", "login", "admin:index"} <= names
    assert sum(1 for route in ROUTES if route.namespace == "admin") > 20


# ---------------------------------------------------------------- the matrix


def is_login_redirect(response: Any, login_url: str) -> bool:
    """Where login_required sends someone: the login page, with the page to come back to."""
    return response.status_code == 302 and response.url.startswith(login_url) and "next=" in response.url


def verdict(access: str, who: str, role: str | None, response: Any) -> str:
    """Empty when `response` is what `access` promises to `who`, else what was expected."""
    status = response.status_code
    if status >= 500:
        return "no 5xx"
    login = resolve_url(django_settings.LOGIN_URL)
    admin_login = "/admin/login/"
    if access == NOT_ALLOWED:
        return "" if status == 405 else "405"
    if access == PUBLIC:
        return "" if status not in (403, 404) and not is_login_redirect(response, login) else "not 403/404/login"
    if access in (LOGGED_IN, LOGGED_IN_405):
        if who == "anonymous":
            return "" if is_login_redirect(response, login) else "the login page"
        if access == LOGGED_IN_405:
            return "" if status == 405 else "405"
        return "" if status not in (403, 404) and not is_login_redirect(response, login) else "not 403/404/login"
    if access in (STAFF, ADMIN_LOGOUT):
        if who == "staff":
            # Staff may still lack a permission (a read-only admin has no "add"): 403 is theirs.
            return "" if not is_login_redirect(response, admin_login) else "not the admin's login page"
        if access == ADMIN_LOGOUT:
            return "" if status == 302 and response.url.startswith("/admin/") else "to the admin"
        return "" if is_login_redirect(response, admin_login) else "the admin's login page"
    # A least tenant role.
    if who == "anonymous":
        return "" if is_login_redirect(response, login) else "the login page"
    if who in ("outsider", "staff"):
        return "" if status == 404 else "404"
    if not role_allows(role, access):
        return "" if status == 403 else "403"
    return "" if status not in (403, 404) and not is_login_redirect(response, login) else "not 403/404"


def visitors(world: World, route: Route) -> list[tuple[str, Any, str | None]]:
    """(who, user, tenant role): each role of tenant A, an outsider, staff, anonymous.
    The admin knows no tenant roles: one member stands for all of them there."""
    roles = [Role.OWNER] if route.namespace == "admin" else ALL_ROLES
    members = [(role, world.a.users[role], role) for role in roles]
    return [*members, ("outsider", world.b.owner, None), ("staff", world.staff, None), ("anonymous", None, None)]


def request(browser: Browser, method: str, url: str) -> Any:
    return browser.get(url) if method == "GET" else browser.post(url, {})


@pytest.mark.parametrize(("name", "method"), cases())
def test_each_visitor_gets_exactly_what_the_role_matrix_says(world: World, name: str, method: str) -> None:
    route = next(route for route in ROUTES if route.name == name)
    rule = rule_for(route)
    assert rule is not None, f"classify this URL: {route.name} ({route.route})"
    access = rule.get if method == "GET" else rule.post
    wrong = []
    for who, user, role in visitors(world, route):
        with rolled_back():
            browser = Browser(user)
            url = url_for(route, world.a, rule.names, world, user)
            response = request(browser, method, url)
            if problem := verdict(access, who, role, response):
                where = f" -> {response.url}" if response.status_code in (301, 302) else ""
                wrong.append(f"{who}: {response.status_code}{where}, expected {problem}")
    assert not wrong, f"{method} {route.route} ({access}):\n" + "\n".join(wrong)


# ---------------------------------------------------------------- another tenant's codes


def tenant_routes() -> list[Route]:
    return [route for route in ROUTES if route.params and set(route.params) <= {"tenant_code", "code", "item_code"}]


def queued_payloads() -> str:
    from django_q.signing import SignedPackage

    return " ".join(repr(SignedPackage.loads(task.payload)) for task in OrmQ.objects.all())


def assert_untouched(
    other: Side, before: dict[str, Any], queued_before: str, response_text: str, sent: list[str] | None = None
) -> None:
    """Nothing of `other` changed, was queued or is shown (a value the request itself sent,
    echoed in "X is not one of the available choices", tells nothing)."""
    assert rows_of(other.tenant) == before, "another tenant's rows changed"
    queued = queued_payloads()
    new_tasks = queued[len(queued_before) :] if queued.startswith(queued_before) else queued
    assert not [code for code in other.codes() if len(code) > 8 and code in new_tasks]
    shown = [name for name in other.names() if name in response_text and not any(name in v for v in sent or [])]
    assert not shown, f"the page shows another tenant's {shown}"


@pytest.mark.parametrize("name", [route.name for route in tenant_routes()])
def test_another_tenants_codes_in_a_url_find_nothing_and_change_nothing(world: World, name: str) -> None:
    """Alpha's owner, with Bravo's codes in each place of the URL (alone and mixed with
    Alpha's): 404, and nothing of Bravo changes."""
    route = next(route for route in ROUTES if route.name == name)
    rule = rule_for(route)
    assert rule is not None
    mine, theirs = world.a, world.b
    before, queued_before = rows_of(theirs.tenant), queued_payloads()
    for sides in itertools.product((mine, theirs), repeat=len(route.params)):
        if theirs not in sides:
            continue
        kwargs = {}
        for param, side in zip(route.params, sides, strict=True):
            full = url_for(route, side, rule.names, world, world.a.owner)
            kwargs[param] = full  # each side's whole URL; the part of this parameter is taken below
        url = splice(route, kwargs)
        for method in ("GET", "POST"):
            access = rule.get if method == "GET" else rule.post
            with rolled_back():
                response = request(Browser(world.a.owner), method, url)
                expected = {404, 405} if access == NOT_ALLOWED else {404}
                assert response.status_code in expected, f"{method} {url}: {response.status_code}"
                assert_untouched(theirs, before, queued_before, response.text)


def splice(route: Route, urls: dict[str, str]) -> str:
    """One URL taking each parameter's value from the URL built for its side."""
    kwargs = {param: resolve(url).kwargs[param] for param, url in urls.items()}
    return reverse(route.name, kwargs=kwargs)


def owner_pages(world: World) -> list[str]:
    """Every page of tenant Alpha its owner can GET (one per URL of the matrix)."""
    pages = []
    for route in ROUTES:
        rule = rule_for(route)
        if rule and rule.get in TENANT_ROLES and route.params:
            pages.append(url_for(route, world.a, rule.names, world, world.a.owner))
    return pages


def test_another_tenants_codes_in_any_form_field_filter_or_bulk_list_change_nothing(world: World) -> None:
    """Each form (and filter) of every page Alpha's owner sees, submitted as the browser
    would, with one field at a time carrying Bravo's codes (each alone, then all at
    once, for fields that take a list): Bravo's rows stay as they were and no page
    shows anything of Bravo."""
    mine, theirs = world.a, world.b
    browser = Browser(mine.owner)
    before, queued_before = rows_of(theirs.tenant), queued_payloads()
    submitted = forms = 0
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    for page in owner_pages(world):
        for form in forms_on(page, browser.get(page).text):
            key = (form.action, form.method, tuple(form.names()))
            if key in seen:
                continue
            seen.add(key)
            forms += 1
            for field_name in form.names():
                defaults = [(n, v) for n, v in form.defaults() if n != field_name]
                # Each of the other tenant's codes alone (a field read with .get() sees the
                # last value only), then every reference at once (pks and user names too).
                values = [[str(obj.code)] for obj in theirs.objects()] + [theirs.codes()]
                for swapped in values:
                    data = defaults + [(field_name, value) for value in swapped]
                    with rolled_back():
                        if form.method == "get":
                            response = browser.get(form.action, data_dict(data), follow=True)
                        else:
                            response = browser.post(form.action, data, follow=True)
                        assert response.status_code < 500, f"{form.action} {field_name}={swapped}"
                        try:
                            assert_untouched(theirs, before, queued_before, response.text, swapped)
                        except AssertionError as exc:
                            raise AssertionError(f"{form.method} {form.action} {field_name}={swapped}: {exc}") from exc
                    submitted += 1
    # The pages offer the forms this test is about: the schedule form with its sources,
    # the bulk list, the run and audit filters, the restore form.
    assert forms >= 15 and submitted > 500, (forms, submitted)


def data_dict(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def test_a_notification_is_its_members_own(world: World) -> None:
    """The bell's items are per member: another member of the same tenant, whatever the
    role, finds someone else's notification as if it did not exist."""
    note = world.a.notifications[world.a.owner.pk]
    for role in ALL_ROLES:
        user = world.a.users[role]
        with rolled_back():
            response = Browser(user).post(reverse("notification_read", args=[note.code]), {})
            assert response.status_code == (302 if user == world.a.owner else 404), role
            note.refresh_from_db()
            assert (note.read_at is not None) is (user == world.a.owner)


def test_a_new_url_nobody_classified_is_caught_and_a_missing_check_is_seen(world: World, settings) -> None:
    """What the walk would say of a page added without a row here, and without the access
    module's check: unclassified, and an outsider who gets 200 is reported."""
    import types

    from django.http import HttpResponse
    from django.urls import path

    from config import urls

    def careless(request: Any, tenant_code: Any) -> HttpResponse:
        return HttpResponse("everyone's")

    module = types.ModuleType("careless_urls")
    module.urlpatterns = [  # type: ignore[attr-defined]
        *urls.urlpatterns,
        path("t/<uuid:tenant_code>/careless/", careless, name="careless"),
    ]
    settings.ROOT_URLCONF = module
    walked = routes()
    assert [route.name for route in walked if rule_for(route) is None] == ["careless"]
    (route,) = [route for route in walked if route.name == "careless"]
    response = Browser(world.b.owner).get(url_for(route, world.a, "", world, world.b.owner))
    assert verdict(SEE, "outsider", None, response) == "404"
    assert verdict(SEE, "anonymous", None, Browser().get(url_for(route, world.a, "", world, None))) == "the login page"


def test_a_schedule_without_sets_is_deleted_by_a_manager(world: World) -> None:
    """docs/roles.md: a schedule that never made a backup set is the manager's to delete."""
    bare = BackupSchedule.objects.create(tenant=world.a.tenant, name="Bare")
    url = reverse("schedule_delete", args=[bare.code])
    wrong = []
    for who, user, role in visitors(world, next(route for route in ROUTES if route.name == "schedule_delete")):
        with rolled_back():
            response = Browser(user).post(url, {})
            if problem := verdict(MANAGE, who, role, response):
                wrong.append(f"{who}: {response.status_code}, expected {problem}")
            gone = not BackupSchedule.objects.filter(pk=bare.pk).exists()
            assert gone is (role is not None and role_allows(role, MANAGE)), who
    assert not wrong, wrong
