"""Shared fixtures, in Healthchecks' manner: Alice's tenant with one member per role,
and Charlie, who has a tenant of his own and "should have no access to Alice's stuff"."""

from __future__ import annotations

import sqlite3
from datetime import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from backups.models import BackupSource
from scheduling.models import BackupSchedule, ScheduleKind
from scheduling.services import save_schedule
from tenants.models import Membership, Role, Tenant

PASSWORD = "password-for-tests"


@pytest.fixture(autouse=True)
def _isolated_storage(settings, tmp_path: Path) -> None:
    settings.BACKUPS_DIR = tmp_path / "backups"
    settings.SOURCE_ROOTS = [(tmp_path / "sources").resolve()]
    (tmp_path / "sources").mkdir()


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """The cache is per process (locmem): what one test cached must not answer for the next.

    Pages show whether scheduled backups are starting (scheduling/health.py), from the
    cache. No cluster runs in most tests, so that answer starts as "fine" here; the tests
    of the health itself (tests/scheduling/test_health.py) clear it and see the real one."""
    from django.core.cache import cache

    from scheduling.health import CACHE_KEY, DispatcherHealth

    cache.clear()
    cache.set(CACHE_KEY, DispatcherHealth(True, "waiting", None, ""), 3600)


@pytest.fixture(autouse=True)
def _empty_queue() -> None:
    """The ORM broker's queue rolls back with each test; Redis keeps it, so empty it."""
    from django.conf import settings

    if "redis" in settings.Q_CLUSTER:
        from django_q.brokers import get_broker

        get_broker().purge_queue()


def make_user(username: str) -> User:
    return User.objects.create_user(username, f"{username}@example.org", PASSWORD)


@pytest.fixture
def tenant(db, settings) -> Tenant:
    return Tenant.objects.create(name="Alice & Co", file_roots=[str(settings.SOURCE_ROOTS[0])])


def member(tenant: Tenant, username: str, role: str) -> User:
    user = make_user(username)
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user


@pytest.fixture
def alice(tenant: Tenant) -> User:
    return member(tenant, "alice", Role.OWNER)


@pytest.fixture
def mia(tenant: Tenant) -> User:
    return member(tenant, "mia", Role.MANAGER)


@pytest.fixture
def bob(tenant: Tenant) -> User:
    return member(tenant, "bob", Role.OPERATOR)


@pytest.fixture
def rita(tenant: Tenant) -> User:
    return member(tenant, "rita", Role.READONLY)


@pytest.fixture
def charlie(db) -> User:
    user = make_user("charlie")
    own = Tenant.objects.create(name="Charlie's")
    Membership.objects.create(user=user, tenant=own, role=Role.OWNER)
    return user


def make_sqlite_database(path: Path, rows: int = 50) -> Path:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT NOT NULL)")
        db.executemany("INSERT INTO items (label) VALUES (?)", [(f"item {i}",) for i in range(rows)])
    return path


@pytest.fixture
def source(tenant: Tenant, settings) -> BackupSource:
    path = make_sqlite_database(settings.SOURCE_ROOTS[0] / "shop.sqlite3")
    return BackupSource.objects.create(tenant=tenant, name="Shop", path=str(path))


@pytest.fixture
def schedule(tenant: Tenant, source: BackupSource) -> BackupSchedule:
    item = BackupSchedule(
        tenant=tenant,
        name="Nightly",
        kind=ScheduleKind.DAILY,
        time_of_day=time(2, 30),
        timezone="Europe/Berlin",
        keep_last=3,
    )
    item.full_clean()
    return save_schedule(item, None, actor=None, sources=[source])
