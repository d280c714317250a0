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


# ------------------------------------------------------------------ header: switcher, nav, toasts


def test_the_header_switches_tenants_keeping_the_section(client, alice, tenant) -> None:
    other = Tenant.objects.create(name="Zeta Ltd")
    Membership.objects.create(user=alice, tenant=other, role=Role.READONLY)
    client.force_login(alice)
    text = client.get(f"/t/{tenant.code}/runs/").text
    switcher = text[text.index('class="menu tenant-switcher"') : text.index("</details>")]
    assert f'href="/t/{other.code}/runs/"' in switcher
    assert f'href="/t/{tenant.code}/runs/" aria-current="true"' in switcher
    assert 'href="/"' in switcher  # all tenants
    audit = client.get(f"/t/{tenant.code}/audit/").text
    assert f'href="/t/{other.code}/audit/"' in audit


def test_a_member_of_one_tenant_sees_no_switcher(client, alice, tenant) -> None:
    client.force_login(alice)
    text = client.get(f"/t/{tenant.code}/runs/").text
    assert "tenant-switcher" not in text and "Alice &amp; Co" in text


def test_the_switcher_costs_one_query_for_2_or_12_tenants(client, alice, tenant) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(alice)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            client.get(f"/t/{tenant.code}/runs/")
        return len(queries)

    Membership.objects.create(user=alice, tenant=Tenant.objects.create(name="T0"), role=Role.OWNER)
    two = count()
    for i in range(1, 11):
        Membership.objects.create(user=alice, tenant=Tenant.objects.create(name=f"T{i}"), role=Role.OWNER)
    assert count() == two


def test_the_nav_offers_every_section_to_every_member(client, alice, mia, bob, rita, tenant) -> None:
    """Settings shows a read-only member the schedules' status; its forms check roles themselves."""
    for user in (alice, mia, bob, rita):
        client.force_login(user)
        text = client.get(f"/t/{tenant.code}/runs/").text
        for label in ("Schedules", "Runs", "Settings", "Sources", "Audit log"):
            assert f">{label}</a>" in text, (user, label)
        assert f'href="/t/{tenant.code}/settings/"' in text


def test_the_current_section_is_marked_in_the_nav(client, rita, tenant) -> None:
    client.force_login(rita)
    text = client.get(f"/t/{tenant.code}/audit/").text
    assert f'<a href="/t/{tenant.code}/audit/" aria-current="page">Audit log</a>' in text


def test_an_anonymous_visitor_gets_a_log_in_link_not_a_tenant_nav(client, db) -> None:
    text = client.get("/accounts/login/").text
    assert 'href="/accounts/login/"' in text and "Log out" not in text and 'id="bell"' not in text


def test_messages_become_toasts_in_a_live_region(client, alice, tenant) -> None:
    client.force_login(alice)
    response = client.post(f"/t/{tenant.code}/notifications/read-all/", follow=True)
    text = response.text
    region = text[text.index('id="messages"') :]
    assert (
        'role="status" aria-live="polite"'
        in text[text.index('<div id="messages"') - 5 : text.index('id="messages"') + 120]
    )
    assert "Marked 0 notifications read." in region
    assert '<button type="button" class="toast-close"' in region
    assert "/static/js/app.js" in text


def test_pages_name_their_icon_so_browsers_do_not_ask_for_a_missing_favicon(client) -> None:
    from django.conf import settings

    text = client.get("/accounts/login/").text
    assert '<link rel="icon" href="/static/img/favicon.svg" type="image/svg+xml">' in text
    assert (settings.BASE_DIR / "static" / "img" / "favicon.svg").read_text().startswith("<svg")
