"""A client tool's stderr cut to size (an overlong line, the tail kept for the error
message) never leaves a piece of a password where scrubbing cannot see it.

Real tools through backups.engines.process: a Python child prints the lines, in chunks
it flushes one by one, so the stderr reader meets the password across reads."""

from __future__ import annotations

import sys

import pytest

from backups.engines import process
from backups.engines.process import LINE_BYTES, LINE_SIDE, STDERR_LIMIT, Process, ToolCall
from backups.errors import BackupError, ErrorCode
from backups.runlog import RunLog

SECRET = "Tr0ub4dor&3xyzzy"


def fragments(text: str) -> list[str]:
    """Every piece of four or more characters of the password that `text` holds."""
    return [SECRET[i : i + 4] for i in range(len(SECRET) - 3) if SECRET[i : i + 4] in text]


def tool(stderr: str, chunk: int = 4096, status: int = 0) -> list[str]:
    """argv of a tool writing `stderr` (a Python expression: the text is too long for a
    command line) in flushed chunks of `chunk` bytes, then exiting with `status`."""
    script = (
        "import sys, time\n"
        f"SECRET = {SECRET!r}\n"
        f"data = ({stderr}).encode()\n"
        f"for i in range(0, len(data), {chunk}):\n"
        f"    sys.stderr.buffer.write(data[i : i + {chunk}]); sys.stderr.flush(); time.sleep(0.001)\n"
        f"sys.exit({status})\n"
    )
    return [sys.executable, "-c", script]


def mapper(stderr: str) -> tuple[ErrorCode, str]:
    return ErrorCode.UNKNOWN, "The dump failed."


def run(argv: list[str]) -> tuple[RunLog, BackupError | None]:
    log = RunLog()
    started = Process(ToolCall(argv=argv, what="dump", mapper=mapper, secrets=[SECRET], on_stderr_line=log))
    try:
        started.check(started.wait())
    except BackupError as exc:
        return log, exc
    return log, None


# Where the password stands in one long line: across the head's cut, across the first
# overflow, and across the edges of the window the tail is taken from.
OFFSETS = [LINE_SIDE - 8, LINE_BYTES - 8, LINE_BYTES + 4000, LINE_BYTES // 2 - 8, 3 * LINE_BYTES // 2 - 3]


@pytest.mark.parametrize("offset", OFFSETS)
@pytest.mark.parametrize("chunk", [1000, 65536])
def test_an_overlong_line_keeps_its_head_and_tail_and_no_piece_of_a_password(offset: int, chunk: int) -> None:
    line = f"'x' * {offset} + SECRET + 'y' * {2 * LINE_BYTES} + ' error: the real reason'"
    log, error = run(tool(line + " + '\\npg_dump: error: connection lost'", chunk=chunk))
    text = log.text()
    assert fragments(text) == [], text
    first, last = text.splitlines()
    assert " … " in first and first.endswith("y error: the real reason")  # its end, where the error is
    assert last.endswith("pg_dump: error: connection lost")  # the last line, without its newline
    assert error is None


@pytest.mark.parametrize("before", [0, 3, 8, 13])
def test_the_stderr_tail_of_an_error_message_keeps_no_piece_of_a_password(before: int) -> None:
    # One line, longer than the kept tail, whose kept part starts inside the password.
    after = STDERR_LIMIT - (len(SECRET) - before) - len(" failed")
    log, error = run(tool(f"'x' * 100_000 + SECRET + 'y' * {after} + ' failed'", status=1))
    assert error is not None and error.code == ErrorCode.UNKNOWN
    assert error.message.startswith("The dump failed. (python")
    assert fragments(error.message) == [], error.message
    assert fragments(log.text()) == []


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536])
def test_lines_split_in_any_chunks_come_out_whole(chunk: int) -> None:
    lines = process._Lines([SECRET])
    data = "first\nsecond " + SECRET + "\n" + "z" * (3 * LINE_BYTES) + "\nlast"
    encoded = data.encode()
    out = []
    for i in range(0, len(encoded), chunk):
        out += lines.feed(encoded[i : i + chunk])
    out += lines.close()
    assert out[:2] == ["first", process.WITHHELD]  # whole lines, a line with the secret withheld whole
    assert out[2] == "z" * LINE_SIDE + " … " + "z" * LINE_SIDE
    assert out[3:] == ["last"]
