"""Verifying a backup set: re-reading every stored file of it.

Its sha256 must match the one recorded when it was written, it must decompress, and
the engine must accept what comes out (e.g. SQLite's integrity check). The result is
kept on the set. Given a set, a deadline and a log; the caller (scheduling) holds the run.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import zstandard
from django.utils import timezone

from backups import storage
from backups.engines.base import DumpContext, Log
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupItem, BackupSet, ItemStatus, VerifyStatus
from backups.pipeline import DeadlineReader

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Verified:
    ok: bool
    message: str
    error_code: str = ""  # the first failed item's


def check_stored_file(item: BackupItem) -> None:
    """The file is there and its bytes are the ones written (sha256)."""
    digest = hashlib.sha256()
    try:
        with storage.open_raw(item.storage_key) as raw:
            while chunk := raw.read(CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "The stored file is missing.") from None
    except OSError as exc:
        raise BackupError(ErrorCode.UNKNOWN, f"The stored file cannot be read: {exc.strerror}.") from None
    if digest.hexdigest() != item.sha256:
        raise BackupError(ErrorCode.CORRUPTED, "The stored file has changed since it was written (sha256 mismatch).")


def verify_set(
    backup_set: BackupSet, deadline: float, timeout: BackupError, log: Log, started_at: datetime | None = None
) -> Verified:
    """Verify every stored item of `backup_set` and keep the result on it."""
    ctx = DumpContext(log=log, deadline=deadline, started_at=started_at)
    problems: list[str] = []
    codes: list[str] = []
    items = list(backup_set.items.filter(status=ItemStatus.OK).order_by("id"))
    for item in items:
        try:
            summary = _verify_item(item, ctx, deadline, timeout)
        except BackupError as exc:
            log(f"“{item.label}”: verification failed: {exc.message}")
            problems.append(f"“{item.label}”: {exc.message}")
            codes.append(exc.code)
        else:
            # Engines log their own summary; the item's line names what it was about.
            log(f"“{item.label}”: verified ({summary})")
    ok = not problems
    message = (
        f"All {len(items)} stored item(s) verified."
        if ok
        else f"{len(problems)} of {len(items)} item(s) failed: " + "; ".join(problems)
    )
    BackupSet.objects.filter(pk=backup_set.pk).update(
        verified_at=timezone.now(),
        verify_status=VerifyStatus.OK if ok else VerifyStatus.FAILED,
        verify_message=message,
    )
    return Verified(ok, message, codes[0] if codes else "")


def _verify_item(item: BackupItem, ctx: DumpContext, deadline: float, timeout: BackupError) -> str:
    check_stored_file(item)
    engine = engine_for(item.kind)
    try:
        with storage.open_decompressed(item.storage_key) as stream:
            reader = DeadlineReader(stream, deadline, timeout)
            try:
                summary = engine.verify_stream(reader, ctx)
            except NotImplementedError:
                # The checksum and a full decompression are still a real check.
                while reader.read(CHUNK):
                    pass
                summary = f"checksum and decompression ok (sources of kind “{item.kind}” have no deeper check)."
    except zstandard.ZstdError as exc:
        raise BackupError(ErrorCode.CORRUPTED, f"The stored file does not decompress: {exc}.") from None
    return summary
