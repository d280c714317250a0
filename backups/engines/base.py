"""The one interface every kind of source implements.

A kind is one module under backups.engines that defines an `Engine` subclass and
registers it (see backups.engines.registry). The run task, verify and restore only
talk to this interface, and the model's kind choices and the source form read what
a kind is (its label, whether it is a server, its default port, its name limit, its
form hints) from the engine, so adding a kind touches its module and the registry only.

Streams, never whole files: `dump` yields a readable byte stream (a dump process's
stdout, a tar stream, a snapshot file) that the pipeline compresses, hashes and
writes to storage chunk by chunk; `verify_stream` and `restore` read the
decompressed backup as a stream.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Protocol

from backups.errors import BackupError

if TYPE_CHECKING:
    from tenants.models import Tenant

Log = Callable[[str], None]
# None: go on; an error: stop the work now, failing with it (e.g. INTERRUPTED).
StopCheck = Callable[[], BackupError | None]


class Source(Protocol):
    """What an engine reads of a source (backups.models.BackupSource): the engines
    know no model, so the model can ask the registry for its kinds."""

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str: ...  # file kinds
    @property
    def host(self) -> str: ...  # server kinds, down to tls_mode
    @property
    def port(self) -> int | None: ...
    @property
    def database(self) -> str: ...
    @property
    def all_databases(self) -> bool: ...
    @property
    def username(self) -> str: ...
    @property
    def tls_mode(self) -> str: ...
    @property
    def tenant(self) -> Tenant: ...
    def get_password(self) -> str: ...


class ReadStream(io.RawIOBase, BinaryIO):
    """A byte stream an engine hands out or reads through (a dump, a tar pipe), for
    readers that take a BinaryIO; a subclass defines read() (and close() if it holds
    something)."""

    mode = "rb"
    name = ""

    def readable(self) -> bool:
        return True


@dataclass(frozen=True)
class DumpTarget:
    """One thing to back up from a source: the source itself, or one database of a server."""

    label: str  # for people: "Shop DB" or "Shop server / orders"
    database: str = ""  # the database name for server kinds, "" otherwise


@dataclass
class DumpContext:
    """What a dump may need besides the source: where to log, and when to give up."""

    log: Log
    # Monotonic deadline (time.monotonic()); past it the dump is killed -> TIMEOUT.
    deadline: float | None = None
    started_at: datetime | None = None
    # Asked while a dump runs (the pipeline's BackupJob.should_stop): an error means stop
    # now with it; a tool's watchdog kills the tool, as at the deadline.
    should_stop: StopCheck = field(default=lambda: None)


@dataclass
class RestoreTarget:
    """Where a restore writes. Never holds a secret.

    Server kinds: `database` names the target database on the source's server.
    File kinds: `path` is the target file or folder (inside the tenant's roots).
    `overwrite` is set only after the user typed the target's name to confirm.
    """

    database: str = ""
    path: str = ""
    overwrite: bool = False
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class CheckResult:
    ok: bool
    message: str  # for people; never a secret
    error_code: str = ""


class Engine:
    kind: ClassVar[str]  # stored in BackupSource.kind: at most registry.KIND_MAX_LENGTH characters
    label: ClassVar[str]  # for people, in the kind choices: "PostgreSQL"
    # File name suffix of the stored (compressed) file, e.g. ".dump.zst".
    suffix: ClassVar[str]

    # Server kinds connect to a database server (host, port, user, password, TLS) and
    # back up its databases; the others read a path inside the tenant's file roots.
    is_server: ClassVar[bool] = False
    default_port: ClassVar[int | None] = None  # server kinds: what a blank port means
    # Server kinds: the longest database name the server takes (see database_name_length).
    max_database_name: ClassVar[int] = 0
    # File kinds: whether the path names a folder (else a file), and what the form calls
    # it ("Path of the SQLite file or folder").
    path_is_folder: ClassVar[bool] = False
    path_noun: ClassVar[str] = ""
    # Sentences the source form adds to a field's help, by field name.
    form_hints: ClassVar[dict[str, str]] = {}

    def database_name_length(self, name: str) -> int:
        """The length max_database_name limits (characters; an engine may count bytes)."""
        return len(name)

    def targets(self, source: Source, ctx: DumpContext) -> list[DumpTarget]:
        """What one backup of `source` covers (server kinds may discover databases here)."""
        return [DumpTarget(label=source.name)]

    def dump(self, source: Source, target: DumpTarget, ctx: DumpContext) -> AbstractContextManager[BinaryIO]:
        """A context manager yielding the raw (uncompressed) backup stream.

        On leaving it the engine checks how the dump ended (exit status, stderr) and
        raises BackupError with the mapped code if it failed, so a truncated stream
        is never taken for a good one.
        """
        raise NotImplementedError

    def check_connection(self, source: Source) -> CheckResult:
        """The cheapest check that a backup could start ("Test connection")."""
        raise NotImplementedError

    def verify_stream(self, stream: BinaryIO, ctx: DumpContext) -> str:
        """Check that the tool accepts the decompressed backup; returns a summary, or
        raises BackupError saying what is wrong."""
        raise NotImplementedError

    def restore(self, source: Source, target: DumpTarget, stream: BinaryIO, to: RestoreTarget, ctx: DumpContext) -> str:
        """Restore the decompressed backup `stream` into `to`; returns a summary."""
        raise NotImplementedError

    def default_restore_target(self, source: Source, target: DumpTarget, stamp: str) -> RestoreTarget:
        """A new target that does not overwrite anything (the default of a restore)."""
        raise NotImplementedError


def iter_chunks(stream: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk
