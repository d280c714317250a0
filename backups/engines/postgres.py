"""PostgreSQL sources: pg_dump in custom format, restored with pg_restore.

Every connection setting reaches libpq through the environment (PGHOST, PGPORT,
PGUSER, PGDATABASE, PGSSLMODE) and the password through a 0600 PGPASSFILE, so
nothing a tenant typed is ever parsed as a command-line option (a database named
"-f/etc/x" stays a name) and no secret is on the command line.

Dumps are `-Fc -Z0`: the custom format restores selectively and in any order, and
compression is left to our zstd pipeline (compressing twice only costs CPU).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from backups.engines.base import CheckResult, DumpContext, DumpTarget, Engine, RestoreTarget, Source
from backups.engines.process import (
    ErrorMapper,
    ToolCall,
    dump_stream,
    find_tool,
    map_stderr,
    run_tool,
    secret_folder,
    short_deadline,
    write_secret_file,
)
from backups.engines.registry import register
from backups.errors import BackupError, ErrorCode
from backups.hosts import checked_addresses
from backups.secrets import SecretError

DEFAULT_PORT = 5432
CONNECT_TIMEOUT = 10  # seconds, libpq's PGCONNECT_TIMEOUT
MAX_IDENTIFIER = 63  # PostgreSQL truncates longer names silently; we refuse instead
DISCOVER_SQL = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"

# Checked in order: the first pattern found in stderr decides.
_ERRORS: list[tuple[re.Pattern[str], ErrorCode, str]] = [
    (
        re.compile(r"too many connections|remaining connection slots are reserved|sorry, too many clients", re.I),
        ErrorCode.THROTTLED,
        "The server refused the connection: too many connections (for this user or in total)."
        " Try again later, or raise the user's CONNECTION LIMIT.",
    ),
    (
        re.compile(r'role "[^"]*" is not permitted to log in', re.I),
        ErrorCode.AUTH_FAILED,
        "The server refused the login: this user may not log in (NOLOGIN). Use a role with LOGIN.",
    ),
    (
        re.compile(
            r'password authentication failed|role "[^"]*" does not exist|no pg_hba\.conf entry'
            r"|authentication failed|no password supplied|fe_sendauth",
            re.I,
        ),
        ErrorCode.AUTH_FAILED,
        "The server refused the login: check the user name and password (and that the server's"
        " pg_hba.conf lets this user connect from the backup worker).",
    ),
    (
        re.compile(r'database "[^"]*" does not exist', re.I),
        ErrorCode.SOURCE_NOT_FOUND,
        "The database does not exist on this server: check its name.",
    ),
    (
        re.compile(r"permission denied|must be owner|must be superuser", re.I),
        ErrorCode.PERMISSION_DENIED,
        "The user lacks a privilege the backup needs (pg_dump must be able to read every table,"
        " sequence and schema): grant it, e.g. the pg_read_all_data role.",
    ),
    (
        re.compile(
            r"could not connect|connection refused|could not translate host name|timeout expired"
            r"|server closed the connection|no route to host|network is unreachable|SSL|could not receive data"
            # Something else answers there: said like a closed port, so the test tells no service apart.
            r"|expected authentication request|received invalid response|unexpected message type|invalid length",
            re.I,
        ),
        ErrorCode.CONNECTION_FAILED,
        "Could not connect to the PostgreSQL server: check the host, the port, the TLS mode and that"
        " the server accepts connections from the backup worker.",
    ),
    (
        re.compile(r"canceling statement due to (lock|statement) timeout|deadlock detected", re.I),
        ErrorCode.TIMEOUT,
        "The database kept a lock the dump needed for too long.",
    ),
    (
        re.compile(r"no space left on device|could not extend file|disk full", re.I),
        ErrorCode.STORAGE_FULL,
        "The database server ran out of disk space.",
    ),
]


def map_error(stderr: str) -> tuple[ErrorCode, str]:
    return map_stderr(stderr, _ERRORS, "The PostgreSQL tool failed.")


# pg_dump --verbose's own lines ("pg_dump: dumping contents of table "public.ssl_keys""):
# they name tables, which must not decide how a failure is read. Its errors, warnings
# and details carry a level ("pg_dump: error: ..."), libpq's text none.
_DUMP_INFO_LINE = re.compile(r"^pg_dump: (?!error:|warning:|detail:|hint:|fatal:|\[).*$\n?", re.M)


def _dump_error(stderr: str) -> tuple[ErrorCode, str]:
    return map_error(_DUMP_INFO_LINE.sub("", stderr))


def _log_lines(ctx: DumpContext) -> Callable[[str], None]:
    def log(line: str) -> None:
        if line.strip():
            ctx.log(line.rstrip())

    return log


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(name: str) -> str:
    # standard_conforming_strings is on (the default since 9.1): a quote is the only special character.
    return "'" + name.replace("'", "''") + "'"


def check_database_name(name: str) -> str:
    if not name or "\x00" in name or len(name.encode()) > MAX_IDENTIFIER:
        raise BackupError(
            ErrorCode.UNKNOWN, f"“{name[:80]}” cannot be a PostgreSQL database name (1 to 63 bytes, no NUL)."
        )
    return name


@register
class PostgresEngine(Engine):
    kind = "postgres"
    label = "PostgreSQL"
    suffix = ".pgdump.zst"
    is_server = True
    default_port = DEFAULT_PORT
    max_database_name = MAX_IDENTIFIER

    def database_name_length(self, name: str) -> int:
        return len(name.encode())  # NAMEDATALEN counts bytes

    @contextmanager
    def _call(
        self,
        source: Source,
        argv: list[str],
        what: str,
        database: str,
        deadline: float | None,
        mapper: ErrorMapper = map_error,
        on_stderr_line: Callable[[str], None] | None = None,
    ) -> Iterator[ToolCall]:
        """A ToolCall with the source's connection settings and a PGPASSFILE, removed afterwards."""
        # Only where the tenant's host rules allow, and to the very addresses checked
        # (PGHOSTADDR): libpq resolving the name again could get another answer.
        addresses = checked_addresses(source.host, source.port or DEFAULT_PORT, source.tenant)
        try:
            password = source.get_password()
        except SecretError as exc:
            raise BackupError(ErrorCode.AUTH_FAILED, str(exc)) from None
        with secret_folder() as folder:
            # *:*:*:*: the file only ever serves this one connection. An empty file when
            # there is no password, so the worker's own ~/.pgpass is never used.
            escaped = password.replace("\\", "\\\\").replace(":", "\\:")
            passfile = write_secret_file(folder, "pgpass", f"*:*:*:*:{escaped}\n" if password else "")
            env = {
                # One host entry per address: TLS verification still checks the name.
                "PGHOST": ",".join([source.host] * len(addresses)),
                "PGHOSTADDR": ",".join(addresses),
                "PGPORT": str(source.port or DEFAULT_PORT),
                "PGUSER": source.username,
                "PGDATABASE": database,
                "PGSSLMODE": source.tls_mode or "prefer",
                "PGPASSFILE": str(passfile),
                "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
                "PGAPPNAME": "backups",
                # No ~/.pg_service.conf or psqlrc of the worker's.
                "PGSERVICEFILE": str(Path(folder) / "none"),
                "PGSYSCONFDIR": str(folder),
            }
            yield ToolCall(
                argv=argv,
                what=what,
                mapper=mapper,
                env=env,
                secrets=(password,) if password else (),
                deadline=deadline,
                on_stderr_line=on_stderr_line,
            )

    def _maintenance_db(self, source: Source) -> str:
        return "postgres" if source.all_databases or not source.database else source.database

    def _psql(self, source: Source, sql: str, database: str, deadline: float | None, what: str) -> str:
        argv = [find_tool("psql"), "-X", "-w", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]
        with self._call(source, argv, what, database, deadline) as call:
            return run_tool(call)

    def targets(self, source: Source, ctx: DumpContext) -> list[DumpTarget]:
        if not source.all_databases:
            return [DumpTarget(label=f"{source.name} / {source.database}", database=source.database)]
        deadline = short_deadline(ctx.deadline)
        output = self._psql(source, DISCOVER_SQL, "postgres", deadline, "database discovery (psql)")
        names = [line for line in output.splitlines() if line]
        ctx.log(f"Found {len(names)} database(s) on the server: {', '.join(names) or 'none'}.")
        if not names:
            raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "The server has no database this user can connect to.")
        return [DumpTarget(label=f"{source.name} / {name}", database=name) for name in names]

    @contextmanager
    def dump(self, source: Source, target: DumpTarget, ctx: DumpContext) -> Iterator[BinaryIO]:
        database = target.database or source.database
        # --verbose: pg_dump says on stderr what it reads and dumps; those lines go to the
        # run's log as they come, so a long dump shows where it is.
        argv = [find_tool("pg_dump"), "-w", "--verbose", "--format=custom", "--compress=0"]
        what = f"pg_dump of “{database}”"
        with self._call(
            source, argv, what, database, ctx.deadline, mapper=_dump_error, on_stderr_line=_log_lines(ctx)
        ) as call:
            say = f"pg_dump of “{database}” on {source.host}:{source.port or DEFAULT_PORT} as {source.username}."
            ctx.log(say)
            with dump_stream(call, ctx.should_stop) as stream:
                yield stream

    def check_connection(self, source: Source) -> CheckResult:
        database = self._maintenance_db(source)
        # Connect, authenticate, and count what pg_dump could not read: the cheapest
        # check that tells a missing privilege before the first nightly run fails on it.
        sql = (
            "SELECT current_setting('server_version'), current_user, "
            "(SELECT count(*) FROM pg_database WHERE datallowconn AND NOT datistemplate), "
            "(SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') "
            "AND NOT has_table_privilege(format('%I.%I', schemaname, tablename), 'SELECT'))"
        )
        try:
            output = self._psql(source, sql, database, short_deadline(None), "connection test (psql)").strip()
        except BackupError as exc:
            # Our own sentence only: never what answered on that port (its banner, its words).
            return CheckResult(ok=False, message=exc.summary, error_code=exc.code)
        answer, _user, databases, unreadable = output.split("|")
        # Only what we can vouch for reaches the page: the version's number (not the
        # server's own text), our user name, and counts that parse as numbers.
        version = _version_number(answer)
        user = source.username
        databases, unreadable = str(int(databases)), str(int(unreadable))
        if source.all_databases:
            return CheckResult(
                ok=True, message=f"Connected to PostgreSQL {version} as {user}; {databases} database(s) to back up."
            )
        if int(unreadable):
            return CheckResult(
                ok=False,
                message=f"Connected to PostgreSQL {version} as {user}, but {unreadable} table(s) of “{database}”"
                " cannot be read by this user; the backup would fail. Grant SELECT (or pg_read_all_data).",
                error_code=ErrorCode.PERMISSION_DENIED,
            )
        return CheckResult(ok=True, message=f"Connected to PostgreSQL {version} as {user}; database “{database}”.")

    def verify_stream(self, stream: BinaryIO, ctx: DumpContext) -> str:
        # `pg_restore --list` alone reads only the table of contents at the start of the
        # archive, so it passes a dump cut off in the middle of a table's data. Restoring
        # to /dev/null reads, checks and decompresses every data block to the archive's
        # end, with no server involved; -v names each table it reads.
        tables: list[str] = []

        def count(line: str) -> None:
            if "processing data for table" in line:
                tables.append(line)

        call = ToolCall(
            argv=[find_tool("pg_restore"), "--verbose", "--file=/dev/null"],
            what="pg_restore check of the backup",
            mapper=_verify_error,
            deadline=ctx.deadline,
            on_stderr_line=count,
        )
        run_tool(call, stdin=stream)
        return f"pg_restore read the whole archive: data of {len(tables)} table(s)."

    def default_restore_target(self, source: Source, target: DumpTarget, stamp: str) -> RestoreTarget:
        base = target.database or source.database or "restore"
        suffix = f"_restore_{stamp}"
        while len((base + suffix).encode()) > MAX_IDENTIFIER:
            base = base[:-1]
        return RestoreTarget(database=base + suffix)

    def restore(self, source: Source, target: DumpTarget, stream: BinaryIO, to: RestoreTarget, ctx: DumpContext) -> str:
        name = check_database_name(to.database)
        deadline = ctx.deadline
        created = self._create_database(source, name, to.overwrite, deadline)
        argv = [find_tool("pg_restore"), "-w", "--no-owner", "--exit-on-error", "--single-transaction"]
        if to.overwrite and not created:
            argv += ["--clean", "--if-exists"]
        argv.append(f"--dbname={_conninfo_dbname(name)}")
        with self._call(source, argv, f"pg_restore into “{name}”", name, deadline) as call:
            run_tool(call, stdin=stream)
        ctx.log(f"Restored into the {'new' if created else 'existing'} database “{name}”.")
        return f"Restored into {'new' if created else 'existing'} database “{name}”."

    def _create_database(self, source: Source, name: str, overwrite: bool, deadline: float | None) -> bool:
        """Create `name`; True if created, False if it existed and `overwrite` allows using it."""
        limit = short_deadline(deadline)
        maintenance = self._maintenance_db(source)
        exists = self._psql(
            source,
            f"SELECT count(*) FROM pg_database WHERE datname = {quote_literal(name)}",
            maintenance,
            limit,
            "restore preparation (psql)",
        ).strip()
        if exists != "0":
            if not overwrite:
                raise BackupError(
                    ErrorCode.UNKNOWN,
                    f"The database “{name}” already exists; restore into a new name, or confirm overwriting it.",
                )
            return False
        try:
            self._psql(
                source,
                f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0",
                maintenance,
                limit,
                f"creation of database “{name}” (psql)",
            )
        except BackupError as exc:
            if "already exists" in exc.message and not overwrite:  # created meanwhile
                raise BackupError(ErrorCode.UNKNOWN, f"The database “{name}” already exists.") from None
            if "already exists" not in exc.message:
                raise
            return False
        return True


def _version_number(answer: str) -> str:
    found = re.match(r"\s*(\d{1,4}(?:\.\d{1,4}){0,3})", answer)
    return found.group(1) if found else "(unknown version)"


def _conninfo_dbname(name: str) -> str:
    # --dbname takes a connection string when the value contains "=": quote it as one.
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


def _verify_error(stderr: str) -> tuple[ErrorCode, str]:
    # Only what the file itself is to blame for is CORRUPTED: a client too old for the
    # archive, or a machine out of memory, says nothing about the backup.
    if "unsupported version" in stderr:
        return ErrorCode.UNKNOWN, "This server's pg_restore is older than the pg_dump that wrote the backup."
    if re.search(r"out of memory|could not allocate|no space left", stderr, re.I):
        return ErrorCode.UNKNOWN, "The check ran out of resources on this server; the backup was not judged."
    return ErrorCode.CORRUPTED, "The backup file is damaged or incomplete: pg_restore cannot read it."
