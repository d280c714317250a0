#!/usr/bin/env python
"""Benchmark: recovery from faults caused for real, against the bounds of docs/performance.md.

Loopback only. Each profile gets databases of its own (embedded: a SQLite file in a temporary
folder and the ORM broker; production: a scratch PostgreSQL database and a redis-server of its
own on a spare port), a PostgreSQL source database it fills and drops, and `manage.py
runcluster` nodes started each in a session of their own so that a whole node can be signalled.

The source is slow on demand: the bench holds an ACCESS EXCLUSIVE lock on its table, so a
backup's pg_dump waits (the run is running, its temporary file exists) until the bench lets it go.

Faults, each measured from the database and the backups folder:

  worker-kill   SIGKILL the worker process (the parent of the run's pg_dump) mid-backup, --trials
                times, on a schedule every 3 minutes: time until the run has a final status, its
                temporary file, slots skipped after it, notifications sent.
  lost-task     a cluster with one busy worker takes the next run's task and is SIGKILLed; a new
                cluster starts: time until that run is executed, tasks pushed per run.
  broker-outage production only: its redis-server is SIGKILLed for 90 s under an every-minute
                schedule: time from the restart until the runs of the outage are executed, tasks
                pushed per run, time until /healthz says something is wrong.
  db-drop       production only (a SQLite file has no connection to drop): pg_terminate_backend of
                the worker's connections mid-backup: time to a final status, stored files no set
                names, the source lease, the temporary file.
  sigterm       SIGTERM to a node's process group while a backup runs (--sigterm-trials times;
                half the backups could finish within the grace, half could not): time until
                runcluster exits against SHUTDOWN_GRACE_SECONDS, how the backups ended, partial files.
  clock         production only (SQLite's clock is its node's own): a node under libfaketime
                (-600 s, then +600 s) beside a node on the real clock: live runs failed as
                WORKER_LOST, doubled sets, future slots recorded missed.

With no arguments both profiles run side by side (their databases, brokers and nodes are
separate) and the exit status is 1 if a bound is missed. The last line prints the worst figure of
each fault against its target:

    faults: worker-kill final 95s/120s ... | lost-task executed 61s/120s ... | ... => all bounds held

    .venv/bin/python bench/faults.py
    .venv/bin/python bench/faults.py --profile embedded --only worker-kill --trials 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
PROFILES = ("embedded", "production")
FAULTS = ("worker-kill", "lost-task", "broker-outage", "db-drop", "sigterm", "clock")
FIGURES_MARK = "FAULTS-FIGURES "
# The grace the bench asks its nodes for; what they use is read back from their settings.
GRACE_ASKED = 10
# runcluster may take this long past its grace to let its processes go.
EXIT_MARGIN = 5
BOUND_SECONDS = 120
OUTAGE_SECONDS = 90
CLOCK_HOLD_SECONDS = 100
ROWS = 20_000  # rows of the source table: its dump takes about a second once let go


# ---------------------------------------------------------------- figures, targets, summary


@dataclass
class Figure:
    """One measured value against its bound. value None: not measured (timed out), worse than any."""

    profile: str
    fault: str
    name: str
    value: float | None
    target: float | None  # None: shown, not a bound
    at_least: bool = False  # the value must be >= target (notifications), else <=
    unit: str = ""
    note: str = ""
    limit: float | None = None  # what "timed out" means: waited this long

    @property
    def ok(self) -> bool:
        if self.target is None:
            return True
        if self.value is None:
            return False
        return self.value >= self.target if self.at_least else self.value <= self.target

    def shown(self) -> str:
        if self.value is None:
            return f">{self.limit:.0f}{self.unit}" if self.limit is not None else "none"
        return f"{self.value:.0f}{self.unit}" if self.value == int(self.value) else f"{self.value:.1f}{self.unit}"


def badness(figure: Figure) -> float:
    """Orders figures of one kind from best to worst."""
    if figure.value is None:
        return math.inf
    return -figure.value if figure.at_least else figure.value


def worst_per_fault(figures: list[Figure]) -> dict[str, dict[str, Figure]]:
    """For each fault (in FAULTS order) and each figure name, its worst measurement over all
    trials and profiles. A measurement with a bound beats a note (a figure without one)."""
    result: dict[str, dict[str, Figure]] = {}
    for figure in figures:
        names = result.setdefault(figure.fault, {})
        held = names.get(figure.name)
        if held is None or (held.target is None) != (figure.target is None):
            if held is None or figure.target is not None:
                names[figure.name] = figure
        elif badness(figure) > badness(held):
            names[figure.name] = figure
    order = [*FAULTS, *sorted(set(result) - set(FAULTS))]
    return {fault: result[fault] for fault in order if fault in result}


def summary_line(figures: list[Figure], failures: list[str] | None = None) -> str:
    parts = []
    for fault, names in worst_per_fault(figures).items():
        shown = []
        for name, figure in names.items():
            if figure.target is None and figure.value is None:
                shown.append(f"n/a on {figure.profile}")
                continue
            target = (
                "" if figure.target is None else f"/{'>=' if figure.at_least else ''}{figure.target:g}{figure.unit}"
            )
            mark = "" if figure.ok else " MISSED"
            where = f" ({figure.profile})" if not figure.ok else ""
            shown.append(f"{name} {figure.shown()}{target}{mark}{where}")
        parts.append(f"{fault} " + ", ".join(shown))
    missed = [f for f in figures if not f.ok]
    verdict = "all bounds held" if not missed and not failures else f"{len(missed)} figures missed their bound"
    if failures:
        verdict += "; " + "; ".join(failures)
    return "faults: " + " | ".join(parts) + f" => {verdict}"


def exit_status(figures: list[Figure], failures: list[str]) -> int:
    return 1 if failures or any(not f.ok for f in figures) or not figures else 0


# ---------------------------------------------------------------- processes and ports


def spare_port() -> int:
    """A TCP port on loopback nobody listens on now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Node:
    """A process started in its own session, so the group can be signalled and cleaned up."""

    live: list[Node] = []

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, name: str) -> None:
        self.name = name
        self.log = log
        self.started = time.monotonic()
        with open(log, "ab") as out:
            self.popen = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.popen.pid
        Node.live.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal_group(self, signum: int) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def wait(self, timeout: float) -> bool:
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def stop(self, signum: int = signal.SIGINT, timeout: float = 60) -> None:
        """Ask the node to stop; SIGKILL its whole group if it has not within `timeout`."""
        if self.alive():
            self.signal_group(signum)
            if not self.wait(timeout):
                self.signal_group(signal.SIGKILL)
                self.wait(10)
        self.kill_group()

    def kill_group(self) -> None:
        """Whatever is left of its group (workers the main process left behind)."""
        self.signal_group(signal.SIGKILL)
        if self.popen.poll() is None:
            self.wait(10)
        if self in Node.live:
            Node.live.remove(self)

    def tail(self, size: int = 2500) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return ""


def kill_all_nodes() -> None:
    for node in list(Node.live):
        node.kill_group()


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, session id) of a process, from /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), int(fields[3])


def dump_workers(database: str, session: int) -> list[int]:
    """Worker processes of the node whose session is `session` running a pg_dump of `database`:
    the parents of those pg_dumps (which run in sessions of their own)."""
    workers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "pg_dump":
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PGDATABASE={database}".encode() not in environ:
            continue
        stat = _proc_stat(int(entry.name))
        parent = _proc_stat(stat[0]) if stat else None
        if stat and parent and parent[1] == session:
            workers.append(stat[0])
    return workers


def local_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets process `pid` holds (its database connections among them)."""
    inodes = set()
    with suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                columns = line.split()
                if columns[9] in inodes:
                    ports.add(int(columns[1].rsplit(":", 1)[1], 16))
    return ports


def wait_for(check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """check() until it returns something true, at most `timeout` seconds; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(every)


# ---------------------------------------------------------------- a profile's world


@dataclass
class World:
    profile: str
    scratch: Path
    env: dict[str, str]
    server: str  # the PostgreSQL server URL (maintenance database)
    source_db: str
    app_db: str | None = None  # production: the scratch application database
    redis_port: int | None = None
    redis: Node | None = None
    owner: Any = None
    tenant: Any = None
    lock: Any = None  # the psycopg connection holding the source table's lock
    figures: list[Figure] = field(default_factory=list)
    monitor: RedisPushes | None = None
    counter: int = 0

    @property
    def backups_dir(self) -> Path:
        return self.scratch / "backups"

    def log(self, name: str) -> Path:
        self.counter += 1
        return self.scratch / f"{self.counter:02d}-{name}.log"

    def figure(self, fault: str, name: str, value: float | None, target: float | None, **extra: Any) -> None:
        self.figures.append(Figure(self.profile, fault, name, value, target, **extra))

    def node(self, name: str, workers: int = 2, clock: str | None = None, **env: str) -> Node:
        argv = [sys.executable, "manage.py", "runcluster"]
        if clock:
            argv = ["faketime", "-f", clock, *argv]
        full = {**self.env, "Q_WORKERS": str(workers), **env}
        if clock:
            full.update(faketime_env(self.scratch / "faketime-site"))
        return Node(argv, full, self.log(name), name)

    # The source's slowness, on demand.
    def hold(self) -> None:
        import psycopg

        if self.lock is not None:
            return
        conn = psycopg.connect(self._source_url())
        deadline = time.monotonic() + 60
        while True:
            try:
                conn.execute("SET lock_timeout = '2s'")
                conn.execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
                break
            except psycopg.errors.LockNotAvailable:
                conn.rollback()  # a dump let go a moment ago is still reading: wait for it
                if time.monotonic() > deadline:
                    conn.close()
                    raise
        self.lock = conn

    def let_go(self) -> None:
        if self.lock is not None:
            with suppress(Exception):
                self.lock.rollback()
                self.lock.close()
            self.lock = None

    def _source_url(self) -> str:
        return self.server.rsplit("/", 1)[0] + "/" + self.source_db

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.signal_group(signal.SIGKILL)
            self.redis.wait(10)
            self.redis.kill_group()
            self.redis = None

    def start_redis(self) -> None:
        assert self.redis_port is not None
        argv = [
            "redis-server",
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.redis = Node(argv, dict(os.environ), self.log("redis"), "redis")
        import redis

        client = redis.Redis(port=self.redis_port, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        if not wait_for(answers, 20, 0.1):
            raise SystemExit(f"redis-server on port {self.redis_port} did not start:\n{self.redis.tail()}")


# ---------------------------------------------------------------- setting up (before django.setup)


def create_source(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(server.rsplit("/", 1)[0] + "/" + name, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id integer PRIMARY KEY, label text NOT NULL)")
        conn.execute(f"INSERT INTO items SELECT i, md5(i::text) FROM generate_series(1, {ROWS}) AS i")


def drop_database(server: str, name: str) -> None:
    import psycopg

    with suppress(psycopg.Error), psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def profile_env(world: World) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL", "TEST_DATABASE_NAME")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        VAR_DIR=str(world.scratch / "var"),
        BACKUPS_DIR=str(world.backups_dir),
        SOURCE_ROOTS=str(world.scratch / "sources"),
        ALLOWED_HOSTS="testserver,127.0.0.1",
        Q_CLUSTER_NAME=f"faults-{world.profile}-{os.getpid()}",
        TENANT_MAX_RUNNING="0",
        SHUTDOWN_GRACE_SECONDS=str(GRACE_ASKED),
        EMAIL_BACKEND="django.core.mail.backends.dummy.EmailBackend",
        LOG_LEVEL="INFO",
        PYTHONUNBUFFERED="1",
    )
    if world.app_db:
        env["DATABASE_URL"] = world.server.rsplit("/", 1)[0] + "/" + world.app_db
    else:
        env["DATABASE_URL"] = f"sqlite:///{world.scratch / 'faults.sqlite3'}"
    if world.redis_port:
        env["REDIS_URL"] = f"redis://127.0.0.1:{world.redis_port}/0"
    return env


# ---------------------------------------------------------------- the product's side (after django.setup)


def build_tenant(world: World) -> None:
    from django.contrib.auth.models import User

    from tenants.models import Membership, Role, Tenant

    world.tenant = Tenant.objects.create(name=f"Faults {world.profile}")
    world.owner = User.objects.create_user(f"faults-owner-{world.profile}", "owner@example.org", None)
    Membership.objects.create(user=world.owner, tenant=world.tenant, role=Role.OWNER)


def make_schedule(world: World, name: str, cron: str | None = None) -> Any:
    """A schedule of its own source (a source row of its own: leases are per source) of the
    bench's database. No cron: daily at an hour far from now, so only Run now starts it."""
    from backups.models import BackupSource
    from scheduling.models import BackupSchedule
    from scheduling.services import save_schedule

    source = BackupSource.objects.create(
        tenant=world.tenant, name=name, kind="postgres", host="127.0.0.1", port=5432,
        database=world.source_db, username="postgres",
    )  # fmt: skip
    if cron:
        schedule = BackupSchedule(tenant=world.tenant, name=name, kind="cron", cron=cron, timezone="UTC")
    else:
        far = (datetime.now(UTC) + timedelta(hours=12)).time().replace(second=0, microsecond=0)
        schedule = BackupSchedule(tenant=world.tenant, name=name, kind="daily", time_of_day=far, timezone="UTC")
    schedule.max_attempts = 1  # a failure ends its run's story: no automatic retry to follow
    schedule.time_limit_minutes = 60
    return save_schedule(schedule, None, actor=None, sources=[source])


def disable(schedule: Any) -> None:
    """No more slots of `schedule`, and its runs still queued canceled: a fault's leftover
    run (a slot due as its trial ended) must not take the next fault's worker."""
    from django.utils import timezone

    from scheduling.models import BackupSchedule, BackupScheduleRun, RunStatus

    BackupSchedule.objects.filter(pk=schedule.pk).update(enabled=False, next_run_at=None)
    BackupScheduleRun.objects.filter(schedule=schedule, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELED, finished_at=timezone.now()
    )


def run_now(world: World, schedule: Any) -> Any:
    from scheduling.runs import run_now as press

    return press(schedule, world.owner)


def fresh(run: Any) -> Any:
    from django.db import close_old_connections

    close_old_connections()
    return type(run).objects.get(pk=run.pk)


def is_final(status: str) -> bool:
    from scheduling.models import ACTIVE_STATUSES

    return status not in ACTIVE_STATUSES


def interrupted(run: Any) -> bool:
    """Ended as interrupted, however the product words it (a status or an error code)."""
    return "interrupt" in f"{run.status} {run.error_code}".lower()


def worker_lost_code() -> str:
    from backups.errors import ErrorCode

    return str(ErrorCode.WORKER_LOST)


def partial_files(world: World, run: Any) -> list[Path]:
    """Temporary files naming the run (their names hold its storage key, which holds its code)."""
    if not world.backups_dir.is_dir():
        return []
    return [p for p in world.backups_dir.rglob(".tmp-*") if str(run.code) in p.name]


def stored_without_set(world: World, run: Any) -> list[str]:
    """Stored files of the run (their keys hold its code) that no backup item names."""
    from backups.models import BackupItem

    if not world.backups_dir.is_dir():
        return []
    keys = set(BackupItem.objects.values_list("storage_key", flat=True))
    found = []
    for path in world.backups_dir.rglob("*"):
        if path.is_file() and not path.name.startswith(".tmp-") and str(run.code) in path.name:
            key = path.relative_to(world.backups_dir).as_posix()
            if key not in keys:
                found.append(key)
    return found


def failure_notices(run: Any) -> int:
    from scheduling.models import Notification, NotificationKind

    return Notification.objects.filter(run_id=run.pk, kind=NotificationKind.RUN_FAILED).count()


def healthz_ok() -> bool:
    from django.test import Client

    return Client().get("/healthz").status_code == 200


def setting(name: str, default: Any) -> Any:
    from django.conf import settings

    return getattr(settings, name, default)


def code_hex(code: Any) -> str:
    return str(code).replace("-", "").lower()


class RedisPushes:
    """Counts the tasks pushed to the profile's Redis list, per run, with MONITOR."""

    def __init__(self, port: int, list_key: str) -> None:
        self.port = port
        self.list_key = list_key
        self.counts: Counter[str] = Counter()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="redis-monitor", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        import redis
        from django_q.signing import SignedPackage

        while not self.stopped.is_set():
            try:
                client = redis.Redis(port=self.port, socket_connect_timeout=1)
                with client.monitor() as monitor:
                    for event in monitor.listen():
                        if self.stopped.is_set():
                            return
                        words = str(event.get("command", "")).split()
                        if len(words) > 2 and words[0].upper() == "RPUSH" and words[1] == self.list_key:
                            for package in words[2:]:
                                with suppress(Exception):
                                    task = SignedPackage.loads(package)
                                    self.counts[code_hex(task["args"][0])] += 1
            except Exception:
                time.sleep(0.5)  # the server is down (an outage we caused): watch again once it is back

    def stop(self) -> None:
        self.stopped.set()


def install_push_trigger() -> None:
    """ORM broker: every task row inserted is copied aside, so pushes can be counted after the
    queue row is gone (a worker deletes it once done). A table of the bench's own database."""
    from django.db import connection
    from django_q.models import OrmQ

    table = connection.ops.quote_name(OrmQ._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE faults_pushes (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")
        cursor.execute(
            f"CREATE TRIGGER faults_push AFTER INSERT ON {table} BEGIN "
            "INSERT INTO faults_pushes (payload) VALUES (NEW.payload); END"
        )


def pushes(world: World) -> Counter[str]:
    """Tasks pushed so far, per run (hex code)."""
    if world.monitor is not None:
        return Counter(world.monitor.counts)
    from django.db import connection
    from django_q.signing import SignedPackage

    counts: Counter[str] = Counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT payload FROM faults_pushes")
        for (payload,) in cursor.fetchall():
            with suppress(Exception):
                counts[code_hex(SignedPackage.loads(payload)["args"][0])] += 1
    return counts


def mid_backup(world: World, run: Any, node: Node) -> list[int]:
    """The run is running on `node`, its pg_dump waits on the lock and its temporary file exists:
    the worker's pid(s), else []."""
    current = fresh(run)
    if current.status != "running" or not partial_files(world, current):
        return []
    return dump_workers(world.source_db, node.pid)


def wait_mid_backup(world: World, run: Any, node: Node, timeout: float = 90) -> int:
    workers = wait_for(lambda: mid_backup(world, run, node), timeout)
    if not workers:
        raise TrialFailed(f"run {run.code} did not get going on {node.name} ({fresh(run).status}):\n{node.tail()}")
    return int(workers[0])


def wait_final(run: Any, timeout: float) -> tuple[Any, float | None]:
    """(the run, seconds until it had a final status or None if it had none within timeout)."""
    started = time.monotonic()
    done = wait_for(lambda: is_final(fresh(run).status), timeout, 1.0)
    return fresh(run), (time.monotonic() - started) if done else None


class TrialFailed(Exception):
    """The trial could not cause its fault (a setup step failed): reported, not a figure."""


# ---------------------------------------------------------------- the faults


def fault_worker_kill(world: World, trials: int) -> None:
    """SIGKILL the worker mid-backup; the schedule runs every 3 minutes from the next minute."""
    from scheduling.models import BackupScheduleRun, RunStatus

    fault = "worker-kill"
    first = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    phase = first.minute % 3
    schedule = make_schedule(world, "worker-kill", cron=f"{phase}-59/3 * * * *" if phase else "*/3 * * * *")
    node = world.node("worker-kill")
    slot_after: datetime | None = None
    try:
        for trial in range(trials):
            world.hold()

            def next_victim(after: datetime | None = slot_after) -> Any:
                runs = BackupScheduleRun.objects.filter(schedule=schedule).exclude(status=RunStatus.SKIPPED)
                if after is not None:
                    runs = runs.filter(slot__gt=after)
                return runs.order_by("slot").first()

            victim = wait_for(next_victim, 240, 1.0)
            if victim is None:
                raise TrialFailed(f"no slot of the worker-kill schedule ran within 240 s:\n{node.tail()}")
            pid = wait_mid_backup(world, victim, node)
            os.kill(pid, signal.SIGKILL)
            killed_at = datetime.now(UTC)
            world.let_go()  # the orphaned pg_dump may end (on a broken pipe)
            run, seconds = wait_final(victim, 420)
            time.sleep(10)  # what the ending does next (notify, remove the file) may follow it by a moment
            run = fresh(run)
            left = partial_files(world, run)
            told = failure_notices(run)
            world.figure(fault, "final", seconds, BOUND_SECONDS, unit="s", limit=420)
            world.figure(fault, "partial files", len(left), 0)
            world.figure(fault, "notified", told, 1, at_least=True)
            # The slots after it: skipped until one runs (bounded: if none runs, say how many were skipped).
            if trial + 1 < trials:
                world.hold()  # before the next slot: it is the next trial's run
            assert victim.slot is not None
            after_victim = BackupScheduleRun.objects.filter(schedule=schedule, slot__gt=victim.slot)
            later = wait_for(after_victim.exclude(status=RunStatus.SKIPPED).exists, 420, 1.0)
            skipped = after_victim.filter(status=RunStatus.SKIPPED).count()
            world.figure(fault, "slots skipped", skipped, 0, note="" if later else "no later slot ran")
            print(
                f"   trial {trial + 1}: killed worker {pid} at {killed_at:%H:%M:%S}; run {run.status}"
                f" {run.error_code or ''} after {_s(seconds)}; partial files {len(left)}; notified {told};"
                f" slots skipped {skipped}",
                flush=True,
            )
            slot_after = victim.slot
    finally:
        world.let_go()
        disable(schedule)
        node.stop()


def fault_lost_task(world: World) -> None:
    """A node whose one worker is busy takes the next task and is SIGKILLed holding it."""
    from django.utils import timezone
    from django_q.models import OrmQ

    fault = "lost-task"
    busy_schedule = make_schedule(world, "lost-task busy")
    lost_schedule = make_schedule(world, "lost-task taken")
    before = pushes(world)
    node = world.node("lost-task-1", workers=1)
    second: Node | None = None
    try:
        world.hold()
        busy = run_now(world, busy_schedule)
        wait_mid_backup(world, busy, node)
        lost = run_now(world, lost_schedule)
        cluster = world.env["Q_CLUSTER_NAME"]

        def taken() -> bool:
            if world.monitor is not None:
                import redis

                return (
                    redis.Redis(port=world.redis_port or 0).llen(f"django_q:{cluster}:q") == 0
                    and pushes(world)[code_hex(lost.code)] > before[code_hex(lost.code)]
                )
            # The ORM broker's row of a task waiting to be taken is locked until now; a taken one past it.
            return (
                OrmQ.objects.filter(key=cluster).exists()
                and not OrmQ.objects.filter(key=cluster, lock__lte=timezone.now()).exists()
            )

        if not wait_for(taken, 30):
            raise TrialFailed("the node did not take the second task off the queue")
        time.sleep(1)  # on the worker's internal queue, behind the busy backup
        node.signal_group(signal.SIGKILL)
        node.wait(10)
        node.kill_group()
        world.let_go()
        if fresh(lost).status != "queued":
            raise TrialFailed(f"the taken run was {fresh(lost).status}, not queued, when its node was killed")
        second = world.node("lost-task-2")
        restarted = time.monotonic()
        claimed = wait_for(lambda: fresh(lost).status != "queued", 300, 1.0)
        seconds = time.monotonic() - restarted if claimed else None
        run, _ = wait_final(lost, 60)
        counts = pushes(world)
        taken_pushes = counts[code_hex(lost.code)] - before[code_hex(lost.code)]
        busy_pushes = counts[code_hex(busy.code)] - before[code_hex(busy.code)]
        # Needed: the taken run's first push and one after it was lost; the busy run's one.
        redundant = max(0, taken_pushes - 2) + max(0, busy_pushes - 1)
        world.figure(fault, "executed", seconds, BOUND_SECONDS, unit="s", limit=300)
        world.figure(fault, "redundant tasks", redundant, 0)
        print(
            f"   the taken run was executed {_s(seconds)} after a new node started ({run.status});"
            f" tasks pushed: taken run {taken_pushes}, busy run {busy_pushes}",
            flush=True,
        )
    finally:
        world.let_go()
        for each in (node, second):
            if each is not None:
                each.stop()
        disable(busy_schedule)
        disable(lost_schedule)


def fault_broker_outage(world: World) -> None:
    from scheduling.models import BackupScheduleRun, RunStatus

    fault = "broker-outage"
    if world.redis_port is None:
        world.figure(fault, "executed", None, None, note="the ORM broker is the database: see lost-task")
        print("   not applicable: the embedded profile's broker is its database (lost-task covers it)")
        return
    schedule = make_schedule(world, "broker-outage", cron="* * * * *")
    node = world.node("broker-outage")
    try:
        warm = wait_for(
            lambda: BackupScheduleRun.objects.filter(schedule=schedule, status=RunStatus.SUCCEEDED).exists(), 150, 1.0
        )
        if not warm:
            raise TrialFailed(f"no slot of the every-minute schedule succeeded within 150 s:\n{node.tail()}")
        before = pushes(world)
        world.stop_redis()
        down_at = datetime.now(UTC)
        down = time.monotonic()
        unhealthy: float | None = None

        def watch_health() -> None:
            nonlocal unhealthy
            if unhealthy is None and not healthz_ok():
                unhealthy = time.monotonic() - down

        while time.monotonic() - down < OUTAGE_SECONDS:
            watch_health()
            time.sleep(2)
        world.start_redis()
        up_at = datetime.now(UTC)
        up = time.monotonic()
        made = BackupScheduleRun.objects.filter(schedule=schedule, created_at__gte=down_at, created_at__lte=up_at)
        outage_runs = list(made.exclude(status__in=(RunStatus.SKIPPED, RunStatus.MISSED)))
        claimed_after: dict[int, float] = {}

        def all_claimed() -> bool:
            watch_health()
            for run in outage_runs:
                if run.pk not in claimed_after and fresh(run).status not in ("queued",):
                    claimed_after[run.pk] = time.monotonic() - up
            return len(claimed_after) == len(outage_runs)

        done = wait_for(all_claimed, 300, 1.0)
        # Health is watched for at least BOUND_SECONDS after the outage began.
        while unhealthy is None and time.monotonic() - down < BOUND_SECONDS + 5:
            watch_health()
            time.sleep(2)
        worst = max(claimed_after.values()) if done and claimed_after else (None if outage_runs else 0.0)
        time.sleep(5)
        counts = pushes(world)
        runs = BackupScheduleRun.objects.filter(schedule=schedule, created_at__gte=down_at)
        redundant = sum(max(0, counts[code_hex(r.code)] - before[code_hex(r.code)] - 1) for r in runs)
        skipped = runs.filter(status=RunStatus.SKIPPED).count()
        world.figure(fault, "executed", worst, BOUND_SECONDS, unit="s", limit=300)
        world.figure(fault, "redundant tasks", redundant, 0)
        world.figure(fault, "health", unhealthy, BOUND_SECONDS, unit="s", limit=round(time.monotonic() - down))
        world.figure(fault, "slots skipped", skipped, None)
        print(
            f"   {len(outage_runs)} runs made during the {OUTAGE_SECONDS}s outage, executed at worst {_s(worst)} after"
            f" the broker came back; /healthz unhealthy after {_s(unhealthy)}; redundant tasks {redundant};"
            f" slots skipped since the outage began {skipped}",
            flush=True,
        )
    finally:
        if world.redis is None:
            world.start_redis()
        disable(schedule)
        node.stop()


def fault_db_drop(world: World) -> None:
    from django.db import connection

    from scheduling.models import SourceLease

    fault = "db-drop"
    if connection.vendor != "postgresql":
        world.figure(fault, "final", None, None, note="SQLite: a file, no connection to drop")
        print("   not applicable on SQLite: the database is a file, there is no connection to drop")
        return
    schedule = make_schedule(world, "db-drop")
    node = world.node("db-drop", workers=1)
    try:
        world.hold()
        run = run_now(world, schedule)
        pid = wait_mid_backup(world, run, node)
        ports = sorted(local_ports(pid))
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database()"
                " AND client_port = ANY(%s) AND pid <> pg_backend_pid()",
                [ports],
            )
            dropped = len(cursor.fetchall())
        time.sleep(2)
        world.let_go()
        run, seconds = wait_final(run, 420)
        time.sleep(10)
        run = fresh(run)
        orphans = stored_without_set(world, run)
        held = SourceLease.objects.filter(run_id=run.pk).count()
        left = partial_files(world, run)
        ended_well = run.backup_set_id is not None or run.status == "failed"
        world.figure(fault, "final", seconds, BOUND_SECONDS, unit="s", limit=420)
        world.figure(fault, "set or failed", 1 if ended_well else 0, 1, at_least=True)
        world.figure(fault, "stored files without a set", len(orphans), 0)
        world.figure(fault, "leases held", held, 0)
        world.figure(fault, "partial files", len(left), 0)
        if run.status == "failed":
            world.figure(fault, "notified", failure_notices(run), 1, at_least=True)
        print(
            f"   dropped {dropped} connections of worker {pid}; run {run.status} {run.error_code or ''} after"
            f" {_s(seconds)}, set {'recorded' if run.backup_set_id else 'none'}; stored files without a set"
            f" {len(orphans)}; leases held {held}; partial files {len(left)}",
            flush=True,
        )
    finally:
        world.let_go()
        disable(schedule)
        node.stop()


def fault_sigterm(world: World, trials: int) -> None:
    """SIGTERM a node's process group mid-backup. Odd trials: the source is let go a second
    after the signal (the backup can finish in the grace); even ones: it is held past it."""
    fault = "sigterm"
    # The nodes' settings are this process's: the same environment.
    grace = float(setting("SHUTDOWN_GRACE_SECONDS", GRACE_ASKED))
    limit = grace + EXIT_MARGIN + 30
    times: list[float | None] = []
    bad_endings = 0
    partial = 0
    for trial in range(trials):
        can_finish = trial % 2 == 0
        schedule = make_schedule(world, f"sigterm {trial + 1}")
        node = world.node(f"sigterm-{trial + 1}", workers=1)
        try:
            world.hold()
            run = run_now(world, schedule)
            wait_mid_backup(world, run, node, timeout=120)
            node.signal_group(signal.SIGTERM)
            signalled = time.monotonic()
            if can_finish:
                time.sleep(1)
                world.let_go()
            exited = node.wait(limit)
            seconds = time.monotonic() - signalled if exited else None
            world.let_go()
            node.stop(signal.SIGKILL, 5)
            run, _ = wait_final(run, 10)
            ended = run.status in ("succeeded", "partial") or interrupted(run)
            left = partial_files(world, run)
            times.append(seconds)
            bad_endings += 0 if ended else 1
            partial += len(left)
            print(
                f"   trial {trial + 1} ({'could finish' if can_finish else 'held past the grace'}): runcluster"
                f" exited after {_s(seconds)}; run {run.status} {run.error_code or ''}; partial files {len(left)}",
                flush=True,
            )
        except TrialFailed as exc:
            times.append(None)
            bad_endings += 1
            print(f"   trial {trial + 1}: {exc}", flush=True)
        finally:
            world.let_go()
            node.stop(signal.SIGKILL, 5)
            disable(schedule)
    within = sum(1 for t in times if t is not None and t <= grace + EXIT_MARGIN)
    worst = None if any(t is None for t in times) else max(times, default=0.0)  # type: ignore[type-var]
    world.figure(fault, "exit", worst, grace + EXIT_MARGIN, unit="s", limit=limit, note=f"grace {grace:g}s")
    world.figure(fault, "exits within grace", within, trials, at_least=True, note=f"of {trials}")
    world.figure(fault, "backups not ended", bad_endings, 0)
    world.figure(fault, "partial files", partial, 0)


def fault_clock(world: World) -> None:
    from django.db import connection

    from backups.models import BackupSet
    from scheduling.models import BackupScheduleRun, RunStatus

    fault = "clock"
    if connection.vendor != "postgresql":
        world.figure(fault, "live runs lost", None, None, note="SQLite: its clock is its node's own")
        print("   not applicable on SQLite: nodes of one SQLite file share a machine, and its clock")
        return
    if not shutil.which("faketime"):
        world.figure(fault, "live runs lost", None, None, note="faketime is not installed")
        print("   cannot run: faketime is not installed (apt-get install -y faketime)")
        return
    for offset in ("-600s", "+600s"):
        if not faketime_sleeps(offset):
            # Debian 12's libfaketime 0.9.10 fails clock_nanosleep (EINVAL) under positive offsets:
            # no Python process can sleep there, so no node can run. Said, and counted as not caused.
            raise TrialFailed(f"under faketime -f {offset} a Python sleep fails on this machine (libfaketime)")
        schedule = make_schedule(world, f"clock {offset}", cron="* * * * *")
        started_at = datetime.now(UTC)
        skewed_first = offset.startswith("-")  # the skewed node runs the backup; else it judges it
        nodes: list[Node] = []
        try:
            world.hold()
            first = world.node(f"clock{offset}-a", workers=1, clock=offset if skewed_first else None)
            nodes.append(first)
            run = run_now(world, schedule)
            wait_mid_backup(world, run, first, timeout=120)
            nodes.append(world.node(f"clock{offset}-b", workers=1, clock=None if skewed_first else offset))
            concurrent: set[int] = set()
            future_missed: set[int] = set()
            lost_while_live: set[int] = set()
            hold_until = time.monotonic() + CLOCK_HOLD_SECONDS
            while time.monotonic() < hold_until:
                now = datetime.now(UTC)
                for pk, status, slot, error in BackupScheduleRun.objects.filter(schedule=schedule).values_list(
                    "pk", "status", "slot", "error_code"
                ):
                    if status == RunStatus.RUNNING and pk != run.pk:
                        concurrent.add(pk)
                    if status == RunStatus.MISSED and slot is not None and slot > now:
                        future_missed.add(pk)
                    if error == worker_lost_code():
                        lost_while_live.add(pk)  # no worker is killed in this trial: every one was live
                time.sleep(1)
            disable(schedule)
            world.let_go()
            active = BackupScheduleRun.objects.filter(schedule=schedule, status__in=("queued", "running"))
            wait_for(lambda: not active.exists(), 60, 1.0)  # noqa: B023 (called here, in this iteration)
            sets = BackupSet.objects.filter(series=schedule.code, created_at__gte=started_at - timedelta(minutes=15))
            doubled = max(0, sets.count() - 1)
            lost_now = BackupScheduleRun.objects.filter(schedule=schedule, error_code=worker_lost_code())
            lost = len(lost_while_live | set(lost_now.values_list("pk", flat=True)))
            world.figure(fault, "live runs lost", lost, 0, note=offset)
            world.figure(fault, "doubled sets", doubled, 0, note=offset)
            world.figure(fault, "future slots missed", len(future_missed), 0, note=offset)
            print(
                f"   {offset}: live runs failed as WORKER_LOST {lost}; sets {sets.count()} (runs seen running beside"
                f" the first: {len(concurrent)}); future slots recorded missed {len(future_missed)}",
                flush=True,
            )
        finally:
            world.let_go()
            disable(schedule)
            for node in nodes:
                node.stop()


# Debian 12's libfaketime 0.9.10 breaks clock_nanosleep's absolute deadline (time.sleep
# fails with EINVAL) when the monotonic clock is left real, and with it faked threading
# waits hang. A skewed node keeps the monotonic clock real and sleeps on an Event (a
# condition wait on the monotonic clock): only its wall clock is off, as on a real node.
SLEEP_WITHOUT_CLOCK_NANOSLEEP = """
import threading
import time


def _sleep(seconds):
    if seconds < 0:
        raise ValueError("sleep length must be non-negative")
    threading.Event().wait(seconds)


time.sleep = _sleep
"""


def faketime_env(site: Path) -> dict[str, str]:
    """What a process under faketime needs here (see SLEEP_WITHOUT_CLOCK_NANOSLEEP)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "sitecustomize.py").write_text(SLEEP_WITHOUT_CLOCK_NANOSLEEP)
    return {
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
    }


def faketime_sleeps(offset: str) -> bool:
    """Whether a Python process can sleep under this offset (a node cannot run otherwise)."""
    probe = [sys.executable, "-c", "import time; time.sleep(0.01)"]
    env = {**os.environ, **faketime_env(Path(tempfile.gettempdir()) / "faults-faketime-site")}
    try:
        return (
            subprocess.run(["faketime", "-f", offset, *probe], env=env, capture_output=True, timeout=30).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _s(seconds: float | None) -> str:
    return "never (timed out)" if seconds is None else f"{seconds:.0f}s"


# ---------------------------------------------------------------- one profile (a child process)


def run_profile(profile: str, args: argparse.Namespace) -> None:
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-faults-{profile}-"))
    world = World(profile, scratch, {}, args.postgres, f"faults_src_{profile[:4]}_{os.getpid()}")
    if profile == "production":
        world.app_db = f"faults_bench_{os.getpid()}"
        world.redis_port = spare_port()
    failures: list[str] = []

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    signal.signal(signal.SIGTERM, stop)
    try:
        import psycopg

        (scratch / "sources").mkdir()
        create_source(args.postgres, world.source_db)
        if world.app_db:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {world.app_db}")
            world.start_redis()
        world.env = profile_env(world)
        os.environ.clear()
        os.environ.update(world.env)
        migrated = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=world.env,
            capture_output=True,
            text=True,
        )
        if migrated.returncode:
            raise SystemExit(f"migrate failed:\n{migrated.stdout[-2000:]}{migrated.stderr[-2000:]}")
        import django

        django.setup()
        from django.db import connection

        build_tenant(world)
        if world.redis_port:
            world.monitor = RedisPushes(world.redis_port, f"django_q:{world.env['Q_CLUSTER_NAME']}:q")
        else:
            install_push_trigger()
        print(
            f"profile {profile}: {connection.vendor}, broker"
            f" {'redis :' + str(world.redis_port) if world.redis_port else 'ORM'};"
            f" load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; scratch {scratch}",
            flush=True,
        )
        plan: list[tuple[str, Callable[[], None]]] = [
            ("worker-kill", lambda: fault_worker_kill(world, args.trials)),
            ("lost-task", lambda: fault_lost_task(world)),
            ("broker-outage", lambda: fault_broker_outage(world)),
            ("db-drop", lambda: fault_db_drop(world)),
            ("sigterm", lambda: fault_sigterm(world, args.sigterm_trials)),
            ("clock", lambda: fault_clock(world)),
        ]
        for name, measure in plan:
            if args.only and name not in args.only:
                continue
            began = time.monotonic()
            print(f"-- {name} ({datetime.now(UTC):%H:%M:%S} UTC)", flush=True)
            try:
                measure()
            except TrialFailed as exc:
                failures.append(f"{profile} {name}: {exc}".splitlines()[0])
                print(f"   could not cause the fault: {exc}", flush=True)
            print(f"   ({time.monotonic() - began:.0f}s)", flush=True)
    except BaseException as exc:
        failures.append(f"{profile}: {type(exc).__name__}: {exc}".splitlines()[0])
        print(f"profile {profile} stopped: {exc!r}", flush=True)
    finally:
        world.let_go()
        if world.monitor is not None:
            world.monitor.stop()
        kill_all_nodes()
        with suppress(Exception):
            from django.db import connections

            connections.close_all()
        drop_database(args.postgres, world.source_db)
        if world.app_db:
            drop_database(args.postgres, world.app_db)
        world.stop_redis()
        kill_all_nodes()
        if args.keep:
            print(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(FIGURES_MARK + json.dumps({"figures": [asdict(f) for f in world.figures], "failures": failures}), flush=True)


# ---------------------------------------------------------------- the parent


def child_argv(profile: str, args: argparse.Namespace) -> list[str]:
    argv = [sys.executable, __file__, "--child", profile, "--trials", str(args.trials)]
    argv += ["--sigterm-trials", str(args.sigterm_trials), "--postgres", args.postgres]
    for name in args.only or []:
        argv += ["--only", name]
    return argv + (["--keep"] if args.keep else [])


def read_figures(output: str, profile: str) -> tuple[list[Figure], list[str]]:
    for line in reversed(output.splitlines()):
        if line.startswith(FIGURES_MARK):
            data = json.loads(line[len(FIGURES_MARK) :])
            return [Figure(**f) for f in data["figures"]], list(data["failures"])
    return [], [f"{profile}: the profile's process ended without figures"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--profile", choices=PROFILES, action="append", help="one profile (default: both, side by side)"
    )
    parser.add_argument("--trials", type=int, default=2, help="worker-kill trials per profile (1..20)")
    parser.add_argument("--sigterm-trials", type=int, default=20, help="sigterm trials per profile (2..50)")
    parser.add_argument("--only", choices=FAULTS, action="append", help="only this fault (repeatable)")
    parser.add_argument(
        "--postgres", default=DEFAULT_POSTGRES, help="loopback PostgreSQL server (source and databases)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folders (node logs)")
    parser.add_argument("--child", choices=PROFILES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not 1 <= args.trials <= 20:
        parser.error("--trials takes 1 to 20")
    if not 2 <= args.sigterm_trials <= 50:
        parser.error("--sigterm-trials takes 2 to 50")
    if args.child:
        run_profile(args.child, args)
        return
    missing = [tool for tool in ("pg_dump", "redis-server") if not shutil.which(tool)]
    if missing:
        sys.exit(f"bench/faults.py needs {', '.join(missing)} on PATH")
    if not shutil.which("faketime"):
        print("faketime is not installed (apt-get install -y faketime): the clock fault will say it cannot run")
    profiles = args.profile or list(PROFILES)
    started = time.monotonic()

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the profiles are stopped and clean up

    signal.signal(signal.SIGTERM, interrupt)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as outputs:
        children = []
        for profile in profiles:
            out = open(Path(outputs) / f"{profile}.out", "w+")  # noqa: SIM115 (closed below)
            children.append(
                (profile, out, subprocess.Popen(child_argv(profile, args), stdout=out, stderr=subprocess.STDOUT))
            )
        try:
            for _, _, child in children:
                child.wait()
        except KeyboardInterrupt:
            for _, _, child in children:  # they clean up after themselves on SIGTERM
                with suppress(ProcessLookupError):
                    child.terminate()
            for _, _, child in children:
                child.wait(timeout=180)
        figures: list[Figure] = []
        failures: list[str] = []
        for profile, out, _ in children:
            out.seek(0)
            output = out.read()
            out.close()
            print(f"== {profile}")
            print("\n".join(line for line in output.splitlines() if not line.startswith(FIGURES_MARK)))
            got, failed = read_figures(output, profile)
            figures += got
            failures += failed
    print(f"({time.monotonic() - started:.0f}s in all)")
    print(summary_line(figures, failures))
    sys.exit(exit_status(figures, failures))


if __name__ == "__main__":
    main()
