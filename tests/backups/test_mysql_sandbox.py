"""A MariaDB restore pipes the stored dump into the `mariadb` client: client commands in
the dump (a shell escape, `system`) must never run on the worker, whatever the dump says.
Against the machine's real server and client."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from backups.engines import mysql
from backups.engines.base import DumpTarget, RestoreTarget
from backups.engines.registry import engine_for
from backups.errors import BackupError
from backups.models import BackupSource
from tests.backups.test_engine_mysql import make_source
from tests.db_servers import context, mariadb, require_mariadb, unique_name

pytestmark = [pytest.mark.services, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _mariadb() -> None:
    require_mariadb()


def source_for(tenant) -> BackupSource:  # type: ignore[no-untyped-def]
    return make_source(tenant, "shop")


def hostile_dump(marker: Path) -> bytes:
    """What a compromised source server could make its dump contain (each line a way in)."""
    return "\n".join(
        [
            "-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)",
            "CREATE TABLE t (id INT);",
            f"\\! touch {marker}-bang",
            f"system touch {marker}-system",
            "INSERT INTO t VALUES (1);",
            f"\\. {marker}-source",
            "-- Dump completed on 2026-12-01 22:00:00",
            "",
        ]
    ).encode()


@pytest.mark.parametrize("first_line", ["", "/*M!999999\\- enable the sandbox mode */\n"])
def test_shell_commands_in_a_dump_are_not_run_by_a_restore(tenant, tmp_path: Path, first_line: str) -> None:
    place = tmp_path / "worker"
    place.mkdir()
    marker = place / "ran"
    # `\. file` would read this file as more input: it must not be read either.
    Path(f"{marker}-source").write_text(f"\\! touch {marker}-via-source\n")
    name = unique_name("bt_sandbox")
    stream = io.BytesIO(first_line.encode() + hostile_dump(marker))
    try:
        with pytest.raises(BackupError):
            engine_for("mysql").restore(
                source_for(tenant), DumpTarget("shop", "shop"), stream, RestoreTarget(database=name), context()
            )
    finally:
        mariadb(f"DROP DATABASE IF EXISTS `{name}`")
    assert sorted(os.listdir(place)) == ["ran-source"], "a client command from the dump ran on the worker"


def test_the_client_runs_with_sandbox_and_binary_mode(monkeypatch, tenant) -> None:
    """Each option stops the commands on its own; both are passed."""
    seen: list[list[str]] = []
    real_call = mysql.MysqlEngine._call

    def recording(self, source, tool, options, args, what, deadline):  # type: ignore[no-untyped-def]
        seen.append([tool, *options])
        return real_call(self, source, tool, options, args, what, deadline)

    monkeypatch.setattr(mysql.MysqlEngine, "_call", recording)
    name = unique_name("bt_sandbox")
    stream = io.BytesIO(b"-- MariaDB dump\nCREATE TABLE t (id INT);\nINSERT INTO t VALUES (7);\n")
    try:
        engine_for("mysql").restore(
            source_for(tenant), DumpTarget("shop", "shop"), stream, RestoreTarget(database=name), context()
        )
        assert mariadb("SELECT id FROM t", name).split() == ["7"]
    finally:
        mariadb(f"DROP DATABASE IF EXISTS `{name}`")
    [restore_call] = [call for call in seen if any(o.startswith("--database=") for o in call)]
    assert "--sandbox" in restore_call and "--binary-mode" in restore_call


def test_a_client_without_sandbox_is_refused_before_it_reads_the_dump(monkeypatch, tenant, tmp_path: Path) -> None:
    """An old or Oracle `mysql` client would run the commands: the restore does not use it."""
    marker = tmp_path / "old-client-ran"
    fake = tmp_path / "bin" / "mariadb"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\nif [ "$2" = "--help" ]; then echo "  --batch  Do not use history"; exit 0; fi\ntouch {marker}\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    mysql._has_sandbox.cache_clear()
    try:
        with pytest.raises(BackupError, match="no --sandbox option"):
            mysql.sandboxed_client()
    finally:
        mysql._has_sandbox.cache_clear()
    assert not marker.exists()
