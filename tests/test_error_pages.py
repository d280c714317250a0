"""With DEBUG off, a missing page and a server error get our own pages: no URL list, no traceback."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.fixture
def production(settings):  # type: ignore[no-untyped-def]
    settings.DEBUG = False
    settings.ROOT_URLCONF = "tests.error_urls"
    return settings


def test_an_unknown_url_gets_the_not_found_page_without_the_url_list(db, production, alice) -> None:
    client = Client()
    client.force_login(alice)
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "<h1>Not found</h1>" in body
    assert "URLconf" not in body and "admin/" not in body and "t/&lt;uuid" not in body


def test_a_failing_view_gets_the_server_error_page_without_a_traceback(db, production) -> None:
    client = Client(raise_request_exception=False)
    response = client.get("/broken/")
    assert response.status_code == 500
    body = response.content.decode()
    assert "Something went wrong on our side" in body
    assert "Traceback" not in body and "secret detail" not in body and "RuntimeError" not in body


def test_the_server_error_page_renders_without_a_database(production, django_db_blocker) -> None:
    """The failure may be the database: 500.html needs no context and no query."""
    from django.template import loader

    with django_db_blocker.block():
        html = loader.get_template("500.html").render()
    assert "Something went wrong on our side" in html


def test_with_debug_on_the_developer_keeps_djangos_debug_pages(db, settings) -> None:
    """`make run` (DEBUG on): the URL list and the traceback page, styled (no CSP on them)."""
    settings.DEBUG = True
    settings.ROOT_URLCONF = "tests.error_urls"
    client = Client(raise_request_exception=False)
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404
    assert "URLconf" in missing.text
    assert "Content-Security-Policy" not in missing.headers
    broken = client.get("/broken/")
    assert broken.status_code == 500 and "Traceback" in broken.text
