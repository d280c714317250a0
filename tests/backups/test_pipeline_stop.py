"""BackupJob.should_stop: a reason to stop, asked on every read of a dump and before each
item, aborts the dump with it, keeps no file of it and starts no further item. Real
engines, called through backups.pipeline (no schedule, no run)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from backups import pipeline
from backups.errors import BackupError, ErrorCode
from backups.models import BackupSet, SourceKind
from tests.backups.jobs import Calls, folder_source, job_for, root, sqlite_source, stored_files
from tests.db_servers import pg_connect, pg_database, pg_execute, pg_wait_for_lock_waiter, require_postgres

STOPPED = BackupError(ErrorCode.INTERRUPTED, "stopped for the test")


class StopAfter:
    """A stop check that gives its reason from its `reads`-th question on."""

    def __init__(self, reads: int) -> None:
        self.asked = 0
        self.reads = reads

    def __call__(self) -> BackupError | None:
        self.asked += 1
        return STOPPED if self.asked >= self.reads else None


def big_folder_source(tenant):  # type: ignore[no-untyped-def]
    source = folder_source(tenant, "Big")
    # Several chunks of the stream (1 MiB reads), so the check is asked mid-dump.
    (root() / "big" / "data.bin").write_bytes(bytes(range(256)) * 4096 * 8)
    return source


def test_a_stop_mid_dump_fails_the_backup_with_its_reason_and_keeps_no_file(tenant) -> None:
    source = big_folder_source(tenant)
    calls = Calls()
    stop = StopAfter(reads=4)  # before the item, then reads: the stop comes with the dump under way
    outcome = pipeline.back_up([source], dataclasses.replace(job_for(tenant, calls), should_stop=stop))
    assert (outcome.status, outcome.error_code, outcome.message) == (pipeline.FAILED, "INTERRUPTED", STOPPED.message)
    assert outcome.backup_set is None and not BackupSet.objects.exists()
    assert calls.progress and calls.progress[-1] == 0  # it had written; nothing of it counts now
    assert stored_files() == []  # the temporary file is gone, no partial one stored
    assert any("“Big” failed: INTERRUPTED" in line for line in calls.lines), calls.lines


def test_items_after_the_stop_do_not_start_and_the_stored_ones_make_a_partial_set(tenant) -> None:
    first = sqlite_source(tenant, "A shop")
    second = sqlite_source(tenant, "B shop")
    calls = Calls()

    def stop() -> BackupError | None:  # once the first item's file is in place
        return STOPPED if [path for path in stored_files() if not path.name.startswith(".tmp-")] else None

    outcome = pipeline.back_up([first, second], dataclasses.replace(job_for(tenant, calls), should_stop=stop))
    assert outcome.status == pipeline.PARTIAL and outcome.error_code == "INTERRUPTED"
    assert outcome.backup_set is not None
    items = {item.label: item for item in outcome.backup_set.items.all()}
    assert items["A shop"].error_code == "" and items["A shop"].storage_key
    assert items["B shop"].error_code == "INTERRUPTED" and items["B shop"].storage_key == ""
    assert sum("Snapshot taken" in line for line in calls.lines) == 1, calls.lines  # B shop was never dumped
    assert len(stored_files()) == 1


def test_the_stop_check_is_one_callable_made_of_several_reasons() -> None:
    other = BackupError(ErrorCode.WORKER_LOST, "given up")
    assert pipeline.first_stop()() is None
    assert pipeline.first_stop(lambda: None, lambda: None)() is None
    assert pipeline.first_stop(lambda: None, lambda: other, lambda: STOPPED)() is other


@pytest.mark.services
def test_a_pg_dump_blocked_on_a_lock_is_killed_at_the_stop(tenant) -> None:
    """pg_dump waiting on a table lock writes nothing: no read asks the check, the tool's
    watchdog does, and kills it (as at a deadline)."""
    from tests.scheduling.test_run_log import postgres_source

    require_postgres()
    with pg_database("bt_stop") as name:
        pg_execute("CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)", name)
        with pg_connect(name) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
            source = postgres_source(tenant, name)
            assert source.kind == SourceKind.POSTGRES
            flag = threading.Event()
            job = dataclasses.replace(job_for(tenant, Calls()), should_stop=lambda: STOPPED if flag.is_set() else None)
            result: list[pipeline.BackupOutcome] = []
            worker = threading.Thread(target=lambda: result.append(pipeline.back_up([source], job)))
            worker.start()
            pg_wait_for_lock_waiter(name)
            flag.set()
            worker.join(timeout=60)
            assert not worker.is_alive(), "the blocked pg_dump was not stopped"
            locker.execute("ROLLBACK")
    assert (result[0].status, result[0].error_code) == (pipeline.FAILED, "INTERRUPTED")
    assert stored_files() == [] and not BackupSet.objects.exists()

