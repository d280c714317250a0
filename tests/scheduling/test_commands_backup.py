"""manage.py verify_backup and restore: access through tenants.access, exit 2 on bad input."""

from __future__ import annotations

import sqlite3
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups.models import BackupSet, VerifyStatus
from scheduling.models import BackupScheduleRun, Operation, RunStatus
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tests.conftest import make_sqlite_database
from tests.helpers import queued_tasks, stored_path


@pytest.fixture
def backup_set(schedule) -> BackupSet:
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    queued_tasks()  # the run-now task, executed above
    return BackupSet.objects.get(run=run)


def run_command(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def refused(*args: str) -> CommandError:
    with pytest.raises(CommandError) as caught:
        run_command(*args)
    return caught.value


def test_verify_backup_wait_verifies_in_process(backup_set, bob) -> None:
    out = run_command("verify_backup", str(backup_set.code), "--as", "bob", "--wait")
    assert "Verification: Verified." in out and "SQLite integrity check ok" in out
    backup_set.refresh_from_db()
    assert backup_set.verify_status == VerifyStatus.OK
    assert queued_tasks() == []  # nothing left for a cluster


def test_verify_backup_without_wait_queues_the_run(backup_set, bob, django_capture_on_commit_callbacks) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        out = run_command("verify_backup", str(backup_set.code), "--as", "bob")
    run = BackupScheduleRun.objects.get(operation=Operation.VERIFY)
    assert out.strip() == f"Queued verify run {run.code}."
    assert [task["args"] for task in queued_tasks()] == [(str(run.code),)]


def test_verify_backup_of_a_corrupted_set_exits_1(backup_set, bob) -> None:
    path = stored_path(backup_set.items.get().storage_key)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    error = refused("verify_backup", str(backup_set.code), "--as", "bob", "--wait")
    assert error.returncode == 1
    backup_set.refresh_from_db()
    assert backup_set.verify_status == VerifyStatus.FAILED


def test_verify_backup_refusals_exit_2(backup_set, rita, charlie) -> None:
    assert refused("verify_backup", "not-a-code", "--as", "rita").returncode == 2
    error = refused("verify_backup", str(backup_set.code), "--as", "rita")
    assert error.returncode == 2 and "Operator role" in str(error)
    error = refused("verify_backup", str(backup_set.code), "--as", "charlie")
    assert error.returncode == 2 and "No backup set" in str(error)
    assert refused("verify_backup", str(uuid.uuid4()), "--as", "rita").returncode == 2
    assert refused("verify_backup", str(backup_set.code), "--as", "nobody").returncode == 2
    assert not BackupScheduleRun.objects.filter(operation=Operation.VERIFY).exists()


def test_restore_wait_writes_a_new_file(backup_set, source, alice) -> None:
    out = run_command("restore", str(backup_set.code), "--as", "alice", "--wait")
    run = BackupScheduleRun.objects.get(operation=Operation.RESTORE)
    assert run.status == RunStatus.SUCCEEDED and "Succeeded" in out
    target = Path(run.restore_target["items"][0]["path"])
    with sqlite3.connect(target) as db:
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 50


def test_restore_overwrite_needs_the_typed_confirmation(backup_set, source, alice, settings) -> None:
    live = make_sqlite_database(settings.SOURCE_ROOTS[0] / "live.sqlite3", rows=2)
    code = str(backup_set.code)
    error = refused("restore", code, "--as", "alice", "--target", str(live))
    assert error.returncode == 2 and "exists" in str(error)
    error = refused("restore", code, "--as", "alice", "--target", str(live), "--overwrite")
    assert error.returncode == 2 and f"Type its name “{live}” exactly" in str(error)
    error = refused("restore", code, "--as", "alice", "--target", str(live), "--overwrite", "--confirm", "LIVE")
    assert error.returncode == 2
    assert refused("restore", code, "--as", "alice", "--confirm", "x").returncode == 2
    assert refused("restore", code, "--as", "alice", "--overwrite").returncode == 2
    assert not BackupScheduleRun.objects.filter(operation=Operation.RESTORE).exists()
    # A relative name is beside the source; typing it the same way confirms.
    run_command(
        "restore",
        code,
        "--as",
        "alice",
        "--target",
        "live.sqlite3",
        "--overwrite",
        "--confirm",
        "live.sqlite3",
        "--wait",
    )
    with sqlite3.connect(live) as db:
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 50


def test_restore_refusals_exit_2(backup_set, bob, mia, charlie) -> None:
    code = str(backup_set.code)
    for username in ("bob", "mia"):
        error = refused("restore", code, "--as", username)
        assert error.returncode == 2 and "Owner role" in str(error)
    assert "No backup set" in str(refused("restore", code, "--as", "charlie"))
    assert refused("restore", code, "--as", "alice-who-does-not-exist").returncode == 2


def test_restore_of_an_item_that_does_not_exist_exits_2(backup_set, alice) -> None:
    error = refused("restore", str(backup_set.code), "--as", "alice", "--item", "5")
    assert error.returncode == 2 and "no item 5" in str(error)
