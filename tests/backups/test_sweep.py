"""Stale temporary files: what a backup write killed outright leaves behind, and its sweep."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups.sweep import STALE_AFTER, sweep_temporary_files
from lib.slots import MAX_TIME_LIMIT_MINUTES
from tests.helpers import ROOT, stored_path

# A write that never ends: random (incompressible) bytes, so zstd writes to the file at once.
ENDLESS_WRITE = """
import os, sys, time
import django
django.setup()
from backups import storage

class Endless:
    def read(self, size=-1):
        time.sleep(0.01)
        return os.urandom(256 * 1024)

storage.store_stream("tenant/schedule/set/0.sqlite3.zst", Endless())
"""


def killed_write(backups_dir: Path) -> Path:
    """Start a real backup write in another process and SIGKILL it mid-file: what it leaves."""
    env = {**os.environ, "BACKUPS_DIR": str(backups_dir), "DJANGO_SETTINGS_MODULE": "config.settings"}
    process = subprocess.Popen([sys.executable, "-c", ENDLESS_WRITE], cwd=ROOT, env=env)
    folder = backups_dir / "tenant" / "schedule" / "set"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            partial = [p for p in folder.glob(".tmp-*") if p.stat().st_size > 0] if folder.exists() else []
            if partial:
                break
            assert process.poll() is None, "the writer stopped by itself"
            time.sleep(0.05)
        else:
            pytest.fail("the writer wrote nothing within 60 s")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    (left,) = folder.glob(".tmp-*")
    assert not (folder / "0.sqlite3.zst").exists()  # never visible under its key
    return left


def age(path: Path, by: timedelta) -> None:
    then = time.time() - by.total_seconds()
    os.utime(path, (then, then))


def test_a_write_killed_outright_leaves_a_temporary_file_that_the_sweep_removes_once_stale(settings) -> None:
    left = killed_write(Path(settings.BACKUPS_DIR))
    size = left.stat().st_size
    # Young: it could be a live write on another node; kept.
    report = sweep_temporary_files()
    assert left.exists() and report.removed == [] and report.kept_fresh == 1
    age(left, STALE_AFTER + timedelta(minutes=1))
    report = sweep_temporary_files()
    assert not left.exists()
    assert report.removed == [left] and report.removed_bytes == size


def test_the_sweep_never_touches_backups_or_fresh_writes(schedule, settings) -> None:
    from tests.scheduling.test_operations import backed_up

    backup_set = backed_up(schedule)
    kept = stored_path(backup_set.items.get().storage_key)
    before = kept.read_bytes()
    fresh = kept.with_name(f".tmp-{'0' * 32}-next.sqlite3.zst")
    fresh.write_bytes(b"being written")
    stale = kept.with_name(f".tmp-{'1' * 32}-old.sqlite3.zst")
    stale.write_bytes(b"left by a killed worker")
    for path in (kept, stale):
        age(path, STALE_AFTER * 3)  # an old backup is still a backup
    report = sweep_temporary_files()
    assert report.removed == [stale] and report.kept_fresh == 1
    assert kept.read_bytes() == before and fresh.exists()


def test_the_command_lists_in_a_dry_run_and_removes_otherwise(settings, capsys) -> None:
    folder = Path(settings.BACKUPS_DIR) / "t" / "s"
    folder.mkdir(parents=True)
    stale = folder / f".tmp-{'2' * 32}-0.tar.zst"
    stale.write_bytes(b"x" * 10)
    age(stale, STALE_AFTER * 2)
    call_command("sweep_storage", "--dry-run")
    assert f"Would remove {stale}" in capsys.readouterr().out and stale.exists()
    call_command("sweep_storage")
    out = capsys.readouterr().out
    assert f"Removed {stale}" in out and "Removed 1 stale temporary file(s), 10 bytes" in out
    assert not stale.exists()


@pytest.mark.parametrize("hours", ["1", str(MAX_TIME_LIMIT_MINUTES / 60), "nan", "inf"])
def test_the_command_refuses_an_age_that_could_catch_a_live_write(settings, hours) -> None:
    with pytest.raises(CommandError, match="at least") as caught:
        call_command("sweep_storage", "--older-than-hours", hours)
    assert caught.value.returncode == 2


def test_the_sweep_reports_a_folder_it_cannot_read(settings, monkeypatch) -> None:
    # Denied by the file system for anyone but root; the tests may run as root, so the
    # listing is refused here instead.
    folder = Path(settings.BACKUPS_DIR) / "locked"
    folder.mkdir(parents=True)
    real_scandir = os.scandir

    def scandir(path="."):  # type: ignore[no-untyped-def]
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = sweep_temporary_files()
    assert report.errors == [f"{folder}: Permission denied"]


def test_a_backups_folder_not_made_yet_is_nothing_to_sweep(settings) -> None:
    assert not Path(settings.BACKUPS_DIR).exists()
    report = sweep_temporary_files()
    assert report.errors == [] and report.removed == []


def test_on_s3_there_is_nothing_to_sweep(settings, capsys) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {"BACKEND": "storages.backends.s3.S3Storage", "OPTIONS": {"bucket_name": "unused"}},
    }
    assert sweep_temporary_files().local is False
    call_command("sweep_storage")
    assert "lifecycle rule" in capsys.readouterr().out


def test_the_clusters_sweeper_sweeps_every_period_until_stopped(settings, monkeypatch) -> None:
    import threading

    from backups import sweep

    folder = Path(settings.BACKUPS_DIR) / "t" / "s"
    folder.mkdir(parents=True)
    stale = folder / f".tmp-{'3' * 32}-0.tar.zst"
    stale.write_bytes(b"x")
    age(stale, STALE_AFTER * 2)
    stop = threading.Event()
    sweeps: list[int] = []
    real = sweep.sweep_temporary_files

    def counted() -> sweep.SweepReport:
        report = real()
        sweeps.append(len(report.removed))
        if len(sweeps) == 2:
            stop.set()
        return report

    monkeypatch.setattr(sweep, "sweep_temporary_files", counted)
    monkeypatch.setattr(sweep, "close_old_connections", lambda: None)  # this thread shares the test's connection
    worker = threading.Thread(target=sweep.run_sweeper, args=(stop, 0.01, 0.01))
    worker.start()
    worker.join(10)
    assert not worker.is_alive() and sweeps == [1, 0] and not stale.exists()


def test_the_clusters_sweeper_removes_the_files_of_ended_work_each_period_and_keeps_the_rest(
    settings, monkeypatch
) -> None:
    import threading

    from backups import sweep

    folder = Path(settings.BACKUPS_DIR) / "t" / "s"
    folder.mkdir(parents=True)
    ended = folder / f".tmp-{'4' * 32}-ended-0.tar.zst"
    live = folder / f".tmp-{'5' * 32}-live-0.tar.zst"
    for path in (ended, live):
        path.write_bytes(b"x")  # fresh: the age sweep would keep both
    asked: list[list[str]] = []

    def still_writing(keys: list[str]) -> set[str]:  # the caller knows which work goes on
        asked.append(sorted(keys))
        return {key for key in keys if "live" in key}

    stop = threading.Event()
    monkeypatch.setattr(sweep, "close_old_connections", lambda: None)  # this thread shares the test's connection
    worker = threading.Thread(
        target=sweep.run_sweeper, args=(stop, 3600, 0.01), kwargs={"still_writing": still_writing, "ended_every": 0.01}
    )
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(asked) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(10)
    assert asked[:2] == [["t/s/ended-0.tar.zst", "t/s/live-0.tar.zst"], ["t/s/live-0.tar.zst"]]
    assert not ended.exists() and live.exists()
