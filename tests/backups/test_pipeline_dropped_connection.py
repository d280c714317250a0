"""The database connection dropped under the pipeline, for real (pg_terminate_backend on its
own connection), at the moment it records the set: after a dump that may have taken hours,
the connection that began the work is the one most likely gone.

The set is recorded on a new connection; if the database stays away, no file stays behind."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from django.db import DatabaseError, connection

from backups import orphans, pipeline
from backups.models import BackupItem, BackupSet
from tests.backups.jobs import Calls, backed_up, job_for, sqlite_source, stored_files
from tests.backups.test_engine_postgres import make_source, shop_db  # noqa: F401 (a fixture)
from tests.backups.test_orphans import age
from tests.db_servers import (
    backend_pid,
    connections_refused,
    require_postgres,
    require_production_profile,
    terminate_backend,
)
from tests.helpers import stored_path

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require_production_profile()
    require_postgres()


class DroppedOnStore(Calls):
    """The pipeline's log sink, which drops the pipeline's own database connection when the
    item is stored: the next database statement is the set's."""

    def __init__(self, refuse_too: bool = False) -> None:
        super().__init__()
        self.pid = backend_pid()
        self.refuse_too = refuse_too
        self.refusing: Any = None

    def log(self, line: str) -> None:
        super().log(line)
        if "stored" in line and line.startswith("“"):
            self.drop()

    def drop(self) -> None:
        if self.refuse_too:
            self.refusing = connections_refused(connection.settings_dict["NAME"])
            self.refusing.__enter__()
        terminate_backend(self.pid)

    def allow(self) -> None:
        if self.refusing is not None:
            self.refusing.__exit__(None, None, None)
            self.refusing = None


def test_a_set_whose_connection_was_dropped_is_recorded_on_a_new_one(tenant, shop_db) -> None:  # noqa: F811
    calls = DroppedOnStore()
    outcome = pipeline.back_up([make_source(tenant, shop_db)], job_for(tenant, calls))
    assert outcome.status == pipeline.SUCCEEDED, outcome.message
    assert backend_pid() != calls.pid  # it did reconnect
    (item,) = BackupItem.objects.all()
    assert outcome.backup_set == item.backup_set == BackupSet.objects.get()
    assert calls.adopted == [outcome.backup_set]  # adopted once, in the transaction that committed
    assert stored_files() == [stored_path(item.storage_key)]


def test_a_set_that_cannot_be_recorded_leaves_no_file(tenant, shop_db) -> None:  # noqa: F811
    calls = DroppedOnStore(refuse_too=True)
    try:
        with pytest.raises(DatabaseError):
            pipeline.back_up([make_source(tenant, shop_db)], job_for(tenant, calls))
    finally:
        calls.allow()
    assert len(calls.keys) == 1 and calls.adopted == []
    assert stored_files() == []  # the complete dump went, with no set to name it
    assert not BackupSet.objects.exists()


class DroppedBeforeCommit(DroppedOnStore):
    """Drops the connection in adopt, the transaction's last step: the COMMIT that follows
    fails, and the pipeline cannot tell from the error whether the server carried it out."""

    def log(self, line: str) -> None:
        Calls.log(self, line)

    def adopt(self, backup_set: BackupSet) -> None:
        self.adopted.append(backup_set)
        if len(self.adopted) == 1:
            self.drop()


def test_a_commit_whose_answer_was_lost_is_looked_up_before_the_set_is_made_again(tenant, shop_db) -> None:  # noqa: F811
    calls = DroppedBeforeCommit()
    job = dataclasses.replace(job_for(tenant, calls), adopt=calls.adopt)
    outcome = pipeline.back_up([make_source(tenant, shop_db)], job)
    assert outcome.status == pipeline.SUCCEEDED, outcome.message
    (item,) = BackupItem.objects.all()  # once: the first try had not committed
    assert outcome.backup_set == item.backup_set == calls.adopted[-1] and len(calls.adopted) == 2
    assert stored_files() == [stored_path(item.storage_key)]


def test_files_of_a_set_nobody_can_tell_was_recorded_are_kept_for_the_orphan_sweep(tenant, shop_db) -> None:  # noqa: F811
    calls = DroppedBeforeCommit(refuse_too=True)
    job = dataclasses.replace(job_for(tenant, calls), adopt=calls.adopt)
    try:
        with pytest.raises(DatabaseError):
            pipeline.back_up([make_source(tenant, shop_db)], job)
    finally:
        calls.allow()
    # Removing them could have left a recorded set with nothing behind it; it was not
    # recorded, so they are orphans, which the sweep removes once they are old enough.
    assert not BackupSet.objects.exists()
    (kept,) = stored_files()
    assert kept == stored_path(calls.keys[0])
    backed_up(tenant, [sqlite_source(tenant, "Shop")])  # the database names stored files
    assert orphans.sweep_orphan_files().removed == [] and kept.exists()  # young: may be a run's
    age(kept)
    assert orphans.sweep_orphan_files().removed == [calls.keys[0]] and not kept.exists()
