#!/usr/bin/env python
"""Benchmark: one dispatcher pass over N due schedules vs django-q2's own scheduler.

Both run in this process on the same fresh SQLite database (or, with --postgres URL, a
scratch database created on that server and dropped afterwards), with the ORM broker:
ours creates N runs, N tasks and the audit entries and advances N schedules;
django-q2's scheduler() dispatches N due cron Schedule rows. The last line prints both
times, the ratio and the SQL statement counts.

    .venv/bin/python bench/dispatch.py --schedules 10000
    .venv/bin/python bench/dispatch.py --schedules 10000 --postgres postgres://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import atexit
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "America/Sao_Paulo",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Sydney",
    "Australia/Lord_Howe",
    "Pacific/Auckland",
    "Africa/Cairo",
    "America/Santiago",
    "Europe/Moscow",
    "Asia/Tehran",
]
CRONS = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "15 3 * * 1-5", "0 */6 * * *", "45 23 * * 0", "0 4 1 * *"]


def _drop_database(url: str, database: str) -> None:
    from django.db import connections

    connections.close_all()
    with psycopg.connect(url, autocommit=True) as server:
        server.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def counter(seen: list[str]):  # type: ignore[no-untyped-def]
    def count(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        seen.append(sql)
        return execute(sql, params, many, context)

    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedules", type=int, default=10_000, help="due schedules (1..100000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="passes to time (the median is reported)")
    parser.add_argument("--postgres", metavar="URL", help="run on a scratch database of this PostgreSQL server")
    args = parser.parse_args()
    if not 1 <= args.schedules <= 100_000:
        parser.error("--schedules takes 1 to 100000")

    scratch = tempfile.mkdtemp(prefix="bench-dispatch-")
    if args.postgres:
        database = f"bench_dispatch_{os.getpid()}"
        with psycopg.connect(args.postgres, autocommit=True) as server:
            server.execute(f"CREATE DATABASE {database}")
        os.environ["DATABASE_URL"] = args.postgres.rsplit("/", 1)[0] + "/" + database
        atexit.register(_drop_database, args.postgres, database)
    else:
        os.environ["DATABASE_URL"] = f"sqlite:///{scratch}/bench.sqlite3"
    os.environ["VAR_DIR"] = scratch
    os.environ.pop("REDIS_URL", None)
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from django.db.models import Count
    from django_q.brokers import get_broker
    from django_q.models import OrmQ, Schedule
    from django_q.scheduler import scheduler

    from backups.models import BackupSource
    from lib.slots import default_anchor
    from scheduling.dispatch import run_pass
    from scheduling.models import BackupSchedule, BackupScheduleRun, ScheduleKind, ScheduleSource
    from tenants.models import AuditLog, Tenant

    rng = random.Random(args.seed)
    now = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(seconds=1)
    tenants = Tenant.objects.bulk_create(Tenant(name=f"tenant {i}") for i in range(max(1, args.schedules // 100)))
    sources = BackupSource.objects.bulk_create(
        BackupSource(tenant=t, name="db", path=f"/srv/{t.pk}.sqlite3") for t in tenants
    )

    def make(i: int) -> BackupSchedule:
        tenant_index = i % len(tenants)
        kind = [ScheduleKind.DAILY, ScheduleKind.WEEKLY, ScheduleKind.CRON, ScheduleKind.EVERY_N_HOURS][i % 4]
        zone, at = rng.choice(ZONES), clock_time(rng.randrange(24), rng.choice([0, 15, 30, 45]))
        # As the app anchors them: the time of day on the (local) day the schedule was saved.
        saved = now - timedelta(days=rng.randrange(365))
        return BackupSchedule(
            tenant=tenants[tenant_index],
            name=f"schedule {i}",
            kind=kind,
            timezone=zone,
            time_of_day=at,
            weekdays=sorted(rng.sample(range(7), rng.randint(1, 3))),
            cron=rng.choice(CRONS),
            every_hours=rng.choice([1, 2, 4, 6, 8, 12, 24, 48]),
            anchor_at=default_anchor(at, zone, saved) if kind == ScheduleKind.EVERY_N_HOURS else None,
            next_run_at=now - timedelta(seconds=1),
        )

    made = BackupSchedule.objects.bulk_create((make(i) for i in range(args.schedules)), batch_size=2000)
    ScheduleSource.objects.bulk_create(
        (ScheduleSource(schedule=s, source=sources[i % len(tenants)]) for i, s in enumerate(made)), batch_size=2000
    )
    Schedule.objects.bulk_create(
        (
            Schedule(
                name=f"q2 {i}",
                func="math.floor",
                args="1",
                schedule_type=Schedule.CRON,
                cron="* * * * *",
                next_run=now - timedelta(seconds=1),
                repeats=-1,
            )
            for i in range(args.schedules)
        ),
        batch_size=2000,
    )

    # Statements are counted by a wrapper: CaptureQueriesContext would also render
    # every statement with its parameters (megabytes here) and skew the timing.
    ours_statements: list[str] = []
    timings = []
    for repetition in range(max(1, args.repeat)):
        if repetition:  # the same workload again: every schedule due, no runs, empty queue
            BackupScheduleRun.objects.all().delete()
            AuditLog.objects.all().delete()
            OrmQ.objects.all().delete()
            BackupSchedule.objects.update(next_run_at=now - timedelta(seconds=1))
        ours_statements.clear()
        with connection.execute_wrapper(counter(ours_statements)):
            started = time.perf_counter()
            report = run_pass(now)
            timings.append(time.perf_counter() - started)
        runs = BackupScheduleRun.objects.count()
        tasks_after_ours = OrmQ.objects.count()
        assert report.created == args.schedules == runs == tasks_after_ours, (report, runs, tasks_after_ours)
        assert not BackupSchedule.objects.filter(next_run_at__lte=now).exists()
    ours = statistics.median(timings)

    broker = get_broker()
    q2_statements: list[str] = []
    with connection.execute_wrapper(counter(q2_statements)):
        started = time.perf_counter()
        scheduler(broker=broker)
        theirs = time.perf_counter() - started
    q2_tasks = OrmQ.objects.count() - tasks_after_ours
    by_kind = dict(BackupSchedule.objects.values_list("kind").annotate(n=Count("id")).order_by())
    print(f"database: {connection.vendor}, schedules by kind: {by_kind}, zones: {len(ZONES)}")
    print(f"ours: {report.as_json()}")
    print(f"ours, each pass: {', '.join(f'{t:.3f} s' for t in timings)}")
    print(f"django-q2 scheduler: enqueued {q2_tasks} tasks")
    print(
        f"N={args.schedules}: ours {ours:.3f} s (median of {len(timings)}) ({len(ours_statements)} queries), "
        f"django-q2 scheduler {theirs:.3f} s ({len(q2_statements)} queries), ratio {theirs / ours:.1f}x faster"
    )


if __name__ == "__main__":
    main()
