"""The run log follows a running run: its lines are stored while the run works,
throttled (one write per heartbeat tick, only when it changed) and bounded
(head and tail kept, the middle counted)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from backups import pipeline
from backups.engines.postgres import _dump_error
from backups.engines.process import WITHHELD, scrub_tool_output
from backups.errors import ErrorCode
from backups.models import BackupSource, SourceKind
from backups.runlog import HEAD_LINES, LINE_LIMIT, TAIL_LINES, RunLog
from scheduling import heartbeat
from scheduling.lifecycle import beat, claim, finish
from scheduling.models import BackupScheduleRun, RunStatus
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tests.db_servers import PG_HOST, PG_PORT, pg_connect, pg_database, pg_execute, require_postgres
from tests.helpers import make_schedule

PASSWORD = "follow-me-s3cret"


def wait_for(check: Callable[[], Any], seconds: float = 60) -> Any:
    """Poll until `check()` is truthy (a bounded wait, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"still not true after {seconds} s")


def stored_log(run: BackupScheduleRun) -> str:
    return BackupScheduleRun.objects.values_list("log", flat=True).get(pk=run.pk)


# ---------------------------------------------------------------- bounded


def test_the_log_keeps_its_head_and_tail_and_counts_what_it_left_out() -> None:
    log = RunLog()
    total = HEAD_LINES + TAIL_LINES + 123
    for number in range(total):
        log(f"line {number}")
    lines = log.text().splitlines()
    assert len(lines) == HEAD_LINES + 1 + TAIL_LINES
    assert lines[0].endswith(" line 0") and lines[HEAD_LINES - 1].endswith(f" line {HEAD_LINES - 1}")
    assert lines[HEAD_LINES] == "… 123 lines omitted …"
    assert lines[HEAD_LINES + 1].endswith(f" line {HEAD_LINES + 123}")
    assert lines[-1].endswith(f" line {total - 1}")


def test_a_short_log_has_no_marker() -> None:
    log = RunLog()
    for number in range(HEAD_LINES + TAIL_LINES):
        log(f"line {number}")
    assert "omitted" not in log.text()
    assert len(log.text().splitlines()) == HEAD_LINES + TAIL_LINES


def test_a_long_line_is_cut_and_a_tool_line_with_a_secret_never_shows() -> None:
    log = RunLog()
    log("x" * (LINE_LIMIT - 20) + "our words" + "y" * 1000 + " error")
    # A tool's line reaches the log scrubbed (whole) before any cut could split the secret.
    log(scrub_tool_output("x" * (LINE_LIMIT - 20) + PASSWORD + "y" * 1000, [PASSWORD]))
    ours, tools = log.text().splitlines()
    assert len(ours) == LINE_LIMIT and " … " in ours and ours.endswith("y error")  # its head and its tail
    assert tools.endswith(WITHHELD) and "follow" not in tools  # no piece of it either


def test_lines_from_a_second_thread_are_all_kept() -> None:
    """A tool's stderr reader logs beside the run's own thread."""
    log = RunLog()
    writers = [threading.Thread(target=lambda n=n: [log(f"{n}-{i}") for i in range(200)]) for n in range(4)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert log.version == 800
    lines = log.text().splitlines()
    assert len(lines) == HEAD_LINES + 1 + TAIL_LINES
    assert lines[HEAD_LINES] == f"… {800 - HEAD_LINES - TAIL_LINES} lines omitted …"


# ---------------------------------------------------------------- persisted while running


class GrowingLog:
    """A FollowedLog whose lines the test adds."""

    def __init__(self) -> None:
        self.log = RunLog()

    @property
    def version(self) -> int:
        return self.log.version

    def snapshot(self) -> tuple[int, str]:
        return self.log.snapshot()


@pytest.mark.django_db(transaction=True)  # the heartbeat thread has its own connection
def test_the_heartbeat_writes_the_log_only_when_it_changed(schedule, monkeypatch) -> None:
    monkeypatch.setattr(heartbeat, "LOG_SECONDS", 0.02)
    writes: list[str] = []
    real_beat = beat

    def counting_beat(code: str, log: str | None = None) -> bool:
        if log is not None:
            writes.append(log)
        return real_beat(code, log=log)

    monkeypatch.setattr(heartbeat, "beat", counting_beat)
    run = run_now(schedule, actor=None)
    claim(str(run.code), datetime.now(UTC))
    followed = GrowingLog()
    with heartbeat.heartbeat(str(run.code), followed):
        followed.log("dumping database shop")
        wait_for(lambda: "dumping database shop" in stored_log(run))
        settled = len(writes)
        time.sleep(0.3)  # many ticks with nothing new: no write
        assert len(writes) == settled
        followed.log("12.3 MB written")
        wait_for(lambda: "12.3 MB written" in stored_log(run))
    assert len(writes) == settled + 1
    assert stored_log(run).splitlines()[0].endswith("dumping database shop")


def test_a_beat_leaves_a_finished_runs_log_alone(schedule) -> None:
    run = run_now(schedule, actor=None)
    claim(str(run.code), datetime.now(UTC))
    assert beat(str(run.code), log="so far\n")
    assert stored_log(run) == "so far\n"
    assert finish(run, RunStatus.SUCCEEDED, "the whole log\n")
    assert not beat(str(run.code), log="so far\n")  # a late tick
    assert stored_log(run) == "the whole log\n"


def test_a_backup_logs_how_far_it_has_written(schedule, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "PROGRESS_LOG_SECONDS", 0)
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    run.refresh_from_db()
    assert "“Shop”: 0.0 MB written so far (compressed)." in run.log


# ---------------------------------------------------------------- pg_dump's own lines


def test_pg_dump_lines_naming_tables_do_not_decide_the_error_code() -> None:
    stderr = (
        'pg_dump: dumping contents of table "public.ssl_keys"\n'
        'pg_dump: dumping contents of table "public.permission denied log"\n'
        'pg_dump: error: Dumping the contents of table "orders" failed: PQgetResult() failed.\n'
    )
    assert _dump_error(stderr)[0] == ErrorCode.UNKNOWN


def test_pg_dump_errors_are_still_read() -> None:
    stderr = (
        "pg_dump: reading extensions\n"
        'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: Connection refused\n'
    )
    assert _dump_error(stderr)[0] == ErrorCode.CONNECTION_FAILED


def postgres_source(tenant, database: str) -> BackupSource:  # type: ignore[no-untyped-def]
    source = BackupSource(
        tenant=tenant,
        name="Shop PG",
        kind=SourceKind.POSTGRES,
        host=PG_HOST,
        port=PG_PORT,
        username="postgres",
        database=database,
        tls_mode="disable",
    )
    source.set_password(PASSWORD)
    source.save()
    return source


@contextmanager
def locked_database() -> Iterator[tuple[str, Callable[[], None]]]:
    """A database whose table another session holds locked: pg_dump waits on it,
    having said on stderr what it did so far, until release() is called."""
    require_postgres()
    with pg_database("bt_follow") as name:
        pg_execute("CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 1000)", name)
        with pg_connect(name) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")

            def release() -> None:
                if locker.info.transaction_status.name != "IDLE":
                    locker.execute("ROLLBACK")

            try:
                yield name, release
            finally:
                release()


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_a_running_pg_dump_shows_its_lines_in_the_stored_log_before_it_ends(tenant, monkeypatch) -> None:
    monkeypatch.setattr(heartbeat, "LOG_SECONDS", 0.05)
    with locked_database() as (database, release):
        _follow_a_blocked_dump(tenant, database, release)


def _follow_a_blocked_dump(tenant, database: str, release: Callable[[], None]) -> None:  # type: ignore[no-untyped-def]
    schedule = make_schedule(tenant, postgres_source(tenant, database), name="Shop PG nightly")
    run = run_now(schedule, actor=None)
    results: list[str] = []

    def work() -> None:
        try:
            results.append(execute_run(str(run.code)))
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        so_far = wait_for(lambda: "pg_dump: reading user-defined tables" in (log := stored_log(run)) and log)
        assert BackupScheduleRun.objects.get(pk=run.pk).status == RunStatus.RUNNING  # still waiting on the lock
        assert f"pg_dump of “{database}”" in so_far
        assert "stored" not in so_far and PASSWORD not in so_far
    finally:
        release()
        worker.join(timeout=120)
    assert results == ["succeeded"]
    run.refresh_from_db()
    assert 'dumping contents of table "public.orders"' in run.log
    assert run.log.index("reading user-defined tables") < run.log.index("stored")
