"""The PostgreSQL engine against the machine's real server and real pg_dump / pg_restore."""

from __future__ import annotations

import io
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backups import storage
from backups.engines.base import DumpContext, DumpTarget, RestoreTarget
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupSource, SourceKind
from tests.db_servers import (
    PG_HOST,
    PG_PORT,
    back_up,
    context,
    pg_connect,
    pg_database,
    pg_drop_database,
    pg_execute,
    pg_role,
    require_postgres,
    unique_name,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db]

PASSWORD = "s3cret:pg\\pass word"

SCHEMA = r"""
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text, note text);
INSERT INTO customers (name, email, note)
SELECT 'Kunde ' || i || ' Zoë 北京 🙂',
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'c' || i || '@example.org' END,
       CASE WHEN i % 5 = 0 THEN E'line1\nline2\t''quoted'' \\ back' END
FROM generate_series(1, 300) AS i;
CREATE TABLE audit (id serial PRIMARY KEY, order_id bigint NOT NULL, noted text);
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    customer_id int REFERENCES customers (id),
    amount numeric(12, 2),
    placed_at timestamptz,
    payload bytea,
    tags text[],
    data jsonb
);
CREATE FUNCTION order_total(c int) RETURNS numeric LANGUAGE sql STABLE
    AS $$ SELECT coalesce(sum(amount), 0) FROM orders WHERE customer_id = c $$;
CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql
    AS $$ BEGIN INSERT INTO audit (order_id, noted) VALUES (NEW.id, 'trigger'); RETURN NEW; END $$;
CREATE TRIGGER orders_log AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION log_order();
INSERT INTO orders (customer_id, amount, placed_at, payload, tags, data)
SELECT 1 + i % 300, CASE WHEN i % 7 = 0 THEN NULL ELSE i * 1.25 END,
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 hour',
       CASE WHEN i % 4 = 0 THEN NULL ELSE decode(md5(i::text), 'hex') END,
       ARRAY['a' || i, 'ü'], jsonb_build_object('i', i, 'name', 'Ωmega')
FROM generate_series(1, 1500) AS i;
CREATE VIEW big_customers AS SELECT c.id, c.name, order_total(c.id) AS total FROM customers c;
"""


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require_postgres()


@pytest.fixture
def shop_db() -> Iterator[str]:
    with pg_database("bt_shop") as name:
        pg_execute(SCHEMA, name)
        yield name


def make_source(tenant, database: str = "", user: str = "postgres", port: int = PG_PORT, **fields) -> BackupSource:
    source = BackupSource(
        tenant=tenant,
        name=unique_name("pg"),
        kind=SourceKind.POSTGRES,
        host=PG_HOST,
        port=port,
        username=user,
        database=database,
        **{"tls_mode": "disable", **fields},
    )
    # The server trusts 127.0.0.1, so this password is never checked; it still travels
    # the whole way (and must never show up anywhere).
    source.set_password(PASSWORD)
    source.save()
    return source


def fingerprint(database: str) -> dict[str, tuple[int, str]]:
    """Row count and md5 of the ordered rows of every table and view in `public`."""
    relations = pg_execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name", database
    )
    result = {}
    for (name,) in relations:
        ((count, digest),) = pg_execute(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM \"{name}\" t",
            database,
        )
        result[name] = (count, digest)
    return result


def expect_error(code: ErrorCode, source: BackupSource, database: str, ctx: DumpContext | None = None) -> BackupError:
    with pytest.raises(BackupError) as caught:
        back_up(source, database, ctx)
    assert caught.value.code == code, caught.value.message
    assert PASSWORD not in caught.value.message
    # A failed dump never leaves a file that looks like a backup.
    assert not [p for p in Path(storage.backups_root()).rglob("*") if p.is_file()]
    return caught.value


def test_a_backup_restored_into_a_new_database_has_the_same_tables_rows_view_function_and_trigger(
    tenant, shop_db
) -> None:
    source = make_source(tenant, shop_db)
    engine = engine_for("postgres")
    log: list[str] = []
    stored = back_up(source, shop_db, context(log=log))
    assert stored.size > 0 and stored.source_size > stored.size / 10
    target = engine.default_restore_target(source, DumpTarget(shop_db, shop_db), "20260101T000000Z")
    assert target.database == f"{shop_db}_restore_20260101T000000Z" and not target.overwrite
    try:
        with storage.open_decompressed(stored.key) as stream:
            summary = engine.restore(source, DumpTarget(shop_db, shop_db), stream, target, context())
        assert target.database in summary
        original, restored = fingerprint(shop_db), fingerprint(target.database)
        assert set(original) == {"customers", "orders", "audit", "big_customers"}
        assert restored == original
        assert original["orders"][0] == 1500 and original["audit"][0] == 1500
        # The function and the trigger came along and work.
        assert pg_execute("SELECT order_total(2)", target.database) == pg_execute("SELECT order_total(2)", shop_db)
        pg_execute("INSERT INTO orders (customer_id, amount) VALUES (1, 5)", target.database)
        assert pg_execute("SELECT count(*) FROM audit", target.database) == [(1501,)]
        # The sequence was restored too: the new order did not collide with an old id.
        assert pg_execute("SELECT max(id) FROM orders", target.database) == [(1501,)]
    finally:
        pg_drop_database(target.database)
    assert any("pg_dump" in line for line in log)


def test_a_restore_refuses_an_existing_database_unless_told_to_overwrite_it(tenant, shop_db) -> None:
    source = make_source(tenant, shop_db)
    engine = engine_for("postgres")
    stored = back_up(source, shop_db)
    with pg_database("bt_existing") as existing:
        pg_execute("CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1)", existing)
        with storage.open_decompressed(stored.key) as stream, pytest.raises(BackupError) as caught:
            engine.restore(source, DumpTarget(shop_db, shop_db), stream, RestoreTarget(database=existing), context())
        assert "already exists" in caught.value.message
        assert pg_execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'orders'", existing) == [
            (0,)
        ]
        with storage.open_decompressed(stored.key) as stream:
            to = RestoreTarget(database=existing, overwrite=True)
            engine.restore(source, DumpTarget(shop_db, shop_db), stream, to, context())
        restored = fingerprint(existing)
        restored.pop("keep_me")  # overwrite replaces what the backup has and leaves the rest
        assert restored == fingerprint(shop_db)


def test_all_databases_discovers_every_database_at_run_time(tenant, shop_db) -> None:
    source = make_source(tenant, all_databases=True)
    engine = engine_for("postgres")
    with pg_database("bt_second") as second:
        log: list[str] = []
        targets = engine.targets(source, context(log=log))
        names = [t.database for t in targets]
        assert shop_db in names and second in names
        assert "template0" not in names and "template1" not in names
        assert f"{source.name} / {second}" in [t.label for t in targets]
        assert "Found" in log[0]
    # Discovered again at the next run: the dropped database is gone.
    assert second not in [t.database for t in engine.targets(source, context())]


def test_verify_passes_on_a_good_dump_and_fails_on_a_truncated_one(tenant, shop_db) -> None:
    source = make_source(tenant, shop_db)
    engine = engine_for("postgres")
    stored = back_up(source, shop_db)
    with storage.open_decompressed(stored.key) as stream:
        data = stream.read()
    summary = engine.verify_stream(io.BytesIO(data), context())
    assert "3 table(s)" in summary
    for cut in (len(data) // 2, len(data) - 40):
        with pytest.raises(BackupError) as caught:
            engine.verify_stream(io.BytesIO(data[:cut]), context())
        assert "damaged or incomplete" in caught.value.message
        assert caught.value.code == ErrorCode.CORRUPTED
    with pytest.raises(BackupError):
        engine.verify_stream(io.BytesIO(b"not a dump at all"), context())


def test_a_role_that_does_not_exist_fails_as_auth_failed(tenant, shop_db) -> None:
    error = expect_error(ErrorCode.AUTH_FAILED, make_source(tenant, shop_db, user=unique_name("nobody")), shop_db)
    assert "user name and password" in error.message


def test_a_nologin_role_fails_as_auth_failed(tenant, shop_db) -> None:
    with pg_role(options="NOLOGIN") as role:
        error = expect_error(ErrorCode.AUTH_FAILED, make_source(tenant, shop_db, user=role), shop_db)
    assert "may not log in" in error.message


def test_a_missing_database_fails_as_source_not_found(tenant) -> None:
    missing = unique_name("bt_missing")
    error = expect_error(ErrorCode.SOURCE_NOT_FOUND, make_source(tenant, missing), missing)
    assert "does not exist" in error.message


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_closed_port_fails_as_connection_failed(tenant) -> None:
    error = expect_error(ErrorCode.CONNECTION_FAILED, make_source(tenant, "postgres", port=closed_port()), "postgres")
    assert "check the host, the port" in error.message


def test_a_role_without_select_on_a_table_fails_as_permission_denied(tenant, shop_db) -> None:
    with pg_role() as role:
        try:
            error = expect_error(ErrorCode.PERMISSION_DENIED, make_source(tenant, shop_db, user=role), shop_db)
        finally:
            pg_execute(f'REVOKE ALL ON DATABASE "{shop_db}" FROM "{role}"')
    assert "privilege" in error.message


def test_a_role_with_connection_limit_zero_fails_as_throttled(tenant, shop_db) -> None:
    with pg_role(options="LOGIN CONNECTION LIMIT 0") as role:
        error = expect_error(ErrorCode.THROTTLED, make_source(tenant, shop_db, user=role), shop_db)
    assert "too many connections" in error.message


@pytest.fixture
def locked_customers(shop_db) -> Iterator[str]:
    """`customers` locked ACCESS EXCLUSIVE by another connection: pg_dump waits for it."""
    conn = pg_connect(shop_db)
    conn.autocommit = False
    conn.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
    try:
        yield shop_db
    finally:
        conn.rollback()
        conn.close()


def test_a_dump_blocked_by_a_lock_past_the_deadline_is_killed_as_timeout(tenant, locked_customers) -> None:
    source = make_source(tenant, locked_customers)
    error = expect_error(ErrorCode.TIMEOUT, source, locked_customers, context(seconds=1.5))
    assert "time limit" in error.message


def test_the_password_is_in_a_private_file_never_on_the_command_line_or_in_the_environment(
    tenant, locked_customers
) -> None:
    source = make_source(tenant, locked_customers)
    engine = engine_for("postgres")
    seen: dict[str, object] = {}
    with engine.dump(source, DumpTarget("x", locked_customers), context()) as stream:
        # pg_dump is waiting for the lock: look at the live process.
        pid = stream.process.popen.pid  # type: ignore[attr-defined]
        seen["cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{pid}/environ").read_bytes().decode().split("\0") if "=" in item
        )
        passfile = Path(environ["PGPASSFILE"])
        seen["mode"] = stat.S_IMODE(passfile.stat().st_mode)
        seen["folder_mode"] = stat.S_IMODE(passfile.parent.stat().st_mode)
        seen["passfile"] = passfile.read_text()
        seen["environ"] = "\0".join(f"{k}={v}" for k, v in environ.items())
        stream.process.kill()  # type: ignore[attr-defined]
        with pytest.raises(BackupError):
            stream.read()
    assert PASSWORD not in str(seen["cmdline"])
    assert PASSWORD not in str(seen["environ"])
    assert seen["mode"] == 0o600 and seen["folder_mode"] == 0o700
    assert str(seen["passfile"]) == "*:*:*:*:s3cret\\:pg\\\\pass word\n"
    assert not passfile.exists()  # removed once the dump ended


def test_a_secret_echoed_by_the_server_is_withheld_with_its_whole_line(tenant) -> None:
    # The server quotes the database name back; here the name is the password.
    source = make_source(tenant, PASSWORD)
    error = expect_error(ErrorCode.SOURCE_NOT_FOUND, source, PASSWORD)
    assert PASSWORD not in error.message and "does not exist" not in error.detail and "*" not in error.message
    assert error.message == "The database does not exist on this server: check its name."


def test_a_dump_that_fails_midway_leaves_no_stored_file(tenant, shop_db) -> None:
    # Permission on the first tables but not on `orders`: pg_dump writes part of the
    # archive, then fails. The partial stream must not become a backup file.
    with pg_role() as role:
        pg_execute(f'GRANT SELECT ON customers, audit TO "{role}"; GRANT USAGE ON SCHEMA public TO "{role}"', shop_db)
        try:
            expect_error(ErrorCode.PERMISSION_DENIED, make_source(tenant, shop_db, user=role), shop_db)
        finally:
            revoke = f'REVOKE ALL ON customers, audit FROM "{role}"; REVOKE USAGE ON SCHEMA public FROM "{role}"'
            pg_execute(revoke, shop_db)
            pg_execute(f'REVOKE ALL ON DATABASE "{shop_db}" FROM "{role}"')


def test_check_connection_reports_success_and_unreadable_tables(tenant, shop_db) -> None:
    engine = engine_for("postgres")
    result = engine.check_connection(make_source(tenant, shop_db))
    assert result.ok and "PostgreSQL 15" in result.message and shop_db in result.message
    with pg_role() as role:
        result = engine.check_connection(make_source(tenant, shop_db, user=role))
        pg_execute(f'REVOKE ALL ON DATABASE "{shop_db}" FROM "{role}"')
    assert not result.ok and result.error_code == ErrorCode.PERMISSION_DENIED
    assert "3 table(s)" in result.message
    result = engine.check_connection(make_source(tenant, shop_db, port=closed_port()))
    assert not result.ok and result.error_code == ErrorCode.CONNECTION_FAILED


def test_the_workers_own_libpq_variables_are_not_used(tenant, shop_db, monkeypatch) -> None:
    # PGPORT pointing nowhere and another PGDATABASE: the tenant's settings must win.
    monkeypatch.setenv("PGDATABASE", "postgres")
    monkeypatch.setenv("PGPORT", str(closed_port()))
    monkeypatch.setenv("PGPASSWORD", "worker-password")
    log: list[str] = []
    stored = back_up(make_source(tenant, shop_db), shop_db, context(log=log))
    with storage.open_decompressed(stored.key) as stream:
        assert "3 table(s)" in engine_for("postgres").verify_stream(stream, context())


def test_a_source_that_requires_tls_fails_rather_than_connect_in_plain_text(tenant, shop_db) -> None:
    if pg_execute("SHOW ssl") == [("on",)]:
        pytest.skip("this PostgreSQL server offers TLS; the test needs one without")
    error = expect_error(ErrorCode.CONNECTION_FAILED, make_source(tenant, shop_db, tls_mode="require"), shop_db)
    assert "TLS" in error.message


def test_a_schedule_of_a_postgres_source_runs_through_the_queue_and_keeps_the_password_out(
    tenant, shop_db, django_capture_on_commit_callbacks
) -> None:
    from scheduling.models import BackupScheduleRun, RunStatus
    from scheduling.runs import run_now
    from tests.helpers import execute, make_schedule, queued_tasks

    source = make_source(tenant, shop_db)
    schedule = make_schedule(tenant, source, name="Nightly PG", keep_last=3)
    with django_capture_on_commit_callbacks(execute=True):
        run_now(schedule, actor=None)
    (task,) = queued_tasks()
    assert PASSWORD not in repr(task)  # the task carries the run's code only
    assert execute(task) == "succeeded"
    run = BackupScheduleRun.objects.get()
    assert run.status == RunStatus.SUCCEEDED and PASSWORD not in run.log
    item = run.backup_set.items.get()
    with storage.open_decompressed(item.storage_key) as stream:
        assert "3 table(s)" in engine_for("postgres").verify_stream(stream, context())


def test_a_failing_postgres_run_records_the_code_and_no_secret(
    tenant, shop_db, django_capture_on_commit_callbacks
) -> None:
    from scheduling.models import BackupScheduleRun, RunStatus
    from scheduling.runs import run_now
    from tests.helpers import drain, make_schedule

    source = make_source(tenant, PASSWORD)  # a database named like the password: the server echoes it
    schedule = make_schedule(tenant, source, name="Nightly PG", keep_last=3)
    with django_capture_on_commit_callbacks(execute=True):
        run_now(schedule, actor=None)
    assert drain() == [ErrorCode.SOURCE_NOT_FOUND]
    run = BackupScheduleRun.objects.get()
    assert run.status == RunStatus.FAILED and run.error_code == ErrorCode.SOURCE_NOT_FOUND
    # Our sentences name the database as typed (it is not a secret to us); the server's
    # line that echoed it is withheld whole (tests/backups/test_scrub.py).
    assert f'"{PASSWORD}" does not exist' not in run.log and PASSWORD not in run.error_message


def test_a_dump_killed_from_outside_fails_the_run_and_keeps_nothing(tenant, locked_customers) -> None:
    """A pg_dump killed mid-run (OOM killer, an operator's kill -9): the run fails with the
    signal named, no backup set is recorded and no file, not even a temporary one, is left."""
    import os
    import signal
    import threading

    from backups.models import BackupSet
    from scheduling.models import BackupScheduleRun, RunStatus
    from scheduling.runs import run_now
    from scheduling.worker import execute_run
    from tests.helpers import make_schedule

    source = make_source(tenant, locked_customers)
    # A time limit as a backstop: if the kill never came, the run would end as TIMEOUT.
    schedule = make_schedule(tenant, source, name="Killed PG", keep_last=3, time_limit_minutes=1)
    run = run_now(schedule, actor=None)
    killed: list[int] = []

    def kill_the_dump() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    is_dump = (proc / "cmdline").read_bytes().split(b"\0")[0].endswith(b"pg_dump")
                    environ = (proc / "environ").read_bytes() if is_dump else b""
                except OSError:
                    continue
                if f"PGDATABASE={locked_customers}\0".encode() in environ:
                    os.kill(int(proc.name), signal.SIGKILL)
                    killed.append(int(proc.name))
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_dump)
    killer.start()
    try:
        result = execute_run(str(run.code))
    finally:
        killer.join()
    assert killed, "the dump process was never seen"
    run = BackupScheduleRun.objects.get(pk=run.pk)
    assert run.status == RunStatus.FAILED and result == run.error_code
    assert "killed by signal 9" in run.error_message
    assert not BackupSet.objects.filter(run=run).exists()
    assert [p for p in storage.backups_root().rglob("*") if p.is_file()] == []
