"""Browser tests: Playwright's sync API driving Debian's chromium against Django's live server.

Chromium comes from apt (scripts/ensure-browser.sh); `playwright install` downloads a
browser, which does not work on our machines, so it is never used. Without
/usr/bin/chromium the tests skip with the reason, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.conftest import PASSWORD
from tests.helpers import ROOT

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Generous: the machine is shared; a wait ends as soon as the page is right.
TIMEOUT_MS = 20_000


def _missing_browser(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: browser tests must run; scripts/ensure-browser.sh installs it)")
    pytest.skip(f"{reason}; run `bash scripts/ensure-browser.sh` as root (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    if not os.access(CHROMIUM, os.X_OK):
        _missing_browser(f"no chromium at {CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)

    # Playwright's sync API marks its event loop as running in this thread between
    # calls, and Django then refuses ORM calls from the test ("async context").
    # The ORM is only used synchronously here, so allow it, for as long as the
    # browser lives: module scope keeps the rest of the suite's guard intact.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except Exception as exc:
            _missing_browser(f"chromium at {CHROMIUM} did not start: {exc}")
        yield launched
        launched.close()
    finally:
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def open_page(browser, live_server) -> Iterator[Callable[..., Any]]:
    """Tabs in fresh browser contexts, e.g. open_page(timezone_id="America/Chicago",
    width=390): a zone and a window width as a person's browser has them. Every tab is
    checked for script errors and Content-Security-Policy violations at the end."""
    contexts: list[Any] = []
    errors: list[str] = []
    violations: list[str] = []

    def opened(timezone_id: str | None = None, width: int = 1280, height: int = 900) -> Any:
        options: dict[str, Any] = {"base_url": live_server.url, "viewport": {"width": width, "height": height}}
        if timezone_id:
            options["timezone_id"] = timezone_id
        context = browser.new_context(**options)
        context.set_default_timeout(TIMEOUT_MS)
        # Every page runs under the app's Content-Security-Policy; the browser reports each
        # refusal as a `securitypolicyviolation` event (and on the console): collect both.
        context.add_init_script(
            'document.addEventListener("securitypolicyviolation", function (e) {'
            ' console.error("CSP violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline")); });'
        )
        contexts.append(context)
        tab = context.new_page()
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on(
            "console",
            lambda message: (
                violations.append(message.text)
                if message.type == "error"
                and ("CSP violation" in message.text or "Content Security Policy" in message.text)
                else None
            ),
        )
        tab.csp_violations = violations
        return tab

    yield opened
    for context in contexts:
        context.close()
    # A script error or a refused script/style on any page is a bug, even when the assertions passed.
    assert not errors, errors
    assert not violations, violations


@pytest.fixture
def page(open_page) -> Any:
    return open_page()


def screenshot(page, name: str) -> None:
    """A full-page screenshot as a test artifact (test-artifacts/screenshots/, gitignored)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def log_in(page, user: User, password: str = PASSWORD) -> None:
    """Through the real login form, as a person would."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(user.get_username())
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"^(?!.*/accounts/login/).*$"))


def csrf_post(page, path: str, data: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """POST from the browser's session with the page's CSRF cookie, as a crafted form would.

    Django checks the Referer only on HTTPS, so the token is all a same-site POST needs.
    """
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    return page.request.post(
        path, form={"csrfmiddlewaretoken": token, **(data or {})}, headers={"X-CSRFToken": token}, max_redirects=0
    )
