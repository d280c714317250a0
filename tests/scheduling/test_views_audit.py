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
    fields.setdefault("action", AuditAction.SOURCE_UPDATED)  # a person's action: shown by default
    fields.setdefault("target_type", "backupsource")
    return AuditLog.objects.bulk_create(
        AuditLog(
            tenant=tenant,
            target_label=f"entry {i:03}",
            created_at=start + timedelta(seconds=i),
            **fields,
        )
        for i in range(count)
    )


def labels(response) -> list[str]:
    return [row.entry.target_label for row in response.context["page"]]


def rows(response) -> str:
    text = response.text
    return text[text.index('id="audit-entries"') :]


def test_the_audit_log_shows_entries_newest_first(client, rita, alice, schedule) -> None:
    set_enabled(schedule, False, alice)
    client.force_login(rita)
    response = client.get(f"/t/{schedule.tenant.code}/audit/")
    assert response.status_code == 200
    text = rows(response)
    assert text.index("alice disabled the schedule “Nightly”.") < text.index(
        "The system created the schedule “Nightly”."
    )
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
    assert [row.entry.actor for row in by_bob.context["page"]] == [bob]
    assert '<option value="bob" selected>' in by_bob.text
    by_system = client.get(f"/t/{tenant.code}/audit/?actor=system")
    assert [row.entry.actor for row in by_system.context["page"]] == [None]


def test_the_audit_log_filters_by_action(client, rita, tenant) -> None:
    entries(tenant, 2)
    entries(tenant, 1, action=AuditAction.SCHEDULE_DELETED)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/audit/?action=schedule.deleted")
    assert [row.entry.action for row in response.context["page"]] == [AuditAction.SCHEDULE_DELETED]


def test_the_audit_log_filters_by_dates(client, rita, tenant) -> None:
    entries(tenant, 1, start=datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC))
    entries(tenant, 1, start=datetime(2026, 3, 1, 0, 0, tzinfo=UTC), target_code=None)
    entries(tenant, 1, start=datetime(2026, 3, 2, 0, 0, tzinfo=UTC))
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/audit/?date_from=2026-03-01&date_to=2026-03-01")
    assert [row.entry.created_at for row in response.context["page"]] == [datetime(2026, 3, 1, tzinfo=UTC)]


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


def plan_of(queryset) -> str:  # type: ignore[no-untyped-def]
    """The query's plan; on PostgreSQL with sequential scans off (a test table is tiny)."""
    if connection.vendor != "postgresql":
        return queryset.explain()
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = queryset.explain()
        cursor.execute("SET LOCAL enable_seqscan = on")
    return plan


def test_the_audit_log_walks_the_tenant_time_index(tenant) -> None:
    queryset = AuditLog.objects.filter(tenant=tenant, action=AuditAction.RUN_NOW).order_by("-created_at", "-id")[:51]
    plan = plan_of(queryset)
    # A person's action may take the narrower index of people's actions (PostgreSQL proves it applies).
    assert "tenants_audit_tenant_time" in plan or "tenants_audit_people" in plan, plan


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


# ------------------------------------------------------------------ people first, in sentences


def sentences(response) -> list[str]:
    return [row.text for row in response.context["page"]]


def test_automatic_entries_are_hidden_until_asked_for(client, rita, bob, schedule) -> None:
    from scheduling.runs import run_now
    from scheduling.worker import execute_run

    run = run_now(schedule, bob)
    assert execute_run(str(run.code)) == "succeeded"
    client.force_login(rita)
    tenant = schedule.tenant
    shown = client.get(f"/t/{tenant.code}/audit/")
    assert sentences(shown) == ["bob pressed Run now on “Nightly”", "The system created the schedule “Nightly”"]
    assert 'id="id_automatic"' in shown.text and "checked" not in shown.text.split('id="id_automatic"')[1][:60]
    everything = client.get(f"/t/{tenant.code}/audit/?automatic=on")
    assert sentences(everything)[:3] == [
        "The backup of “Nightly” finished: succeeded",
        "A worker started the backup of “Nightly” (attempt 1)",
        "bob pressed Run now on “Nightly”",
    ]
    assert "automatic" in rows(everything)


def test_asking_for_the_system_or_one_of_its_actions_shows_automatic_entries(client, rita, tenant) -> None:
    entries(tenant, 1, action=AuditAction.RUN_FINISHED, target_type="backupschedulerun")
    entries(tenant, 1)
    client.force_login(rita)
    assert len(labels(client.get(f"/t/{tenant.code}/audit/"))) == 1
    assert labels(client.get(f"/t/{tenant.code}/audit/?actor=system&action=run.finished")) == ["entry 000"]
    assert len(labels(client.get(f"/t/{tenant.code}/audit/?action=run.finished"))) == 1


def test_a_page_of_only_automatic_entries_says_where_they_are(client, rita, tenant) -> None:
    entries(tenant, 3, action=AuditAction.RUN_CREATED, target_type="dispatch")
    client.force_login(rita)
    text = client.get(f"/t/{tenant.code}/audit/").text
    assert "No actions by people yet." in text and "?automatic=on" in text


def test_sentences_use_current_names_and_keep_a_deleted_ones_label(client, rita, alice, schedule) -> None:
    from scheduling.services import delete_schedule

    set_enabled(schedule, False, alice)
    schedule.name = "Shop DB nightly"
    schedule.save(update_fields=["name"])
    client.force_login(rita)
    tenant = schedule.tenant
    assert sentences(client.get(f"/t/{tenant.code}/audit/"))[0] == "alice disabled the schedule “Shop DB nightly”"
    delete_schedule(schedule, alice)
    assert sentences(client.get(f"/t/{tenant.code}/audit/"))[0] == "alice deleted the schedule “Shop DB nightly”"


def test_details_are_behind_a_disclosure_not_in_the_sentence(client, rita, alice, tenant) -> None:
    entries(tenant, 1, actor=alice, details={"changes": {"port": [5432, 5433]}})
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/audit/")
    assert sentences(response) == ["alice changed the source “entry 000” (port)"]
    text = rows(response)
    disclosure = text[text.index("<details>") : text.index("</details>")]
    assert "source.updated" in disclosure and "5433" in disclosure
    assert "5433" not in text[: text.index("<details>")]


def test_every_action_reads_as_a_sentence() -> None:
    from scheduling.audit_text import SENTENCES

    assert set(SENTENCES) == set(AuditAction.values)


def test_the_automatic_list_is_the_indexed_one() -> None:
    from tenants.audit import AUTOMATIC_ACTIONS
    from tenants.models import AUTOMATIC_ACTION_VALUES

    index = next(i for i in AuditLog._meta.indexes if i.name == "tenants_audit_people")
    assert set(AUTOMATIC_ACTIONS) == set(AUTOMATIC_ACTION_VALUES) == set(index.condition.children[0][1])


def test_sentences_cost_the_same_queries_for_5_and_50_objects(client, rita, alice, tenant, source) -> None:
    """Names come in two queries (schedules, backup sets) whatever the page holds."""
    from scheduling.runs import run_now
    from tenants.audit import record
    from tests.helpers import make_schedule, make_stored_set

    client.force_login(rita)

    def queries_with(count: int) -> int:
        AuditLog.objects.all().delete()
        for number in range(count):
            schedule = make_schedule(tenant, source, name=f"S{count}-{number}")
            run = run_now(schedule, alice)
            record(tenant, AuditAction.SET_PINNED, make_stored_set(schedule, run), actor=alice)
        assert AuditLog.objects.count() == 2 * count
        with CaptureQueriesContext(connection) as queries:
            response = client.get(f"/t/{tenant.code}/audit/")
        assert "alice pinned Backup set" in rows(response) and f"of “S{count}-0”" in rows(response)
        return len(queries)

    assert queries_with(5) == queries_with(25)


def test_the_default_view_walks_the_people_index(tenant) -> None:
    from tenants.models import AUTOMATIC_ACTION_VALUES

    queryset = (
        AuditLog.objects.filter(tenant=tenant)
        .exclude(action__in=AUTOMATIC_ACTION_VALUES)
        .order_by("-created_at", "-id")[:51]
    )
    if connection.vendor != "postgresql":
        pytest.skip("SQLite matches a partial index only against literal terms; Django binds them as parameters")
    plan = plan_of(queryset)
    assert "tenants_audit_people" in plan, plan
