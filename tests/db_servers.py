"""Real database servers for engine tests: reach them, or skip (fail under CI=true).

PostgreSQL is driven with psycopg, MariaDB with the `mariadb` client (no Python driver
is installed). Every helper only touches objects the calling test created.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

PG_HOST, PG_PORT, PG_SUPERUSER = "127.0.0.1", 5432, "postgres"
MARIADB_HOST, MARIADB_PORT, MARIADB_ROOT = "127.0.0.1", 3306, "root"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing service is a failure)")
    pytest.skip(reason)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    for tool in ("pg_dump", "pg_restore", "psql"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not installed")
    if not _port_open(PG_HOST, PG_PORT):
        _unavailable(f"no PostgreSQL server on {PG_HOST}:{PG_PORT}")


def require_mariadb() -> None:
    if shutil.which("mariadb") is None or shutil.which("mariadb-dump") is None and shutil.which("mysqldump") is None:
        _unavailable("the mariadb client tools are not installed")
    if not _port_open(MARIADB_HOST, MARIADB_PORT):
        _unavailable(f"no MariaDB server on {MARIADB_HOST}:{MARIADB_PORT}")
    try:
        mariadb("SELECT 1")
    except subprocess.CalledProcessError as exc:
        _unavailable(f"MariaDB on {MARIADB_HOST}:{MARIADB_PORT} refused root without a password: {exc.stderr}")


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- PostgreSQL


def pg_connect(dbname: str = "postgres", user: str = PG_SUPERUSER):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, autocommit=True)


def pg_execute(sql: str, dbname: str = "postgres") -> list[tuple]:
    with pg_connect(dbname) as conn, conn.cursor() as cur:
        cur.execute(sql)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def pg_drop_database(name: str) -> None:
    pg_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def pg_database(prefix: str = "bt") -> Iterator[str]:
    name = unique_name(prefix)
    pg_execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        pg_drop_database(name)


def pg_wait_for_lock_waiter(database: str, timeout: float = 90) -> None:
    """Wait until a session of `database` (a pg_dump) waits on a lock another holds."""
    import time

    sql = f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}' AND wait_event_type = 'Lock'"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pg_execute(sql)[0][0]:
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing waited on a lock in {database} within {timeout} s")


@contextmanager
def pg_role(prefix: str = "bt_role", options: str = "LOGIN") -> Iterator[str]:
    name = unique_name(prefix)
    pg_execute(f'CREATE ROLE "{name}" {options}')
    try:
        yield name
    finally:
        # Privileges granted in test databases go with those databases; the role's own
        # objects elsewhere are none.
        pg_execute(f'DROP ROLE IF EXISTS "{name}"')


# ---------------------------------------------------------------- MariaDB


def mariadb(sql: str, database: str = "", user: str = MARIADB_ROOT, password: str = "") -> str:
    argv = ["mariadb", "--no-defaults", f"--host={MARIADB_HOST}", f"--port={MARIADB_PORT}", f"--user={user}"]
    argv += ["--batch", "--skip-column-names", "--protocol=TCP", "--default-character-set=utf8mb4"]
    if database:
        argv.append(f"--database={database}")
    env = {**os.environ, "MYSQL_PWD": password} if password else None
    result = subprocess.run(argv, input=sql, capture_output=True, text=True, check=True, env=env, timeout=120)
    return result.stdout


@contextmanager
def mariadb_database(prefix: str = "bt") -> Iterator[str]:
    name = unique_name(prefix)
    mariadb(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    try:
        yield name
    finally:
        mariadb(f"DROP DATABASE IF EXISTS `{name}`")


@contextmanager
def mariadb_user(password: str, grants: str = "", options: str = "", prefix: str = "bt_user") -> Iterator[str]:
    name = unique_name(prefix)
    literal = password.replace("\\", "\\\\").replace("'", "\\'")
    mariadb(f"CREATE USER '{name}'@'%' IDENTIFIED BY '{literal}' {options}")
    mariadb(f"CREATE USER '{name}'@'localhost' IDENTIFIED BY '{literal}' {options}")
    try:
        for grant in filter(None, grants.split(";")):
            mariadb(grant.replace("{user}", name))
        yield name
    finally:
        mariadb(f"DROP USER IF EXISTS '{name}'@'%'; DROP USER IF EXISTS '{name}'@'localhost'")


# ---------------------------------------------------------------- dumping through an engine

DUMP_SUFFIX = {"postgres": "pgdump", "mysql": "sql"}


def context(seconds: float = 120, log: list[str] | None = None):  # type: ignore[no-untyped-def]
    """A run's context for an engine call: a deadline `seconds` away, log lines into `log`."""
    import time

    from backups.engines.base import DumpContext

    lines = log if log is not None else []
    return DumpContext(log=lines.append, deadline=time.monotonic() + seconds)


def back_up(source, database: str, ctx=None):  # type: ignore[no-untyped-def]
    """One database of a server source dumped through its engine into storage (a StoredFile)."""
    from backups import storage
    from backups.engines.base import DumpTarget
    from backups.engines.registry import engine_for

    target = DumpTarget(label=database, database=database)
    with engine_for(source.kind).dump(source, target, ctx or context()) as stream:
        return storage.store_stream(f"test/{unique_name('dump')}.{DUMP_SUFFIX[source.kind]}.zst", stream)


# ---------------------------------------------------------------- the application's own database


def require_production_profile() -> None:
    """Faults of the application's database connection are caused on PostgreSQL only."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("runs in the production profile (PostgreSQL)")


def backend_pid() -> int:
    """The server process of this thread's Django connection (opened if need be)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def terminate_backend(pid: int, within: float = 30) -> None:
    """pg_terminate_backend(pid) from a connection of our own, and wait until it is gone."""
    import time

    with pg_connect() as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        deadline = time.monotonic() + within
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, f"backend {pid} still there {within} s after it was terminated"
            time.sleep(0.02)


@contextmanager
def connections_refused(dbname: str) -> Iterator[None]:
    """Nobody may connect to `dbname` (superusers included) until the block ends; the
    connections already open stay. ALLOW_CONNECTIONS is the one switch a superuser obeys."""
    pg_execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS false')
    try:
        yield
    finally:
        pg_execute(f'ALTER DATABASE "{dbname}" ALLOW_CONNECTIONS true')
