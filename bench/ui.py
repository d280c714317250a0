#!/usr/bin/env python
"""Benchmark: the runs and schedules pages at 10,000 and at 1,000,000 runs, and Run now -> running.

Builds a fresh database (SQLite in a temporary file, or with --postgres URL a scratch
database created on that server and dropped afterwards) holding --tenants tenants with
schedules, sources, runs and some backup sets, with set-based INSERT ... SELECT
statements (not the ORM row by row). The measured tenant is a big one: it holds
--measured-share of all runs (10% by default: 1,000 of 10,000, 100,000 of 1,000,000);
the others share the rest evenly.

At each size it requests, through Django's test client as an owner of that tenant:
the runs page (plain, filtered by status, filtered and sorted) and the schedules page,
--requests times each, and reports p50 / p95 and the number of SQL statements of one
request. A page whose p95 is over the 50 ms target gets its slowest statement and the
database's query plan printed.

Then it starts `manage.py runcluster` against the same database, lets it warm up with
one run, and times Run now (the service, as the view calls it) until the worker has
claimed the run (status running), --run-now-repeats times; the median is reported.

The last line sums it up:
    ui: runs p95 12.3ms/14.1ms (10k/1M x1.15), queries 6/6; ... run-now->running 0.42s

where x1.15 is the large size's p95 over the small size's, measured in the same run.

    .venv/bin/python bench/ui.py
    .venv/bin/python bench/ui.py --runs 200000 --tenants 200
    .venv/bin/python bench/ui.py --postgres postgres://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import atexit
import base64
import json
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SMALL = 10_000
SCHEDULES_PER_TENANT = 20
# Every SET_EVERY-th run that succeeded left a backup set; half of those were pruned since.
SET_EVERY = 20
CHUNK = 200_000  # runs per INSERT statement
TARGET_MS = 50.0
LOG = (
    "06:00:00 Run started (Scheduled, attempt 1).\n06:00:00 Source “db” (SQLite database file).\n06:00:01 Succeeded.\n"
)
# The failed runs' error columns (4% of the runs).
FAILED = "CASE WHEN i % 100 < 4 THEN {} ELSE '' END"


# ---------------------------------------------------------------- SQL building


def literal(value: Any) -> str:
    """A SQL literal for a value we made ourselves (numbers, our own strings)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | dict):
        value = json.dumps(value)
    if isinstance(value, datetime):
        value = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    text = str(value).replace("'", "''")
    return f"'{text}'"


class Sql:
    """The few places where SQLite and PostgreSQL differ."""

    def __init__(self, vendor: str) -> None:
        self.pg = vendor == "postgresql"

    def numbers(self, start: int, stop: int) -> tuple[str, str]:
        """(prefix, FROM clause) giving column `i` = start .. stop - 1."""
        if self.pg:
            return "", f"generate_series({start}, {stop - 1}) AS n(i)"
        return f"WITH RECURSIVE n(i) AS (SELECT {start} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {stop}) ", "n"

    def uuid(self) -> str:
        return "gen_random_uuid()" if self.pg else "lower(hex(randomblob(16)))"

    def at(self, base: datetime, seconds_expr: str) -> str:
        if self.pg:
            return f"({literal(base)}::timestamptz + ({seconds_expr}) * interval '1 second')"
        return f"datetime({literal(base)}, '+' || ({seconds_expr}) || ' seconds')"

    def typed(self, value: Any, db_type: str) -> str:
        return f"CAST({literal(value)} AS {db_type})" if self.pg else literal(value)

    def ts(self, value: datetime) -> str:
        return self.typed(value, "timestamptz")


def insert_select(model: Any, given: dict[str, str], from_clause: str, prefix: str = "", where: str = "") -> int:
    """INSERT INTO model's table SELECT the `given` expressions FROM ...; every column not
    given gets its field's default (or NULL), so a field added later needs no change here."""
    from django.db import connection
    from django.db.models import NOT_PROVIDED

    sql = Sql(connection.vendor)
    columns, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        if field.column in given:
            values.append(given[field.column])
        elif field.null:
            values.append("NULL")
        else:
            # Django's own default: the field's default, its database default, or "" for text.
            value = field.db_default if field.db_default is not NOT_PROVIDED else field.get_default()
            if value is None:
                raise SystemExit(f"bench/ui.py does not know what to put in {model.__name__}.{field.name}")
            if field.get_internal_type() != "JSONField":  # JSON: literal() writes the text itself
                value = field.get_db_prep_save(value, connection)
            values.append(sql.typed(value, field.db_type(connection)))
    statement = (
        f"{prefix}INSERT INTO {connection.ops.quote_name(model._meta.db_table)} ({', '.join(columns)}) "
        f"SELECT {', '.join(values)} FROM {from_clause}{f' WHERE {where}' if where else ''}"
    )
    with connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.rowcount


def id_range(model: Any) -> tuple[int, int]:
    from django.db.models import Max, Min

    bounds = model.objects.aggregate(low=Min("id"), high=Max("id"))
    return bounds["low"], bounds["high"]


# ---------------------------------------------------------------- the data


@dataclass
class World:
    tenants: int
    tenant0: int  # id of the measured tenant; the others follow it
    source0: int
    schedule0: int
    every: int  # one run in `every` belongs to the measured tenant
    base: datetime


def build_world(tenants: int, measured_share: float, sources_dir: Path) -> tuple[World, Any, Any]:
    """Tenants, one source each, SCHEDULES_PER_TENANT schedules each, the measured owner,
    and the schedule Run now is timed on (a real SQLite file)."""
    from django.contrib.auth.models import User
    from django.db import connection, transaction

    from backups.models import BackupSource
    from scheduling.models import BackupSchedule, ScheduleSource
    from scheduling.services import save_schedule
    from tenants.models import Membership, Role, Tenant

    sql = Sql(connection.vendor)
    now = datetime.now(UTC).replace(microsecond=0)
    base = now - timedelta(days=400)
    with transaction.atomic():
        prefix, numbers = sql.numbers(0, tenants)
        insert_select(
            Tenant,
            {
                "code": sql.uuid(),
                "name": "'tenant ' || i",
                "file_roots": sql.typed([], "jsonb"),
                "created_at": sql.ts(now),
            },
            numbers,
            prefix,
        )
        tenant0, high = id_range(Tenant)
        assert high - tenant0 + 1 == tenants, "tenant ids are not contiguous"
        insert_select(
            BackupSource,
            {
                "code": sql.uuid(),
                "tenant_id": f"{tenant0} + i",
                "name": "'db'",
                "kind": "'sqlite'",
                "path": "'/srv/tenant-' || i || '/db.sqlite3'",
                "created_at": sql.ts(now),
                "updated_at": sql.ts(now),
            },
            numbers,
            prefix,
        )
        source0, _ = id_range(BackupSource)
        prefix, numbers = sql.numbers(0, tenants * SCHEDULES_PER_TENANT)
        kinds = "CASE i % 4 WHEN 0 THEN 'daily' WHEN 1 THEN 'weekly' WHEN 2 THEN 'cron' ELSE 'every_n_hours' END"
        insert_select(
            BackupSchedule,
            {
                "code": sql.uuid(),
                "tenant_id": f"{tenant0} + i / {SCHEDULES_PER_TENANT}",
                "name": f"'schedule ' || (i % {SCHEDULES_PER_TENANT})",
                "kind": kinds,
                "time_of_day": sql.typed("02:30:00", "time"),
                "weekdays": sql.typed([0, 3], "jsonb"),
                "cron": "'30 2 * * 1-5'",
                "every_hours": "6",
                "timezone": "'Europe/Berlin'",
                # Tomorrow: the benchmark's own cluster must not start 20,000 backups.
                "next_run_at": sql.at(now, "86400 + i * 60"),
                "last_run_at": sql.ts(now - timedelta(hours=3)),
                "last_status": "'succeeded'",
                "created_at": sql.ts(base),
                "updated_at": sql.ts(base),
            },
            numbers,
            prefix,
        )
        schedule0, _ = id_range(BackupSchedule)
        insert_select(
            ScheduleSource,
            {"schedule_id": "s.id", "source_id": f"{source0} + (s.tenant_id - {tenant0})"},
            f"{connection.ops.quote_name(BackupSchedule._meta.db_table)} s",
        )

        tenant = Tenant.objects.get(pk=tenant0)
        tenant.name = "Measured tenant"
        tenant.file_roots = [str(sources_dir)]
        tenant.save(update_fields=["name", "file_roots"])
        owner = User.objects.create_user("bench-owner", "owner@example.org", secrets.token_hex(16))
        Membership.objects.create(user=owner, tenant=tenant, role=Role.OWNER)
        path = sources_dir / "shop.sqlite3"
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT NOT NULL)")
            db.executemany("INSERT INTO items (label) VALUES (?)", [(f"item {i}",) for i in range(1000)])
        db.close()
        shop = BackupSource.objects.create(tenant=tenant, name="Shop", path=str(path))
        target = save_schedule(
            BackupSchedule(tenant=tenant, name="Run-now target", enabled=False), None, actor=None, sources=[shop]
        )
    every = max(1, round(1 / measured_share)) if measured_share > 0 else 0
    world = World(tenants, tenant0, source0, schedule0, every, base)
    return world, owner, target


def add_runs(world: World, start: int, stop: int) -> None:
    """Runs number start .. stop - 1, a set-based INSERT per CHUNK, and their backup sets."""
    from django.db import connection, transaction

    from backups.models import BackupItem, BackupSet
    from scheduling.models import BackupSchedule, BackupScheduleRun

    sql = Sql(connection.vendor)
    t, s = world.tenants, SCHEDULES_PER_TENANT
    if world.every and t > 1:
        tenant_index = f"(CASE WHEN i % {world.every} = 0 THEN 0 ELSE 1 + i % {t - 1} END)"
    else:
        tenant_index = f"(i % {t})"
    status = (
        "CASE WHEN i % 100 < 4 THEN 'failed' WHEN i % 100 = 4 THEN 'partial' WHEN i % 100 = 5 THEN 'missed'"
        " WHEN i % 100 = 6 THEN 'skipped' WHEN i % 100 = 7 THEN 'canceled' ELSE 'succeeded' END"
    )
    trigger = "CASE WHEN i % 100 = 8 THEN 'manual' WHEN i % 100 = 9 THEN 'retry' ELSE 'scheduled' END"
    created = sql.at(world.base, "i * 30")
    finished = sql.at(world.base, "i * 30 + 20")
    runs_table = connection.ops.quote_name(BackupScheduleRun._meta.db_table)
    sets_table = connection.ops.quote_name(BackupSet._meta.db_table)
    schedules_table = connection.ops.quote_name(BackupSchedule._meta.db_table)
    for low in range(start, stop, CHUNK):
        high = min(stop, low + CHUNK)
        with transaction.atomic():
            _, before = id_range(BackupScheduleRun)
            prefix, numbers = sql.numbers(low, high)
            insert_select(
                BackupScheduleRun,
                {
                    "code": sql.uuid(),
                    "tenant_id": f"{world.tenant0} + {tenant_index}",
                    "schedule_id": f"{world.schedule0} + {tenant_index} * {s} + (i / {t}) % {s}",
                    "slot": f"CASE WHEN i % 100 IN (8, 9) THEN NULL ELSE {created} END",
                    "trigger": trigger,
                    "status": status,
                    "operation": "'backup'",
                    "bytes_written": "1000 + i % 5000",
                    "attempt": "CASE WHEN i % 100 = 9 THEN 2 ELSE 1 END",
                    "missed_count": "CASE WHEN i % 100 = 5 THEN 1 ELSE 0 END",
                    "error_code": FAILED.format("'TIMEOUT'"),
                    "error_message": FAILED.format("'The dump took longer than the time limit.'"),
                    "created_at": created,
                    "enqueued_at": created,
                    "started_at": f"CASE WHEN i % 100 IN (5, 6, 7) THEN NULL ELSE {created} END",
                    "finished_at": f"CASE WHEN i % 100 IN (5, 6, 7) THEN NULL ELSE {finished} END",
                    "log": literal(LOG),
                },
                numbers,
                prefix,
            )
            first = (before or 0) + 1
            # A set takes its run's code (codes are unique per table), so the runs can
            # then point at the sets they made through the unique index on the code.
            insert_select(
                BackupSet,
                {
                    "code": "r.code",
                    "tenant_id": "r.tenant_id",
                    "series": f"(SELECT s.code FROM {schedules_table} s WHERE s.id = r.schedule_id)",
                    "status": "'complete'",
                    "size": "r.bytes_written",
                    "source_size": "r.bytes_written * 4",
                    "created_at": "r.finished_at",
                    "deleted_at": f"CASE WHEN r.id % {2 * SET_EVERY} = 0 THEN r.finished_at ELSE NULL END",
                },
                f"{runs_table} r",
                where=f"r.id >= {first} AND r.id % {SET_EVERY} = 0 AND r.status = 'succeeded'",
            )
            made = f"r.id >= {first} AND r.id % {SET_EVERY} = 0 AND r.status = 'succeeded'"
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {runs_table} SET backup_set_id = (SELECT b.id FROM {sets_table} b WHERE b.code = "
                    f"{runs_table}.code) WHERE {made.replace('r.', runs_table + '.')}"
                )
            insert_select(
                BackupItem,
                {
                    "code": sql.uuid(),
                    "backup_set_id": "b.id",
                    "source_id": f"{world.source0} + (b.tenant_id - {world.tenant0})",
                    "kind": "'sqlite'",
                    "label": "'db'",
                    "status": "'ok'",
                    "storage_key": "b.code || '/0.sqlite3.zst'" if not sql.pg else "b.code::text || '/0.sqlite3.zst'",
                    "size": "b.size",
                    "source_size": "b.source_size",
                    "sha256": "'" + "ab" * 32 + "'",
                    "started_at": "b.created_at",
                    "finished_at": "b.created_at",
                },
                f"{sets_table} b JOIN {runs_table} r ON r.backup_set_id = b.id",
                where=f"r.id >= {first}",
            )
    if sql.pg:
        # What autovacuum does to an insert-only table soon after: statistics, and the
        # visibility map that lets a count read the index alone.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM ANALYZE")


# ---------------------------------------------------------------- measuring


@dataclass
class Figures:
    p50: float
    p95: float
    cpu_p95: float  # this process's CPU time: less at the mercy of a busy machine than the wall clock
    queries: int
    sql_ms: float  # all statements of one request
    slowest: str
    slowest_ms: float


def measure(client: Any, url: str, repeats: int) -> Figures:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):  # warm: caches, the first connection, template loading
        response = client.get(url)
        if response.status_code != 200:
            raise SystemExit(f"{url} answered {response.status_code}")
    times, cpu_times = [], []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        cpu_times.append((time.process_time() - cpu_started) * 1000)
    with CaptureQueriesContext(connection) as captured:
        client.get(url)
    slowest = max(captured.captured_queries, key=lambda q: float(q["time"]))
    cuts = statistics.quantiles(times, n=20, method="inclusive")
    return Figures(
        p50=statistics.median(times),
        p95=cuts[18],
        cpu_p95=statistics.quantiles(cpu_times, n=20, method="inclusive")[18],
        queries=len(captured.captured_queries),
        sql_ms=sum(float(q["time"]) for q in captured.captured_queries) * 1000,
        slowest=slowest["sql"],
        slowest_ms=float(slowest["time"]) * 1000,
    )


def profile(client: Any, url: str, requests: int = 10) -> str:
    """Where the time of a request goes when it is not the database: the top functions."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(requests):
        client.get(url)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(r"(scheduling|tenants|backups|template)", 14)
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((n for n, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join("    " + line for line in lines[start:])


def query_plan(statement: str) -> str:
    from django.db import connection

    prefix = "EXPLAIN ANALYZE " if connection.vendor == "postgresql" else "EXPLAIN QUERY PLAN "
    with connection.cursor() as cursor:
        cursor.execute(prefix + statement)
        return "\n".join("    " + " ".join(str(col) for col in row) for row in cursor.fetchall())


def run_now_to_running(owner: Any, target: Any, repeats: int, env: dict[str, str]) -> list[float]:
    """Seconds from pressing Run now (the service the view calls) until a worker of an
    idle cluster has claimed the run."""
    from scheduling.models import ACTIVE_STATUSES, BackupScheduleRun, RunStatus
    from scheduling.runs import run_now

    cluster = subprocess.Popen(
        [sys.executable, "manage.py", "runcluster"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    def wait(run: Any, until: tuple[str, ...] | None, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = BackupScheduleRun.objects.filter(pk=run.pk).values_list("status", flat=True).get()
            if (status in until) if until else (status not in ACTIVE_STATUSES):
                return status
            time.sleep(0.002)
        cluster.send_signal(signal.SIGINT)
        output = cluster.communicate(timeout=60)[0]
        raise SystemExit(f"run {run.code} still {status} after {timeout:.0f}s; cluster output:\n{output[-3000:]}")

    results = []
    try:
        # The first run also waits for the cluster to start: not counted.
        status = wait(run_now(target, owner), None, 180)
        if status != RunStatus.SUCCEEDED:
            raise SystemExit(f"the warm-up run ended {status}")
        for _ in range(repeats):
            time.sleep(0.5)  # idle again: the worker waits on the queue
            started = time.perf_counter()
            run = run_now(target, owner)
            wait(run, (RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.FAILED), 60)
            results.append(time.perf_counter() - started)
            wait(run, None, 120)
    finally:
        if cluster.poll() is None:
            cluster.send_signal(signal.SIGINT)
            try:
                cluster.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                cluster.kill()
    return results


# ---------------------------------------------------------------- main


def _drop_database(url: str, database: str) -> None:
    from django.db import connections

    connections.close_all()
    with psycopg.connect(url, autocommit=True) as server:
        server.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


def short(count: int) -> str:
    if count >= 1_000_000 and count % 1_000_000 == 0:
        return f"{count // 1_000_000}M"
    if count >= 1000 and count % 1000 == 0:
        return f"{count // 1000}k"
    return str(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs in all at the large size (10000..5000000)")
    parser.add_argument("--tenants", type=int, default=1000, help="tenants (1..100000)")
    parser.add_argument("--measured-share", type=float, default=0.1, help="share of the runs in the measured tenant")
    parser.add_argument("--requests", type=int, default=60, help="timed requests per page and size (20..10000)")
    parser.add_argument("--run-now-repeats", type=int, default=5, help="Run now presses to time (0 skips)")
    parser.add_argument(
        "--sorted-query", default="status=failed&sort=created_at", help="query string of the filtered, sorted page"
    )
    parser.add_argument("--profile", action="store_true", help="profile a page that is slow outside the database")
    parser.add_argument("--postgres", metavar="URL", help="use a scratch database on this PostgreSQL server")
    args = parser.parse_args()
    if not SMALL <= args.runs <= 5_000_000:
        parser.error(f"--runs takes {SMALL} to 5000000")
    if not 1 <= args.tenants <= 100_000:
        parser.error("--tenants takes 1 to 100000")
    if not 0 <= args.measured_share <= 1:
        parser.error("--measured-share takes 0 to 1")
    if not 20 <= args.requests <= 10_000:
        parser.error("--requests takes 20 to 10000")
    if not 0 <= args.run_now_repeats <= 100:
        parser.error("--run-now-repeats takes 0 to 100")

    scratch = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    atexit.register(shutil.rmtree, scratch, True)
    sources_dir = scratch / "sources"
    sources_dir.mkdir()
    if args.postgres:
        database = f"bench_ui_{os.getpid()}"
        try:
            with psycopg.connect(args.postgres, autocommit=True, connect_timeout=5) as server:
                server.execute(f"CREATE DATABASE {database}")
        except psycopg.Error as exc:
            print(f"bench/ui.py: cannot create a scratch database on {redacted(args.postgres)}: {exc}", file=sys.stderr)
            sys.exit(2)
        os.environ["DATABASE_URL"] = args.postgres.rsplit("/", 1)[0] + "/" + database
        atexit.register(_drop_database, args.postgres, database)
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch}/bench.sqlite3"
    os.environ.update(
        VAR_DIR=str(scratch),
        SOURCE_ROOTS=str(sources_dir),
        BACKUPS_DIR=str(scratch / "backups"),
        DEBUG="false",
        # Not setup_test_environment(): its instrumented template rendering copies the
        # context at every {% include %} and would be most of what is measured.
        ALLOWED_HOSTS="testserver",
        SECRET_KEY=secrets.token_urlsafe(40),
        # Production settings need a key for source passwords; the bench stores none.
        SOURCE_SECRET_KEYS=base64.urlsafe_b64encode(os.urandom(32)).decode(),
        LOG_LEVEL="WARNING",
        Q_CLUSTER_NAME=f"bench-ui-{os.getpid()}",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    os.environ.pop("REDIS_URL", None)  # the ORM broker, in the scratch database
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client

    from scheduling.models import BackupScheduleRun

    call_command("migrate", verbosity=0)
    print(
        f"database: {connection.vendor}, {args.tenants} tenants, {SCHEDULES_PER_TENANT} schedules each;"
        f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )

    started = time.perf_counter()
    world, owner, target = build_world(args.tenants, args.measured_share, sources_dir)
    client = Client()
    client.force_login(owner)
    tenant_code = target.tenant.code
    pages = {
        "runs": f"/t/{tenant_code}/runs/",
        "runs?status": f"/t/{tenant_code}/runs/?status=failed",
        "runs?status&sort": f"/t/{tenant_code}/runs/?{args.sorted_query}",
        "schedules": f"/t/{tenant_code}/schedules/",
    }
    sizes = [SMALL, args.runs] if args.runs > SMALL else [SMALL]
    results: dict[str, list[Figures]] = {name: [] for name in pages}
    done = 0
    for size in sizes:
        add_runs(world, done, size)
        done = size
        mine = BackupScheduleRun.objects.filter(tenant=target.tenant).count()
        print(
            f"-- {size:,} runs ({mine:,} in the measured tenant), built in {time.perf_counter() - started:.0f}s;"
            f" load average {os.getloadavg()[0]:.1f}"
        )
        for name, url in pages.items():
            figures = measure(client, url, args.requests)
            results[name].append(figures)
            print(
                f"   {name:<18} p50 {figures.p50:6.1f} ms  p95 {figures.p95:6.1f} ms (CPU {figures.cpu_p95:5.1f} ms)"
                f"  {figures.queries} queries"
                f" taking {figures.sql_ms:.0f} ms, the slowest {figures.slowest_ms:.0f} ms"
            )
            if figures.p95 > TARGET_MS and figures.slowest_ms >= TARGET_MS / 2:
                print(f"   over {TARGET_MS:.0f} ms; the slowest statement:\n    {figures.slowest}\n   its plan:")
                print(query_plan(figures.slowest))
            elif figures.p95 > TARGET_MS and args.profile:
                print(f"   over {TARGET_MS:.0f} ms, mostly outside the database; 10 requests profiled:")
                print(profile(client, url))

    run_now_figure = ""
    if args.run_now_repeats:
        env = {**os.environ, "Q_WORKERS": "1"}
        seconds = run_now_to_running(owner, target, args.run_now_repeats, env)
        print("-- Run now -> running: " + ", ".join(f"{s:.2f}s" for s in seconds))
        run_now_figure = f"; run-now->running {statistics.median(seconds):.2f}s (max {max(seconds):.2f}s)"

    labels = "/".join(short(size) for size in sizes)

    def summary(name: str) -> str:
        figures = results[name]
        p95 = "/".join(f"{f.p95:.1f}ms" for f in figures)
        queries = "/".join(str(f.queries) for f in figures)
        # The comparison within this run: how much the page slows from the small to the large size.
        growth = f" x{figures[-1].p95 / figures[0].p95:.2f}" if len(figures) > 1 else ""
        return f"{name} p95 {p95} ({labels}{growth}), queries {queries}"

    print("ui: " + "; ".join(summary(name) for name in pages) + run_now_figure)


if __name__ == "__main__":
    main()
