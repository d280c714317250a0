from __future__ import annotations

from django.db import models


class ErrorCode(models.TextChoices):
    AUTH_FAILED = "AUTH_FAILED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    SOURCE_NOT_FOUND = "SOURCE_NOT_FOUND"
    CONNECTION_FAILED = "CONNECTION_FAILED"
    TIMEOUT = "TIMEOUT"
    THROTTLED = "THROTTLED"
    STORAGE_FULL = "STORAGE_FULL"
    WORKER_LOST = "WORKER_LOST"
    # The worker's node was stopped (SIGTERM / Ctrl-C) and the dump did not end within
    # its grace period; stopped cleanly, nothing partial kept. Retried like a transient failure.
    INTERRUPTED = "INTERRUPTED"
    # A stored backup file fails a check: checksum, decompression, or the tool's own reading.
    CORRUPTED = "CORRUPTED"
    UNKNOWN = "UNKNOWN"


class BackupError(Exception):
    """A failure with a code and a message a user can act on (never a secret)."""

    def __init__(self, code: ErrorCode, message: str, detail: str = "") -> None:
        # `summary` is ours alone; `detail` is what the tool said (its lines holding a
        # secret withheld), kept apart so "Test connection" can leave it out.
        self.code = code
        self.summary = message
        self.detail = detail
        self.message = f"{message} ({detail})" if detail else message
        super().__init__(self.message)
