"""Backups made by calling backups.pipeline directly: no schedule, no run.

The tests of the pipeline, verify, restore and deletion use these to show that the
backups app works on its own, given plain arguments (sources, a deadline, callbacks)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from backups import pipeline
from backups.models import BackupSet, BackupSource, SourceKind
from tenants.models import Tenant
from tests.conftest import make_sqlite_database

TIME_LIMIT_MINUTES = 5


def root() -> Path:
    """The tenant's file root (the test's own, see conftest)."""
    return Path(settings.SOURCE_ROOTS[0])


def sqlite_source(tenant: Tenant, name: str, rows: int = 20, file_name: str = "") -> BackupSource:
    """A SQLite source of `rows` rows; rows=0 leaves the file uncreated."""
    path = root() / (file_name or f"{name.lower()}.sqlite3")
    if rows:
        make_sqlite_database(path, rows)
    return BackupSource.objects.create(tenant=tenant, name=name, path=str(path))


def folder_source(tenant: Tenant, name: str = "Site") -> BackupSource:
    folder = root() / name.lower()
    (folder / "docs").mkdir(parents=True)
    (folder / "docs" / "readme.txt").write_text("hello\n")
    (folder / "log.txt").write_bytes(b"a line of log\n" * 5_000)
    return BackupSource.objects.create(tenant=tenant, name=name, kind=SourceKind.DIRECTORY, path=str(folder))


@dataclass
class Calls:
    """What the pipeline told its caller: log lines, progress, the sets adopted, the keys asked for."""

    lines: list[str] = field(default_factory=list)
    progress: list[int] = field(default_factory=list)
    adopted: list[BackupSet] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        self.lines.append(line)

    def key_for(self, index: int, suffix: str) -> str:
        key = f"tests/{uuid.uuid4().hex}-{index}{suffix}"
        self.keys.append(key)
        return key


def job_for(
    tenant: Tenant,
    calls: Calls,
    deadline: float | None = None,
    adopt: Callable[[BackupSet], None] | None = None,
) -> pipeline.BackupJob:
    return pipeline.BackupJob(
        tenant_id=tenant.pk,
        started=timezone.now(),
        deadline=pipeline.deadline_after(TIME_LIMIT_MINUTES) if deadline is None else deadline,
        timeout=pipeline.timeout_error(TIME_LIMIT_MINUTES),
        log=calls.log,
        key_for=calls.key_for,
        adopt=adopt or calls.adopted.append,
        progress=calls.progress.append,
        context="test backup",
    )


def backed_up(tenant: Tenant, sources: list[BackupSource]) -> BackupSet:
    """A new set of `sources`, every item stored."""
    outcome = pipeline.back_up(sources, job_for(tenant, Calls()))
    assert outcome.status == pipeline.SUCCEEDED, outcome.message
    assert outcome.backup_set is not None
    return outcome.backup_set


def stored_files() -> list[Path]:
    return sorted(p for p in Path(settings.BACKUPS_DIR).rglob("*") if p.is_file())
