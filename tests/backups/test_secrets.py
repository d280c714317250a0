"""Source passwords encrypted at rest, key rotation, and the settings that hold the keys."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.core.management.base import CommandError

from backups.engines.registry import engine_for
from backups.errors import ErrorCode
from backups.models import BackupSource, SourceKind
from backups.secrets import SecretError
from tests.helpers import ROOT

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def server_source(tenant, name: str, password: str) -> BackupSource:
    source = BackupSource(tenant=tenant, name=name, kind=SourceKind.POSTGRES, host="127.0.0.1", username="u")
    source.set_password(password)
    source.save()
    return source


def test_a_password_is_stored_encrypted_and_read_back(settings, tenant) -> None:
    settings.SOURCE_SECRET_KEYS = [OLD_KEY]
    source = server_source(tenant, "db", "hunter2-ümlaut")
    source.refresh_from_db()
    assert source.has_password
    assert "hunter2" not in source.password_encrypted
    assert Fernet(OLD_KEY.encode()).decrypt(source.password_encrypted.encode()).decode() == "hunter2-ümlaut"
    assert source.get_password() == "hunter2-ümlaut"


def test_an_empty_password_stores_nothing(settings, tenant) -> None:
    source = server_source(tenant, "db", "")
    assert not source.has_password and source.password_encrypted == "" and source.get_password() == ""


def test_a_password_under_a_removed_key_cannot_be_read_and_says_what_to_do(settings, tenant) -> None:
    settings.SOURCE_SECRET_KEYS = [OLD_KEY]
    source = server_source(tenant, "db", "hunter2")
    settings.SOURCE_SECRET_KEYS = [NEW_KEY]
    with pytest.raises(SecretError, match="Enter the password again") as caught:
        source.get_password()
    assert "hunter2" not in str(caught.value) and source.password_encrypted not in str(caught.value)
    # An engine reports it as a failed login the user can fix, before touching the server.
    result = engine_for("postgres").check_connection(source)
    assert not result.ok and result.error_code == ErrorCode.AUTH_FAILED and "SOURCE_SECRET_KEYS" in result.message


def test_rotation_re_encrypts_every_password_with_the_first_key(settings, tenant) -> None:
    settings.SOURCE_SECRET_KEYS = [OLD_KEY]
    first = server_source(tenant, "one", "pw-one")
    second = server_source(tenant, "two", "pw-two")
    server_source(tenant, "three", "")
    settings.SOURCE_SECRET_KEYS = [NEW_KEY, OLD_KEY]
    assert first.get_password() == "pw-one"  # the old key still decrypts during the rotation
    out = io.StringIO()
    call_command("rotate_source_secrets", stdout=out)
    assert "Re-encrypted 2 source password(s)" in out.getvalue() and "1 source(s) without a password" in out.getvalue()
    assert "pw-one" not in out.getvalue()
    settings.SOURCE_SECRET_KEYS = [NEW_KEY]  # the old key can go now
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.get_password() == "pw-one" and second.get_password() == "pw-two"


def test_rotation_stops_with_exit_2_and_changes_nothing_when_a_password_cannot_be_decrypted(settings, tenant) -> None:
    settings.SOURCE_SECRET_KEYS = [OLD_KEY]
    readable_later = server_source(tenant, "ok", "pw-ok")
    settings.SOURCE_SECRET_KEYS = [Fernet.generate_key().decode()]
    lost = server_source(tenant, "Lost key", "pw-lost")
    settings.SOURCE_SECRET_KEYS = [NEW_KEY, OLD_KEY]
    before = readable_later.password_encrypted
    with pytest.raises(CommandError) as caught:
        call_command("rotate_source_secrets")
    assert caught.value.returncode == 2
    assert "“Lost key” (Alice & Co)" in str(caught.value) and "Nothing was changed" in str(caught.value)
    assert lost.password_encrypted not in str(caught.value)
    readable_later.refresh_from_db()
    assert readable_later.password_encrypted == before


def django_settings(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Load the settings in a fresh interpreter with exactly this environment."""
    drop = ("SOURCE_SECRET_KEYS", "DEBUG", "SECRET_KEY", "VAR_DIR", "DATABASE_URL")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    code = "from django.conf import settings; print(len(settings.SOURCE_SECRET_KEYS), settings.SOURCE_SECRET_KEYS[0])"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        # What a shell gives by default: the files must be private whatever it is.
        preexec_fn=lambda: os.umask(0o022),
    )


def test_production_without_a_key_refuses_to_start() -> None:
    result = django_settings({"DEBUG": "false", "SECRET_KEY": "prod-secret"})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "SOURCE_SECRET_KEYS" in result.stderr


def test_development_without_a_key_makes_a_random_private_key_of_its_own(tmp_path) -> None:
    var = tmp_path / "var"
    first = django_settings({"DEBUG": "true", "SECRET_KEY": "dev-a", "VAR_DIR": str(var)})
    assert first.returncode == 0, first.stderr
    count, key = first.stdout.split()
    key_file = var / "source-secret.key"
    assert count == "1" and Fernet(key.encode()) and key_file.read_text().strip() == key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # The same key on every start; not derived from SECRET_KEY (public in development).
    again = django_settings({"DEBUG": "true", "SECRET_KEY": "dev-b", "VAR_DIR": str(var)})
    assert again.stdout == first.stdout
    other = django_settings({"DEBUG": "true", "SECRET_KEY": "dev-a", "VAR_DIR": str(tmp_path / "other")})
    assert other.stdout != first.stdout
    assert [p.name for p in var.iterdir() if "source-secret" in p.name] == ["source-secret.key"]  # no draft left


def test_a_key_file_left_readable_by_others_is_made_private(tmp_path) -> None:
    key_file = tmp_path / "source-secret.key"
    key_file.write_text(NEW_KEY + "\n")
    key_file.chmod(0o644)
    result = django_settings({"DEBUG": "true", "VAR_DIR": str(tmp_path)})
    assert result.stdout.split() == ["1", NEW_KEY]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_the_sqlite_database_and_its_wal_files_are_private(tmp_path) -> None:
    import sqlite3

    made = tmp_path / "made"
    assert django_settings({"DEBUG": "true", "VAR_DIR": str(made)}).returncode == 0
    database = made / "db.sqlite3"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    with sqlite3.connect(database) as db:  # as Django opens it: WAL, and a write
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (x)")
        for suffix in ("-wal", "-shm"):
            assert stat.S_IMODE((made / f"db.sqlite3{suffix}").stat().st_mode) == 0o600, suffix
    # An installation from before, left world-readable, is made private on the next start.
    old = tmp_path / "old"
    old.mkdir()
    for name in ("db.sqlite3", "db.sqlite3-wal", "db.sqlite3-shm"):
        (old / name).touch()
        (old / name).chmod(0o644)
    assert django_settings({"DEBUG": "true", "VAR_DIR": str(old)}).returncode == 0
    assert {stat.S_IMODE(p.stat().st_mode) for p in old.iterdir() if p.name.startswith("db.")} == {0o600}


def test_keys_come_from_a_file_and_several_keys_are_kept_in_order(tmp_path) -> None:
    key_file = tmp_path / "keys"
    key_file.write_text(f"{NEW_KEY},{OLD_KEY}\n")
    result = django_settings({"DEBUG": "false", "SECRET_KEY": "prod", "SOURCE_SECRET_KEYS_FILE": str(key_file)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", NEW_KEY]


def test_a_malformed_key_is_refused_without_showing_it() -> None:
    result = django_settings({"DEBUG": "false", "SECRET_KEY": "prod", "SOURCE_SECRET_KEYS": f"{NEW_KEY},not-a-key-xyz"})
    assert result.returncode != 0
    assert "key number 2 is not a Fernet key" in result.stderr and "not-a-key-xyz" not in result.stderr


def test_a_bad_allowed_hosts_setting_stops_the_start_and_says_which() -> None:
    result = django_settings({"DEBUG": "true", "SOURCE_ALLOWED_HOSTS": "10.0.0.0/8,10.0.0.0/33"})
    assert result.returncode != 0 and "SOURCE_ALLOWED_HOSTS: '10.0.0.0/33'" in result.stderr
    fine = django_settings({"DEBUG": "true", "SOURCE_ALLOWED_HOSTS": "10.0.0.0/8, db.internal ,*,fd00::/8"})
    assert fine.returncode == 0, fine.stderr
