"""Test connection as a queued check: the page asks, a worker tests, the page shows our own
message and the mapped code (never what answered), a tenant's tests are rate-limited and
reach only the servers its host rules allow."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import TestCase
from django.utils import timezone

from backups.models import BackupSource, CheckStatus, SourceCheck
from tenants.models import AuditAction, AuditLog
from tests.db_servers import _unavailable
from tests.fakeservers import answering_postgres, banner_server, closed_port
from tests.helpers import drain, queued_tasks

SECRET = "pa$$-Wörd-never-shown"
FORM = "application/x-www-form-urlencoded"
HTMX = {"HX-Request": "true"}


def browser_post(client, url: str, fields: dict | None = None, **extra):  # type: ignore[no-untyped-def]
    """A form post as a browser sends it (URL-encoded, with whatever the page's form holds),
    its on-commit work done as after a real request (the Redis broker pushes tasks then)."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return client.post(url, urlencode(fields or {}, doseq=True), content_type=FORM, **extra)


def server_source(tenant, port: int, password: str = SECRET, host: str = "127.0.0.1") -> BackupSource:
    source = BackupSource(
        tenant=tenant, name=f"Orders DB {port}", kind="postgres", host=host, port=port, database="postgres"
    )
    source.username = "postgres"
    source.tls_mode = "disable"
    source.set_password(password)
    source.save()
    return source


def all_audit_text() -> str:
    return json.dumps([[e.action, e.target_label, e.details] for e in AuditLog.objects.all()], ensure_ascii=False)


def test_a_test_is_queued_with_only_its_code_and_its_result_shows_when_a_worker_did_it(
    client, bob, tenant, source
) -> None:
    client.force_login(bob)
    response = browser_post(client, f"/sources/{source.code}/test/", follow=True)
    assert response.redirect_chain[-1][0] == f"/t/{tenant.code}/sources/"
    check = SourceCheck.objects.get()
    assert check.status == CheckStatus.QUEUED and check.requested_by == bob
    assert 'data-state="pending"' in response.text and f"/source-checks/{check.code}/" in response.text
    (task,) = queued_tasks()
    assert task["func"] == "backups.connection.execute_check" and task["args"] == (str(check.code),)
    assert task["kwargs"] == {}
    from backups.connection import execute_check

    assert execute_check(str(check.code)) == "ok"
    assert execute_check(str(check.code)) == "not claimed"  # a second delivery does nothing
    page = client.get(f"/t/{tenant.code}/sources/").text
    assert 'data-state="ok"' in page and "1 tables" in page and "hx-get" not in page.split("check-result")[-1]
    entry = AuditLog.objects.get(action=AuditAction.SOURCE_TESTED)
    assert entry.actor == bob and entry.target_code == source.code and entry.details["ok"] is True


def test_htmx_gets_a_box_that_polls_until_the_result_is_there(client, bob, source) -> None:
    client.force_login(bob)
    box = browser_post(client, f"/sources/{source.code}/test/", headers=HTMX)
    check = SourceCheck.objects.get()
    poll = f'hx-get="/source-checks/{check.code}/"'
    assert box.status_code == 200 and "<html" not in box.text and poll in box.text
    assert f'id="check-{source.code}"' in box.text and 'hx-swap="outerHTML"' in box.text
    again = client.get(f"/source-checks/{check.code}/", headers=HTMX)
    assert poll in again.text and 'data-state="pending"' in again.text
    drain()
    done = client.get(f"/source-checks/{check.code}/", headers=HTMX)
    assert 'data-state="ok"' in done.text and "hx-get" not in done.text and "1 tables" in done.text
    # Without JavaScript the same address is a page of its own.
    page = client.get(f"/source-checks/{check.code}/")
    assert "<html" in page.text and "1 tables" in page.text


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_what_answered_on_the_port_is_never_shown(client, bob, tenant, caplog, kind) -> None:
    tool = {"postgres": "psql", "mysql": "mariadb"}[kind]
    if shutil.which(tool) is None:
        _unavailable(f"{tool} is not installed")
    banner = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13 banner-canary-7731\r\n"
    with banner_server(banner) as fake:
        source = server_source(tenant, fake.port)
        BackupSource.objects.filter(pk=source.pk).update(kind=kind)
        client.force_login(bob)
        browser_post(client, f"/sources/{source.code}/test/")
        with caplog.at_level("DEBUG"):
            drain()
        assert fake.connections >= 1  # the test did reach it
    check = SourceCheck.objects.get()
    assert not check.ok and check.error_code == "CONNECTION_FAILED"
    assert check.message.startswith("Could not connect to the")
    page = client.get(f"/t/{tenant.code}/sources/").text + client.get(f"/source-checks/{check.code}/").text
    for shown in (page, check.message, all_audit_text()):
        assert "banner-canary" not in shown and "OpenSSH" not in shown and "SSH-2.0" not in shown
        # No tool words either.
        assert "server closed the connection" not in shown and tool not in shown and "handshake" not in shown
    assert SECRET not in page + all_audit_text() + caplog.text


def test_a_tenant_may_start_only_so_many_tests_a_minute(client, bob, tenant, settings) -> None:
    settings.SOURCE_TESTS_PER_MINUTE = 2
    sources = [server_source(tenant, closed_port()) for _ in range(3)]
    client.force_login(bob)
    for source in sources[:2]:
        assert browser_post(client, f"/sources/{source.code}/test/").status_code == 302
    refused = browser_post(client, f"/sources/{sources[2].code}/test/", follow=True)
    assert "connection tests in the last minute" in refused.text
    box = browser_post(client, f"/sources/{sources[2].code}/test/", headers=HTMX)
    assert "connection tests in the last minute" in box.text and "hx-get" not in box.text
    assert SourceCheck.objects.count() == 2 and len(queued_tasks()) == 2
    # A minute later the tenant may test again.
    SourceCheck.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    assert browser_post(client, f"/sources/{sources[2].code}/test/").status_code == 302
    assert SourceCheck.objects.count() == 3


def test_the_limit_is_per_tenant(client, bob, charlie, tenant, settings) -> None:
    settings.SOURCE_TESTS_PER_MINUTE = 1
    mine = server_source(tenant, closed_port())
    client.force_login(charlie)
    theirs = server_source(charlie.memberships.get().tenant, closed_port())
    browser_post(client, f"/sources/{theirs.code}/test/")
    client.force_login(bob)
    browser_post(client, f"/sources/{mine.code}/test/")
    assert SourceCheck.objects.filter(source=mine).count() == 1


def test_pressing_again_while_a_test_waits_queues_no_second_one(client, bob, source) -> None:
    client.force_login(bob)
    browser_post(client, f"/sources/{source.code}/test/")
    browser_post(client, f"/sources/{source.code}/test/")
    assert SourceCheck.objects.count() == 1 and len(queued_tasks()) == 1


def test_a_test_no_worker_took_says_so_and_stops_polling(client, bob, source) -> None:
    client.force_login(bob)
    browser_post(client, f"/sources/{source.code}/test/")
    SourceCheck.objects.update(created_at=timezone.now() - timedelta(minutes=6))
    box = client.get(f"/source-checks/{SourceCheck.objects.get().code}/", headers=HTMX).text
    assert "is the cluster running?" in box and "hx-get" not in box
    browser_post(client, f"/sources/{source.code}/test/")  # a new one may be asked for
    assert SourceCheck.objects.count() == 2


def test_a_host_outside_the_tenants_rules_is_never_contacted(client, bob, tenant) -> None:
    from scheduling.models import BackupScheduleRun
    from scheduling.runs import run_now
    from tests.helpers import make_schedule

    with banner_server(b"hello\r\n") as fake:
        source = server_source(tenant, fake.port)  # saved before staff narrowed the rules
        tenant.server_hosts = ["10.9.8.0/24"]
        tenant.save()
        client.force_login(bob)
        browser_post(client, f"/sources/{source.code}/test/")
        with TestCase.captureOnCommitCallbacks(execute=True):
            run_now(make_schedule(tenant, source, name="Nightly"), actor=None)
        drain()
        assert fake.connections == 0
    check = SourceCheck.objects.get()
    assert check.error_code == "PERMISSION_DENIED" and "not among the database servers" in check.message
    run = BackupScheduleRun.objects.get()
    assert run.error_code == "PERMISSION_DENIED" and "not among the database servers" in run.error_message


def test_the_default_rules_come_from_the_setting(client, bob, tenant, settings) -> None:
    settings.SOURCE_ALLOWED_HOSTS = ["192.0.2.0/24"]
    source = server_source(tenant, closed_port())
    client.force_login(bob)
    browser_post(client, f"/sources/{source.code}/test/")
    drain()
    assert SourceCheck.objects.get().error_code == "PERMISSION_DENIED"
    settings.SOURCE_ALLOWED_HOSTS = ["127.0.0.0/8"]
    SourceCheck.objects.all().delete()
    browser_post(client, f"/sources/{source.code}/test/")
    drain()
    assert SourceCheck.objects.get().error_code == "CONNECTION_FAILED"  # allowed, and nobody listens


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_the_form_refuses_a_host_outside_the_rules(client, mia, tenant, host) -> None:
    tenant.server_hosts = ["10.9.8.0/24", "db.example.internal"]
    tenant.save()
    client.force_login(mia)
    fields = {"name": "X", "kind": "postgres", "host": host, "port": "5432", "database": "d", "username": "u"}
    fields.update(tls_mode="disable", password="p")
    response = browser_post(client, f"/t/{tenant.code}/sources/new/", fields)
    assert response.status_code == 200 and "not among the database servers this tenant may use" in response.text
    assert "10.9.8.0/24, db.example.internal" in response.text
    assert not BackupSource.objects.exists()


def test_the_result_page_requires_operator_and_checks_ownership(client, bob, rita, charlie, source) -> None:
    client.force_login(bob)
    browser_post(client, f"/sources/{source.code}/test/")
    url = f"/source-checks/{SourceCheck.objects.get().code}/"
    client.force_login(rita)
    assert client.get(url).status_code == 403
    client.force_login(charlie)
    assert client.get(url).status_code == 404
    client.logout()
    assert client.get(url).status_code == 302


def test_the_list_offers_test_connection_to_an_operator_but_not_to_a_readonly_member(
    client, bob, rita, tenant, source
) -> None:
    client.force_login(bob)
    assert f"/sources/{source.code}/test/" in client.get(f"/t/{tenant.code}/sources/").text
    client.force_login(rita)
    assert f"/sources/{source.code}/test/" not in client.get(f"/t/{tenant.code}/sources/").text


def test_test_connection_requires_operator(client, rita, source) -> None:
    client.force_login(rita)
    assert browser_post(client, f"/sources/{source.code}/test/").status_code == 403
    assert not SourceCheck.objects.exists()


def test_test_connection_checks_ownership(client, charlie, source) -> None:
    client.force_login(charlie)
    assert browser_post(client, f"/sources/{source.code}/test/").status_code == 404
    assert not SourceCheck.objects.exists()


def test_test_connection_rejects_get(client, bob, source) -> None:
    client.force_login(bob)
    assert client.get(f"/sources/{source.code}/test/").status_code == 405


def test_test_connection_requires_login(client, source) -> None:
    response = browser_post(client, f"/sources/{source.code}/test/")
    assert response.status_code == 302 and response.url.startswith("/accounts/login/")


def test_tenants_with_servers_from_before_the_rules_keep_them(tenant, charlie, settings) -> None:
    import importlib

    from django.apps import apps

    migration = importlib.import_module("backups.migrations.0004_sources_checks")
    settings.SOURCE_ALLOWED_HOSTS = ["127.0.0.1", "::1", "localhost"]
    server_source(tenant, 5432, host="DB.internal.example")
    server_source(tenant, 5433, host="10.0.5.7")
    server_source(tenant, 5434, host="127.0.0.1")
    theirs = charlie.memberships.get().tenant
    server_source(theirs, 5432, host="localhost")  # inside the default: nothing to keep
    migration.keep_existing_servers(apps, None)
    tenant.refresh_from_db()
    theirs.refresh_from_db()
    assert tenant.server_hosts == ["127.0.0.1", "::1", "localhost", "10.0.5.7", "db.internal.example"]
    assert theirs.server_hosts == []


def test_the_list_costs_the_same_queries_for_2_and_6_tested_sources(client, bob, tenant, settings) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.SOURCE_TESTS_PER_MINUTE = 10
    client.force_login(bob)
    counts = []
    for total in (2, 6):
        while BackupSource.objects.count() < total:
            browser_post(client, f"/sources/{server_source(tenant, closed_port()).code}/test/")
        drain()
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/t/{tenant.code}/sources/").status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]


@pytest.mark.parametrize("kind", ["postgres", "mysql"])
def test_the_tool_connects_to_the_address_that_was_checked_not_to_a_new_lookup(
    client, bob, tenant, monkeypatch, kind
) -> None:
    """DNS rebinding: the name resolves to an allowed address when we check it, and to
    anything (here: nothing at all) when the tool would look it up again. The tool must
    use the checked address, so the listener there is what it reaches."""
    import socket

    tool = {"postgres": "psql", "mysql": "mariadb"}[kind]
    if shutil.which(tool) is None:
        _unavailable(f"{tool} is not installed")
    real = socket.getaddrinfo

    def our_dns(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        # What an attacker's DNS server answers the worker: the tool's own lookup (another
        # process) still goes to the real resolver, which knows no such name.
        return real("127.0.0.1" if host == "db.rebind.invalid" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", our_dns)
    with banner_server(b"") as fake:
        source = server_source(tenant, fake.port, host="db.rebind.invalid")
        BackupSource.objects.filter(pk=source.pk).update(kind=kind)
        client.force_login(bob)
        browser_post(client, f"/sources/{source.code}/test/")
        drain()
        assert fake.connections == 1
    assert SourceCheck.objects.get().error_code == "CONNECTION_FAILED"


def test_a_hostile_server_that_lets_anyone_in_cannot_write_into_the_result(client, bob, tenant) -> None:
    if shutil.which("psql") is None:
        _unavailable("psql is not installed")
    canary = b"<b>canary-9931</b>"
    parameters = {
        b"server_version": b"15.4 " + canary,
        b"client_encoding": b"UTF8",
        b"standard_conforming_strings": b"on",
        b"integer_datetimes": b"on",
        b"DateStyle": b"ISO, MDY",
    }
    with answering_postgres([b"15.4 " + canary, b"root " + canary, b"3", b"0"], parameters) as fake:
        source = server_source(tenant, fake.port)
        client.force_login(bob)
        browser_post(client, f"/sources/{source.code}/test/")
        drain()
        assert fake.connections == 1
    check = SourceCheck.objects.get()
    assert check.ok and check.message == "Connected to PostgreSQL 15.4 as postgres; database “postgres”."
    page = client.get(f"/t/{tenant.code}/sources/").text
    assert "canary" not in page + all_audit_text()
