"""Every way a run ends goes through one path (scheduling.endings): a worker killed
outright, a worker given up for lost while alive, a run whose half-written file is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from backups.models import BackupSet
from backups.sweep import sweep_ended_writes
from scheduling import dispatch, heartbeat
from scheduling.dispatch import ABANDONED_AFTER, run_pass
from scheduling.endings import temporaries_in_use
from scheduling.lifecycle import claim
from scheduling.models import (
    BackupSchedule,
    BackupScheduleRun,
    Notification,
    NotificationKind,
    RunStatus,
    SourceLease,
)
from scheduling.runs import run_now
from scheduling.worker import execute_run, storage_key
from tests.browser.test_run_now import locked
from tests.helpers import ROOT, runcluster, stored_path


def poll(condition: Callable[[], object], what: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {seconds} s")


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def holders(path: Path, among: set[int]) -> set[int]:
    """The processes among `among` that have `path` open."""
    real = os.path.realpath(path)
    found = set()
    for pid in among:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == real:
                    found.add(pid)
            except OSError:
                continue
    return found


# ---------------------------------------------------------------- a worker killed outright


@pytest.mark.django_db(transaction=True)
def test_a_sigkilled_worker_ends_failed_worker_lost_told_with_its_lease_released_and_the_next_slot_runs(
    alice, mia, bob, rita, schedule, settings, monkeypatch
) -> None:
    source = schedule.sources.get()
    # The dispatcher runs here, so its mail is this process's outbox; the nodes only work.
    environ: dict[str, str | None] = {"DISPATCHER_ENABLED": "false"}
    with locked(Path(source.path)) as release, runcluster(settings, env=environ) as cluster:
        run = run_now(schedule, actor=None)
        # The worker waits on the locked source, holding it open: that is the process to kill.
        workers: set[int] = set()

        def found_worker() -> bool:
            workers.update(holders(Path(source.path), descendants(cluster.processes[0].pid)))
            return bool(workers) and SourceLease.objects.filter(run=run).exists()

        poll(found_worker, f"a worker on the run\n{cluster.output()}")
        (worker_pid,) = workers
        os.kill(worker_pid, signal.SIGKILL)
        poll(lambda: not Path(f"/proc/{worker_pid}").exists(), "the worker gone")
        assert BackupScheduleRun.objects.get(pk=run.pk).status == RunStatus.RUNNING  # nobody knows yet

        # The verdict's age, shortened so the test need not wait its 45 s; the kill is real.
        monkeypatch.setattr(dispatch, "ABANDONED_AFTER", timedelta(seconds=1))
        poll(lambda: run_pass().abandoned == 1, "the run given up")
        run.refresh_from_db()
        assert (run.status, run.error_code) == (RunStatus.FAILED, "WORKER_LOST")
        assert "WORKER_LOST: The worker running this backup stopped responding" in run.log
        assert not SourceLease.objects.exists()
        told = Notification.objects.filter(kind=NotificationKind.RUN_FAILED, run=run)
        assert sorted(told.values_list("user__username", flat=True)) == ["alice", "bob", "mia", "rita"]
        assert sorted(message.to[0] for message in mail.outbox) == ["alice@example.org", "mia@example.org"]
        assert "Backup of “Nightly” failed" in mail.outbox[0].subject

        # The schedule's next slot is queued, not skipped as busy, and a worker does it.
        BackupSchedule.objects.filter(pk=schedule.pk).update(next_run_at=timezone.now() - timedelta(seconds=5))
        report = run_pass()
        assert (report.created, report.skipped) == (1, 0)
        release()
        following = BackupScheduleRun.objects.exclude(pk=run.pk).get()
        poll(
            lambda: BackupScheduleRun.objects.get(pk=following.pk).status not in (RunStatus.QUEUED, RunStatus.RUNNING),
            f"the next run done\n{cluster.output()}",
        )
    following.refresh_from_db()
    assert following.status == RunStatus.SUCCEEDED, (following.log, cluster.output())
    assert not SourceLease.objects.exists()


# ---------------------------------------------------------------- a temporary file left by a kill

# A backup write of `key` that never ends, in another process: random bytes, so zstd writes at once.
ENDLESS_WRITE = """
import os, sys, time
import django
django.setup()
from backups import storage

class Endless:
    def read(self, size=-1):
        time.sleep(0.01)
        return os.urandom(256 * 1024)

storage.store_stream(sys.argv[1], Endless())
"""


def killed_write(backups_dir: Path, key: str) -> Path:
    """Write `key` in another process and SIGKILL it mid-file: the temporary file it leaves."""
    env = {**os.environ, "BACKUPS_DIR": str(backups_dir), "DJANGO_SETTINGS_MODULE": "config.settings"}
    process = subprocess.Popen([sys.executable, "-c", ENDLESS_WRITE, key], cwd=ROOT, env=env)
    folder = (backups_dir / key).parent
    try:
        poll(
            lambda: folder.exists() and any(p.stat().st_size > 0 for p in folder.glob(".tmp-*")),
            "the writer writing",
            60,
        )
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    (left,) = folder.glob(".tmp-*")
    return left


def running(schedule: BackupSchedule) -> BackupScheduleRun:
    run = run_now(schedule, actor=None)
    assert claim(str(run.code), timezone.now())
    return BackupScheduleRun.objects.select_related("schedule", "tenant").get(pk=run.pk)


def test_a_killed_runs_half_written_file_is_removed_when_the_dispatcher_ends_the_run(
    schedule, settings, django_capture_on_commit_callbacks
) -> None:
    run = running(schedule)
    left = killed_write(Path(settings.BACKUPS_DIR), storage_key(run, timezone.now()))
    with django_capture_on_commit_callbacks(execute=True):
        assert run_pass(timezone.now() + ABANDONED_AFTER + timedelta(minutes=1)).abandoned == 1
    assert not left.exists()
    assert BackupScheduleRun.objects.get(pk=run.pk).error_code == "WORKER_LOST"


def test_a_nodes_sweeper_removes_the_temporary_files_of_ended_runs_only(schedule, settings) -> None:
    ended = running(schedule)
    left = killed_write(Path(settings.BACKUPS_DIR), storage_key(ended, timezone.now()))
    # Ended on another node: this node's files are its sweeper's to remove.
    BackupScheduleRun.objects.filter(pk=ended.pk).update(status=RunStatus.FAILED, error_code="WORKER_LOST")
    going = running(schedule)
    key = storage_key(going, timezone.now())
    live = stored_path(key).with_name(f".tmp-{'0' * 32}-{Path(key).name}")
    live.write_bytes(b"being written")
    stranger = live.with_name(f".tmp-{'1' * 32}-not-a-runs-file.tar.zst")  # no run to ask about: the age sweep's
    stranger.write_bytes(b"x")
    report = sweep_ended_writes(temporaries_in_use)
    assert not left.exists() and live.exists() and stranger.exists()
    assert len(report.removed) == 1 and report.kept == 2 and report.errors == []


def test_the_sweeper_follows_no_symlink_out_of_the_backups_folder(schedule, settings, tmp_path) -> None:
    run = running(schedule)
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED)
    outside = tmp_path / "elsewhere"
    (outside / str(schedule.code)).mkdir(parents=True)
    name = f".tmp-{'2' * 32}-{Path(storage_key(run, timezone.now())).name}"
    target = outside / str(schedule.code) / name
    target.write_bytes(b"not ours")
    root = Path(settings.BACKUPS_DIR)
    root.mkdir(parents=True, exist_ok=True)
    (root / str(run.tenant.code)).symlink_to(outside, target_is_directory=True)  # the run's folder, through a link
    (root / "linked-file").mkdir()
    (root / "linked-file" / name).symlink_to(target)
    report = sweep_ended_writes(temporaries_in_use)
    assert target.read_bytes() == b"not ours"
    assert report.removed == [] and (root / "linked-file" / name).is_symlink()

    from backups.sweep import remove_temporary_files

    with pytest.raises(OSError):  # the run's own folder is a symlink here: refused, not followed
        remove_temporary_files(f"{run.tenant.code}/{run.schedule.code}", str(run.code))
    assert target.exists()


# ---------------------------------------------------------------- a wrong verdict


@pytest.mark.django_db(transaction=True)
def test_a_worker_given_up_while_alive_stops_keeps_no_set_and_leaves_the_new_holders_lease(
    schedule, settings, monkeypatch
) -> None:
    source = schedule.sources.get()
    monkeypatch.setattr(heartbeat, "HEARTBEAT_SECONDS", 0.05)  # a quick cadence, so it notices soon
    monkeypatch.setattr(heartbeat, "LOG_SECONDS", 0.05)
    results: list[str] = []
    with locked(Path(source.path)) as release:
        first = run_now(schedule, actor=None)

        def work() -> None:
            try:
                results.append(execute_run(str(first.code)))
            finally:
                connection.close()

        worker = threading.Thread(target=work)
        worker.start()
        try:
            poll(lambda: SourceLease.objects.filter(run=first).exists(), "the worker dumping")
            # The wrong verdict, by the dispatcher's own code: it thinks the heartbeat is old.
            assert run_pass(timezone.now() + ABANDONED_AFTER + timedelta(minutes=1)).abandoned == 1
            # The next run of the schedule takes the source, as it may now.
            second = run_now(schedule, actor=None)
            assert claim(str(second.code), timezone.now())
            from scheduling import leases

            assert leases.acquire(second, [source]) is None
            # The old worker's heartbeat finds its run not running, and its thread ends.
            poll(
                lambda: not any(t.name == f"heartbeat-{first.code}" for t in threading.enumerate()),
                "the heartbeat noticing",
            )
        finally:
            release()
            worker.join(60)
    assert results == ["lost"]
    first.refresh_from_db()
    assert (first.status, first.error_code) == (RunStatus.FAILED, "WORKER_LOST")
    assert "so this worker stopped" in first.log  # the dump stopped at its first read
    assert not BackupSet.objects.exists()
    folder = Path(settings.BACKUPS_DIR) / str(schedule.tenant.code) / str(schedule.code)
    assert not folder.exists() or list(folder.iterdir()) == []  # no stored file, no temporary one
    assert list(SourceLease.objects.values_list("run_id", flat=True)) == [second.pk]
    active = BackupScheduleRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING])
    assert list(active.values_list("pk", flat=True)) == [second.pk]


def test_a_run_not_running_any_more_adopts_no_set_and_its_files_are_removed(schedule, settings) -> None:
    """The verdict came after the dump was complete: the set is refused, its files removed."""
    from backups import pipeline
    from backups.errors import BackupError
    from scheduling.lifecycle import adopt
    from scheduling.worker import deadline_for

    run = running(schedule)
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=RunStatus.FAILED, error_code="WORKER_LOST")
    started = datetime.now(UTC)
    job = pipeline.BackupJob(
        tenant_id=run.tenant_id,
        started=started,
        deadline=deadline_for(schedule),
        timeout=pipeline.timeout_error(schedule.time_limit_minutes),
        log=lambda line: None,
        key_for=lambda index, suffix: storage_key(run, started, index, suffix),
        adopt=lambda backup_set: adopt(run, backup_set),
    )
    with pytest.raises(BackupError, match="no longer running"):
        pipeline.back_up(list(schedule.sources.all()), job)
    assert not BackupSet.objects.exists()
    folder = Path(settings.BACKUPS_DIR) / str(run.tenant.code) / str(schedule.code)
    assert list(folder.iterdir()) == []


# ---------------------------------------------------------------- the bound


def test_a_killed_workers_run_is_failed_within_two_minutes_of_its_last_beat() -> None:
    from lib.passes import OFFSET_SECONDS

    # The verdict's age, plus a whole minute to the next pass and its offset, leaves
    # room for the pass itself; a live worker may miss four beats in a row.
    worst = ABANDONED_AFTER.total_seconds() + 60 + OFFSET_SECONDS
    assert worst <= 110
    assert ABANDONED_AFTER.total_seconds() >= 4 * heartbeat.HEARTBEAT_SECONDS
