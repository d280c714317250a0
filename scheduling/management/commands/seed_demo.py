"""Seed the demo tenant "Acme". Safe to run again: it changes nothing that exists."""

from __future__ import annotations

import secrets
import sqlite3
from datetime import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from backups.models import BackupSource, SourceKind
from scheduling.models import BackupSchedule, ScheduleKind
from scheduling.services import save_schedule
from tenants.models import Membership, Role, Tenant

DEMO_USERS = [("alice", Role.OWNER), ("mia", Role.MANAGER), ("bob", Role.OPERATOR), ("rita", Role.READONLY)]
DEMO_SCHEDULES: list[dict[str, Any]] = [
    {"name": "Shop DB every 2 minutes", "kind": ScheduleKind.CRON, "cron": "*/2 * * * *", "keep_last": 5},
    {"name": "Shop DB nightly", "kind": ScheduleKind.DAILY, "time_of_day": time(2, 30), "timezone": "Europe/Berlin"},
    {
        "name": "Shop DB weekly",
        "kind": ScheduleKind.WEEKLY,
        "time_of_day": time(3, 0),
        "weekdays": [0, 3],
        "timezone": "America/New_York",
        "keep_last": 4,
    },
    {"name": "Shop DB every 6 hours", "kind": ScheduleKind.EVERY_N_HOURS, "every_hours": 6, "timezone": "Asia/Tokyo"},
]
# A schedule covering two sources: each run makes one set with one item per source.
DEMO_BUNDLE: dict[str, Any] = {
    "name": "Shop DB and documents hourly",
    "kind": ScheduleKind.CRON,
    "cron": "0 * * * *",
    "timezone": "Europe/Berlin",
    "keep_last": 3,
    "keep_daily": 7,
}


def credentials_file() -> Path:
    return Path(settings.VAR_DIR) / "demo-credentials.txt"


def make_demo_folder(path: Path) -> None:
    """A small folder of documents (created once; never overwritten)."""
    (path / "invoices").mkdir(parents=True, exist_ok=True)
    files = {
        "README.txt": "Acme's shared documents (demo).\n",
        "invoices/2026-10.csv": "customer,total\n" + "".join(f"{i},{i * 17 % 900}.00\n" for i in range(1, 120)),
        "invoices/2026-11.csv": "customer,total\n" + "".join(f"{i},{i * 29 % 900}.00\n" for i in range(1, 150)),
    }
    for name, text in files.items():
        if not (path / name).exists():
            (path / name).write_text(text)


def make_demo_database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),"
            " total_cents INTEGER NOT NULL, placed_at TEXT NOT NULL)"
        )
        if db.execute("SELECT count(*) FROM customers").fetchone()[0] == 0:
            db.executemany(
                "INSERT INTO customers (name, email) VALUES (?, ?)",
                [(f"Customer {i}", f"customer{i}@example.com") for i in range(1, 201)],
            )
            db.executemany(
                "INSERT INTO orders (customer_id, total_cents, placed_at) VALUES (?, ?, datetime('now', ?))",
                [(1 + i % 200, 500 + (i * 37) % 20000, f"-{i} minutes") for i in range(2000)],
            )


class Command(BaseCommand):
    help = "Create the demo tenant Acme with one user per role, a SQLite and a folder source and a few schedules."

    def handle(self, *args: Any, **options: Any) -> None:
        passwords = self._load_passwords()
        with transaction.atomic():
            tenant, _ = Tenant.objects.get_or_create(name="Acme")
            demo_root = Path(settings.SOURCE_ROOTS[0]) / "acme"
            demo_root.mkdir(parents=True, exist_ok=True)
            if str(demo_root) not in tenant.file_roots:
                tenant.file_roots = [*tenant.file_roots, str(demo_root)]
                tenant.save(update_fields=["file_roots"])
            User = get_user_model()
            for username, role in DEMO_USERS:
                user = User.objects.filter(username=username).first()
                if user is None:
                    passwords[username] = passwords.get(username) or secrets.token_urlsafe(9)
                    user = User.objects.create_user(username, f"{username}@acme.example", passwords[username])
                Membership.objects.get_or_create(user=user, tenant=tenant, defaults={"role": role})
            db_path = demo_root / "acme-shop.sqlite3"
            make_demo_database(db_path)
            source, _ = BackupSource.objects.get_or_create(
                tenant=tenant, name="Shop database", defaults={"kind": SourceKind.SQLITE, "path": str(db_path)}
            )
            if source.path != str(db_path):  # seeded before tenants had their own roots
                source.path = str(db_path)
                source.save(update_fields=["path"])
            make_demo_folder(demo_root / "documents")
            folder, _ = BackupSource.objects.get_or_create(
                tenant=tenant,
                name="Documents folder",
                defaults={"kind": SourceKind.DIRECTORY, "path": str(demo_root / "documents")},
            )
            plans = [(spec, [source]) for spec in DEMO_SCHEDULES] + [(DEMO_BUNDLE, [source, folder])]
            for spec, sources in plans:
                if not BackupSchedule.objects.filter(tenant=tenant, name=spec["name"]).exists():
                    schedule = BackupSchedule(tenant=tenant, **spec)
                    schedule.full_clean()
                    save_schedule(schedule, None, actor=None, sources=sources)
        self._save_passwords(passwords)
        self.stdout.write(f"Demo tenant “{tenant.name}” is ready. Log in at http://127.0.0.1:8000/ as:")
        for username, role in DEMO_USERS:
            shown = passwords.get(username, "(set before this machine's credentials file; unchanged)")
            self.stdout.write(f"  {username:<6} {role.label:<10} password: {shown}")

    def _load_passwords(self) -> dict[str, str]:
        path = credentials_file()
        if not path.exists():
            return {}
        pairs = (line.split(" ", 1) for line in path.read_text().splitlines() if " " in line)
        return {name: secret for name, secret in pairs}

    def _save_passwords(self, passwords: dict[str, str]) -> None:
        path = credentials_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        path.write_text("".join(f"{name} {secret}\n" for name, secret in passwords.items()))
