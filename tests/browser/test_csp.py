"""The Content-Security-Policy in a real browser: the pages run under it without a refusal
(the page fixture fails any test on one), and what it forbids is in fact refused."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import log_in

pytestmark = pytest.mark.browser


def test_the_pages_carry_the_policy_and_an_injected_inline_script_is_refused(page, alice, tenant, schedule) -> None:
    log_in(page, alice)
    response = page.goto(f"/t/{tenant.code}/schedules/")
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert "camera=()" in response.headers["permissions-policy"]
    # What an injection would do: an inline script and an inline style. Both must be refused.
    page.evaluate(
        """() => {
            const s = document.createElement("script");
            s.textContent = "document.body.dataset.pwned = '1'";
            document.body.appendChild(s);
            document.body.setAttribute("style", "background: red");
        }"""
    )
    expect(page.locator("body")).not_to_have_attribute("data-pwned", "1")
    assert any("script-src" in text for text in page.csp_violations), page.csp_violations
    assert any("style-src" in text for text in page.csp_violations), page.csp_violations
    # Seen, so the fixture's check (no violation on any page) must not fail this test.
    page.csp_violations.clear()


def test_the_source_form_shows_only_the_chosen_kinds_fields_from_the_static_script(page, alice, tenant) -> None:
    log_in(page, alice)
    page.goto(f"/t/{tenant.code}/sources/new/")
    server = page.get_by_role("group", name="Database server")
    files = page.get_by_role("group", name="File")
    page.get_by_label("Kind").select_option("postgres")
    expect(server).to_be_visible()
    expect(files).to_be_hidden()
    page.get_by_label("Kind").select_option("sqlite")
    expect(files).to_be_visible()
    expect(server).to_be_hidden()


def test_the_admin_runs_under_the_policy(page, db, schedule) -> None:
    from django.contrib.auth.models import User

    from tests.conftest import PASSWORD

    User.objects.create_superuser("root", "root@example.org", PASSWORD)
    page.goto("/admin/login/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Site administration")).to_be_visible()
    for path in ("/admin/scheduling/backupschedule/", f"/admin/scheduling/backupschedule/{schedule.pk}/change/"):
        page.goto(path)
        page.wait_for_load_state("load")
    # The page fixture fails the test on any violation these pages caused.
