"""A planted password, then everything that handles one: the source form, Test connection,
a backup through the queue, an authentication failure, edits, a verify and a restore.
Afterwards the password is searched for everywhere it could have leaked: every column of
every table (the encrypted one aside), every log record, every queued task, every e-mail
and every page the owner can open. Also in its base64 and URL-encoded forms."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from django.apps import apps
from django.contrib.sessions.models import Session
from django.core import mail
from django.urls import reverse
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from backups.models import BackupItem, BackupSet, BackupSource, SourceCheck
from scheduling.models import BackupSchedule, BackupScheduleRun, Notification, Operation, RunStatus
from tenants.models import Role, Tenant
from tests.conftest import member
from tests.db_servers import (
    MARIADB_HOST,
    MARIADB_PORT,
    PG_HOST,
    PG_PORT,
    mariadb_database,
    mariadb_user,
    pg_database,
    pg_execute,
    require_mariadb,
    require_postgres,
)
from tests.helpers import execute, make_schedule, queued_tasks
from tests.site_map import Browser, routes
from tests.test_access_matrix import TENANT_ROLES, rule_for

pytestmark = pytest.mark.services

# Characters that URL-encoding, JSON and base64 each change, so each form is its own needle.
PLANTED = "Zq9-pl@nted+PW/7x"
# The one column that holds it, encrypted (backups/secrets.py).
ENCRYPTED = {("backups.BackupSource", "password_encrypted")}


def base64_fragments(secret: str) -> set[str]:
    """The part of any base64 text that encodes `secret`, whatever its offset in the data:
    for each of the three alignments, the characters made of its bits alone."""
    data = secret.encode()
    out = set()
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * shift + data).decode()
            first = -(-shift * 8 // 6)  # the first character wholly inside the secret's bits
            last = ((shift + len(data)) * 8 - 6) // 6
            out.add(text[first : last + 1])
    return out


NEEDLES = {PLANTED, quote(PLANTED, safe=""), quote_plus(PLANTED), PLANTED.replace("/", "\\/")}
NEEDLES |= base64_fragments(PLANTED)


def test_the_base64_needles_find_the_password_at_any_offset() -> None:
    for prefix in ("", "a", "ab", "abc", "Basic user:"):
        encoded = base64.b64encode((prefix + PLANTED + "tail").encode()).decode()
        assert any(needle in encoded for needle in base64_fragments(PLANTED)), prefix
    assert not any(needle in base64.b64encode(b"Zq9-pl@nted+PW/7y").decode() for needle in base64_fragments("x" * 17))


# ---------------------------------------------------------------- where it could be


def table_texts() -> Iterator[tuple[str, str]]:
    """Every value of every row of every model's table, as text (pickled and JSON columns
    decoded by their fields; sessions decoded)."""
    for model in apps.get_models():
        columns = [f.attname for f in model._meta.concrete_fields if (model._meta.label, f.attname) not in ENCRYPTED]
        for row in model._default_manager.values(*columns):
            for column, value in row.items():
                yield f"{model._meta.label}.{column}", repr(value) + str(value)
    for session in Session.objects.all():
        yield "session data", repr(session.get_decoded())
    for task in OrmQ.objects.all():  # signed and compressed: only its decoded form can show it
        yield "queued task (ORM broker)", repr(SignedPackage.loads(task.payload))


def mail_texts() -> Iterator[tuple[str, str]]:
    for message in mail.outbox:
        yield "mail", repr(message.message().as_bytes()) + message.subject + message.body
        for content, _ in getattr(message, "alternatives", []):
            yield "mail alternative", str(content)


def page_urls(tenant: Tenant) -> list[str]:
    """Every page of the tenant its owner can GET, for every object of each kind."""
    objects = {
        "schedule": BackupSchedule.objects.filter(tenant=tenant),
        "run": BackupScheduleRun.objects.filter(tenant=tenant),
        "set": BackupSet.objects.filter(tenant=tenant),
        "source": BackupSource.objects.filter(tenant=tenant),
        "notification": Notification.objects.filter(tenant=tenant, user__username="alice"),
        "check": SourceCheck.objects.filter(tenant=tenant),
    }
    urls = []
    for route in routes():
        rule = rule_for(route)
        if not rule or rule.get not in TENANT_ROLES:
            continue
        if "item_code" in route.params:
            for item in BackupItem.objects.filter(backup_set__tenant=tenant):
                urls.append(reverse(route.name, args=[item.backup_set.code, item.code]))
        elif "code" in route.params:
            urls += [reverse(route.name, args=[obj.code]) for obj in objects[rule.names]]
        else:
            urls.append(reverse(route.name, args=[tenant.code]))
    return urls


def leaks(haystacks: list[tuple[str, str]]) -> list[str]:
    return [f"{where}: {needle!r}" for where, text in haystacks for needle in NEEDLES if needle in text]


def test_the_search_finds_the_password_wherever_it_is_put(tenant, client, caplog) -> None:
    """The collectors reach a table's JSON column, a session, a log record and an e-mail."""
    from django.core.mail import send_mail

    from tenants.audit import record

    record(tenant, "source_tested", tenant, note=f"said {PLANTED}")
    session = client.session
    session["flash"] = base64.b64encode(f"user:{PLANTED}".encode()).decode()
    session.save()
    logging.getLogger("backups.test").warning("connecting with %s", quote(PLANTED, safe=""))
    send_mail("subject", f"body {PLANTED}", None, ["a@example.org"])
    found = leaks(list(table_texts()) + list(mail_texts()) + [(r.name, log_text(r)) for r in caplog.records])
    places = {where.split(":")[0] for where in found}
    assert {"tenants.AuditLog.details", "session data", "backups.test", "mail"} <= places, found


# ---------------------------------------------------------------- the story


@pytest.fixture
def servers() -> None:
    require_postgres()
    require_mariadb()


class Story:
    """Alice (owner) and Mia (manager) of one tenant, acting through the pages."""

    def __init__(self, tenant: Tenant, capture: Any) -> None:
        self.tenant = tenant
        self.alice = member(tenant, "alice", Role.OWNER)
        self.mia = member(tenant, "mia", Role.MANAGER)
        self.owner = Browser(self.alice)
        self.capture = capture
        self.tasks: list[str] = []  # every task as queued: its decoded payload

    def post(self, url: str, data: dict[str, Any] | None = None) -> Any:
        """A form post; what it queues runs the way a worker runs it."""
        with self.capture(execute=True):
            response = self.owner.post(url, data or {})
        assert response.status_code < 400, (url, response.status_code)
        self.work()
        return response

    def work(self) -> None:
        while tasks := queued_tasks():
            for task in tasks:
                self.tasks.append(repr(task))
                with self.capture(execute=True):
                    execute(task)


def source_fields(**fields: Any) -> dict[str, Any]:
    return {"tls_mode": "disable", "password": PLANTED, **fields}


def test_a_planted_password_appears_nowhere(
    servers, tenant, settings, caplog, django_capture_on_commit_callbacks
) -> None:
    caplog.set_level(logging.DEBUG)
    # django_q keeps its own logger level (settings.LOGGING); this test hears everything.
    q_logger = logging.getLogger("django_q")
    q_logger.addHandler(caplog.handler)
    previous, q_logger.level = q_logger.level, logging.DEBUG
    story = Story(tenant, django_capture_on_commit_callbacks)
    try:
        with pg_database("bt_planted") as database, mariadb_database("bt_planted") as other:
            try:
                act(story, database, other)
            finally:
                restored = pg_execute(f"SELECT datname FROM pg_database WHERE datname LIKE '{database}_restore_%'")
                for (name,) in restored:
                    pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            assert restored, "the restore made a new database"
            haystacks = list(table_texts()) + list(mail_texts())
            haystacks += [("queued task", text) for text in story.tasks]
            for url in page_urls(tenant):
                haystacks.append((f"GET {url}", story.owner.get(url).text))
                haystacks.append((f"htmx GET {url}", story.owner.get(url, HTTP_HX_REQUEST="true").text))
            haystacks += [(f"log {r.name}", log_text(r)) for r in caplog.records]
            assert not leaks(haystacks), leaks(haystacks)
            # The search itself reaches where the story went.
            assert len(mail.outbox) >= 1 and len(story.tasks) >= 4 and len(caplog.records) >= 1
    finally:
        q_logger.removeHandler(caplog.handler)
        q_logger.level = previous


def log_text(record: logging.LogRecord) -> str:
    text = record.getMessage() + repr(record.args)
    if record.exc_info:
        text += logging.Formatter().formatException(record.exc_info)
    return text + (record.exc_text or "") + (record.stack_info or "")


def act(story: Story, database: str, other: str) -> None:
    tenant = story.tenant
    pg_execute("CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items VALUES (1, 'one')", database)
    # The password typed into the form; the server trusts 127.0.0.1, so it still travels
    # the whole way to pg_dump without being checked.
    story.post(
        reverse("source_create", args=[tenant.code]),
        source_fields(
            name="Shop PG", kind="postgres", host=PG_HOST, port=PG_PORT, database=database, username="postgres"
        ),
    )
    source = BackupSource.objects.get(tenant=tenant, name="Shop PG")
    assert source.get_password() == PLANTED
    story.post(reverse("source_test", args=[source.code]))
    schedule = make_schedule(tenant, source, name="Shop nightly", keep_last=3)
    story.post(reverse("schedule_run_now", args=[schedule.code]))
    backup = BackupScheduleRun.objects.get(schedule=schedule, operation=Operation.BACKUP)
    assert backup.status == RunStatus.SUCCEEDED, backup.error_message

    # An authentication failure: MariaDB checks passwords, and this user has another one.
    with mariadb_user("the-real-password", grants=f"GRANT ALL ON `{other}`.* TO '{{user}}'@'%'") as user:
        story.post(
            reverse("source_create", args=[tenant.code]),
            source_fields(
                name="Wrong MariaDB", kind="mysql", host=MARIADB_HOST, port=MARIADB_PORT, database=other, username=user
            ),
        )
        wrong = BackupSource.objects.get(tenant=tenant, name="Wrong MariaDB")
        story.post(reverse("source_test", args=[wrong.code]))
        failing = make_schedule(tenant, wrong, name="Wrong nightly", keep_last=3)
        story.post(reverse("schedule_run_now", args=[failing.code]))
        failed = BackupScheduleRun.objects.get(schedule=failing)
        assert failed.status in (RunStatus.FAILED, RunStatus.QUEUED), failed.status  # QUEUED: waiting for a retry
        assert failed.error_code, "the run says why it failed"

    # Edits: one keeping the stored password (blank field), one typing it again.
    edit = reverse("source_edit", args=[source.code])
    common = {"kind": "postgres", "host": PG_HOST, "port": PG_PORT, "database": database, "username": "postgres"}
    story.post(edit, source_fields(name="Shop PG renamed", **common, password=""))
    story.post(edit, source_fields(name="Shop PG", **common))
    assert story.owner.get(edit).status_code == 200

    backup_set = BackupSet.objects.get(run=backup)
    story.post(reverse("set_verify", args=[backup_set.code]))
    verify = BackupScheduleRun.objects.get(operation=Operation.VERIFY)
    assert verify.status == RunStatus.SUCCEEDED, verify.error_message
    story.post(reverse("set_restore", args=[backup_set.code]))
    restore = BackupScheduleRun.objects.get(operation=Operation.RESTORE)
    assert restore.status == RunStatus.SUCCEEDED, restore.error_message
