from __future__ import annotations

from tenants.models import Membership, Role, Tenant
from tests.conftest import PASSWORD, make_user


def test_home_sends_a_member_of_one_tenant_to_its_schedules(client, alice, tenant) -> None:
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 302
    assert response.url == f"/t/{tenant.code}/schedules/"


def test_home_lists_the_tenants_of_a_member_of_several(client, alice, tenant) -> None:
    other = Tenant.objects.create(name="Zeta Ltd")
    Membership.objects.create(user=alice, tenant=other, role=Role.READONLY)
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 200
    assert f"/t/{tenant.code}/schedules/" in response.text
    assert f"/t/{other.code}/schedules/" in response.text
    assert "Read-only" in response.text and "Owner" in response.text


def test_home_does_not_list_tenants_the_user_is_not_a_member_of(client, alice, charlie) -> None:
    Membership.objects.create(user=alice, tenant=Tenant.objects.create(name="Second"), role=Role.OWNER)
    client.force_login(alice)
    response = client.get("/")
    assert "Charlie&#x27;s" not in response.text


def test_home_tells_a_user_without_tenants_so(client, db) -> None:
    client.force_login(make_user("nobody"))
    response = client.get("/")
    assert response.status_code == 200
    assert "not a member of any tenant" in response.text


def test_home_redirects_anonymous_users_to_login(client, db) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def test_the_login_page_logs_a_user_in(client, alice, tenant) -> None:
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert '<label for="id_username">' in page.text
    response = client.post("/accounts/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert response.url == "/"


def test_the_login_page_rejects_a_wrong_password(client, alice) -> None:
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.text


def test_logout_is_a_post(client, alice) -> None:
    client.force_login(alice)
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302  # back to the login page


def test_pages_show_a_logout_form_and_a_csrf_header_for_htmx(client, alice, tenant) -> None:
    client.force_login(alice)
    response = client.get(f"/t/{tenant.code}/schedules/")
    assert 'action="/accounts/logout/"' in response.text
    assert 'hx-headers=\'{"x-csrftoken": "' in response.text
    assert "/static/django_htmx/htmx-2" in response.text
