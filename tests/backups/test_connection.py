"""backups.connection: the check behind the "Test connection" button, as a worker runs it."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from django.test import TestCase

from backups import connection
from backups.errors import ErrorCode
from backups.models import BackupSource, SourceCheck, SourceKind
from tenants.models import AuditAction, AuditLog
from tests.db_servers import MARIADB_PORT, PG_PORT, mariadb_user, require_mariadb, require_postgres
from tests.helpers import drain

SECRET = "conn-Test-pässword"


def server_source(tenant, kind: str, port: int, user: str, password: str = SECRET, database: str = "") -> BackupSource:
    source = BackupSource(
        tenant=tenant,
        name=f"{kind} server",
        kind=kind,
        host="127.0.0.1",
        port=port,
        username=user,
        database=database,
        all_databases=not database,
        tls_mode="disable",
    )
    source.set_password(password)
    source.save()
    return source


def audit_text() -> str:
    return json.dumps([e.details for e in AuditLog.objects.all()], ensure_ascii=False)


def run_check(source: BackupSource, actor) -> SourceCheck:  # type: ignore[no-untyped-def]
    """Requested as the page does, done as a worker does."""
    with TestCase.captureOnCommitCallbacks(execute=True):  # the Redis broker pushes after commit
        check = connection.request_test(source, actor)
    (outcome,) = drain()
    check.refresh_from_db()
    assert outcome == ("ok" if check.ok else check.error_code)
    return check


def test_a_readable_sqlite_file_passes_and_the_test_is_audited(source, alice) -> None:
    check = run_check(source, alice)
    assert check.ok and "1 tables" in check.message and check.status == "done"
    entry = AuditLog.objects.get(action=AuditAction.SOURCE_TESTED)
    assert entry.actor == alice and entry.details == {"ok": True, "error_code": "", "message": check.message}


def test_a_missing_sqlite_file_fails_as_source_not_found(source, alice) -> None:
    source.path = source.path.replace("shop", "gone")
    result = connection.check_source(source)
    assert not result.ok and result.error_code == ErrorCode.SOURCE_NOT_FOUND and "does not exist" in result.message


def test_a_path_outside_the_tenants_roots_fails_as_permission_denied(source, alice) -> None:
    BackupSource.objects.filter(pk=source.pk).update(path="/etc/passwd")
    check = run_check(source, alice)
    assert not check.ok and check.error_code == ErrorCode.PERMISSION_DENIED
    assert AuditLog.objects.get(action=AuditAction.SOURCE_TESTED).details["error_code"] == "PERMISSION_DENIED"


def test_a_file_that_is_not_sqlite_fails_with_a_message(source, alice, settings) -> None:
    not_sqlite = settings.SOURCE_ROOTS[0] / "notes.sqlite3"
    not_sqlite.write_text("just text, and long enough to be read as a header " * 4)
    source.path = str(not_sqlite)
    result = connection.check_source(source)
    # The wording is the SQLite engine's own once it has a check of its own.
    assert not result.ok and "not a" in result.message and "SQLite database" in result.message


def test_a_kind_without_an_engine_fails_with_a_message(source, alice) -> None:
    source.kind = "oracle"
    result = connection.check_source(source)
    assert not result.ok and result.error_code == ErrorCode.UNKNOWN and "oracle" in result.message


def test_a_postgres_server_passes_and_lists_what_it_would_back_up(tenant, alice, caplog) -> None:
    require_postgres()
    source = server_source(tenant, SourceKind.POSTGRES, PG_PORT, "postgres")
    with caplog.at_level("DEBUG"):
        check = run_check(source, alice)
    assert check.ok and "database(s) to back up" in check.message
    assert SECRET not in audit_text() and SECRET not in caplog.text


def test_a_wrong_mariadb_password_fails_as_auth_failed_without_showing_it(tenant, alice, caplog) -> None:
    require_mariadb()
    with mariadb_user("the-right-one") as user:
        source = server_source(tenant, SourceKind.MYSQL, MARIADB_PORT, user, password=SECRET)
        with caplog.at_level("DEBUG"):
            check = run_check(source, alice)
    assert not check.ok and check.error_code == ErrorCode.AUTH_FAILED
    # Our sentence alone: not the server's "Access denied for user ..." line.
    assert check.message.startswith("The server refused the login") and "Access denied" not in check.message
    assert SECRET not in check.message and SECRET not in audit_text() and SECRET not in caplog.text


def test_a_mariadb_user_with_the_right_password_passes(tenant, alice) -> None:
    require_mariadb()
    with mariadb_user(SECRET) as user:
        result = connection.check_source(server_source(tenant, SourceKind.MYSQL, MARIADB_PORT, user))
    assert result.ok and "Connected to" in result.message and user in result.message


def test_a_password_whose_key_was_removed_fails_as_auth_failed(tenant, alice, settings) -> None:
    source = server_source(tenant, SourceKind.POSTGRES, PG_PORT, "postgres")
    settings.SOURCE_SECRET_KEYS = [Fernet.generate_key().decode()]
    result = connection.check_source(source)
    assert not result.ok and result.error_code == ErrorCode.AUTH_FAILED and "Enter the password again" in result.message


@pytest.mark.parametrize("kind", [SourceKind.POSTGRES, SourceKind.MYSQL])
def test_a_closed_port_fails_as_connection_failed(tenant, alice, kind) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = connection.check_source(server_source(tenant, kind, port, "nobody"))
    assert not result.ok and result.error_code == ErrorCode.CONNECTION_FAILED
