"""MariaDB / MySQL sources: mariadb-dump (or mysqldump) SQL, restored with the mariadb client.

Connection settings and the password go into a 0600 option file passed with
`--defaults-file` as the first option. Not `--defaults-extra-file`: that one is read
*before* the worker's own ~/.my.cnf, whose [client] password or user would then win
over the source's; `--defaults-file` makes our file the only one read.

Dumps are taken without `--databases`, so they hold no CREATE DATABASE / USE and
restore into any database name.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import BinaryIO

from backups.engines.base import CheckResult, DumpContext, DumpTarget, Engine, RestoreTarget, Source
from backups.engines.process import (
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

DEFAULT_PORT = 3306
CONNECT_TIMEOUT = 10
MAX_IDENTIFIER = 64
SYSTEM_SCHEMAS = frozenset({"information_schema", "performance_schema", "mysql", "sys"})

_ERRORS: list[tuple[re.Pattern[str], ErrorCode, str]] = [
    (
        re.compile(r"\b(1040|1203|1226)\b|too many connections|max_user_connections|max_connections", re.I),
        ErrorCode.THROTTLED,
        "The server refused the connection: too many connections (for this user or in total)."
        " Try again later, or raise the user's MAX_USER_CONNECTIONS.",
    ),
    (
        re.compile(r"\b1049\b|Unknown database", re.I),
        ErrorCode.SOURCE_NOT_FOUND,
        "The database does not exist on this server: check its name.",
    ),
    (
        # 1044: the user exists and logged in, but may not use this database.
        re.compile(
            r"\b(1044|1142|1143|1227|1370)\b|command denied|Access denied for user [^\n]* to database"
            r"|insufficient privileges",
            re.I,
        ),
        ErrorCode.PERMISSION_DENIED,
        "The user lacks a privilege the backup needs: SELECT, SHOW VIEW, TRIGGER, EVENT and LOCK TABLES"
        " on the database, and SELECT on mysql.proc for routines another user defined. Grant them.",
    ),
    (
        re.compile(r"\b(1045|1698)\b|Access denied for user", re.I),
        ErrorCode.AUTH_FAILED,
        "The server refused the login: check the user name and password (and that the user may"
        " connect from the backup worker's host).",
    ),
    (
        re.compile(
            r"\b(2002|2003|2005|2013|2026)\b|Can't connect|Unknown (MySQL|MariaDB) server host|Lost connection|SSL"
            # Something else answers there: said like a closed port, so the test tells no service apart.
            r"|\b(1043|1156|2012|2027)\b|Bad handshake|packets out of order|Malformed packet",
            re.I,
        ),
        ErrorCode.CONNECTION_FAILED,
        "Could not connect to the MariaDB/MySQL server: check the host, the port, the TLS mode and"
        " that the server accepts connections from the backup worker.",
    ),
    (
        re.compile(r"\b(1205)\b|Lock wait timeout", re.I),
        ErrorCode.TIMEOUT,
        "The database kept a lock the dump needed for too long.",
    ),
    (
        re.compile(r"\b(1021|28)\b.*(disk|space)|No space left|Disk full", re.I),
        ErrorCode.STORAGE_FULL,
        "The database server ran out of disk space.",
    ),
]


def map_error(stderr: str) -> tuple[ErrorCode, str]:
    return map_stderr(stderr, _ERRORS, "The MariaDB/MySQL tool failed.")


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def check_database_name(name: str) -> str:
    if not name or "\x00" in name or len(name) > MAX_IDENTIFIER or name != name.rstrip():
        raise BackupError(
            ErrorCode.UNKNOWN,
            f"“{name[:80]}” cannot be a MariaDB database name (1 to 64 characters, not ending in a space).",
        )
    return name


def _option_value(value: str) -> str:
    # Option files read a double-quoted value with backslash escapes.
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


@lru_cache(maxsize=4)
def _is_mariadb(tool: str) -> bool:
    """MariaDB's tools and MySQL's name their TLS options differently."""
    try:
        version = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return True
    return "mariadb" in version.lower()


def _tls_options(tool: str, mode: str) -> list[str]:
    if _is_mariadb(tool):
        # MariaDB's tools have TLS on by default but fall back to plain text when the
        # server has none, `--ssl` included; only --ssl-verify-server-cert refuses to.
        # So "required" verifies too: never a silent downgrade to plain text.
        return {
            "disable": ["--skip-ssl"],
            "prefer": [],
            "require": ["--ssl", "--ssl-verify-server-cert"],
            "verify-full": ["--ssl", "--ssl-verify-server-cert"],
        }.get(mode, [])
    return {
        "disable": ["--ssl-mode=DISABLED"],
        "prefer": ["--ssl-mode=PREFERRED"],
        "require": ["--ssl-mode=REQUIRED"],
        "verify-full": ["--ssl-mode=VERIFY_IDENTITY"],
    }.get(mode, [])


def _connect_host(source: Source, tool: str, addresses: list[str]) -> str:
    """The checked address (the client resolving the name again could get another answer),
    except when the client verifies the certificate, which names the host: there a name
    resolving elsewhere gets nothing, as no certificate for the name answers there."""
    verifies = "--ssl-verify-server-cert" in _tls_options(tool, source.tls_mode) or source.tls_mode == "verify-full"
    if verifies:
        return source.host
    return sorted(addresses, key=lambda address: ":" in address)[0]  # IPv4 first: what servers listen on most


@register
class MysqlEngine(Engine):
    kind = "mysql"
    label = "MariaDB / MySQL"
    suffix = ".sql.zst"
    is_server = True
    default_port = DEFAULT_PORT
    max_database_name = MAX_IDENTIFIER
    # _tls_options: their client cannot insist on TLS without verifying.
    form_hints = {"tls_mode": "For MariaDB/MySQL, “Required” also verifies the server's certificate."}

    @contextmanager
    def _call(
        self, source: Source, tool: str, options: list[str], args: list[str], what: str, deadline: float | None
    ) -> Iterator[ToolCall]:
        addresses = checked_addresses(source.host, source.port or DEFAULT_PORT, source.tenant)
        try:
            password = source.get_password()
        except SecretError as exc:
            raise BackupError(ErrorCode.AUTH_FAILED, str(exc)) from None
        lines = [
            "[client]",
            f"host={_option_value(_connect_host(source, tool, addresses))}",
            f"port={source.port or DEFAULT_PORT}",
            f"user={_option_value(source.username)}",
            f"password={_option_value(password)}",
            "protocol=TCP",  # "localhost" would otherwise mean the Unix socket, not the port
            "default-character-set=utf8mb4",
        ]
        with secret_folder() as folder:
            option_file = write_secret_file(folder, "client.cnf", "\n".join(lines) + "\n")
            argv = [tool, f"--defaults-file={option_file}", *_tls_options(tool, source.tls_mode), *options, *args]
            yield ToolCall(
                argv=argv,
                what=what,
                mapper=map_error,
                secrets=(password,) if password else (),
                deadline=deadline,
            )

    def _client(self, source: Source, sql: str, deadline: float | None, what: str, database: str = "") -> str:
        tool = find_tool("mariadb", "mysql")
        options = ["--batch", "--skip-column-names", f"--connect-timeout={CONNECT_TIMEOUT}", "--execute", sql]
        if database:
            options.append(f"--database={database}")
        with self._call(source, tool, options, [], what, deadline) as call:
            return run_tool(call)

    def targets(self, source: Source, ctx: DumpContext) -> list[DumpTarget]:
        if not source.all_databases:
            return [DumpTarget(label=f"{source.name} / {source.database}", database=source.database)]
        deadline = short_deadline(ctx.deadline)
        output = self._client(source, "SHOW DATABASES", deadline, "database discovery (mariadb)")
        names = sorted(name for name in output.splitlines() if name and name.lower() not in SYSTEM_SCHEMAS)
        ctx.log(f"Found {len(names)} database(s) on the server: {', '.join(names) or 'none'}.")
        if not names:
            raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "The server has no database this user can see.")
        return [DumpTarget(label=f"{source.name} / {name}", database=name) for name in names]

    @contextmanager
    def dump(self, source: Source, target: DumpTarget, ctx: DumpContext) -> Iterator[BinaryIO]:
        database = target.database or source.database
        tool = find_tool("mariadb-dump", "mysqldump")
        options = [
            "--single-transaction",  # one consistent snapshot of InnoDB tables, without locking them
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",  # binary columns as hex literals: the SQL stays plain text
            "--skip-dump-date",
        ]
        what = f"mariadb-dump of “{database}”"
        # "--": a database named like an option stays a name.
        with self._call(source, tool, options, ["--", database], what, ctx.deadline) as call:
            ctx.log(f"{what} on {source.host}:{source.port or DEFAULT_PORT} as {source.username}.")
            with dump_stream(call, ctx.should_stop) as stream:
                yield stream

    def check_connection(self, source: Source) -> CheckResult:
        database = "" if source.all_databases else source.database
        sql = "SELECT VERSION(), CURRENT_USER()"
        if database:
            # What mariadb-dump --routines --events would stop at, found now rather than at
            # the first nightly run: routines whose body this user cannot read, and (the
            # second statement fails with 1044) a missing EVENT privilege.
            sql += (
                ", (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()"
                " AND TABLE_TYPE = 'BASE TABLE')"
                ", (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()"
                " AND ROUTINE_DEFINITION IS NULL); SHOW EVENTS"
            )
        try:
            output = self._client(source, sql, short_deadline(None), "connection test (mariadb)", database)
        except BackupError as exc:
            # Our own sentence only: never what answered on that port (its banner, its words).
            return CheckResult(ok=False, message=exc.summary, error_code=exc.code)
        answer, _user, *counts = output.splitlines()[0].split("\t")
        # Only what we can vouch for reaches the page: the product and its version number
        # (not the server's own text), our user name, and counts that parse as numbers.
        found = re.match(r"\s*(\d{1,4}(?:\.\d{1,4}){0,3})", answer)
        version = f"{'MariaDB' if 'mariadb' in answer.lower() else 'MySQL'} {found.group(1) if found else ''}".strip()
        user = source.username
        counts = [str(int(count)) for count in counts]
        if not database:
            return CheckResult(ok=True, message=f"Connected to {version} as {user}.")
        tables, hidden_routines = counts
        if int(hidden_routines):
            return CheckResult(
                ok=False,
                message=f"Connected to {version} as {user}, but this user cannot read {hidden_routines} routine(s)"
                f" of “{database}”; the backup would fail. Grant SELECT on mysql.proc (or connect as their definer).",
                error_code=ErrorCode.PERMISSION_DENIED,
            )
        message = f"Connected to {version} as {user}; database “{database}” ({tables} tables)."
        return CheckResult(ok=True, message=message)

    def verify_stream(self, stream: BinaryIO, ctx: DumpContext) -> str:
        return check_sql_dump(stream).summary()

    def default_restore_target(self, source: Source, target: DumpTarget, stamp: str) -> RestoreTarget:
        base = target.database or source.database or "restore"
        suffix = f"_restore_{stamp}"
        return RestoreTarget(database=base[: MAX_IDENTIFIER - len(suffix)] + suffix)

    def restore(self, source: Source, target: DumpTarget, stream: BinaryIO, to: RestoreTarget, ctx: DumpContext) -> str:
        name = check_database_name(to.database)
        limit = short_deadline(ctx.deadline)
        if to.overwrite:
            # MariaDB cannot restore inside one transaction (DDL commits), and the dump does
            # not drop triggers or events it does not contain: start from an empty database,
            # so the result is exactly the backup. The user confirmed by typing the name.
            sql = f"DROP DATABASE IF EXISTS {quote_ident(name)}; CREATE DATABASE {quote_ident(name)}"
        else:
            # No IF NOT EXISTS: the server refuses an existing name (error 1007), race-free.
            sql = f"CREATE DATABASE {quote_ident(name)}"
        try:
            self._client(source, sql, limit, f"creation of database “{name}” (mariadb)")
        except BackupError as exc:
            if "1007" in exc.message or "database exists" in exc.message.lower():
                raise BackupError(
                    ErrorCode.UNKNOWN,
                    f"The database “{name}” already exists; restore into a new name, or confirm overwriting it.",
                ) from None
            raise
        tool = sandboxed_client()
        # The dump is data from the source's server: its client commands (\! shell,
        # system, source, tee) must never run here. --binary-mode stops parsing them and
        # --sandbox refuses them, each on its own, whatever the dump's first line says.
        options = ["--batch", "--binary-mode", "--sandbox", f"--database={name}"]
        with self._call(source, tool, options, [], f"restore into “{name}” (mariadb)", ctx.deadline) as call:
            run_tool(call, stdin=stream)
        ctx.log(f"Restored into the database “{name}”.")
        return f"Restored into {'the emptied' if to.overwrite else 'new'} database “{name}”."


def sandboxed_client() -> str:
    """The mariadb (or mysql) client, if it has --sandbox (MariaDB 10.5.25, 10.6.18, 10.11.8 on)."""
    tool = find_tool("mariadb", "mysql")
    if not _has_sandbox(tool):
        raise BackupError(
            ErrorCode.UNKNOWN,
            f"The client {tool} has no --sandbox option, so a dump could run commands on the worker;"
            " an administrator must install MariaDB's client 10.5.25 or later.",
        )
    return tool


@lru_cache(maxsize=4)
def _has_sandbox(tool: str) -> bool:
    try:
        shown = subprocess.run([tool, "--no-defaults", "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(r"^\s*--sandbox\b", shown.stdout, re.M) is not None


# ---------------------------------------------------------------- verifying a dump without a server
#
# What check_sql_dump checks, reading the stream once, line by line:
# - the first line is mariadb-dump's / mysqldump's header ("-- MariaDB dump" / "-- MySQL dump");
# - the SQL tokenizes completely: every '...' and "..." string (with \ and doubled-quote
#   escapes), `identifier` and /* comment */ is closed, and the stream does not end inside one;
# - every statement ends with the current delimiter (DELIMITER ;; around triggers and
#   routines is followed), and none is left unterminated at the end;
# - every statement starts with a keyword a dump contains (CREATE, INSERT, DROP, SET, LOCK,
#   ALTER, ...), read through /*!40101 ... */ version comments;
# - the last line is the "-- Dump completed" trailer, written only after the dump succeeded.
# A dump cut anywhere fails at least one of these. What it does not prove is that the
# server accepts every statement: only a restore does.

_DUMP_KEYWORDS = frozenset(
    {
        "CREATE",
        "INSERT",
        "REPLACE",
        "DROP",
        "SET",
        "LOCK",
        "UNLOCK",
        "ALTER",
        "USE",
        "START",
        "COMMIT",
        "BEGIN",
        "SAVEPOINT",
        "RELEASE",
        "ROLLBACK",
        "DELIMITER",
        "SELECT",
    }
)
_SQUOTE = re.compile(rb"(?:[^'\\]+|\\.|'')*", re.S)
_DQUOTE = re.compile(rb'(?:[^"\\]+|\\.|"")*', re.S)
_BACKTICK = re.compile(rb"(?:[^`]+|``)*")
_WORD = re.compile(rb"\s*(?:/\*M?!\d*)?\s*([A-Za-z]+)")
_NON_BLANK = re.compile(rb"\S")
# Inside a statement with the ";" delimiter: everything up to the next token that needs a
# decision (";", a comment, or a string left open at the end of the line), whole strings
# included, in one call. Atomic groups (Python 3.11): an unterminated string cannot backtrack.
_PLAIN_RUN = re.compile(
    rb"""(?>[^'"`;#/\-]+|'(?>[^'\\]+|\\.|'')*+'|"(?>[^"\\]+|\\.|"")*+"|`(?>[^`]+|``)*+`|-(?!-\s)|/(?!\*))*+""",
    re.S,
)
_DELIMITER_LINE = re.compile(rb"^DELIMITER\s+(\S+)\s*$", re.I)


class DumpInvalid(BackupError):
    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.CORRUPTED, f"The backup file is damaged or incomplete: {message}")


class SqlDumpCheck:
    def __init__(self) -> None:
        self.statements = 0
        self.tables = 0
        self.inserts = 0
        self.lines = 0
        self.delimiter = b";"
        self.state = ""  # "", "'", '"', "`", "*" (inside /* */)
        self.in_statement = False
        self.last_line = b""
        self._token = self._token_pattern()
        self.header_seen = False

    def _token_pattern(self) -> re.Pattern[bytes]:
        return re.compile(rb"['\"`]|/\*|--\s|#|" + re.escape(self.delimiter))

    def summary(self) -> str:
        return (
            f"The SQL dump is complete and well formed: {self.statements} statements,"
            f" {self.tables} tables, {self.inserts} INSERTs."
        )

    def feed_line(self, line: bytes) -> None:
        self.lines += 1
        if not self.header_seen:
            # MariaDB 10.11.8+ puts its "sandbox mode" comment before the header.
            self.header_seen = line.startswith((b"-- MariaDB dump", b"-- MySQL dump"))
            if not self.header_seen and (self.lines > 1 or not line.startswith(b"/*M!999999")):
                raise DumpInvalid("it does not start like a mariadb-dump or mysqldump file.")
            return
        if line.strip():
            self.last_line = line
        if not self.state and not self.in_statement:
            directive = _DELIMITER_LINE.match(line)
            if directive:
                self.delimiter = directive.group(1)
                self._token = self._token_pattern()
                return
        position = 0
        end = len(line)
        while position < end:
            if self.state:
                position = self._close(line, position)
                continue
            if not self.in_statement:
                # Outside a statement, the next non-blank character starts one (or a comment).
                start = _NON_BLANK.search(line, position)
                if start is None:
                    return
                position = start.start()
                if not line.startswith((b"/*", b"-- ", b"--\n", b"--\t", b"--\r", b"#"), position):
                    self._statement_starts(line, position)
            if self.delimiter == b";":
                run = _PLAIN_RUN.match(line, position)  # never None: the pattern matches "" too
                position = run.end() if run else position
            match = self._token.search(line, position)
            if match is None:
                return
            token = match.group()
            position = match.end()
            if token == b"/*":
                if line.startswith((b"/*!", b"/*M!"), match.start()):  # executable version comment
                    self._statement_starts(line, match.start())
                self.state = "*"
            elif token.startswith(b"--") or token == b"#":
                return  # a comment to the end of the line
            elif token == self.delimiter:
                if not self.in_statement:
                    raise DumpInvalid(f"an empty statement on line {self.lines}.")
                self.statements += 1
                self.in_statement = False
            else:  # a quote
                self.state = token.decode()

    def _statement_starts(self, line: bytes, start: int) -> None:
        if self.in_statement:
            return
        self.in_statement = True
        word = _WORD.match(line, start)
        keyword = word.group(1).decode().upper() if word else ""
        if keyword not in _DUMP_KEYWORDS:
            raise DumpInvalid(f"line {self.lines} starts a statement no dump contains ({keyword or line[:20]!r}).")
        if keyword == "CREATE" and re.match(rb"\s*CREATE\s+TABLE", line[start:]):
            self.tables += 1
        elif keyword == "INSERT":
            self.inserts += 1

    def _close(self, line: bytes, position: int) -> int:
        """Skip inside the current string or comment; returns where scanning continues."""
        if self.state == "*":
            close = line.find(b"*/", position)
            if close < 0:
                return len(line)
            self.state = ""
            return close + 2
        quote = self.state.encode()
        pattern = {"'": _SQUOTE, '"': _DQUOTE, "`": _BACKTICK}[self.state]
        match = pattern.match(line, position)
        after = match.end() if match else position
        if after < len(line) and line[after : after + 1] == quote:
            self.state = ""
            return after + 1
        return len(line)  # the string goes on on the next line

    def finish(self) -> None:
        if self.lines == 0:
            raise DumpInvalid("it is empty.")
        if self.state:
            kind = {"*": "a comment", "`": "a quoted name"}.get(self.state, "a string")
            raise DumpInvalid(f"it ends inside {kind}.")
        if self.in_statement:
            raise DumpInvalid("its last statement is cut off.")
        if not self.last_line.startswith(b"-- Dump completed"):
            raise DumpInvalid("the “-- Dump completed” line at the end is missing, so the dump stopped early.")


def check_sql_dump(stream: BinaryIO) -> SqlDumpCheck:
    check = SqlDumpCheck()
    for line in _lines(stream):
        check.feed_line(line)
    check.finish()
    return check


def _lines(stream: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    """Lines (with their b"\\n") from any readable stream, e.g. a zstd reader with no readline()."""
    pending = b""
    while chunk := stream.read(size):
        pending += chunk
        start = 0
        while (newline := pending.find(b"\n", start)) >= 0:
            yield pending[start : newline + 1]
            start = newline + 1
        pending = pending[start:]
    if pending:
        yield pending
