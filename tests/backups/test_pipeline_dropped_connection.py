"""The database connection dropped under the pipeline, for real (pg_terminate_backend on its
own connection), at the moment it records the set: after a dump that may have taken hours,
the connection that began the work is the one most likely gone.

The set is recorded on a new connection; if the database stays away, no file stays behind."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection

from backups import pipeline
from backups.models import BackupItem, BackupSet
from tests.backups.jobs import Calls, job_for, stored_files
from tests.backups.test_engine_postgres import make_source, shop_db  # noqa: F401 (a fixture)
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
        self.refusing = None

    def log(self, line: str) -> None:
        super().log(line)
        if "stored" in line and line.startswith("“"):
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
