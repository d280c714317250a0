#!/usr/bin/env python
"""Benchmark: our PostgreSQL backup pipeline against the raw tools, at two sizes.

Builds a scratch PostgreSQL database with pgbench (scale 68 is about 1 GB on disk,
scale 7 about a tenth of that), then, in the same run and on the same database, times

* raw:  pg_dump -Fc -Z0 | zstd -3 > file          (two processes, a shell pipe)
* ours: the product's path: the postgres engine's pg_dump stream -> zstd -> sha256 ->
        temporary file in storage -> atomic rename   (backups.engines + backups.storage)

Ours runs in a child process of its own, so its peak memory (ru_maxrss: the whole
Python process, Django included; pg_dump is the raw tool in both) is measured alone.
Runs alternate raw/ours and the median of --repeat rounds is taken. The last line
prints the wall-time ratio (ours / raw) and our peak memory at both sizes.

    .venv/bin/python bench/backup.py                      # scales 7 and 68
    .venv/bin/python bench/backup.py --scales 1 5         # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def _server(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432, parts.username or "postgres"


def build_database(url: str, name: str, scale: int) -> int:
    host, port, user = _server(url)
    with psycopg.connect(url, autocommit=True) as server:
        server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        server.execute(f"CREATE DATABASE {name}")
    subprocess.run(
        ["pgbench", "-i", "-q", "-s", str(scale), "-h", host, "-p", str(port), "-U", user, name],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with psycopg.connect(url, autocommit=True) as server:
        return server.execute("SELECT pg_database_size(%s)", [name]).fetchone()[0]  # type: ignore[index]


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as server:
        server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def time_raw(url: str, name: str, scratch: Path) -> tuple[float, int]:
    host, port, user = _server(url)
    target = scratch / "raw.dump.zst"
    command = f"set -o pipefail; pg_dump -Fc -Z0 -h {host} -p {port} -U {user} {name} | zstd -3 -q -f -o {target}"
    started = time.perf_counter()
    subprocess.run(["bash", "-c", command], check=True)
    elapsed = time.perf_counter() - started
    size = target.stat().st_size
    target.unlink()
    return elapsed, size


def time_ours(url: str, name: str, scratch: Path) -> tuple[float, int, int]:
    """Our pipeline in a fresh child process: (seconds, stored bytes, peak RSS bytes)."""
    host, port, user = _server(url)
    env = {**os.environ, "BACKUPS_DIR": str(scratch / "ours"), "VAR_DIR": str(scratch / "var")}
    child = subprocess.run(
        [sys.executable, __file__, "--child", host, str(port), user, name],
        env=env,
        capture_output=True,
        text=True,
    )
    if child.returncode:  # say why: its output is captured for the report line
        sys.exit(f"the pipeline's child process failed:\n{child.stderr}")
    report = json.loads(child.stdout.strip().splitlines()[-1])
    shutil.rmtree(scratch / "ours", ignore_errors=True)
    return report["seconds"], report["size"], report["max_rss"]


def child(host: str, port: str, user: str, name: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from backups import storage
    from backups.engines.base import DumpContext, DumpTarget
    from backups.engines.registry import engine_for
    from backups.models import BackupSource, SourceKind
    from tenants.models import Tenant

    # The engine checks the host against its tenant's host rules right before it connects,
    # as a worker does; an unsaved tenant allowed this one host stands for the real one.
    tenant = Tenant(name="bench", server_hosts=[host])
    source = BackupSource(
        tenant=tenant, name="bench", kind=SourceKind.POSTGRES, host=host, port=int(port), database=name, username=user
    )
    engine = engine_for(SourceKind.POSTGRES)
    lines: list[str] = []
    started = time.perf_counter()
    with engine.dump(source, DumpTarget(label="bench", database=name), DumpContext(log=lines.append)) as stream:
        stored = storage.store_stream(f"bench/{name}{engine.suffix}", stream)
    elapsed = time.perf_counter() - started
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(json.dumps({"seconds": elapsed, "size": stored.size, "max_rss": max_rss}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default=DEFAULT_URL, help="server to build the scratch database on")
    parser.add_argument("--scales", type=int, nargs=2, default=[7, 68], metavar=("SMALL", "BIG"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    for tool in ("pg_dump", "pgbench", "zstd"):
        if not shutil.which(tool):
            sys.exit(f"bench/backup.py needs {tool} on PATH")
    name = f"bench_backup_{os.getpid()}"
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-backup-") as scratch_dir:
        scratch = Path(scratch_dir)
        try:
            for scale in args.scales:
                size = build_database(args.postgres, name, scale)
                raw_times, our_times, rss = [], [], []
                for _ in range(args.repeat):
                    raw_seconds, raw_bytes = time_raw(args.postgres, name, scratch)
                    our_seconds, our_bytes, our_rss = time_ours(args.postgres, name, scratch)
                    raw_times.append(raw_seconds)
                    our_times.append(our_seconds)
                    rss.append(our_rss)
                raw, ours = statistics.median(raw_times), statistics.median(our_times)
                print(
                    f"scale {scale}: database {size / 1e9:.2f} GB; raw {raw:.2f} s ({raw_bytes / 1e6:.0f} MB), "
                    f"ours {ours:.2f} s ({our_bytes / 1e6:.0f} MB), ratio {ours / raw:.3f}, "
                    f"peak RSS {max(rss) / 2**20:.0f} MiB; runs raw {[round(t, 2) for t in raw_times]} "
                    f"ours {[round(t, 2) for t in our_times]}",
                    flush=True,
                )
                results.append((size, ours / raw, max(rss)))
        finally:
            drop_database(args.postgres, name)
    (small_size, small_ratio, small_rss), (big_size, big_ratio, big_rss) = results
    print(
        f"backup: ratio ours/raw {small_ratio:.3f} at {small_size / 1e9:.2f} GB, {big_ratio:.3f} at "
        f"{big_size / 1e9:.2f} GB; our peak memory {small_rss / 2**20:.0f} MiB / {big_rss / 2**20:.0f} MiB"
    )


if __name__ == "__main__":
    main()
