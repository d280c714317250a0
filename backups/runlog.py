"""A bounded log of one piece of work (a backup, a verify, a restore), for people."""

from __future__ import annotations

import threading
from collections import deque
from datetime import UTC, datetime

# The log is bounded: a tool printing a line per table of a 100,000-table database,
# or a multi-hour dump, keeps its first HEAD_LINES and last TAIL_LINES lines (the
# start says what ran, the end how it went), each cut to LINE_LIMIT characters (its
# head and its tail).
HEAD_LINES = 50
TAIL_LINES = 450
LINE_LIMIT = 500


class RunLog:
    """The log of one run of work. Our own sentences go in as written: only what a tool printed is
    scrubbed of passwords, where it is read (backups.engines.process.scrub_tool_output),
    a whole line at a time, so cutting a long line below never splits a secret.

    Lines come from the working thread and from a tool's stderr reader; another thread
    may take snapshots of it to persist while the work goes on (scheduling's heartbeat)."""

    def __init__(self) -> None:
        self.head: list[str] = []
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.omitted = 0
        self.version = 0  # changes with every line: the heartbeat writes only a changed log
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        line = f"{stamp} {message}"
        if len(line) > LINE_LIMIT:  # its head says what, its end (usually) how it failed
            side = (LINE_LIMIT - 3) // 2
            line = f"{line[: LINE_LIMIT - 3 - side]} … {line[-side:]}"
        with self._lock:
            if len(self.head) < HEAD_LINES:
                self.head.append(line)
            else:
                if len(self.tail) == TAIL_LINES:
                    self.omitted += 1
                self.tail.append(line)
            self.version += 1

    def snapshot(self) -> tuple[int, str]:
        with self._lock:
            lines = list(self.head)
            if self.omitted:
                lines.append(f"… {self.omitted} line{'' if self.omitted == 1 else 's'} omitted …")
            lines += self.tail
            return self.version, "\n".join(lines) + "\n"

    def text(self) -> str:
        return self.snapshot()[1]
