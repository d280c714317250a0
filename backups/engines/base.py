"""The one interface every kind of source implements.

A kind is one module under backups.engines that defines an `Engine` subclass and
registers it (see backups.engines.registry). The run task, verify and restore only
talk to this interface, so adding a kind touches no other kind.

Streams, never whole files: `dump` yields a readable byte stream (a dump process's
stdout, a tar stream, a snapshot file) that the pipeline compresses, hashes and
writes to storage chunk by chunk; `verify_stream` and `restore` read the
decompressed backup as a stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, BinaryIO, ClassVar

if TYPE_CHECKING:
    from backups.models import BackupSource

Log = Callable[[str], None]


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
    kind: ClassVar[str]
    # File name suffix of the stored (compressed) file, e.g. ".dump.zst".
    suffix: ClassVar[str]

    def targets(self, source: BackupSource, ctx: DumpContext) -> list[DumpTarget]:
        """What one backup of `source` covers (server kinds may discover databases here)."""
        return [DumpTarget(label=source.name)]

    def dump(self, source: BackupSource, target: DumpTarget, ctx: DumpContext) -> AbstractContextManager[BinaryIO]:
        """A context manager yielding the raw (uncompressed) backup stream.

        On leaving it the engine checks how the dump ended (exit status, stderr) and
        raises BackupError with the mapped code if it failed, so a truncated stream
        is never taken for a good one.
        """
        raise NotImplementedError

    def check_connection(self, source: BackupSource) -> CheckResult:
        """The cheapest check that a backup could start ("Test connection")."""
        raise NotImplementedError

    def verify_stream(self, stream: BinaryIO, ctx: DumpContext) -> str:
        """Check that the tool accepts the decompressed backup; returns a summary, or
        raises BackupError saying what is wrong."""
        raise NotImplementedError

    def restore(
        self, source: BackupSource, target: DumpTarget, stream: BinaryIO, to: RestoreTarget, ctx: DumpContext
    ) -> str:
        """Restore the decompressed backup `stream` into `to`; returns a summary."""
        raise NotImplementedError

    def default_restore_target(self, source: BackupSource, target: DumpTarget, stamp: str) -> RestoreTarget:
        """A new target that does not overwrite anything (the default of a restore)."""
        raise NotImplementedError


def iter_chunks(stream: BinaryIO, size: int = 1024 * 1024) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk
