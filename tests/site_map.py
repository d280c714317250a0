"""The whole site as a browser meets it, for the tests that walk all of it (the access
matrix, code swapping, fuzzing): every URL pattern from the resolver, two tenants with one
object of each kind, the forms a page offers, and posting as a browser does (CSRF token)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth.models import User
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.utils import timezone

from backups.models import BackupItem, BackupSet, BackupSource, SourceCheck
from scheduling.models import BackupSchedule, BackupScheduleRun, Notification, NotificationKind, RunStatus
from scheduling.services import save_schedule
from tenants.audit import record
from tenants.models import AuditAction, Membership, Role, Tenant
from tests.conftest import make_sqlite_database
from tests.helpers import make_stored_set

# ---------------------------------------------------------------- the resolver


@dataclass(frozen=True)
class Route:
    name: str  # "schedule_edit", "admin:tenants_tenant_change"; the route itself when unnamed
    route: str  # the whole pattern, for messages
    params: tuple[str, ...]
    callback: Callable[..., Any]
    namespace: str = ""
    named: bool = True


def routes() -> list[Route]:
    """Every URL pattern the project answers, walked from the root resolver."""
    found: list[Route] = []

    def visit(patterns: list[Any], prefix: str, namespace: str, params: tuple[str, ...]) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            groups = params + tuple(pattern.pattern.regex.groupindex)
            if isinstance(pattern, URLResolver):
                inner = ":".join(filter(None, [namespace, pattern.namespace]))
                visit(pattern.url_patterns, route, inner, groups)
            elif isinstance(pattern, URLPattern):
                name = pattern.name or route
                qualified = f"{namespace}:{name}" if namespace else name
                found.append(Route(qualified, route, groups, pattern.callback, namespace, bool(pattern.name)))

    visit(get_resolver().url_patterns, "", "", ())
    return found


# ---------------------------------------------------------------- two tenants


@dataclass
class Side:
    """One tenant with a member of each role and one object of each kind."""

    tenant: Tenant
    users: dict[str, User]  # role -> member
    source: BackupSource
    schedule: BackupSchedule
    failed_run: BackupScheduleRun
    backup_set: BackupSet
    item: BackupItem
    check: SourceCheck
    notifications: dict[int, Notification] = field(default_factory=dict)  # user pk -> the user's own

    @property
    def owner(self) -> User:
        return self.users[Role.OWNER]

    def names(self) -> list[str]:
        """What a page of another tenant must never show of this one."""
        return [self.tenant.name, self.source.name, self.schedule.name, *(u.username for u in self.users.values())]

    def objects(self) -> list[Any]:
        """One object of each kind a URL, a form or a filter can name."""
        kinds = [self.tenant, self.source, self.schedule, self.failed_run, self.backup_set, self.item, self.check]
        return [*kinds, self.notifications[self.owner.pk]]

    def codes(self) -> list[str]:
        """Every reference to this tenant's objects a form or query string could carry."""
        objects = self.objects() + list(self.notifications.values())
        values = [str(obj.code) for obj in objects] + [str(obj.pk) for obj in objects]
        return values + [u.username for u in self.users.values()] + [str(u.pk) for u in self.users.values()]


def make_side(label: str, root: Path, roles: list[str]) -> Side:
    folder = root / label.lower()
    folder.mkdir()
    tenant = Tenant.objects.create(name=f"{label} Tenant", file_roots=[str(folder)])
    users = {}
    for role in roles:
        user = User.objects.create_user(f"{label.lower()}-{role}", f"{label.lower()}-{role}@example.org")
        Membership.objects.create(user=user, tenant=tenant, role=role)
        users[role] = user
    path = make_sqlite_database(folder / "shop.sqlite3", rows=5)
    source = BackupSource.objects.create(tenant=tenant, name=f"{label} Shop Source", path=str(path))
    schedule = BackupSchedule(
        tenant=tenant, name=f"{label} Nightly Schedule", kind="daily", time_of_day=time(2, 30), timezone="UTC"
    )
    schedule.keep_last = 3
    schedule.full_clean()
    save_schedule(schedule, None, actor=None, sources=[source])
    now = timezone.now()
    done = BackupScheduleRun.objects.create(
        tenant=tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=now, finished_at=now
    )
    failed = BackupScheduleRun.objects.create(
        tenant=tenant, schedule=schedule, status=RunStatus.FAILED, created_at=now, error_code="UNKNOWN"
    )
    backup_set = make_stored_set(schedule, done)
    check = SourceCheck.objects.create(tenant=tenant, source=source, requested_by=users[Role.OWNER], created_at=now)
    side = Side(tenant, users, source, schedule, failed, backup_set, backup_set.items.get(), check)
    for user in users.values():
        side.notifications[user.pk] = Notification.objects.create(
            tenant=tenant, user=user, kind=NotificationKind.RUN_FAILED, run=failed, message="failed", created_at=now
        )
    record(tenant, AuditAction.SCHEDULE_CREATED, schedule, actor=side.owner)
    return side


ALL_ROLES = [Role.OWNER, Role.MANAGER, Role.OPERATOR, Role.READONLY]


@dataclass
class World:
    a: Side  # the tenant under test: a member of each role
    b: Side  # another tenant: its owner is the outsider
    staff: User  # a superuser who is a member of nothing


def make_world(settings: Any) -> World:
    root = Path(settings.SOURCE_ROOTS[0])
    a = make_side("Alpha", root, ALL_ROLES)
    b = make_side("Bravo", root, ALL_ROLES)
    staff = User.objects.create_superuser("staff", "staff@example.org")
    return World(a, b, staff)


# ---------------------------------------------------------------- URLs with real objects


def object_for(side: Side, kind: str, user: User | None) -> Any:
    """The object of `side` a URL's `code` names; a notification is the user's own."""
    if kind == "notification":
        return side.notifications.get(user.pk if user else 0) or side.notifications[side.owner.pk]
    return {
        "schedule": side.schedule,
        "run": side.failed_run,
        "set": side.backup_set,
        "source": side.source,
        "check": side.check,
    }[kind]


def admin_value(route: Route, param: str, world: World) -> str:
    """A real value for a Django admin URL's parameter."""
    model_admin = getattr(route.callback, "model_admin", None)
    if param in ("object_id", "id"):
        model = model_admin.model if model_admin else Tenant
        obj = model._default_manager.order_by("pk").first()
        return str(obj.pk) if obj else "1"
    if param == "app_label":
        match = re.search(r"\(\?P<app_label>([^)]*)\)", route.route)
        return match.group(1).split("|")[0] if match else "tenants"
    if param == "content_type_id":
        from django.contrib.contenttypes.models import ContentType

        return str(ContentType.objects.get_for_model(Tenant).pk)
    if param == "url":
        return "no-such-page/"
    if param == "uidb64":
        return "MQ"
    if param == "token":
        return "set-password"
    raise AssertionError(f"no value for {param} of {route.name}")


def url_for(route: Route, side: Side, kind: str, world: World, user: User | None) -> str:
    """The route's URL with `side`'s objects (`kind` says what a `code` names)."""
    kwargs: dict[str, Any] = {}
    for param in route.params:
        if param == "tenant_code":
            kwargs[param] = side.tenant.code
        elif param == "code":
            kwargs[param] = object_for(side, kind, user).code
        elif param == "item_code":
            kwargs[param] = side.item.code
        else:
            kwargs[param] = admin_value(route, param, world)
    if route.named:
        return reverse(route.name, kwargs=kwargs)
    # An unnamed route (the admin's old-style redirects): its parameters filled in by hand.
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(kwargs[m.group(1)]), route.route)


# ---------------------------------------------------------------- a browser


@contextmanager
def rolled_back() -> Iterator[None]:
    """Whatever a request changes is undone after it: each request meets the same world."""
    with transaction.atomic():
        yield
        transaction.set_rollback(True)


class Browser:
    """A test client that checks CSRF and posts the page's token, as a browser does, and
    sends the zone cookie static/js/app.js writes (URL-encoded; a zone east of UTC, where
    midnight of 0001-01-01 lies before datetime's first instant)."""

    ZONE_COOKIE = "Asia%2FKolkata"

    def __init__(self, user: User | None = None) -> None:
        self.client = Client(enforce_csrf_checks=True)
        self.client.cookies["tz"] = self.ZONE_COOKIE
        if user is not None:
            self.client.force_login(user)
        self._token = ""

    def token(self) -> str:
        if not self._token:
            self.client.get(reverse("login"))
            self._token = self.client.cookies["csrftoken"].value
        return self._token

    def get(self, url: str, data: Any = None, **extra: Any) -> Any:
        return self.client.get(url, data, **extra)

    def post(self, url: str, data: list[tuple[str, str]] | dict[str, Any] | None = None, **extra: Any) -> Any:
        """A form post, fields urlencoded in order (repeated names for several values)."""
        from urllib.parse import urlencode

        pairs = list(data.items()) if isinstance(data, dict) else list(data or [])
        body = urlencode([("csrfmiddlewaretoken", self.token()), *pairs], doseq=True)
        return self.client.post(url, body, content_type="application/x-www-form-urlencoded", **extra)


# ---------------------------------------------------------------- the forms a page offers


@dataclass
class Control:
    name: str
    tag: str  # input, select, textarea, button
    type: str  # the input's type ("text", "number", "checkbox", ...), the tag otherwise
    value: str
    checked: bool = False
    options: list[str] = field(default_factory=list)
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass
class PageForm:
    action: str  # a path
    method: str  # "get" or "post"
    controls: list[Control]

    @property
    def url_name(self) -> str:
        return resolve(urlsplit(self.action).path).url_name or ""

    def defaults(self) -> list[tuple[str, str]]:
        """What a browser submits untouched: checked boxes, each select's chosen option, the text."""
        pairs = []
        for control in self.controls:
            if control.tag == "button" or control.type in ("submit", "button", "reset"):
                continue
            if control.name == "csrfmiddlewaretoken":  # Browser.post sends its own
                continue
            if control.type in ("checkbox", "radio"):
                if control.checked:
                    pairs.append((control.name, control.value or "on"))
            elif control.tag == "select":
                pairs.append((control.name, control.value or (control.options[0] if control.options else "")))
            else:
                pairs.append((control.name, control.value))
        return pairs

    def names(self) -> list[str]:
        return list(dict.fromkeys(c.name for c in self.controls if c.name != "csrfmiddlewaretoken"))


class _FormParser(HTMLParser):
    """Every <form> of a page with its controls, and every hx-post / hx-get inside one
    (htmx posts the enclosing form's fields there: hx-include="closest form")."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.page = page
        self.forms: list[PageForm] = []
        self._open: list[tuple[PageForm, list[PageForm]]] = []
        self._select: Control | None = None
        self._option: str | None = None
        self._textarea: Control | None = None
        self._by_id: dict[str, PageForm] = {}

    def handle_starttag(self, tag: str, attr_list: list[tuple[str, str | None]]) -> None:
        attrs = {k: v or "" for k, v in attr_list}
        if tag == "form":
            form = PageForm(attrs.get("action") or self.page, attrs.get("method", "get").lower(), [])
            self._open.append((form, []))
            self.forms.append(form)
            if attrs.get("id"):
                early = self._by_id.get(attrs["id"])  # controls that came before their form
                form.controls.extend(early.controls if early else [])
                self._by_id[attrs["id"]] = form
        if tag == "option" and self._select is not None:
            self._controls(tag, attrs, PageForm("", "", []))
            return
        if attrs.get("form") and tag in ("input", "button", "select", "textarea"):
            # A control outside its form, tied to it by id (the list's checkboxes and the bulk bar).
            owner = self._by_id.setdefault(attrs["form"], PageForm(self.page, "post", []))
            self._controls(tag, attrs, owner)
            return
        if not self._open:
            return
        form, extra = self._open[-1]
        for verb in ("hx-post", "hx-get"):
            if attrs.get(verb) and not (tag == "form" and attrs.get(verb) == form.action):
                extra.append(PageForm(attrs[verb], verb[3:], form.controls))
        self._controls(tag, attrs, form)

    def _controls(self, tag: str, attrs: dict[str, str], form: PageForm) -> None:
        if tag in ("input", "button") and attrs.get("name"):
            kind = attrs.get("type", "text" if tag == "input" else "submit").lower()
            form.controls.append(
                Control(attrs["name"], tag, kind, attrs.get("value", ""), "checked" in attrs, [], attrs)
            )
        elif tag == "select" and attrs.get("name"):
            self._select = Control(attrs["name"], "select", "select", "", False, [], attrs)
            form.controls.append(self._select)
        elif tag == "option" and self._select is not None:
            self._option = attrs.get("value")
            if "selected" in attrs and self._option is not None:
                self._select.value = self._option
            if self._option is not None:
                self._select.options.append(self._option)
        elif tag == "textarea" and attrs.get("name"):
            self._textarea = Control(attrs["name"], "textarea", "textarea", "", False, [], attrs)
            form.controls.append(self._textarea)

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea.value += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "form" and self._open:
            _, extra = self._open.pop()
            self.forms.extend(extra)


def forms_on(page_url: str, html: str) -> list[PageForm]:
    parser = _FormParser(page_url)
    parser.feed(html)
    parser.close()
    return [form for form in parser.forms if urlsplit(form.action).path.startswith("/")]


# ---------------------------------------------------------------- what belongs to a tenant


def rows_of(tenant: Tenant) -> dict[str, list[dict[str, Any]]]:
    """Every row of every model that belongs to `tenant` (directly, or through a parent
    that does), and its members' user rows: compare before and after to see a change."""
    from django.apps import apps

    out: dict[str, list[dict[str, Any]]] = {}
    for model in apps.get_models():
        names = {f.name: f for f in model._meta.get_fields() if f.is_relation and f.many_to_one}
        if model is Tenant:
            queryset = model.objects.filter(pk=tenant.pk)
        elif "tenant" in names:
            queryset = model._default_manager.filter(tenant=tenant)
        elif model is User:
            queryset = model.objects.filter(memberships__tenant=tenant)
        else:
            parent = next(
                (n for n, f in names.items() if "tenant" in {g.name for g in f.related_model._meta.fields}), None
            )
            if parent is None:
                continue
            queryset = model._default_manager.filter(**{f"{parent}__tenant": tenant})
        out[model._meta.label] = list(queryset.order_by("pk").values())
    return out
