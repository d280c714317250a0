"""Test connection in a browser: the box beside the source waits, then shows the worker's
result without a reload, as one whole block (not an inline box torn across lines)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from backups.models import BackupSource
from tests.browser.conftest import log_in, screenshot
from tests.browser.test_narrow import assert_fits, assert_on_screen
from tests.fakeservers import closed_port
from tests.helpers import drain

pytestmark = pytest.mark.browser


def test_a_test_result_appears_by_itself_as_one_block(page, bob, tenant, source) -> None:
    failing = BackupSource(
        tenant=tenant, name="Orders server with a long name", kind="postgres", host="127.0.0.1", port=closed_port()
    )
    failing.username = "backup"
    failing.database = "orders"
    failing.tls_mode = "disable"
    failing.save()
    page.set_viewport_size({"width": 900, "height": 900})  # long messages wrap
    log_in(page, bob)
    page.goto(f"/t/{tenant.code}/sources/")
    for name in ("Shop", failing.name):
        page.get_by_role("button", name=f"Test connection of {name}").click()
    ok_box, failed_box = page.locator(f"#check-{source.code}"), page.locator(f"#check-{failing.code}")
    expect(ok_box).to_have_attribute("data-state", "pending")
    expect(failed_box).to_have_attribute("data-state", "pending")
    drain()  # the worker's part
    expect(ok_box).to_have_attribute("data-state", "ok")
    expect(failed_box).to_have_attribute("data-state", "failed")
    expect(failed_box).to_contain_text("Failed (CONNECTION_FAILED): Could not connect to the PostgreSQL server")
    for box in (ok_box, failed_box):
        # A block has one rectangle whatever its lines; an inline box broken across lines has several.
        assert box.evaluate("element => element.getClientRects().length") == 1
        assert box.evaluate("element => getComputedStyle(element).display") == "block"
    screenshot(page, "sources-test-connection")
    page.set_viewport_size({"width": 390, "height": 900})  # a phone: the rows stack, the boxes fit
    assert_fits(page, 390)
    for box in (ok_box, failed_box):
        assert_on_screen(box, 390)
    screenshot(page, "narrow-sources-test-connection")


def test_the_source_form_shows_the_fields_of_the_chosen_kind(page, mia, tenant) -> None:
    log_in(page, mia)
    page.goto(f"/t/{tenant.code}/sources/new/")
    server = page.locator('main [data-kinds="postgres mysql"]')
    files = page.locator('main [data-kinds="sqlite directory"]')
    page.get_by_label("Kind").select_option("postgres")
    expect(server).to_be_visible()
    expect(files).to_be_hidden()
    page.get_by_label("Kind").select_option("directory")
    expect(files).to_be_visible()
    expect(server).to_be_hidden()
    expect(page.get_by_text(f"inside this tenant's folders: {tenant.file_roots[0]}")).to_be_visible()
