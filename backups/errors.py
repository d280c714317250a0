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
    # A stored backup file fails a check: checksum, decompression, or the tool's own reading.
    CORRUPTED = "CORRUPTED"
    UNKNOWN = "UNKNOWN"


class BackupError(Exception):
    """A failure with a code and a message a user can act on (never a secret)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
