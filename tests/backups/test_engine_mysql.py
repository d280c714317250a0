"""The MariaDB engine against the machine's real server and real mariadb-dump / mariadb."""

from __future__ import annotations

import io
import os
import random
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from backups import storage
from backups.engines.base import DumpContext, DumpTarget, RestoreTarget
from backups.engines.mysql import check_sql_dump
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupSource, SourceKind
from tests.db_servers import (
    MARIADB_HOST,
    MARIADB_PORT,
    back_up,
    context,
    mariadb,
    mariadb_database,
    mariadb_user,
    require_mariadb,
    unique_name,
)

pytestmark = [pytest.mark.services, pytest.mark.django_db]

# Unique per run, so cleaning up never ends a colleague's query.
SLEEP = f"SELECT SLEEP({60 + random.randint(1, 999) / 1000})"
PASSWORD = 'Sec"ret\\ my;sql #pw'

SCHEMA = r"""
SET SESSION max_recursive_iterations = 100000;
CREATE TABLE customers (
  id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(200) NOT NULL, email VARCHAR(200) NULL, note TEXT NULL
) CHARACTER SET utf8mb4;
INSERT INTO customers (name, email, note)
WITH RECURSIVE seq (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 300)
SELECT CONCAT('Kunde ', i, ' Zoë 北京 🙂'),
       IF(i % 3 = 0, NULL, CONCAT('c', i, '@example.org')),
       IF(i % 5 = 0, 'line1\nline2\t''quoted'' \\ back; -- not a comment /* nor this */', NULL)
FROM seq;
CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, order_id BIGINT NOT NULL, noted VARCHAR(50));
CREATE TABLE orders (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  customer_id INT, amount DECIMAL(12, 2) NULL, placed_at DATETIME, payload BLOB NULL, data JSON,
  FOREIGN KEY (customer_id) REFERENCES customers (id)
);
DELIMITER ;;
CREATE FUNCTION order_total(c INT) RETURNS DECIMAL(14, 2) READS SQL DATA
BEGIN
  RETURN (SELECT COALESCE(SUM(amount), 0) FROM orders WHERE customer_id = c);
END;;
CREATE PROCEDURE add_order(c INT, a DECIMAL(12, 2))
BEGIN
  INSERT INTO orders (customer_id, amount, placed_at) VALUES (c, a, NOW());
END;;
CREATE TRIGGER orders_log AFTER INSERT ON orders FOR EACH ROW
BEGIN
  INSERT INTO audit (order_id, noted) VALUES (NEW.id, 'trigger; ''quoted''');
END;;
DELIMITER ;
INSERT INTO orders (customer_id, amount, placed_at, payload, data)
WITH RECURSIVE seq (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < 1500)
SELECT 1 + i % 300, IF(i % 7 = 0, NULL, i * 1.25), '2026-01-01 00:00:00' + INTERVAL i HOUR,
       IF(i % 4 = 0, NULL, UNHEX(MD5(i))), JSON_OBJECT('i', i, 'name', 'Ωmega')
FROM seq;
CREATE VIEW big_customers AS SELECT id, name, order_total(id) AS total FROM customers;
CREATE EVENT nightly_cleanup ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM audit WHERE order_id < 0;
"""


@pytest.fixture(autouse=True)
def _mariadb() -> None:
    require_mariadb()


@pytest.fixture
def shop_db() -> Iterator[str]:
    with mariadb_database("bt_shop") as name:
        mariadb(SCHEMA, name)
        yield name


def make_source(
    tenant, database: str = "", user: str = "root", password: str = "", port: int = MARIADB_PORT, **fields
) -> BackupSource:
    source = BackupSource(
        tenant=tenant,
        name=unique_name("my"),
        kind=SourceKind.MYSQL,
        host=MARIADB_HOST,
        port=port,
        username=user,
        database=database,
        **{"tls_mode": "prefer", **fields},
    )
    source.set_password(password)
    source.save()
    return source


def fingerprint(database: str) -> dict[str, str]:
    """CHECKSUM TABLE and the row count of every base table, md5 of the view's ordered rows."""
    tables = mariadb(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
        " AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME",
        database,
    ).split()
    result = {}
    for table in tables:
        checksum = mariadb(f"CHECKSUM TABLE `{table}` EXTENDED", database).split("\t")[1].strip()
        count = mariadb(f"SELECT COUNT(*) FROM `{table}`", database).strip()
        result[table] = f"{count} rows, checksum {checksum}"
    result["big_customers"] = mariadb(
        "SET SESSION group_concat_max_len = 100000000;"
        " SELECT COUNT(*), MD5(GROUP_CONCAT(CONCAT_WS('|', id, name, total) ORDER BY id SEPARATOR '\\n'))"
        " FROM big_customers",
        database,
    ).strip()
    return result


def routines(database: str) -> str:
    return mariadb(
        "SELECT GROUP_CONCAT(x ORDER BY x) FROM ("
        " SELECT CONCAT('routine ', ROUTINE_NAME) x FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"
        " UNION ALL SELECT CONCAT('trigger ', TRIGGER_NAME) FROM information_schema.TRIGGERS"
        " WHERE TRIGGER_SCHEMA = DATABASE()"
        " UNION ALL SELECT CONCAT('event ', EVENT_NAME) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = DATABASE()"
        ") objects",
        database,
    ).strip()


@contextmanager
def dropped_afterwards(name: str) -> Iterator[str]:
    try:
        yield name
    finally:
        mariadb(f"DROP DATABASE IF EXISTS `{name}`")


def expect_error(code: ErrorCode, source: BackupSource, database: str, ctx: DumpContext | None = None) -> BackupError:
    with pytest.raises(BackupError) as caught:
        back_up(source, database, ctx)
    assert caught.value.code == code, caught.value.message
    assert source.get_password() not in caught.value.message or not source.get_password()
    assert not [p for p in Path(storage.backups_root()).rglob("*") if p.is_file()]
    return caught.value


def test_a_backup_restored_into_a_new_database_has_the_same_tables_rows_view_routines_and_trigger(
    tenant, shop_db
) -> None:
    grants = f"GRANT ALL ON `{shop_db}`.* TO '{{user}}'@'%'; GRANT SELECT ON mysql.proc TO '{{user}}'@'%'"
    with mariadb_user(PASSWORD, grants=grants) as user:
        source = make_source(tenant, shop_db, user=user, password=PASSWORD)
        stored = back_up(source, shop_db)
    source = make_source(tenant, shop_db)  # root restores: the new database needs CREATE on the server
    engine = engine_for("mysql")
    target = engine.default_restore_target(source, DumpTarget(shop_db, shop_db), "20260101T000000Z")
    assert target.database == f"{shop_db}_restore_20260101T000000Z"
    with dropped_afterwards(target.database), storage.open_decompressed(stored.key) as stream:
        summary = engine.restore(source, DumpTarget(shop_db, shop_db), stream, target, context())
        assert target.database in summary
        original = fingerprint(shop_db)
        assert set(original) == {"audit", "customers", "orders", "big_customers"}
        assert original["orders"].startswith("1500 rows") and original["audit"].startswith("1500 rows")
        assert fingerprint(target.database) == original
        assert routines(target.database) == routines(shop_db)
        assert routines(shop_db) == "event nightly_cleanup,routine add_order,routine order_total,trigger orders_log"
        mariadb("CALL add_order(1, 5)", target.database)
        count, newest = mariadb("SELECT COUNT(*), MAX(order_id) FROM audit", target.database).split()
        # The trigger ran, and the new order got an id after the restored ones (AUTO_INCREMENT came along).
        assert count == "1501" and int(newest) > 1500


def test_a_restore_refuses_an_existing_database_unless_told_to_overwrite_it(tenant, shop_db) -> None:
    source = make_source(tenant, shop_db)
    engine = engine_for("mysql")
    stored = back_up(source, shop_db)
    with mariadb_database("bt_existing") as existing:
        mariadb("CREATE TABLE keep_me (id INT); INSERT INTO keep_me VALUES (1)", existing)
        with storage.open_decompressed(stored.key) as stream, pytest.raises(BackupError) as caught:
            engine.restore(source, DumpTarget(shop_db, shop_db), stream, RestoreTarget(database=existing), context())
        assert "already exists" in caught.value.message
        assert mariadb("SHOW TABLES", existing).split() == ["keep_me"]
        with storage.open_decompressed(stored.key) as stream:
            to = RestoreTarget(database=existing, overwrite=True)
            engine.restore(source, DumpTarget(shop_db, shop_db), stream, to, context())
        # Overwrite = exactly the backup: what was there before is gone.
        assert fingerprint(existing) == fingerprint(shop_db)
        assert "keep_me" not in mariadb("SHOW TABLES", existing).split()


def test_all_databases_discovers_the_databases_without_the_system_schemas(tenant, shop_db) -> None:
    source = make_source(tenant, all_databases=True)
    engine = engine_for("mysql")
    with mariadb_database("bt_second") as second:
        names = [t.database for t in engine.targets(source, context())]
        assert shop_db in names and second in names
        assert not {"mysql", "information_schema", "performance_schema", "sys"} & set(names)
    assert second not in [t.database for t in engine.targets(source, context())]


def test_verify_passes_on_a_good_dump_and_fails_on_a_truncated_one(tenant, shop_db) -> None:
    source = make_source(tenant, shop_db)
    engine = engine_for("mysql")
    stored = back_up(source, shop_db)
    with storage.open_decompressed(stored.key) as stream:
        summary = engine.verify_stream(stream, context())
    assert "3 tables" in summary
    with storage.open_decompressed(stored.key) as stream:
        data = stream.read()
    # Cut anywhere: in an INSERT's string, in a routine body, between statements, in the trailer.
    cuts = [len(data) * i // 40 for i in range(1, 40)] + [data.index(b"CREATE DEFINER") + 30, len(data) - 5]
    for cut in cuts:
        with pytest.raises(BackupError) as caught:
            engine.verify_stream(io.BytesIO(data[:cut]), context())
        assert "damaged or incomplete" in caught.value.message
        assert caught.value.code == ErrorCode.CORRUPTED
    # A statement no dump contains, well quoted and terminated, is caught too.
    tampered = data.replace(b"UNLOCK TABLES;", b"GRANT ALL ON *.* TO x;", 1)
    with pytest.raises(BackupError, match="no dump contains"):
        check_sql_dump(io.BytesIO(tampered))


def test_a_wrong_password_fails_the_run_as_auth_failed(tenant, shop_db) -> None:
    with mariadb_user(PASSWORD, grants=f"GRANT ALL ON `{shop_db}`.* TO '{{user}}'@'%'") as user:
        source = make_source(tenant, shop_db, user=user, password="wrong-password")
        error = expect_error(ErrorCode.AUTH_FAILED, source, shop_db)
    assert "user name and password" in error.message
    assert "wrong-password" not in error.message


def test_a_missing_database_fails_as_source_not_found(tenant) -> None:
    missing = unique_name("bt_missing")
    error = expect_error(ErrorCode.SOURCE_NOT_FOUND, make_source(tenant, missing), missing)
    assert "does not exist" in error.message


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_closed_port_fails_as_connection_failed(tenant, shop_db) -> None:
    error = expect_error(ErrorCode.CONNECTION_FAILED, make_source(tenant, shop_db, port=closed_port()), shop_db)
    assert "check the host, the port" in error.message


def test_a_user_without_select_on_the_tables_fails_as_permission_denied(tenant, shop_db) -> None:
    # May see one table only: the dump must not quietly leave the rest out.
    with mariadb_user(PASSWORD, grants=f"GRANT SELECT ON `{shop_db}`.`customers` TO '{{user}}'@'%'") as user:
        error = expect_error(
            ErrorCode.PERMISSION_DENIED, make_source(tenant, shop_db, user=user, password=PASSWORD), shop_db
        )
    assert "privilege" in error.message


def test_a_user_who_cannot_read_routines_defined_by_another_fails_as_permission_denied(tenant, shop_db) -> None:
    # mariadb-dump would otherwise be the one to say so, in its own words, as UNKNOWN.
    with mariadb_user(PASSWORD, grants=f"GRANT ALL ON `{shop_db}`.* TO '{{user}}'@'%'") as user:
        error = expect_error(
            ErrorCode.PERMISSION_DENIED, make_source(tenant, shop_db, user=user, password=PASSWORD), shop_db
        )
    assert "mysql.proc" in error.message


@contextmanager
def holding(sql: str, user: str = "root", password: str = "", database: str = "") -> Iterator[None]:
    """Run `sql` (ending in a long SLEEP) in another connection until the block ends."""
    argv = ["mariadb", "--no-defaults", f"--host={MARIADB_HOST}", f"--port={MARIADB_PORT}", f"--user={user}"]
    argv += ["--protocol=TCP", "--batch"] + ([f"--database={database}"] if database else [])
    env = {**os.environ, "MYSQL_PWD": password} if password else None
    holder = subprocess.Popen(
        [*argv, "-e", sql], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        started = time.monotonic()
        while mariadb(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = '{SLEEP}'").strip() == "0":
            if holder.poll() is not None:
                pytest.fail(f"the holding connection ended: {holder.stderr.read()!r}")  # type: ignore[union-attr]
            if time.monotonic() - started > 60:
                pytest.fail("the holding connection did not start within a minute")
            time.sleep(0.05)
        yield
    finally:
        holder.kill()
        holder.wait()
        # The server notices the client is gone only when the SLEEP ends: end it now.
        for thread_id in mariadb(f"SELECT ID FROM information_schema.PROCESSLIST WHERE INFO = '{SLEEP}'").split():
            mariadb(f"KILL {thread_id}")


def test_a_user_over_max_user_connections_fails_as_throttled(tenant, shop_db) -> None:
    grants = f"GRANT ALL ON `{shop_db}`.* TO '{{user}}'@'%'"
    with (
        mariadb_user(PASSWORD, grants=grants, options="WITH MAX_USER_CONNECTIONS 1") as user,
        holding(SLEEP, user=user, password=PASSWORD),
    ):
        source = make_source(tenant, shop_db, user=user, password=PASSWORD)
        error = expect_error(ErrorCode.THROTTLED, source, shop_db)
    assert "too many connections" in error.message


def test_a_dump_blocked_by_a_lock_past_the_deadline_is_killed_as_timeout(tenant, shop_db) -> None:
    with holding(f"LOCK TABLES customers WRITE; {SLEEP}", database=shop_db):
        error = expect_error(ErrorCode.TIMEOUT, make_source(tenant, shop_db), shop_db, context(seconds=1.5))
    assert "time limit" in error.message


def test_the_password_is_in_a_private_option_file_never_on_the_command_line(tenant, shop_db) -> None:
    grants = f"GRANT ALL ON `{shop_db}`.* TO '{{user}}'@'%'"
    with mariadb_user(PASSWORD, grants=grants) as user:
        source = make_source(tenant, shop_db, user=user, password=PASSWORD)
        engine = engine_for("mysql")
        with (
            holding(f"LOCK TABLES customers WRITE; {SLEEP}", database=shop_db),
            engine.dump(source, DumpTarget("x", shop_db), context()) as stream,
        ):
            pid = stream.process.popen.pid  # type: ignore[attr-defined]
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode()
            option_file = Path(argv[1].decode().split("=", 1)[1])
            mode = stat.S_IMODE(option_file.stat().st_mode)
            content = option_file.read_text()
            stream.process.kill()  # type: ignore[attr-defined]
            with pytest.raises(BackupError):
                stream.read()
    assert argv[1].startswith(b"--defaults-file=")  # the first option, as the tools require
    assert PASSWORD.encode() not in b"\0".join(argv) and PASSWORD not in environ
    assert mode == 0o600
    assert 'password="Sec\\"ret\\\\ my;sql #pw"' in content
    assert not option_file.exists()


def test_a_worker_option_file_and_environment_are_not_used(tenant, shop_db, monkeypatch, tmp_path) -> None:
    # A ~/.my.cnf with another user, and MYSQL_* variables, must not change the connection.
    (tmp_path / ".my.cnf").write_text("[client]\nuser=nobody\npassword=nothing\nport=1\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MYSQL_TCP_PORT", "1")
    stored = back_up(make_source(tenant, shop_db), shop_db)
    assert stored.size > 0


def test_check_connection_reports_success_and_failure(tenant, shop_db) -> None:
    engine = engine_for("mysql")
    result = engine.check_connection(make_source(tenant, shop_db))
    assert result.ok and "MariaDB" in result.message and "3 tables" in result.message
    with mariadb_user(PASSWORD) as user:
        result = engine.check_connection(make_source(tenant, shop_db, user=user, password="wrong"))
    assert not result.ok and result.error_code == ErrorCode.AUTH_FAILED


def test_a_source_that_requires_tls_fails_rather_than_connect_in_plain_text(tenant, shop_db) -> None:
    if mariadb("SHOW VARIABLES LIKE 'have_ssl'").split()[1] == "YES":
        pytest.skip("this MariaDB server offers TLS; the test needs one without")
    for mode in ("require", "verify-full"):
        source = make_source(tenant, shop_db, tls_mode=mode)
        error = expect_error(ErrorCode.CONNECTION_FAILED, source, shop_db)
        assert "TLS" in error.message


HEADER = b"-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n"
TRAILER = b"\n-- Dump completed\n"


def test_the_sql_check_follows_strings_comments_and_delimiters_like_the_client() -> None:
    # No server needed: the tricky shapes a dump can take, accepted ...
    good = (
        HEADER
        + b"INSERT INTO `t` VALUES (1,'a;b -- c /* d','it''s','back\\\\slash\\';'),\n(2,\"q;\\\"\",NULL);\n"
        + b"INSERT INTO `t` VALUES (3,'a string\nover two lines;');\n"
        + b"/*!40101 SET NAMES utf8mb4 */;\n"
        + b"DELIMITER ;;\n/*!50003 CREATE*/ /*!50003 TRIGGER x BEFORE INSERT ON t FOR EACH ROW SET @a = ';' */;;\n"
        + b"DELIMITER ;\n"
        + TRAILER
    )
    check = check_sql_dump(io.BytesIO(good))
    assert (check.statements, check.inserts) == (4, 2)
    # ... and cut anywhere, refused: for want of the trailer, and even with a trailer
    # added, unless the cut fell exactly between two statements.
    for cut in range(len(HEADER), len(good) - len(TRAILER)):
        with pytest.raises(BackupError):
            check_sql_dump(io.BytesIO(good[:cut]))
        prefix = good[:cut]
        if prefix == HEADER or prefix.rstrip().endswith(b";") or prefix.rsplit(b"\n", 1)[-1].startswith(b"DELIMITER "):
            continue
        with pytest.raises(BackupError):
            check_sql_dump(io.BytesIO(prefix + TRAILER))


def test_a_long_unterminated_string_is_refused_without_backtracking() -> None:
    # Atomic groups in the scanner: this would take exponential time with plain groups.
    endless = HEADER + b"INSERT INTO `t` VALUES (1,'" + b"ab\\'cd''" * 100_000 + TRAILER
    with pytest.raises(BackupError, match="ends inside a string"):
        check_sql_dump(io.BytesIO(endless))


def test_check_connection_finds_unreadable_routines_and_a_missing_event_privilege(tenant, shop_db) -> None:
    engine = engine_for("mysql")
    with mariadb_user(PASSWORD, grants=f"GRANT ALL ON `{shop_db}`.* TO '{{user}}'@'%'") as user:
        result = engine.check_connection(make_source(tenant, shop_db, user=user, password=PASSWORD))
    assert not result.ok and result.error_code == ErrorCode.PERMISSION_DENIED and "mysql.proc" in result.message
    with mariadb_user(PASSWORD, grants=f"GRANT SELECT ON `{shop_db}`.* TO '{{user}}'@'%'") as user:
        result = engine.check_connection(make_source(tenant, shop_db, user=user, password=PASSWORD))
    assert not result.ok and result.error_code == ErrorCode.PERMISSION_DENIED
    assert PASSWORD not in result.message
