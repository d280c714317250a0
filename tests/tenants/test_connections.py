"""tenants.connections: a long job's database steps on a connection that may have been dropped,
dropped for real (pg_terminate_backend from another connection)."""

from __future__ import annotations

import pytest
from django.db import OperationalError, connection, transaction

from tenants.connections import fresh_connection, retry_on_drop
from tenants.models import Tenant
from tests.db_servers import backend_pid, require_production_profile, terminate_backend

pytestmark = pytest.mark.django_db(transaction=True)  # the connection's own life, outside a test's block


@pytest.fixture(autouse=True)
def _postgres() -> None:
    require_production_profile()


class Step:
    def __init__(self, sql: str = "SELECT count(*) FROM tenants_tenant") -> None:
        self.sql = sql
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        with connection.cursor() as cursor:
            cursor.execute(self.sql)
            return int(cursor.fetchone()[0])


def test_a_step_whose_connection_was_dropped_runs_once_more_on_a_new_one() -> None:
    Tenant.objects.create(name="One")
    dropped = backend_pid()
    terminate_backend(dropped)
    step = Step()
    assert retry_on_drop(step, "counting") == 1
    assert step.calls == 2 and backend_pid() != dropped


def test_a_whole_transaction_that_lost_its_connection_is_run_again() -> None:
    terminate_backend(backend_pid())
    calls = []

    def create() -> Tenant:
        calls.append(1)
        with transaction.atomic():
            return Tenant.objects.create(name="Made once")

    retry_on_drop(create, "creating")
    assert len(calls) == 2 and list(Tenant.objects.values_list("name", flat=True)) == ["Made once"]


def test_an_error_of_the_step_itself_is_not_retried() -> None:
    step = Step("SELECT 1 FROM pg_sleep(0.2)")
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = 10")
    try:
        with pytest.raises(OperationalError, match="statement timeout"):
            retry_on_drop(step, "sleeping")
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")
    assert step.calls == 1  # the connection answered: no lost connection, no second try


def test_nothing_reconnects_inside_an_atomic_block() -> None:
    step = Step()
    with pytest.raises(OperationalError), transaction.atomic():
        Tenant.objects.create(name="Lost with its block")
        terminate_backend(backend_pid())
        assert fresh_connection() is False  # would commit half a transaction
        retry_on_drop(step, "counting")
    assert step.calls == 1
    assert not Tenant.objects.exists()  # after the block, on a new connection


def test_fresh_connection_replaces_a_dead_connection_and_keeps_a_live_one() -> None:
    live = backend_pid()
    assert fresh_connection() is False and backend_pid() == live
    terminate_backend(live)
    assert fresh_connection() is True
    assert backend_pid() != live
