"""The audit service: one entry with `record`, many in one statement with `record_many`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tenants.audit import AuditEntry, record, record_many
from tenants.models import AuditAction, AuditLog, Tenant


def test_record_many_writes_every_entry_in_one_statement(tenant: Tenant, alice) -> None:
    other = Tenant.objects.create(name="Other")
    at = datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
    code = uuid.uuid4()
    entries = [
        AuditEntry(
            tenant_id=tenant.pk,
            action=AuditAction.RUN_CREATED,
            target_type="dispatch",
            target_code=str(code),
            target_label="1 run",
            details={"count": 1},
            created_at=at,
        ),
        AuditEntry(tenant_id=other.pk, action=AuditAction.RUN_MISSED, target_type="dispatch", target_label="2 slots"),
        AuditEntry.about(tenant, AuditAction.TENANT_ROOTS_CHANGED, tenant, alice, roots=["/srv"]),
    ]
    with CaptureQueriesContext(connection) as queries:
        record_many(entries)
    inserts = [q for q in queries.captured_queries if q["sql"].startswith("INSERT")]
    assert len(inserts) == 1
    first, second, third = AuditLog.objects.order_by("id")
    assert (first.target_code, first.created_at, first.details, first.actor) == (code, at, {"count": 1}, None)
    assert (second.tenant_id, second.target_label, second.target_code) == (other.pk, "2 slots", None)
    assert second.created_at == third.created_at  # one instant for those that give none
    assert (third.target_type, third.target_code, third.actor) == ("tenant", tenant.code, alice)
    assert third.details == {"roots": ["/srv"]}


def test_record_many_follows_the_rules_of_record(tenant: Tenant) -> None:
    long_label = "x" * 300
    record_many(
        [AuditEntry(tenant.pk, AuditAction.RUN_SKIPPED, "dispatch", target_label=long_label, actor=AnonymousUser())]
    )
    named = Tenant(name=long_label, code=uuid.uuid4())  # a target with a long name, never saved
    record(tenant, AuditAction.TENANT_HOSTS_CHANGED, named, AnonymousUser())
    many, one = AuditLog.objects.order_by("id")
    assert len(many.target_label) == len(one.target_label) == 200
    assert many.actor is None and one.actor is None


def test_record_many_of_nothing_writes_nothing(db) -> None:
    with CaptureQueriesContext(connection) as queries:
        assert record_many([]) == 0
    assert queries.captured_queries == []


def test_record_many_takes_one_statement_however_many_tenants(db) -> None:
    # The dispatcher writes one entry per tenant and action a pass; on SQLite bulk_create
    # would split 300 of them into three INSERTs (111 rows each).
    tenants = Tenant.objects.bulk_create(Tenant(name=f"T{i}") for i in range(300))
    entries = [
        AuditEntry(tenant_id=t.pk, action=AuditAction.RUN_CREATED, target_type="dispatch", target_label="1 run")
        for t in tenants
    ]
    with CaptureQueriesContext(connection) as queries:
        assert record_many(entries) == 300
    assert len([q for q in queries.captured_queries if q["sql"].startswith("INSERT")]) == 1
    assert AuditLog.objects.filter(action=AuditAction.RUN_CREATED).count() == 300
