"""A stored password never reaches a server a manager chose afterwards: changing where it
goes (kind, host, port, user, or weaker TLS) needs the password typed again, or cleared.

Attacked with a PostgreSQL listener on 127.0.0.1 that asks for the password in clear
text and records every byte it receives."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.test import TestCase

from backups.models import BackupSource
from scheduling.models import BackupScheduleRun
from scheduling.runs import run_now
from tenants.models import AuditAction, AuditLog
from tests.fakeservers import fake_postgres
from tests.helpers import drain, make_schedule
from tests.scheduling.test_views_sources import pg_fields

STORED = "Stored-Secret-4711"
FORM = "application/x-www-form-urlencoded"


def browser_post(client, url: str, fields: dict):  # type: ignore[no-untyped-def]
    """As a browser posts a form; on-commit work done as after a real request (Redis pushes then)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(url, urlencode(fields), content_type=FORM)


def fields(**overrides: str) -> dict[str, str]:
    """The edit form as a browser posts it: the password field empty unless typed."""
    return pg_fields(**{"password": "", "tls_mode": "disable", **overrides})


@pytest.fixture
def stored(client, mia, tenant) -> BackupSource:
    client.force_login(mia)
    response = browser_post(client, f"/t/{tenant.code}/sources/new/", fields(password=STORED))
    assert response.status_code == 302
    return BackupSource.objects.get()


def exercise(client, bob, mia, source: BackupSource, on_commit) -> None:  # type: ignore[no-untyped-def]
    """Test connection and a backup run of the source, as an operator and the cluster do them."""
    client.force_login(bob)
    browser_post(client, f"/sources/{source.code}/test/", {})
    schedule = make_schedule(source.tenant, source, name=f"Run {BackupScheduleRun.objects.count()}")
    with on_commit(execute=True):
        run_now(schedule, actor=None)
    drain()
    client.force_login(mia)


@pytest.mark.parametrize(
    "change",
    [
        {"port": "{port}"},
        {"host": "localhost", "port": "{port}"},
        {"port": "{port}", "username": "postgres"},
        {"port": "{port}", "database": "other"},
        {"kind": "mysql", "port": "{port}"},
    ],
    ids=["port", "host", "user", "port-and-database", "kind"],
)
def test_a_new_endpoint_with_the_password_left_blank_is_refused(
    client, bob, mia, stored, change, django_capture_on_commit_callbacks
) -> None:
    with fake_postgres() as fake:
        posted = {k: v.format(port=fake.port) for k, v in change.items()}
        response = browser_post(client, f"/sources/{stored.code}/edit/", fields(**posted))
        assert response.status_code == 200 and "Enter the password again" in response.text
        before = (stored.host, stored.port, stored.username, stored.kind)
        stored.refresh_from_db()
        assert (stored.host, stored.port, stored.username, stored.kind) == before
        exercise(client, bob, mia, stored, django_capture_on_commit_callbacks)
        assert STORED.encode() not in bytes(fake.received) and fake.connections == 0
    assert stored.get_password() == STORED


def test_clearing_the_password_moves_the_source_and_nothing_of_the_password_arrives(
    client, bob, mia, stored, django_capture_on_commit_callbacks
) -> None:
    with fake_postgres() as fake:
        response = browser_post(
            client, f"/sources/{stored.code}/edit/", fields(port=str(fake.port), clear_password="on")
        )
        assert response.status_code == 302
        stored.refresh_from_db()
        assert stored.port == fake.port and not stored.has_password
        exercise(client, bob, mia, stored, django_capture_on_commit_callbacks)
        # It did reach the listener (Test connection and the backup), with no password at all.
        assert fake.connections >= 2 and b"backup\0" in bytes(fake.received)
        assert STORED.encode() not in bytes(fake.received)
    changes = AuditLog.objects.get(action=AuditAction.SOURCE_UPDATED).details["changes"]
    assert changes["password"] == "cleared" and changes["port"] == [5432, fake.port]


def test_a_password_typed_again_is_the_only_one_the_new_server_gets(
    client, bob, mia, stored, django_capture_on_commit_callbacks
) -> None:
    typed = "Typed-Anew-0815"
    with fake_postgres() as fake:
        response = browser_post(client, f"/sources/{stored.code}/edit/", fields(port=str(fake.port), password=typed))
        assert response.status_code == 302
        exercise(client, bob, mia, stored, django_capture_on_commit_callbacks)
        received = bytes(fake.received)
    # The listener does capture a password sent to it: the one typed for it, never the stored one.
    assert typed.encode() + b"\0" in received
    assert STORED.encode() not in received


def test_the_database_on_the_same_server_keeps_the_password(client, stored) -> None:
    response = browser_post(client, f"/sources/{stored.code}/edit/", fields(database="orders2"))
    assert response.status_code == 302
    stored.refresh_from_db()
    assert stored.database == "orders2" and stored.get_password() == STORED


def test_weaker_tls_needs_the_password_again_and_stronger_does_not(client, mia, tenant) -> None:
    client.force_login(mia)
    browser_post(client, f"/t/{tenant.code}/sources/new/", fields(name="TLS DB", password=STORED, tls_mode="require"))
    source = BackupSource.objects.get(name="TLS DB")
    weaker = browser_post(client, f"/sources/{source.code}/edit/", fields(name="TLS DB", tls_mode="prefer"))
    assert weaker.status_code == 200 and "Enter the password again" in weaker.text
    stronger = browser_post(client, f"/sources/{source.code}/edit/", fields(name="TLS DB", tls_mode="verify-full"))
    assert stronger.status_code == 302
    source.refresh_from_db()
    assert source.tls_mode == "verify-full" and source.get_password() == STORED


def test_a_bad_port_on_an_edit_is_a_form_error_not_a_crash(client, stored) -> None:
    response = browser_post(client, f"/sources/{stored.code}/edit/", fields(port="70000"))
    assert response.status_code == 200 and "from 1 to 65535" in response.text
