from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tracemalloc
import uuid
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from backups import storage
from backups.errors import BackupError, ErrorCode
from backups.models import BackupSet
from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.retention import estimated_size
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tests.helpers import make_stored_set, stored_exists, stored_path

REPO = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


class Generated(io.RawIOBase):
    """`size` bytes made on the fly (half random, half zeros: compressible like real dumps)."""

    def __init__(self, size: int, seed: int = 1, fail_after: int | None = None) -> None:
        self.left = size
        self.random = random.Random(seed)
        self.digest = hashlib.sha256()
        self.fail_after = fail_after
        self.given = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.given >= self.fail_after:
            raise BackupError(ErrorCode.CONNECTION_FAILED, "the source went away")
        size = min(MB if size is None or size < 0 else size, self.left)
        if size <= 0:
            return b""
        half = size // 2
        chunk = self.random.randbytes(half) + bytes(size - half)
        self.left -= size
        self.given += size
        self.digest.update(chunk)
        return chunk


def incompressible(size: int) -> io.BytesIO:
    return io.BytesIO(random.Random(size).randbytes(size))


def read_back(key: str) -> str:
    digest = hashlib.sha256()
    with storage.open_decompressed(key) as reader:
        while chunk := reader.read(MB):
            digest.update(chunk)
    return digest.hexdigest()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------- local storage


def test_a_stored_stream_reads_back_identically_and_its_checksum_is_the_files(settings) -> None:
    source = Generated(5 * MB)
    stored = storage.store_stream("tenant/schedule/one.bin.zst", source)
    path = stored_path(stored.key)
    assert path == Path(settings.BACKUPS_DIR) / "tenant" / "schedule" / "one.bin.zst"
    assert stored.source_size == 5 * MB and stored.size == path.stat().st_size < 5 * MB
    assert stored.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_back(stored.key) == source.digest.hexdigest()
    with storage.open_raw(stored.key) as raw:
        assert raw.read(4) == b"\x28\xb5\x2f\xfd"  # zstd frame magic
    assert path.stat().st_mode & 0o777 == 0o600
    assert stored_exists(stored.key)
    storage.delete(stored.key)
    storage.delete(stored.key)  # deleting twice is fine
    assert not stored_exists(stored.key)


def test_the_file_appears_under_its_key_only_when_it_is_complete() -> None:
    key = "t/s/atomic.bin.zst"
    seen = []

    def progress(written: int) -> None:
        folder = storage.backups_root() / "t" / "s"
        seen.append((stored_exists(key), [p.name for p in folder.iterdir()]))

    storage.store_stream(key, Generated(4 * MB), progress=progress)
    assert seen and all(not visible for visible, _ in seen)
    assert all(len(names) == 1 and names[0].startswith(".tmp-") for _, names in seen)
    assert [p.name for p in files_under(storage.backups_root())] == ["atomic.bin.zst"]


def test_a_source_failing_mid_stream_leaves_no_file_and_keeps_the_earlier_ones() -> None:
    earlier = storage.store_stream("t/s/earlier.zst", Generated(MB, seed=7))
    before = stored_path(earlier.key).read_bytes()
    with pytest.raises(BackupError) as caught:
        storage.store_stream("t/s/broken.zst", Generated(8 * MB, fail_after=3 * MB))
    assert caught.value.code == ErrorCode.CONNECTION_FAILED
    assert files_under(storage.backups_root()) == [stored_path(earlier.key)]
    assert stored_path(earlier.key).read_bytes() == before


def test_a_truncated_stored_file_fails_when_read_instead_of_looking_shorter() -> None:
    stored = storage.store_stream("t/s/cut.zst", Generated(3 * MB))
    path = stored_path(stored.key)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 2, 3):
        path.write_bytes(data[:cut])
        with pytest.raises(BackupError, match="incomplete"):
            read_back(stored.key)
    path.write_bytes(b"definitely not zstd")
    with pytest.raises(BackupError, match="not a zstd file"):
        read_back(stored.key)
    path.write_bytes(data)
    assert read_back(stored.key)  # whole again: reads fine


@pytest.mark.parametrize("key", ["../escape.zst", "/abs.zst", "a/../../b.zst", ".hidden.zst", "a//b.zst", "", "a\\b"])
def test_keys_that_are_not_plain_relative_names_are_refused(key) -> None:
    with pytest.raises(ValueError, match="not a plain relative name"):
        storage.store_stream(key, io.BytesIO(b"x"))


def test_an_empty_source_stores_a_valid_empty_backup() -> None:
    stored = storage.store_stream("t/empty.zst", io.BytesIO(b""))
    assert stored.source_size == 0 and stored.size > 0
    assert read_back(stored.key) == hashlib.sha256(b"").hexdigest()


# ---------------------------------------------------------------- memory


def python_peak(size: int) -> int:
    tracemalloc.start()
    try:
        storage.store_stream(f"mem/{size}.zst", Generated(size))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_python_memory_stays_flat_while_storing_200_mb() -> None:
    small, large = python_peak(20 * MB), python_peak(200 * MB)
    assert large < 12 * MB  # a few 1 MB chunks in flight, whatever the size
    assert large < small + 2 * MB


CHILD_STORE = """
import resource, sys, django
django.setup()
from backups import storage
from tests.backups.test_storage import Generated
storage.store_stream("rss/x.zst", Generated(int(sys.argv[1])))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def child_peak_rss(size: int, backups_dir: Path) -> int:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "BACKUPS_DIR": str(backups_dir)}
    env.pop("BACKUPS_STORAGE", None)
    result = subprocess.run(
        [sys.executable, "-c", CHILD_STORE, str(size)], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip().splitlines()[-1])


def test_the_whole_process_peak_rss_does_not_grow_with_the_input(tmp_path) -> None:
    small = child_peak_rss(20 * MB, tmp_path / "small")
    large = child_peak_rss(200 * MB, tmp_path / "large")
    # zstd's own (C) buffers included: a 10x larger input may not cost more than noise.
    assert large - small < 16 * MB, (small, large)


# ---------------------------------------------------------------- free space


def test_check_free_space_fails_early_with_a_clear_message(settings) -> None:
    free = storage.free_bytes()
    assert free is not None and free > 0
    storage.check_free_space(1)
    with pytest.raises(BackupError) as caught:
        storage.check_free_space(free + 10**15)
    assert caught.value.code == ErrorCode.STORAGE_FULL
    assert "free but this backup needs about" in caught.value.message


def test_the_estimate_is_the_last_live_set_plus_headroom_or_the_configured_minimum(schedule, settings) -> None:
    settings.BACKUPS_MIN_FREE_BYTES = 1000
    assert estimated_size(schedule) == 1000  # a first run
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=schedule.created_at
    )
    make_stored_set(schedule, run, size=50_000)
    assert estimated_size(schedule) == 55_000
    BackupSet.objects.update(deleted_at=schedule.created_at)  # pruned sets do not count
    assert estimated_size(schedule) == 1000


@pytest.fixture
def tmpfs(tmp_path) -> Path:
    """A real 2 MB file system, so 'disk full' is the kernel's ENOSPC, not a mock."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if result.returncode != 0:
        reason = f"mounting a tmpfs needs root (mount said: {result.stderr.strip() or result.returncode})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_running_out_of_space_mid_write_fails_as_storage_full_and_keeps_earlier_files(tmpfs, settings) -> None:
    settings.BACKUPS_DIR = tmpfs
    earlier = storage.store_stream("t/s/earlier.zst", incompressible(300_000))
    before = stored_path(earlier.key).read_bytes()
    with pytest.raises(BackupError) as caught:
        storage.store_stream("t/s/too-big.zst", incompressible(5 * MB))
    assert caught.value.code == ErrorCode.STORAGE_FULL
    assert "full" in caught.value.message
    assert files_under(tmpfs) == [stored_path(earlier.key)]  # no temporary file left behind
    assert stored_path(earlier.key).read_bytes() == before
    assert hashlib.sha256(before).hexdigest() == earlier.sha256
    # The space came back: a backup that fits still works.
    assert storage.store_stream("t/s/small.zst", incompressible(100_000)).size > 0


def test_a_run_fails_early_as_storage_full_when_the_estimate_does_not_fit(tmpfs, settings, schedule) -> None:
    settings.BACKUPS_DIR = tmpfs
    settings.BACKUPS_MIN_FREE_BYTES = 0
    earlier = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=schedule.created_at
    )
    make_stored_set(schedule, earlier, size=3 * MB)  # the last set was bigger than the whole disk
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "STORAGE_FULL"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "needs about 3.5 MB" in run.error_message
    assert "Snapshot taken" not in run.log  # failed before any dump started
    assert files_under(tmpfs) == []


# ---------------------------------------------------------------- settings


def test_the_storage_kind_and_the_s3_bucket_are_checked_at_startup(monkeypatch, tmp_path) -> None:
    from config import settings as settings_module

    monkeypatch.setenv("BACKUPS_STORAGE", "ftp")
    with pytest.raises(ImproperlyConfigured, match="local or s3"):
        settings_module._backups_storage()
    monkeypatch.setenv("BACKUPS_STORAGE", "s3")
    monkeypatch.delenv("BACKUPS_S3_BUCKET", raising=False)
    with pytest.raises(ImproperlyConfigured, match="BACKUPS_S3_BUCKET"):
        settings_module._backups_storage()
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    monkeypatch.setenv("BACKUPS_S3_BUCKET", "b")
    monkeypatch.setenv("BACKUPS_S3_SECRET_ACCESS_KEY_FILE", str(secret_file))
    monkeypatch.setenv("BACKUPS_S3_PREFIX", "/backups/")
    config = settings_module._backups_storage()
    assert config["BACKEND"] == "storages.backends.s3.S3Storage"
    assert config["OPTIONS"]["secret_key"] == "from-a-file"
    assert config["OPTIONS"]["location"] == "backups"


# ---------------------------------------------------------------- S3 (a local moto server)

ACCESS_KEY = "moto-access-key"
SECRET_KEY = "moto-secret-do-not-leak"


@pytest.fixture(scope="module")
def moto_endpoint() -> str:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def bucket(moto_endpoint) -> str:
    name = f"backups-{uuid.uuid4().hex[:12]}"
    s3_client(moto_endpoint).create_bucket(Bucket=name)
    yield name
    client = s3_client(moto_endpoint)
    for item in client.list_objects_v2(Bucket=name).get("Contents", []):
        client.delete_object(Bucket=name, Key=item["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture
def s3_settings(settings, moto_endpoint, bucket):
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "location": "prefix",
                "endpoint_url": moto_endpoint,
                "region_name": "us-east-1",
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
            },
        },
    }
    return settings


CHILD_S3 = """
import json, sys, django
django.setup()
from backups import storage
from tests.helpers import stored_exists
from tests.backups.test_storage import Generated, read_back
key = "tenant/schedule/by-config.bin.zst"
if sys.argv[1] == "store":
    source = Generated(7 * 1024 * 1024)
    stored = storage.store_stream(key, source)
    print(json.dumps({"sha256": stored.sha256, "same": read_back(key) == source.digest.hexdigest(),
                      "exists": stored_exists(key), "free": storage.free_bytes()}))
else:
    storage.delete(key)
    print(json.dumps({"exists": stored_exists(key)}))
"""


def test_s3_by_configuration_alone_stores_reads_back_and_deletes(moto_endpoint, bucket) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "BACKUPS_STORAGE": "s3",
        "BACKUPS_S3_BUCKET": bucket,
        "BACKUPS_S3_ENDPOINT_URL": moto_endpoint,
        "BACKUPS_S3_REGION": "us-east-1",
        "BACKUPS_S3_ACCESS_KEY_ID": ACCESS_KEY,
        "BACKUPS_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "BACKUPS_S3_PREFIX": "team-backups",
    }

    def child(mode: str) -> dict:
        result = subprocess.run(
            [sys.executable, "-c", CHILD_S3, mode], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        return json.loads(result.stdout.strip().splitlines()[-1])

    stored = child("store")
    assert stored["same"] and stored["exists"] and stored["free"] is None
    client = s3_client(moto_endpoint)
    (obj,) = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert obj["Key"] == "team-backups/tenant/schedule/by-config.bin.zst"
    body = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == stored["sha256"]
    assert child("delete") == {"exists": False}
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)


def test_s3_stores_a_large_backup_in_parts_and_reads_it_back(s3_settings, moto_endpoint, bucket, monkeypatch) -> None:
    monkeypatch.setattr(storage, "S3_PART_SIZE", 5 * MB)  # S3's smallest part: several parts for 12 MB
    data = incompressible(12 * MB)
    expected = hashlib.sha256(data.getvalue()).hexdigest()
    uploaded_parts = []
    real_upload_part = storage._MultipartUpload._upload_part

    def counting(self) -> None:
        uploaded_parts.append(len(self.buffer))
        real_upload_part(self)

    monkeypatch.setattr(storage._MultipartUpload, "_upload_part", counting)
    stored = storage.store_stream("t/big.zst", data)
    assert len(uploaded_parts) == 3
    assert read_back(stored.key) == expected
    body = s3_client(moto_endpoint).get_object(Bucket=bucket, Key="prefix/t/big.zst")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == stored.sha256 and len(body) == stored.size
    with pytest.raises(ValueError):
        stored_path(stored.key)  # S3 objects have no local path
    assert storage.free_bytes() is None
    storage.check_free_space(10**18)  # nothing to check on a bucket


def test_s3_a_failed_upload_is_aborted_and_leaves_nothing_visible(
    s3_settings, moto_endpoint, bucket, monkeypatch
) -> None:
    monkeypatch.setattr(storage, "S3_PART_SIZE", 5 * MB)
    with pytest.raises(BackupError):
        storage.store_stream("t/broken.zst", Generated(40 * MB, fail_after=20 * MB))
    client = s3_client(moto_endpoint)
    assert "Contents" not in client.list_objects_v2(Bucket=bucket)
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert not stored_exists("t/broken.zst")
    with pytest.raises(FileNotFoundError):
        storage.open_raw("t/broken.zst")


def test_s3_errors_name_a_code_and_never_the_secret(settings, bucket) -> None:
    from botocore.config import Config

    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": "http://127.0.0.1:9",  # discard port: nothing listens
                "region_name": "us-east-1",
                "access_key": ACCESS_KEY,
                "secret_key": SECRET_KEY,
                "client_config": Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=2),
            },
        },
    }
    with pytest.raises(BackupError) as caught:
        storage.store_stream("t/x.zst", Generated(7 * MB))
    assert caught.value.code == ErrorCode.CONNECTION_FAILED
    assert SECRET_KEY not in caught.value.message and ACCESS_KEY not in caught.value.message
    assert SECRET_KEY not in repr(caught.value.__context__ or "")
