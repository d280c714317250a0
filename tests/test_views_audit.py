from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling.services import set_enabled
from tenants.models import AuditAction, AuditLog


def entries(tenant, count: int, start=None, **fields) -> list[AuditLog]:
    start = start or timezone.now()
    fields.setdefault("action", AuditAction.RUN_CREATED)
    return AuditLog.objects.bulk_create(
        AuditLog(
            tenant=tenant,
            target_type="dispatch",
            target_label=f"entry {i:03}",
            created_at=start + timedelta(seconds=i),
            **fields,
        )
        for i in range(count)
    )


def labels(response) -> list[str]:
    return [entry.target_label for entry in response.context["page"]]


def rows(response) -> str:
    text = response.text
    return text[text.index('id="audit-entries"') :]


def test_the_audit_log_shows_entries_newest_first(client, rita, alice, schedule) -> None:
    set_enabled(schedule, False, alice)
    client.force_login(rita)
    response = client.get(f"/t/{schedule.tenant.code}/audit/")
    assert response.status_code == 200
    text = rows(response)
    assert text.index(AuditAction.SCHEDULE_DISABLED) < text.index(AuditAction.SCHEDULE_CREATED)
    assert "alice" in text and "system" in text
    assert f"/schedules/{schedule.code}/" in text


def test_the_audit_log_pages_by_50(client, rita, tenant) -> None:
    entries(tenant, 51)
    client.force_login(rita)
    first = client.get(f"/t/{tenant.code}/audit/")
    assert len(labels(first)) == 50
    assert "entry 050" in first.text and "entry 000" not in first.text
    second = client.get(f"/t/{tenant.code}/audit/?page=2", headers={"HX-Request": "true"})
    assert "entry 000" in second.text and "<html" not in second.text
    assert "HX-Request" in second["Vary"]


def test_the_audit_log_filters_by_actor(client, rita, alice, bob, tenant) -> None:
    entries(tenant, 2, actor=alice)
    entries(tenant, 1, actor=bob, action=AuditAction.RUN_NOW)
    entries(tenant, 1)  # the system
    client.force_login(rita)
    by_bob = client.get(f"/t/{tenant.code}/audit/?actor=bob")
    assert [e.actor for e in by_bob.context["page"]] == [bob]
    assert '<option value="bob" selected>' in by_bob.text
    by_system = client.get(f"/t/{tenant.code}/audit/?actor=system")
    assert [e.actor for e in by_system.context["page"]] == [None]


def test_the_audit_log_filters_by_action(client, rita, tenant) -> None:
    entries(tenant, 2)
    entries(tenant, 1, action=AuditAction.SCHEDULE_DELETED)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/audit/?action=schedule.deleted")
    assert [e.action for e in response.context["page"]] == [AuditAction.SCHEDULE_DELETED]


def test_the_audit_log_filters_by_dates(client, rita, tenant) -> None:
    entries(tenant, 1, start=datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC))
    entries(tenant, 1, start=datetime(2026, 3, 1, 0, 0, tzinfo=UTC), target_code=None)
    entries(tenant, 1, start=datetime(2026, 3, 2, 0, 0, tzinfo=UTC))
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/audit/?date_from=2026-03-01&date_to=2026-03-01")
    assert [e.created_at for e in response.context["page"]] == [datetime(2026, 3, 1, tzinfo=UTC)]


def test_the_filter_keeps_in_page_links_and_says_when_nothing_matches(client, rita, alice, tenant) -> None:
    entries(tenant, 55, actor=alice)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/audit/?actor=alice")
    assert "?actor=alice&amp;page=2" in response.text
    empty = client.get(f"/t/{tenant.code}/audit/?action=source.deleted")
    assert "No entries match these filters." in empty.text


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("actor=mallory", "Who: Select a valid choice"),
        ("action=drop-table", "Action: Select a valid choice"),
        ("date_to=yesterday", "To: Enter a valid date."),
        ("date_from=2026-03-02&date_to=2026-03-01", "must be on or after"),
        ("page=-3", "Page: Ensure this value is greater than or equal to 1."),
    ],
)
def test_a_bad_filter_is_named_and_ignored(client, rita, tenant, query, words) -> None:
    entries(tenant, 2)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/audit/?{query}")
    assert response.status_code == 200
    assert words in response.text
    assert len(labels(response)) == 2


def test_a_former_member_is_not_offered_but_their_entries_stay(client, rita, tenant, charlie) -> None:
    entries(tenant, 1, actor=charlie)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/audit/")
    assert '<option value="charlie"' not in response.text
    assert "charlie" in rows(response)


def test_the_audit_log_costs_the_same_queries_for_5_and_50_entries(client, rita, alice, tenant) -> None:
    client.force_login(rita)

    def queries_with(count: int) -> int:
        AuditLog.objects.all().delete()
        entries(tenant, count, actor=alice)
        with CaptureQueriesContext(connection) as queries:
            client.get(f"/t/{tenant.code}/audit/?actor=alice&date_from=2020-01-01")
        return len(queries)

    assert queries_with(5) == queries_with(50)


def test_the_audit_log_walks_the_tenant_time_index(tenant) -> None:
    queryset = AuditLog.objects.filter(tenant=tenant, action=AuditAction.RUN_NOW).order_by("-created_at", "-id")[:51]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")
            plan = queryset.explain()
            cursor.execute("SET LOCAL enable_seqscan = on")
    else:
        plan = queryset.explain()
    assert "tenants_audit_tenant_time" in plan


def test_the_audit_log_shows_only_the_tenants_entries(client, charlie, schedule) -> None:
    own = charlie.memberships.get().tenant
    client.force_login(charlie)
    response = client.get(f"/t/{own.code}/audit/")
    assert response.status_code == 200
    assert "Nightly" not in response.text


def test_the_audit_log_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.get(f"/t/{tenant.code}/audit/").status_code == 404


def test_the_audit_log_rejects_post(client, rita, tenant) -> None:
    client.force_login(rita)
    assert client.post(f"/t/{tenant.code}/audit/").status_code == 405


def test_the_audit_log_requires_login(client, tenant) -> None:
    response = client.get(f"/t/{tenant.code}/audit/")
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")
