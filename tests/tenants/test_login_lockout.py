"""Login throttling (django-axes): per username and per client address, on the login page
and the admin's, each lock audited once, posted exactly as a browser posts the form."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tenants.models import AuditAction, AuditLog, Membership, Role, Tenant
from tests.conftest import PASSWORD

LOGIN = "/accounts/login/"
ADMIN_LOGIN = "/admin/login/"
LIMIT = 5  # the default LOGIN_FAILURE_LIMIT


def browser(address: str = "203.0.113.7", **headers: str) -> Client:
    return Client(enforce_csrf_checks=True, REMOTE_ADDR=address, **headers)


def post_login(client: Client, username: str, password: str, url: str = LOGIN):  # type: ignore[no-untyped-def]
    """GET the page, take the CSRF token from its form, POST the fields the form has."""
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.content)
    assert token, "the login page has no CSRF token"
    data = {"csrfmiddlewaretoken": token.group(1).decode(), "username": username, "password": password}
    if url == LOGIN:
        data["next"] = ""
    else:
        data["next"] = "/admin/"
    return client.post(url, data)


def locks(tenant: Tenant) -> list[AuditLog]:
    return list(AuditLog.objects.filter(tenant=tenant, action=AuditAction.LOGIN_LOCKED))


def test_a_username_is_locked_after_the_limit_and_the_right_password_no_longer_helps(
    alice: User, tenant: Tenant
) -> None:
    client = browser()
    for _ in range(LIMIT - 1):
        assert post_login(client, "alice", "wrong").status_code == 200
    locked = post_login(client, "alice", "wrong")
    assert locked.status_code == 429
    assert b"Login locked" in locked.content
    assert b"15 minutes" in locked.content
    again = post_login(client, "alice", PASSWORD)
    assert again.status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_username_lock_holds_from_every_address(alice: User, bob: User) -> None:
    for n in range(LIMIT):
        post_login(browser(f"198.51.100.{n + 1}"), "alice", "wrong")
    fresh = browser("192.0.2.50")
    assert post_login(fresh, "alice", PASSWORD).status_code == 429
    # The lock is alice's, not that address's: bob logs in from it.
    response = post_login(fresh, "bob", PASSWORD)
    assert response.status_code == 302
    assert fresh.session["_auth_user_id"] == str(bob.pk)


def test_an_address_is_locked_when_it_tries_many_usernames(alice: User) -> None:
    attacker = browser("203.0.113.66")
    for n in range(LIMIT):
        post_login(attacker, f"guess{n}", "wrong")
    assert post_login(attacker, "alice", PASSWORD).status_code == 429
    # alice herself, from elsewhere, is not locked.
    assert post_login(browser("192.0.2.10"), "alice", PASSWORD).status_code == 302


def test_a_forged_forwarded_header_does_not_reset_the_address_lock(alice: User) -> None:
    """Without a trusted proxy, X-Forwarded-For is the client's own words and is ignored."""
    for n in range(LIMIT):
        post_login(browser("203.0.113.66", HTTP_X_FORWARDED_FOR=f"10.9.9.{n}"), f"guess{n}", "wrong")
    forged = browser("203.0.113.66", HTTP_X_FORWARDED_FOR="10.1.1.1")
    assert post_login(forged, "alice", PASSWORD).status_code == 429


def test_behind_a_trusted_proxy_the_forwarded_client_address_is_the_one_locked(settings, alice: User) -> None:
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = "10.0.0.2"
    for n in range(LIMIT):
        # The client wrote "1.1.1.1"; the proxy appended the address it saw.
        post_login(browser(proxy, HTTP_X_FORWARDED_FOR="1.1.1.1, 203.0.113.66"), f"guess{n}", "wrong")
    assert post_login(browser(proxy, HTTP_X_FORWARDED_FOR="203.0.113.66"), "alice", PASSWORD).status_code == 429
    # Another client behind the same proxy is not locked.
    assert post_login(browser(proxy, HTTP_X_FORWARDED_FOR="198.51.100.9"), "alice", PASSWORD).status_code == 302


def test_the_admin_login_is_throttled_too(db) -> None:
    User.objects.create_superuser("root", "root@example.org", PASSWORD)
    client = browser()
    for _ in range(LIMIT):
        last = post_login(client, "root", "wrong", ADMIN_LOGIN)
    assert last.status_code == 429
    assert b"Login locked" in last.content
    assert post_login(client, "root", PASSWORD, ADMIN_LOGIN).status_code == 429


def test_a_lock_is_audited_once_in_each_tenant_of_the_user(alice: User, tenant: Tenant, charlie: User) -> None:
    other = Tenant.objects.get(name="Charlie's")
    Membership.objects.create(user=alice, tenant=other, role=Role.READONLY)
    client = browser("203.0.113.7")
    for _ in range(LIMIT + 3):  # tries during the lock are not new locks
        post_login(client, "alice", "wrong")
    for each in (tenant, other):
        [entry] = locks(each)
        assert entry.actor is None
        assert entry.target_type == "user"
        assert entry.target_label == "alice"
        assert entry.details == {
            "ip_address": "203.0.113.7",
            "failures": LIMIT,
            "locked_minutes": 15,
            "login_page": "app",
        }
        assert "wrong" not in str(entry.details)


def test_a_lock_of_an_unknown_username_is_logged_not_audited(tenant: Tenant, caplog: pytest.LogCaptureFixture) -> None:
    client = browser()
    for _ in range(LIMIT):
        post_login(client, "nobody", "wrong")
    assert not AuditLog.objects.filter(action=AuditAction.LOGIN_LOCKED).exists()
    assert any("login locked" in record.getMessage() and "'nobody'" in record.getMessage() for record in caplog.records)


def test_a_successful_login_clears_the_failures(alice: User) -> None:
    client = browser()
    for _ in range(LIMIT - 1):
        post_login(client, "alice", "wrong")
    assert post_login(client, "alice", PASSWORD).status_code == 302
    client.post("/accounts/logout/", {"csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    for _ in range(LIMIT - 1):
        assert post_login(client, "alice", "wrong").status_code == 200


def test_the_tenants_members_see_the_lock_in_their_audit_log(client, alice: User, mia: User, tenant: Tenant) -> None:
    attacker = browser("203.0.113.9")
    for _ in range(LIMIT):
        post_login(attacker, "alice", "wrong")
    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/audit/?action=account.locked_out")
    assert page.status_code == 200
    assert "Logging in as “alice” was locked for 15 minutes after 5 failed logins (last from 203.0.113.9)" in page.text


def test_an_address_lock_is_not_audited_as_the_lock_of_the_user_tried_last(alice: User, tenant: Tenant) -> None:
    attacker = browser("203.0.113.66")
    for n in range(LIMIT - 1):
        post_login(attacker, f"guess{n}", "wrong")
    assert post_login(attacker, "alice", "wrong").status_code == 429  # the address reached the limit
    assert locks(tenant) == []
    assert post_login(browser("192.0.2.10"), "alice", PASSWORD).status_code == 302  # alice is not locked


def test_a_username_lock_reached_while_the_address_is_locked_is_audited(alice: User, tenant: Tenant) -> None:
    attacker = browser("203.0.113.66")
    for n in range(LIMIT):
        post_login(attacker, f"guess{n}", "wrong")
    for _ in range(LIMIT):
        post_login(attacker, "alice", "wrong")
    assert len(locks(tenant)) == 1
    assert post_login(browser("192.0.2.10"), "alice", PASSWORD).status_code == 429
