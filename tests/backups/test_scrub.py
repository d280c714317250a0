"""Passwords in what members read: only a tool's own output is scrubbed, a whole line at a
time, and our own sentences are never altered, even when the password is a common word
("backup") or the database's name ("shop")."""

from __future__ import annotations

import pytest

from backups.engines.process import WITHHELD, scrub_tool_output
from backups.models import BackupSource, SourceKind
from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.runs import run_now
from tests.db_servers import PG_PORT, pg_database, require_postgres, unique_name
from tests.fakeservers import closed_port
from tests.helpers import drain, make_schedule

# What the PostgreSQL engine says when it cannot connect (backups.engines.postgres).
CANNOT_CONNECT = (
    "Could not connect to the PostgreSQL server: check the host, the port, the TLS mode and that"
    " the server accepts connections from the backup worker."
)


def test_a_line_holding_the_password_is_replaced_whole_by_the_same_marker_wherever_it_was() -> None:
    output = "\n".join(
        [
            "pg_dump: reading schemas",
            'pg_dump: error: FATAL: database "backup" does not exist',
            "pg_dump: a BACKUP of the table was started",
            "pg_dump: backups and backupbackup",
            "pg_dump: done",
        ]
    )
    lines = scrub_tool_output(output, ["backup"]).split("\n")
    # Position and count of the password inside a line leave no trace: every such line
    # becomes the same marker, case ignored.
    assert lines == ["pg_dump: reading schemas", WITHHELD, WITHHELD, WITHHELD, "pg_dump: done"]
    assert "*" not in WITHHELD and "backup" not in WITHHELD.lower()


def test_no_secret_or_an_empty_one_leaves_the_output_as_it_was() -> None:
    assert scrub_tool_output("a\nb backup\n", []) == "a\nb backup\n"
    assert scrub_tool_output("a\nb backup\n", [""]) == "a\nb backup\n"


@pytest.fixture
def server_schedule(tenant):  # type: ignore[no-untyped-def]
    def make(password: str, database: str, port: int = PG_PORT):  # type: ignore[no-untyped-def]
        source = BackupSource(
            tenant=tenant,
            name="Shop server",
            kind=SourceKind.POSTGRES,
            host="127.0.0.1",
            port=port,
            username="postgres",
            database=database,
            tls_mode="disable",
        )
        source.set_password(password)
        source.save()
        return make_schedule(tenant, source, name="Nightly shop", kind="disabled")

    return make


def run_once(schedule, django_capture_on_commit_callbacks) -> BackupScheduleRun:  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        run = run_now(schedule, actor=None)
    drain()
    run.refresh_from_db()
    return run


def test_a_common_word_as_password_leaves_our_sentences_whole(
    server_schedule, django_capture_on_commit_callbacks
) -> None:
    require_postgres()
    run = run_once(server_schedule("backup", "orders", port=closed_port()), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED and run.error_code == "CONNECTION_FAILED"
    assert run.error_message.startswith(CANNOT_CONNECT)
    assert CANNOT_CONNECT in run.log and "*" * 8 not in run.log + run.error_message


def test_a_password_equal_to_the_database_name_leaves_the_name_in_our_log(
    server_schedule, django_capture_on_commit_callbacks
) -> None:
    require_postgres()
    with pg_database("shop") as name:
        run = run_once(server_schedule(name, name), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    assert f"pg_dump of “{name}” on 127.0.0.1:{PG_PORT} as postgres." in run.log
    assert run.backup_set.items.get().label == f"Shop server / {name}"
    assert "*" * 8 not in run.log


def test_a_server_echoing_the_password_shows_our_message_without_its_line(
    server_schedule, django_capture_on_commit_callbacks
) -> None:
    require_postgres()
    # The database does not exist, and is named like the password: PostgreSQL quotes it back.
    name = unique_name("shop")
    run = run_once(server_schedule(name, name), django_capture_on_commit_callbacks)
    assert run.status == RunStatus.FAILED and run.error_code == "SOURCE_NOT_FOUND"
    assert run.error_message == "The database does not exist on this server: check its name."
    # Our own sentences about it still name the database; the tool's line that echoed it does not appear.
    assert f"pg_dump of “{name}”" in run.log and f'"{name}" does not exist' not in run.log
    assert "*" * 8 not in run.log
