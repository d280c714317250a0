"""Backup files, through Django's storage API (STORAGES["backups"]).

The pipeline is streamed: source stream -> zstd (level 3) -> sha256 + byte count
-> storage, a chunk at a time, so memory stays flat whatever the size and no
uncompressed copy ever touches the disk. A file only becomes visible under its
key when it is complete:

* Local (FileSystemStorage): a hidden temporary file in the final folder, fsync,
  os.replace, fsync of the folder. A crash leaves at most a hidden `.tmp-*` file,
  which backups/sweep.py removes once it is stale.
* S3 (django-storages' S3Storage): a multipart upload under the final key. S3 shows
  an object only once CompleteMultipartUpload succeeds, so no temporary key and no
  server-side copy are needed (a copy would double the writes, and a single copy
  request stops at 5 GB); on failure the upload is aborted, which frees its parts.
  A backup smaller than one part is one PutObject, atomic as well.

Keys are plain relative names ("tenant/schedule/file.zst"); names starting with
a dot are reserved for temporary files.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import zstandard
from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.utils.module_loading import import_string

from backups.errors import BackupError, ErrorCode

logger = logging.getLogger(__name__)

ZSTD_LEVEL = 3
CHUNK = 1024 * 1024
# S3 parts: 8 MiB, doubled every 2000 parts (S3 allows 10,000 parts per upload), so
# memory stays at one part (8 MiB) up to 16 GB compressed and the limit is ~500 GB.
S3_PART_SIZE = 8 * 1024 * 1024
S3_PARTS_PER_STEP = 2000


@dataclass
class StoredFile:
    key: str
    size: int
    source_size: int
    sha256: str


_cached: tuple[tuple[str, str], Storage] | None = None


def backups_storage() -> Storage:
    """The configured backups storage (settings.STORAGES["backups"]).

    A local storage's folder is always settings.BACKUPS_DIR (the one knob for it;
    tests point it at a fresh folder per test), so the instance is rebuilt when
    the configuration or that folder changes.
    """
    global _cached
    params = dict(settings.STORAGES["backups"])
    options = dict(params.get("OPTIONS") or {})
    if issubclass(import_string(params["BACKEND"]), FileSystemStorage):
        options["location"] = str(settings.BACKUPS_DIR)
    cache_key = (params["BACKEND"], repr(sorted(options.items())))
    if _cached is None or _cached[0] != cache_key:
        _cached = (cache_key, storages.create_storage({"BACKEND": params["BACKEND"], "OPTIONS": options}))
    return _cached[1]


def _is_local(storage: Storage) -> bool:
    return isinstance(storage, FileSystemStorage)


def is_local() -> bool:
    """Whether the configured backups storage is a local folder (settings.BACKUPS_DIR)."""
    return _is_local(backups_storage())


def _is_s3(storage: Storage) -> bool:
    try:
        from storages.backends.s3 import S3Storage
    except ImportError:  # django-storages is optional for local-only installs
        return False
    return isinstance(storage, S3Storage)


def check_key(key: str) -> str:
    """A key is a relative name of plain parts; anything else is a programming error."""
    parts = key.split("/")
    if not key or "\\" in key or "\x00" in key or any(part in ("", ".", "..") or part[0] == "." for part in parts):
        raise ValueError(f"storage key {key!r} is not a plain relative name inside the backups storage")
    return key


def backups_root() -> Path:
    return Path(settings.BACKUPS_DIR)


# ---------------------------------------------------------------- writing


class _HashingFile:
    """What zstd writes goes through here: hashed, counted, then passed on."""

    def __init__(self, raw: Any, progress: Callable[[int], None] | None = None) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0
        self.progress = progress

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.raw.write(data)
        if self.progress is not None:
            self.progress(self.size)
        return len(data)


@contextmanager
def _storage_errors() -> Iterator[None]:
    """Storage failures as BackupErrors with a code; never a path to a secret or a key."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise BackupError(
                ErrorCode.STORAGE_FULL, "The backup storage is full; the partial file was removed."
            ) from None
        raise BackupError(ErrorCode.UNKNOWN, f"Could not write to the backup storage: {exc.strerror}.") from None
    except Exception as exc:
        error = _s3_error(exc)
        if error is None:
            raise
        raise error from None


def _s3_error(exc: Exception) -> BackupError | None:
    try:
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
    except ImportError:
        return None
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "unknown"))
        if code in ("QuotaExceeded", "EntityTooLarge", "ServiceQuotaExceeded"):
            return BackupError(ErrorCode.STORAGE_FULL, f"The S3 backup storage refused the file as too large ({code}).")
        # Only the error code: S3's messages may repeat request details.
        return BackupError(ErrorCode.UNKNOWN, f"The S3 backup storage refused the request ({code}).")
    if isinstance(exc, EndpointConnectionError):
        return BackupError(ErrorCode.CONNECTION_FAILED, "Could not reach the S3 backup storage.")
    if isinstance(exc, BotoCoreError):
        return BackupError(ErrorCode.UNKNOWN, f"The S3 backup storage failed ({type(exc).__name__}).")
    return None


def store_stream(key: str, source: BinaryIO, progress: Callable[[int], None] | None = None) -> StoredFile:
    """Compress `source` into storage under `key`, atomically (see the module docstring).

    `progress` is called with the compressed bytes written so far, after each write."""
    check_key(key)
    storage = backups_storage()
    with _storage_errors():
        if _is_local(storage):
            return _store_local(storage, key, source, progress)
        if _is_s3(storage):
            return _store_s3(storage, key, source, progress)
    raise BackupError(ErrorCode.UNKNOWN, f"The backups storage {type(storage).__name__} is not supported.")


def _compress(source: BinaryIO, destination: _HashingFile) -> int:
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    read, _ = compressor.copy_stream(source, destination, read_size=CHUNK, write_size=CHUNK)  # type: ignore[arg-type]
    return int(read)


def _store_local(storage: Storage, key: str, source: BinaryIO, progress: Callable[[int], None] | None) -> StoredFile:
    final = Path(storage.path(key))
    temporary = final.with_name(f".tmp-{uuid.uuid4().hex}-{final.name}")
    _make_folders(final.parent)
    try:
        # 0600: backups hold the tenants' data; only the service's user reads them.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as raw:
            hashing = _HashingFile(raw, progress)
            read = _compress(source, hashing)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(temporary, final)
        fsync_dir(final.parent)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return StoredFile(key=key, size=hashing.size, source_size=read, sha256=hashing.digest.hexdigest())


def _make_folders(folder: Path) -> None:
    """mkdir -p, fsyncing each new folder's parent so the new entries survive a crash."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        try:
            new.mkdir(mode=0o700)
        except FileExistsError:  # another worker made it meanwhile
            continue
        fsync_dir(new.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new entry in `folder` survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _s3_object(storage: Any, key: str) -> tuple[Any, str, str]:
    """(client, bucket, object name) of `key`, named by the storage's own mapping (its
    prefix, `location`), so reading and deleting agree with what we write."""
    from storages.utils import clean_name

    return storage.connection.meta.client, storage.bucket_name, storage._normalize_name(clean_name(key))


def s3_location(storage: Any) -> tuple[Any, str, str]:
    """(client, bucket, prefix) of an S3 storage: a key's object is named prefix + key, by
    the same mapping as every write (so a listing under the prefix finds what we store)."""
    client, bucket, name = _s3_object(storage, "k")
    return client, bucket, name[:-1]


class _MultipartUpload:
    """A write-only S3 object: parts are uploaded as they fill; nothing is visible before complete()."""

    def __init__(self, storage: Any, key: str) -> None:
        self.client, self.bucket, self.name = _s3_object(storage, key)
        self.params = {"ContentType": "application/zstd", **storage.get_object_parameters(self.name)}
        self.upload_id: str | None = None
        self.parts: list[dict[str, Any]] = []
        self.buffer = bytearray()

    def _part_size(self) -> int:
        return S3_PART_SIZE * 2 ** (len(self.parts) // S3_PARTS_PER_STEP)

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= self._part_size():
            self._upload_part()
        return len(data)

    def _upload_part(self) -> None:
        if self.upload_id is None:
            response = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.name, **self.params)
            self.upload_id = response["UploadId"]
        number = len(self.parts) + 1
        response = self.client.upload_part(
            Bucket=self.bucket, Key=self.name, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer)
        )
        self.parts.append({"ETag": response["ETag"], "PartNumber": number})
        self.buffer = bytearray()

    def complete(self) -> None:
        if self.upload_id is None:  # smaller than one part: a single, equally atomic PUT
            self.client.put_object(Bucket=self.bucket, Key=self.name, Body=bytes(self.buffer), **self.params)
            return
        if self.buffer:
            self._upload_part()
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=self.name, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )

    def abort(self) -> None:
        if self.upload_id is not None:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.name, UploadId=self.upload_id)


def _store_s3(storage: Storage, key: str, source: BinaryIO, progress: Callable[[int], None] | None) -> StoredFile:
    upload = _MultipartUpload(storage, key)
    hashing = _HashingFile(upload, progress)
    try:
        read = _compress(source, hashing)
        upload.complete()
    except BaseException:
        # The original error matters more; a bucket lifecycle rule removes stray uploads.
        with suppress(Exception):
            upload.abort()
        raise
    return StoredFile(key=key, size=hashing.size, source_size=read, sha256=hashing.digest.hexdigest())


# ---------------------------------------------------------------- reading, deleting


def open_raw(key: str) -> BinaryIO:
    """The stored (compressed) bytes of `key`, as a stream. FileNotFoundError if absent."""
    check_key(key)
    storage = backups_storage()
    if _is_s3(storage):
        # storage.open() would download the whole object first; get_object streams it.
        client, bucket, name = _s3_object(storage, key)
        try:
            response = client.get_object(Bucket=bucket, Key=name)
        except Exception as exc:
            from botocore.exceptions import ClientError

            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"no stored backup {key}") from None
            error = _s3_error(exc)
            if error is None:
                raise
            raise error from None
        body: BinaryIO = response["Body"]  # botocore's StreamingBody reads like a binary file
        return body
    return storage.open(key, "rb")  # type: ignore[return-value]


def open_decompressed(key: str) -> BinaryIO:
    """The original bytes of `key`, as a stream; a truncated file raises BackupError at its end."""
    raw = _FrameCheckingReader(open_raw(key))
    return zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)  # type: ignore[arg-type]


class _FrameCheckingReader:
    """Follows the zstd frame and block headers as the compressed bytes are read.

    zstandard's stream reader ends quietly when its input stops in the middle of a
    frame, so a truncated file would look like a shorter backup. The block headers
    say where each frame ends; input ending anywhere else is an error.
    """

    _MAGIC = 0xFD2FB528

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.pending = b""  # header bytes collected so far
        self.state = "magic"  # magic -> frame_header -> block -> (skip content) -> block ... -> magic
        self.skip = 0
        self.header_size = 0
        self.checksum = False
        self.frames = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        if data:
            self._feed(data)
        elif self.state != "magic" or self.pending or self.skip or not self.frames:
            raise BackupError(ErrorCode.CORRUPTED, "The stored backup file is incomplete (truncated).")
        return data

    def _feed(self, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            if self.skip:
                step = min(self.skip, len(data) - pos)
                self.skip -= step
                pos += step
                continue
            need = {"magic": 5, "skippable": 8, "frame_header": self.header_size, "block": 3}[self.state]
            take = min(need - len(self.pending), len(data) - pos)
            self.pending += data[pos : pos + take]
            pos += take
            if len(self.pending) == need:
                self._header_complete()

    def _header_complete(self) -> None:
        header, self.pending = self.pending, b""
        if self.state == "magic":
            magic = int.from_bytes(header[:4], "little")
            if magic & 0xFFFFFFF0 == 0x184D2A50:  # a skippable frame: 4-byte length, then data
                self.state, self.pending = "skippable", header
                return
            if magic != self._MAGIC:
                raise BackupError(ErrorCode.CORRUPTED, "The stored backup file is not a zstd file.")
            descriptor = header[4]
            single_segment = bool(descriptor & 0x20)
            content_size = (0 if not single_segment else 1, 2, 4, 8)[descriptor >> 6]
            dictionary = (0, 1, 2, 4)[descriptor & 0x03]
            self.checksum = bool(descriptor & 0x04)
            self.header_size = (0 if single_segment else 1) + dictionary + content_size
            self.state = "frame_header" if self.header_size else "block"
        elif self.state == "skippable":
            self.skip = int.from_bytes(header[4:8], "little")
            self.state = "magic"
        elif self.state == "frame_header":
            self.state = "block"
        else:
            value = int.from_bytes(header, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            self.skip = 1 if kind == 1 else size  # an RLE block stores one byte
            if last:
                self.skip += 4 if self.checksum else 0
                self.state = "magic"
                self.frames += 1

    def close(self) -> None:
        self.raw.close()


def delete(key: str) -> None:
    """Remove `key`; a key that is already gone is fine (retention may be repeated)."""
    backups_storage().delete(check_key(key))


def delete_files(keys: Iterable[str]) -> list[str]:
    """Remove every key, going on past failures; returns the keys left behind.

    For sets already marked deleted (retention, a person's deletion): a file left
    behind wastes space but misleads nobody, and must not stop the others going."""
    left = []
    for key in keys:
        try:
            with _storage_errors():
                delete(key)
        except BackupError as exc:
            logger.warning("could not remove file %s: %s", key, exc.message)
            left.append(key)
    return left


# ---------------------------------------------------------------- free space


def free_bytes() -> int | None:
    """Free bytes where local backups are written; None for storages without a limit we can see (S3)."""
    storage = backups_storage()
    if not isinstance(storage, FileSystemStorage):  # as _is_local, which mypy cannot see through
        return None
    folder = Path(storage.location)
    while not folder.exists():  # not created yet: the free space is its nearest existing parent's
        folder = folder.parent
    return shutil.disk_usage(folder).free


def check_free_space(needed_bytes: int) -> None:
    """Fail early with STORAGE_FULL when the local storage has less than `needed_bytes` free."""
    free = free_bytes()
    if free is not None and free < needed_bytes:
        raise BackupError(
            ErrorCode.STORAGE_FULL,
            f"The backup storage has {_human(free)} free but this backup needs about {_human(needed_bytes)};"
            " free some space (or prune old sets) and retry.",
        )


def _human(size: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"
