from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from scheduling.services import set_enabled
from tenants.models import AuditAction, AuditLog


def test_the_audit_log_shows_entries_newest_first(client, rita, alice, schedule) -> None:
    set_enabled(schedule, False, alice)
    client.force_login(rita)
    response = client.get(f"/t/{schedule.tenant.code}/audit/")
    assert response.status_code == 200
    text = response.text
    assert text.index(AuditAction.SCHEDULE_DISABLED) < text.index(AuditAction.SCHEDULE_CREATED)
    assert "alice" in text and "system" in text
    assert f"/schedules/{schedule.code}/" in text


def test_the_audit_log_pages_by_50(client, rita, tenant) -> None:
    now = timezone.now()
    AuditLog.objects.bulk_create(
        AuditLog(
            tenant=tenant,
            action=AuditAction.RUN_CREATED,
            target_type="dispatch",
            target_label=f"entry {i:03}",
            created_at=now + timedelta(seconds=i),
        )
        for i in range(51)
    )
    client.force_login(rita)
    first = client.get(f"/t/{tenant.code}/audit/")
    assert len(first.context["page"].object_list) == 50
    assert "entry 050" in first.text and "entry 000" not in first.text
    second = client.get(f"/t/{tenant.code}/audit/?page=2", headers={"HX-Request": "true"})
    assert "entry 000" in second.text and "<html" not in second.text


def test_the_audit_log_shows_only_the_tenants_entries(client, charlie, schedule) -> None:
    own = charlie.memberships.get().tenant
    client.force_login(charlie)
    response = client.get(f"/t/{own.code}/audit/")
    assert response.status_code == 200
    assert "Nightly" not in response.text


def test_the_audit_log_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.get(f"/t/{tenant.code}/audit/").status_code == 404


def test_the_audit_log_requires_login(client, tenant) -> None:
    response = client.get(f"/t/{tenant.code}/audit/")
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")
