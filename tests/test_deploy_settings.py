"""The HTTPS deployment settings: each from the environment, and with the production values
.env.example documents, `manage.py check --deploy` reports no issue (a real subprocess)."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.helpers import ROOT

# `# NAME=value` lines, the value ending where two spaces and a comment begin.
DOCUMENTED = re.compile(r"^# ([A-Z][A-Z0-9_]*)=(.*?)(?:\s{2,}#.*)?$")
SECTIONS = ("--- Production profile", "--- HTTPS deployment")
# Placeholders in the file that a real deployment replaces with its own secrets or services.
REPLACED = {"SECRET_KEY", "SECRET_KEY_FILE", "DATABASE_URL", "REDIS_URL"}


def documented_production_values() -> dict[str, str]:
    values: dict[str, str] = {}
    section = None
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("# ---"):
            section = next((name for name in SECTIONS if line.startswith(f"# {name}")), None)
            continue
        match = DOCUMENTED.match(line)
        if section and match and match.group(1) not in REPLACED:
            values[match.group(1)] = match.group(2).strip()
    return values


def check_deploy(tmp_path: Path, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inherited = ("SECURE_", "DATABASE_", "REDIS_", "DEBUG")
    env = {key: value for key, value in os.environ.items() if not key.startswith(inherited)}
    env.update(
        VAR_DIR=str(tmp_path),
        SECRET_KEY=secrets.token_urlsafe(50),
        SOURCE_SECRET_KEYS=Fernet.generate_key().decode(),
        **values,
    )
    command = [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_the_documented_production_values_cover_every_https_setting() -> None:
    values = documented_production_values()
    for name in (
        "DEBUG",
        "ALLOWED_HOSTS",
        "CSRF_TRUSTED_ORIGINS",
        "SECURE_HSTS_SECONDS",
        "SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "SECURE_HSTS_PRELOAD",
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_PROXY_SSL_HEADER",
    ):
        assert name in values, f".env.example documents no production value for {name}"
    assert values["DEBUG"] == "false"


def test_check_deploy_is_clean_with_the_documented_production_values(tmp_path: Path) -> None:
    result = check_deploy(tmp_path, documented_production_values())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_check_deploy_warns_without_them(tmp_path: Path) -> None:
    """The same check fails a plain-HTTP configuration (so the test above can fail)."""
    result = check_deploy(tmp_path, {"DEBUG": "false", "ALLOWED_HOSTS": "backups.example.com"})
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("X-Forwarded-Proto: https", ("HTTP_X_FORWARDED_PROTO", "https")),
        ("x-forwarded-ssl:on", ("HTTP_X_FORWARDED_SSL", "on")),
    ],
)
def test_the_proxy_ssl_header_is_read_as_a_header_and_its_value(monkeypatch, raw: str, expected) -> None:
    from config import settings as module

    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", raw)
    assert module._proxy_ssl_header() == expected


@pytest.mark.parametrize("raw", ["X-Forwarded-Proto", "X-Forwarded-Proto:", ": https"])
def test_a_malformed_proxy_ssl_header_fails_loudly(monkeypatch, raw: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from config import settings as module

    monkeypatch.setenv("SECURE_PROXY_SSL_HEADER", raw)
    with pytest.raises(ImproperlyConfigured, match="SECURE_PROXY_SSL_HEADER"):
        module._proxy_ssl_header()


def test_behind_the_proxy_a_request_it_marks_https_is_secure_and_plain_http_is_redirected(db, client, settings) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    plain = client.get("/accounts/login/")
    assert plain.status_code == 301
    assert plain["Location"].startswith("https://")
    assert client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https").status_code == 200
    # Load balancers probe over plain HTTP.
    assert client.get("/healthz").status_code in (200, 503)
