"""A backup run whose worker loses its database connection mid-dump, for real:
pg_terminate_backend on the worker's own connection from another one, while pg_dump
waits on a lock the test holds (a dump that takes as long as the test needs).

The worker reconnects and records its set; if the database stays away, the run does not
look fine, leaves no file without a set, and its lease does not block the next run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from backups.errors import ErrorCode
from backups.models import BackupItem, BackupSet
from scheduling.dispatch import ABANDONED_AFTER, fail_abandoned_runs
from scheduling.models import BackupScheduleRun, RunStatus, SourceLease
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tests.backups.test_engine_postgres import make_source, shop_db  # noqa: F401 (a fixture)
from tests.db_servers import (
    backend_pid,
    connections_refused,
    pg_connect,
    require_postgres,
    require_production_profile,
    terminate_backend,
)
from tests.helpers import make_schedule, queued_tasks, stored_path

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require_production_profile()
    require_postgres()


def files_without_a_set() -> list[Path]:
    """Every file in the backups folder (temporary ones too) that no item names."""
    named = {stored_path(key) for key in BackupItem.objects.values_list("storage_key", flat=True)}
    return sorted(p for p in Path(settings.BACKUPS_DIR).rglob("*") if p.is_file() and p not in named)


@contextmanager
def dropped_mid_dump(database: str, worker_pid: int, refuse: bool = False) -> Iterator[list[str]]:
    """While the block runs a backup of `database`: hold a lock that makes pg_dump wait, and
    once it waits, terminate the worker's connection (with `refuse`, also refusing every new
    connection to the application's database until the block ends), then let the dump go on."""
    lock = pg_connect(database)
    lock.autocommit = False
    lock.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
    done: list[str] = []
    refusing = connections_refused(connection.settings_dict["NAME"]) if refuse else None

    def drop() -> None:
        with pg_connect() as watcher:
            deadline = time.monotonic() + 60
            while not watcher.execute(
                "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", (database,)
            ).fetchone():
                if time.monotonic() > deadline:
                    done.append("pg_dump never waited on the lock")
                    lock.rollback()
                    return
                time.sleep(0.05)
        if refusing is not None:
            refusing.__enter__()
        terminate_backend(worker_pid)
        done.append("terminated")
        lock.rollback()  # the dump goes on, and ends

    dropper = threading.Thread(target=drop)
    dropper.start()
    try:
        yield done
    finally:
        dropper.join()
        if refusing is not None and done == ["terminated"]:
            refusing.__exit__(None, None, None)
        lock.close()


def pg_run(tenant, database: str) -> BackupScheduleRun:  # type: ignore[no-untyped-def]
    schedule = make_schedule(tenant, make_source(tenant, database), name="Shop PG", keep_last=3, time_limit_minutes=5)
    run = run_now(schedule, actor=None)
    queued_tasks()  # executed here, in the test's thread: its connection is the worker's
    return run


def test_a_worker_whose_connection_is_terminated_mid_dump_reconnects_and_records_its_set(tenant, shop_db) -> None:  # noqa: F811
    run = pg_run(tenant, shop_db)
    worker_pid = backend_pid()
    with dropped_mid_dump(shop_db, worker_pid) as done:
        result = execute_run(str(run.code))
    assert done == ["terminated"]
    assert result == "succeeded"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and not run.error_code
    assert backend_pid() != worker_pid
    (item,) = BackupItem.objects.all()
    assert run.backup_set == item.backup_set
    assert stored_path(item.storage_key).stat().st_size == item.size > 0
    assert run.bytes_written == item.size  # the progress writer reconnected too
    assert not SourceLease.objects.exists()
    assert files_without_a_set() == []


def test_a_run_whose_database_stays_away_is_failed_as_lost_and_keeps_no_file_nor_its_lease(
    tenant,
    shop_db,  # noqa: F811
) -> None:
    run = pg_run(tenant, shop_db)
    with dropped_mid_dump(shop_db, backend_pid(), refuse=True) as done:
        result = execute_run(str(run.code))
    assert done == ["terminated"]
    # Nothing could be written: the run does not look finished, let alone fine...
    assert result == "unrecorded"
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.backup_set is None
    # ...and the complete dump did not stay in storage without a set.
    assert not BackupSet.objects.exists()
    assert files_without_a_set() == []
    # The dispatcher gives the run up for lost once its heartbeat (stopped) is old, and
    # lets go of its lease, which the worker could not release.
    assert SourceLease.objects.filter(run=run).exists()
    assert fail_abandoned_runs(timezone.now() + ABANDONED_AFTER + timedelta(seconds=1)) == 1
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, ErrorCode.WORKER_LOST)
    assert not SourceLease.objects.exists()
    # The next run of the source is not blocked.
    following = run_now(run.schedule, actor=None)
    queued_tasks()
    assert execute_run(str(following.code)) == "succeeded"
    assert files_without_a_set() == []
