"""SIGTERM to the whole process group of a real `manage.py runcluster`, as `kill -TERM -PGID`
and systemd's default KillMode=control-group send it: running backups finish within the
grace (SHUTDOWN_GRACE_SECONDS) or end INTERRUPTED with nothing kept, and the node exits.

The backup is a pg_dump held back by a table lock another session holds (the test
decides when it may go on), so it runs as long as the test needs, whatever the machine's
speed. The node runs in a session of its own: the signal reaches its sentinel, workers,
pusher and monitor, never the test."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from django_q.brokers import get_broker

from backups.models import BackupSet
from scheduling.models import BackupScheduleRun, RunStatus, SourceLease, Trigger
from scheduling.runs import run_now
from scheduling.shutdown import STOP_MARGIN_SECONDS
from tests.db_servers import pg_wait_for_lock_waiter
from tests.helpers import ROOT, RUNCLUSTER, cluster_env, make_schedule
from tests.scheduling.test_run_log import locked_database, postgres_source

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

# Generous, for a loaded machine: the bound itself is the grace plus STOP_MARGIN_SECONDS.
SLACK_SECONDS = 60


@dataclass
class Node:
    process: subprocess.Popen[str]
    log: Path

    def output(self) -> str:
        return self.log.read_text()[-4000:]

    def stop(self, within: float, whole_group: bool = True) -> int:
        """SIGTERM to every process of the node's group (or to its main process only, as
        systemd's KillMode=mixed does); its exit status."""
        if whole_group:
            os.killpg(self.process.pid, signal.SIGTERM)
        else:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=within)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runcluster still running {within} s after SIGTERM:\n{self.output()}") from None


@contextmanager
def node(settings, tmp_path: Path, grace: int) -> Iterator[Node]:  # type: ignore[no-untyped-def]
    log = tmp_path / "runcluster.log"
    env = cluster_env(settings, workers=1, SHUTDOWN_GRACE_SECONDS=str(grace))
    with open(log, "w") as out:
        process = subprocess.Popen(
            RUNCLUSTER, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
    try:
        yield Node(process, log)
    finally:
        if process.poll() is None:  # a failed test: leave nothing behind
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_until(condition: Callable[[], bool], what: str, cluster: Node, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout} s for {what}:\n{cluster.output()}")
        time.sleep(0.1)


def stored_files(settings) -> list[Path]:  # type: ignore[no-untyped-def]
    return [path for path in Path(settings.BACKUPS_DIR).rglob("*") if path.is_file()]


def pg_dumps_of(database: str) -> list[int]:
    """Living pg_dump processes dumping `database` (named in their environment, PGDATABASE)."""
    found = []
    for entry in Path("/proc").iterdir():
        with suppress(OSError):
            tool = (entry / "cmdline").read_bytes().split(b"\0")[0]
            if tool.endswith(b"pg_dump") and f"PGDATABASE={database}".encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
    return found


def test_a_backup_that_ends_within_the_grace_succeeds_and_the_node_then_exits_0(
    tenant, source, settings, tmp_path
) -> None:
    grace = 120
    with locked_database() as (database, release):
        dump = make_schedule(tenant, postgres_source(tenant, database), name="Shop PG")
        later = make_schedule(tenant, source, name="Shop file")
        with node(settings, tmp_path, grace) as cluster:
            run = run_now(dump, actor=None)
            pg_wait_for_lock_waiter(database)
            # The second run's task is taken off the broker while the only worker is busy:
            # it waits in the node's own queue when the stop comes.
            waiting = run_now(later, actor=None)
            wait_until(lambda: get_broker().queue_size() == 0, "the node to take the second task", cluster)
            os.killpg(cluster.process.pid, signal.SIGTERM)
            wait_until(lambda: "Stopping:" in cluster.output(), "the node to begin stopping", cluster)
            release()  # the dump goes on and ends well within the grace
            try:
                code = cluster.process.wait(timeout=grace + STOP_MARGIN_SECONDS + SLACK_SECONDS)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"runcluster did not exit:\n{cluster.output()}") from None
    run.refresh_from_db()
    waiting.refresh_from_db()
    assert code == 0, cluster.output()
    assert run.status == RunStatus.SUCCEEDED, (run.error_code, run.error_message, run.log, cluster.output())
    assert run.backup_set is not None and run.backup_set.size > 0
    # A task taken before the stop is not started by a stopping node: the run stays
    # queued without a task, for the next dispatcher pass (on any node) to push again.
    assert (waiting.status, waiting.started_at, waiting.enqueued_at) == (RunStatus.QUEUED, None, None)
    assert "Interrupting" not in cluster.output()
    assert not SourceLease.objects.exists()


# The group three times (the hang this replaced came in some trials only), then the main
# process alone.
@pytest.mark.parametrize("whole_group", [True, True, True, False], ids=["group", "group", "group", "main"])
def test_a_backup_still_going_when_the_grace_ends_is_interrupted_and_nothing_of_it_is_kept(
    whole_group, tenant, settings, tmp_path
) -> None:
    grace = 2
    with locked_database() as (database, _release):
        schedule = make_schedule(tenant, postgres_source(tenant, database), name="Shop PG")
        with node(settings, tmp_path, grace) as cluster:
            run = run_now(schedule, actor=None)
            pg_wait_for_lock_waiter(database)
            assert pg_dumps_of(database)
            code = cluster.stop(grace + STOP_MARGIN_SECONDS + SLACK_SECONDS, whole_group)
            # The lock is still held, and yet no pg_dump of it is left: its worker killed it.
            assert pg_dumps_of(database) == []
    assert code == 0, cluster.output()
    run.refresh_from_db()
    assert (run.status, run.error_code) == (RunStatus.FAILED, "INTERRUPTED"), (run.log, cluster.output())
    assert "shutting down" in run.error_message
    assert "Interrupting the backups still running" in cluster.output()
    assert run.backup_set is None and not BackupSet.objects.exists()
    assert stored_files(settings) == []  # neither the temporary file nor a partial one
    assert not SourceLease.objects.exists()
    # Retried like a transient failure: the next attempt waits for its time.
    retry = BackupScheduleRun.objects.get(retry_of=run)
    assert (retry.status, retry.trigger, retry.attempt) == (RunStatus.QUEUED, Trigger.RETRY, 2)
