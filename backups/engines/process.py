"""Running a database client tool (pg_dump, mariadb-dump, psql, ...) as a subprocess.

- The password reaches the tool only through a 0600 file in a private temporary
  folder (PGPASSFILE for libpq tools, an option file for MariaDB tools), never the
  command line, which any local user can read in /proc/<pid>/cmdline.
- The tool runs in its own process group; a watchdog kills the group when the
  context's deadline (time.monotonic) passes -> BackupError(TIMEOUT), or when the
  caller's stop check gives a reason (a node shutting down: INTERRUPTED), asked every
  STOP_POLL_SECONDS: a tool blocked on a lock writes nothing, so a check on each read
  of its output alone would never come.
- stderr is read by a thread and only its last STDERR_LIMIT bytes are kept, so a
  chatty tool can neither block on a full pipe nor fill the worker's memory.
- A dump's stdout is handed out wrapped: reading its end waits for the tool and
  raises if it failed, so the storage code never renames a failed dump into place.
- What the tool prints is scrubbed of the secrets the call knows about (whole lines
  withheld, see scrub_tool_output); our own sentences are never altered.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

from backups.engines.base import ReadStream, StopCheck
from backups.errors import BackupError, ErrorCode

STDERR_LIMIT = 64 * 1024
CHUNK = 1024 * 1024
# How often a running tool's watchdog asks the stop check.
STOP_POLL_SECONDS = 0.5
# Environment variables a client tool would take a password, a host or a config file
# from; the worker's own must never leak into a tenant's tool call.
_INHERITED_PREFIXES = ("PG", "MYSQL", "MARIADB")

# (stderr text) -> (code, message for people)
ErrorMapper = Callable[[str], tuple[ErrorCode, str]]


@dataclass
class ToolCall:
    """One invocation: what to run, with what environment, and how to explain failure."""

    argv: list[str]
    what: str  # for messages: "pg_dump of “orders”"
    mapper: ErrorMapper
    env: dict[str, str] = field(default_factory=dict)
    secrets: Sequence[str] = ()
    deadline: float | None = None
    on_stderr_line: Callable[[str], None] | None = None


# Test connection, discovery and a restore's CREATE DATABASE: quick statements, never the
# whole of a run's time limit.
CHECK_SECONDS = 20


def short_deadline(deadline: float | None) -> float:
    """CHECK_SECONDS from now, or the run's own deadline if that comes first."""
    return min(filter(None, [deadline, time.monotonic() + CHECK_SECONDS]))


def find_tool(*names: str) -> str:
    """The first of `names` found on PATH (e.g. mariadb-dump, then mysqldump)."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise BackupError(
        ErrorCode.UNKNOWN,
        f"The client tool {' or '.join(names)} is not installed on the backup worker;"
        " an administrator must install it.",
    )


@contextmanager
def secret_folder() -> Iterator[Path]:
    """A private (0700) temporary folder for password files, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="backups-secret-") as folder:
        os.chmod(folder, 0o700)
        yield Path(folder)


def write_secret_file(folder: Path, name: str, content: str) -> Path:
    path = folder / name
    # O_EXCL + 0600 at creation: the file is never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return path


ErrorPatterns = Sequence[tuple[re.Pattern[str], ErrorCode, str]]


def map_stderr(stderr: str, patterns: ErrorPatterns, fallback: str) -> tuple[ErrorCode, str]:
    """The code and message of the first pattern the tool's stderr matches; UNKNOWN otherwise."""
    for pattern, code, message in patterns:
        if pattern.search(stderr):
            return code, message
    return ErrorCode.UNKNOWN, fallback


def scrub_cut(data: bytes, secrets: Sequence[str], cut_start: bool = False, cut_end: bool = False) -> str:
    """`data`, cut out of a longer output, decoded and scrubbed.

    A cut through a secret leaves a fragment that scrub_tool_output() cannot recognize; it lies
    within the longest secret's length (in bytes) of the cut, so that much is dropped
    at each side that was cut, before decoding."""
    margin = max((len(secret.encode()) for secret in secrets if secret), default=0)
    start = margin if cut_start else 0
    end = max(len(data) - margin, start) if cut_end else len(data)
    return scrub_tool_output(data[start:end].decode("utf-8", "replace"), secrets)


def tool_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_INHERITED_PREFIXES)}
    env["LC_ALL"] = "C.UTF-8"  # messages in English, so the error mappers can read them
    env.update(extra)
    return env


class _Tail:
    """Keeps the last `limit` bytes written to it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.limit:
            self.dropped += len(self.data) - self.limit
            del self.data[: len(self.data) - self.limit]

    def text(self) -> str:
        return self.tail().decode("utf-8", "replace")

    def tail(self) -> bytes:
        return bytes(self.data[-self.limit :])

    @property
    def complete(self) -> bool:
        return self.dropped == 0 and len(self.data) <= self.limit


# A stderr line longer than this (a tool echoing a whole statement) is kept as its
# first and last LINE_SIDE characters: its start says what, its end usually the error.
LINE_BYTES = STDERR_LIMIT
LINE_SIDE = 240


class _Lines:
    """A tool's stderr as lines for the run's log, in bounded memory. An overlong line
    is cut to its head and tail, each scrubbed before it is cut (scrub_cut): a cut must
    not leave half a password that the log's own scrubbing cannot recognize."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = secrets
        self.pending = bytearray()  # the line so far; once overlong, only its last bytes
        self.head: str | None = None  # an overlong line's head, scrubbed and cut

    def feed(self, chunk: bytes) -> list[str]:
        *ends, rest = chunk.split(b"\n")
        lines = []
        for end in ends:
            self.pending += end
            lines.append(self._take())
        self.pending += rest
        if len(self.pending) > LINE_BYTES:
            if self.head is None:
                self.head = scrub_cut(bytes(self.pending), self.secrets, cut_end=True)[:LINE_SIDE]
            del self.pending[: len(self.pending) - LINE_BYTES // 2]
        return lines

    def close(self) -> list[str]:
        return [self._take()] if self.pending or self.head is not None else []

    def _take(self) -> str:
        data = bytes(self.pending)
        self.pending.clear()
        if self.head is None:
            return scrub_tool_output(data.decode("utf-8", "replace"), self.secrets)
        head, self.head = self.head, None
        return f"{head} … {scrub_cut(data, self.secrets, cut_start=True)[-LINE_SIDE:]}"


def _pipe(stream: IO[bytes] | None) -> io.BufferedReader:
    """A Popen pipe as what it is (Popen's default buffering makes a BufferedReader), for read1."""
    if not isinstance(stream, io.BufferedReader):
        raise TypeError(f"Expected a buffered pipe, got {type(stream).__name__}.")
    return stream


class Process:
    """A started tool with its stderr reader and deadline watchdog."""

    def __init__(
        self, call: ToolCall, stdin: int | None = subprocess.DEVNULL, should_stop: StopCheck | None = None
    ) -> None:
        self.call = call
        self.stderr = _Tail(STDERR_LIMIT)
        self.timed_out = False
        self.should_stop = should_stop
        self.stopped: BackupError | None = None  # why the stop check had the tool killed
        self._done = threading.Event()
        if call.deadline is not None and call.deadline <= time.monotonic():
            raise BackupError(ErrorCode.TIMEOUT, f"The {call.what} did not start: the run's time limit had passed.")
        try:
            self.popen = subprocess.Popen(
                call.argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=tool_env(call.env),
                start_new_session=True,  # own process group: the watchdog kills the tool and its children
                close_fds=True,
            )
        except OSError as exc:
            raise BackupError(ErrorCode.UNKNOWN, f"The {call.what} could not start: {exc.strerror}.") from None
        self._threads = [threading.Thread(target=self._read_stderr, daemon=True)]
        if call.deadline is not None or should_stop is not None:
            self._threads.append(threading.Thread(target=self._watch, daemon=True))
        for thread in self._threads:
            thread.start()

    def _read_stderr(self) -> None:
        stderr = _pipe(self.popen.stderr)
        on_line = self.call.on_stderr_line
        lines = _Lines(self.call.secrets)
        while chunk := stderr.read1(65536):
            self.stderr.add(chunk)
            if on_line is not None:
                for line in lines.feed(chunk):
                    on_line(line)
        if on_line is not None:
            for line in lines.close():  # a last line without its newline: often the error
                on_line(line)

    def _watch(self) -> None:
        deadline, should_stop = self.call.deadline, self.should_stop
        while True:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0)
            wait = min(w for w in (remaining, STOP_POLL_SECONDS if should_stop else None) if w is not None)
            if self._done.wait(wait) or self.popen.poll() is not None:
                return
            if deadline is not None and time.monotonic() >= deadline:
                self.timed_out = True
                self.kill()
                return
            if should_stop is not None and (reason := should_stop()) is not None:
                self.stopped = reason
                self.kill()
                return

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def wait(self) -> int:
        status = self.popen.wait()
        self._done.set()
        for thread in self._threads:
            thread.join()
        return status

    def check(self, status: int) -> None:
        """Raise the BackupError that explains how the tool ended, if it failed."""
        call = self.call
        if self.stopped is not None:
            raise self.stopped
        if self.timed_out:
            raise BackupError(
                ErrorCode.TIMEOUT,
                f"The {call.what} did not finish within the run's time limit and was stopped."
                " Raise the schedule's time limit, or check what blocks the database (a long lock?).",
            )
        if status == 0:
            return
        tail = self.stderr.tail()
        # The mapping reads the raw text: what it returns is one of our own sentences.
        code, message = call.mapper(tail.decode("utf-8", "replace"))
        detail = _last_line(scrub_cut(tail, call.secrets, cut_start=not self.stderr.complete))
        if status < 0:
            detail = f"killed by signal {-status}"
            if code == ErrorCode.CORRUPTED:  # a checker killed from outside never finished judging the file
                code, message = ErrorCode.UNKNOWN, "The check was stopped before it finished."
        raise BackupError(code, message, detail=f"{Path(call.argv[0]).name}: {detail}" if detail else "")


# ---------------------------------------------------------------- secrets in a tool's output

WITHHELD = "[a line of the tool's output is not shown]"


def scrub_tool_output(text: str, secrets: Sequence[str]) -> str:
    """`text` (a tool's output) with every line that contains one of `secrets` replaced
    by WITHHELD, whole.

    Only what a tool or a server printed goes through here, never our own sentences: a
    password may be a common word ("backup") or the database's name ("shop"), and
    replacing it inside our text would both garble it and show the password ("accepts
    connections from the ******** worker"). Replacing the whole line, with a marker
    that is the same wherever and however often the secret occurred, hides where it
    was. Case is ignored, so a server that upper-cases what it echoes is caught too."""
    needles = [secret.casefold() for secret in secrets if secret]
    if not needles:
        return text
    lines = text.split("\n")
    return "\n".join(WITHHELD if any(n in line.casefold() for n in needles) else line for line in lines)


_TOOL_PREFIX = re.compile(r"^(?:[\w.-]+: )+(?:error: )?", re.I)
_ERROR_LINE = re.compile(r"error|fatal|denied|refused|failed", re.I)


def _last_line(text: str) -> str:
    """The tool's most telling line: the last one that names an error, without "psql: error: "."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip() and line.strip() != WITHHELD]
    telling = [line for line in lines if _ERROR_LINE.search(line)] or lines
    return _TOOL_PREFIX.sub("", telling[-1])[:500] if telling else ""


class CheckedStream(ReadStream):
    """A dump's stdout. Reaching its end waits for the tool and raises if it failed,
    so whoever copies the stream sees the failure before treating the copy as complete."""

    def __init__(self, process: Process) -> None:
        super().__init__()
        self.process = process
        self.raw = _pipe(process.popen.stdout)
        self.finished = False

    def read(self, size: int | None = -1, /) -> bytes:
        data = self.raw.read(size)
        if (not data and size != 0) or size is None or size < 0:
            self.finish()
        return data

    def finish(self) -> None:
        if not self.finished:
            self.finished = True
            self.raw.close()
            self.process.check(self.process.wait())

    def close(self) -> None:
        self.raw.close()
        super().close()


@contextmanager
def dump_stream(call: ToolCall, should_stop: StopCheck | None = None) -> Iterator[BinaryIO]:
    """Run a dump tool; yield its stdout. Leaving the block checks how it ended.
    `should_stop` (the dump context's) is asked while it runs: a reason kills the tool."""
    process = Process(call, should_stop=should_stop)
    stream = CheckedStream(process)
    try:
        yield stream
    except BaseException:
        process.kill()
        process.wait()
        raise
    # The reader stopped before the end (or never read): that is not a complete
    # dump. Closing the pipe stops the tool; its status says why.
    if not stream.finished and not stream.raw.closed and stream.raw.read(1) == b"":
        stream.finish()  # read to the end, just not one read further
    if not stream.finished:
        stream.raw.close()
        process.kill()
        process.wait()
        raise BackupError(ErrorCode.UNKNOWN, f"The {call.what} was not read to its end.")


OUTPUT_LIMIT = 16 * 1024 * 1024


def run_tool(call: ToolCall, stdin: BinaryIO | None = None, output_limit: int = OUTPUT_LIMIT) -> str:
    """Run a tool to completion, feeding it `stdin` (a stream) if given.

    Returns its stdout (decoded); raises BackupError if it failed. Output beyond
    `output_limit` is an error, never cut silently: a cut list of databases would
    quietly leave databases out of every backup."""
    process = Process(call, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
    stdout = _Tail(output_limit)
    feed_error: list[BaseException] = []

    def read_stdout() -> None:
        pipe = _pipe(process.popen.stdout)
        while chunk := pipe.read1(65536):
            stdout.add(chunk)

    def feed() -> None:
        assert process.popen.stdin is not None and stdin is not None
        try:
            while chunk := stdin.read(CHUNK):
                process.popen.stdin.write(chunk)
        except BrokenPipeError:
            pass  # the tool stopped reading: its exit status says why
        except BaseException as exc:  # a damaged backup file: the tool must not see a clean end
            feed_error.append(exc)
            process.kill()
        finally:
            with suppress(BrokenPipeError):
                process.popen.stdin.close()

    threads = [threading.Thread(target=read_stdout, daemon=True)]
    if stdin is not None:
        threads.append(threading.Thread(target=feed, daemon=True))
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
        status = process.wait()
    except BaseException:
        process.kill()
        process.wait()
        raise
    if feed_error and not process.timed_out:
        exc = feed_error[0]
        if isinstance(exc, BackupError):
            raise exc
        raise BackupError(ErrorCode.UNKNOWN, f"The backup file could not be read: {exc}.") from None
    process.check(status)
    if not stdout.complete:
        raise BackupError(ErrorCode.UNKNOWN, f"The {call.what} printed more than {output_limit} bytes; stopped.")
    return stdout.text()
