"""Writing backup files so that a crash never leaves one that looks complete.

Bytes go through zstd and sha256 into a hidden temporary file beside the final
one, which is fsynced and renamed into place only when everything succeeded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard
from django.conf import settings

from backups.errors import BackupError, ErrorCode

ZSTD_LEVEL = 3
CHUNK = 1024 * 1024


@dataclass
class StoredFile:
    key: str
    size: int
    source_size: int
    sha256: str


def backups_root() -> Path:
    return Path(settings.BACKUPS_DIR)


def path_for(key: str) -> Path:
    root = backups_root().resolve()
    path = (root / key).resolve()
    if root not in path.parents:
        raise ValueError(f"storage key {key!r} leaves the backups folder")
    return path


class _HashingFile:
    """A file object that hashes and counts what zstd writes through it."""

    def __init__(self, raw: BinaryIO, progress: Callable[[int], None] | None = None) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        written = self.raw.write(data)
        if self.progress is not None:
            self.progress(self.size)
        return written


@contextmanager
def _storage_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BackupError(ErrorCode.STORAGE_FULL, "The backup storage is full.") from None
        raise BackupError(ErrorCode.UNKNOWN, f"Could not write to backup storage: {exc.strerror}.") from None


def store_stream(key: str, source: BinaryIO, progress: Callable[[int], None] | None = None) -> StoredFile:
    """Compress `source` into storage under `key`, atomically.

    `progress` is called with the compressed bytes written so far, after each write."""
    final = path_for(key)
    temporary = final.with_name(f".tmp-{uuid.uuid4().hex}-{final.name}")
    with _storage_errors():
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(temporary, "xb") as raw:
                hashing = _HashingFile(raw, progress)  # type: ignore[arg-type]
                compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
                read, _ = compressor.copy_stream(source, hashing, read_size=CHUNK, write_size=CHUNK)  # type: ignore[arg-type]
                raw.flush()
                os.fsync(raw.fileno())
            os.replace(temporary, final)
            _fsync_dir(final.parent)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    return StoredFile(key=key, size=hashing.size, source_size=read, sha256=hashing.digest.hexdigest())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def delete(key: str) -> None:
    path_for(key).unlink(missing_ok=True)


def open_decompressed(key: str) -> BinaryIO:
    raw = open(path_for(key), "rb")  # noqa: SIM115 - the reader owns and closes it
    return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[return-value]
