from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling.models import BackupScheduleRun, RunStatus, Trigger
from scheduling.runs import run_now
from tenants.models import AuditAction, AuditLog
from tests.helpers import make_stored_set


def make_runs(schedule, count: int, status: str = RunStatus.SUCCEEDED) -> list[BackupScheduleRun]:
    start = timezone.now() - timedelta(days=1)
    return BackupScheduleRun.objects.bulk_create(
        BackupScheduleRun(
            tenant=schedule.tenant,
            schedule=schedule,
            status=status,
            slot=start + timedelta(minutes=i),
            created_at=start + timedelta(minutes=i),
            error_message=f"message {i:03}",
        )
        for i in range(count)
    )


def failed_run(schedule) -> BackupScheduleRun:
    return BackupScheduleRun.objects.create(
        tenant=schedule.tenant,
        schedule=schedule,
        status=RunStatus.FAILED,
        error_code="SOURCE_NOT_FOUND",
        error_message="The SQLite file /nowhere does not exist.",
        created_at=timezone.now(),
        started_at=timezone.now(),
        finished_at=timezone.now(),
        log="12:00:00 Run started\n12:00:01 Failed: SOURCE_NOT_FOUND <gone>\n",
    )


def assert_login_redirect(response) -> None:
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


# ------------------------------------------------------------------ list


def test_the_list_shows_runs_newest_first(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 3)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/")
    assert response.status_code == 200
    text = response.text
    assert text.index("message 002") < text.index("message 001") < text.index("message 000")
    assert "Nightly" in text


def test_the_list_pages_by_50(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 51)
    client.force_login(rita)
    first = client.get(f"/t/{tenant.code}/runs/")
    assert len(first.context["page"].object_list) == 50
    assert "Page 1 of 2" in first.text
    second = client.get(f"/t/{tenant.code}/runs/?page=2")
    assert [run.error_message for run in second.context["page"]] == ["message 000"]


def test_the_list_filters_by_status(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 2)
    failed_run(schedule)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?status=failed")
    assert [run.status for run in response.context["page"]] == [RunStatus.FAILED]
    assert '<option value="failed" selected>' in response.text


def test_the_list_ignores_an_unknown_status(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 2)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?status=bogus&page=zzz")
    assert response.status_code == 200
    assert len(response.context["page"].object_list) == 2


def test_the_list_keeps_the_filter_in_page_links(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 60, status=RunStatus.MISSED)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?status=missed")
    assert "?status=missed&amp;page=2" in response.text


def test_an_htmx_request_gets_only_the_table(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 2)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text
    assert 'id="run-table"' in response.text and "message 001" in response.text
    assert "HX-Request" in response["Vary"]


def test_the_list_shows_only_the_tenants_runs(client, charlie, schedule) -> None:
    make_runs(schedule, 2)
    own = charlie.memberships.get().tenant
    client.force_login(charlie)
    response = client.get(f"/t/{own.code}/runs/")
    assert response.status_code == 200
    assert "message 001" not in response.text


def test_the_list_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.get(f"/t/{tenant.code}/runs/").status_code == 404


def test_the_list_requires_login(client, tenant) -> None:
    assert_login_redirect(client.get(f"/t/{tenant.code}/runs/"))


def test_the_list_costs_the_same_queries_for_5_and_50_runs(client, rita, bob, tenant, schedule) -> None:
    client.force_login(rita)
    url = f"/t/{tenant.code}/runs/"

    def queries_with(count: int) -> int:
        BackupScheduleRun.objects.all().delete()
        runs = make_runs(schedule, count)
        # Every row shows who asked for it, when someone did.
        BackupScheduleRun.objects.filter(pk__in=[run.pk for run in runs[::2]]).update(
            requested_by=bob, trigger=Trigger.MANUAL
        )
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert len(response.context["page"].object_list) == count
        return len(queries)

    assert queries_with(5) == queries_with(50)


# ------------------------------------------------------------------ detail


def test_the_detail_shows_the_run_and_its_log(client, rita, schedule) -> None:
    run = failed_run(schedule)
    client.force_login(rita)
    response = client.get(f"/runs/{run.code}/")
    assert response.status_code == 200
    assert "SOURCE_NOT_FOUND" in response.text
    assert "The SQLite file /nowhere does not exist." in response.text
    assert '<pre class="log"' in response.text
    assert "Failed: SOURCE_NOT_FOUND &lt;gone&gt;" in response.text
    assert "Retry" not in response.text  # readonly


def test_the_detail_shows_the_backup_set(client, rita, schedule) -> None:
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    make_stored_set(schedule, run, sha256="cd" * 32, size=2048, source_size=4096)
    client.force_login(rita)
    response = client.get(f"/runs/{run.code}/")
    assert "cd" * 32 in response.text
    assert "2048 bytes" in response.text


def test_the_detail_offers_retry_to_an_operator_for_a_failed_run_only(client, bob, schedule) -> None:
    client.force_login(bob)
    failed = failed_run(schedule)
    assert "Retry</button>" in client.get(f"/runs/{failed.code}/").text
    (succeeded,) = make_runs(schedule, 1)
    assert "Retry</button>" not in client.get(f"/runs/{succeeded.code}/").text


def test_the_detail_checks_ownership(client, charlie, schedule) -> None:
    run = failed_run(schedule)
    client.force_login(charlie)
    assert client.get(f"/runs/{run.code}/").status_code == 404


def test_the_detail_requires_login(client, schedule) -> None:
    run = failed_run(schedule)
    assert_login_redirect(client.get(f"/runs/{run.code}/"))


# ------------------------------------------------------------------ retry


def test_an_operator_retries_a_failed_run(client, bob, schedule) -> None:
    run = failed_run(schedule)
    client.force_login(bob)
    response = client.post(f"/runs/{run.code}/retry/")
    new_run = BackupScheduleRun.objects.exclude(pk=run.pk).get()
    assert response.status_code == 302
    assert response.url == f"/runs/{new_run.code}/"
    assert (new_run.trigger, new_run.attempt, new_run.retry_of) == (Trigger.RETRY, 2, run)
    assert AuditLog.objects.filter(action=AuditAction.RUN_RETRY, actor=bob).exists()


def test_retrying_a_succeeded_run_shows_the_refusal(client, bob, schedule) -> None:
    (run,) = make_runs(schedule, 1)
    client.force_login(bob)
    response = client.post(f"/runs/{run.code}/retry/", follow=True)
    assert response.status_code == 200
    assert "Only failed or canceled runs can be retried" in response.text
    assert BackupScheduleRun.objects.count() == 1


def test_retrying_while_a_run_is_active_shows_the_refusal(client, bob, schedule) -> None:
    run = failed_run(schedule)
    run_now(schedule, actor=None)
    client.force_login(bob)
    response = client.post(f"/runs/{run.code}/retry/", follow=True)
    assert "already has a run queued or running" in response.text
    assert BackupScheduleRun.objects.count() == 2


def test_retrying_requires_operator(client, rita, schedule) -> None:
    run = failed_run(schedule)
    client.force_login(rita)
    assert client.post(f"/runs/{run.code}/retry/").status_code == 403
    assert BackupScheduleRun.objects.count() == 1


def test_retrying_checks_ownership(client, charlie, schedule) -> None:
    run = failed_run(schedule)
    client.force_login(charlie)
    assert client.post(f"/runs/{run.code}/retry/").status_code == 404
    assert BackupScheduleRun.objects.count() == 1


def test_retrying_rejects_get(client, bob, schedule) -> None:
    run = failed_run(schedule)
    client.force_login(bob)
    assert client.get(f"/runs/{run.code}/retry/").status_code == 405


def test_retrying_requires_login(client, schedule) -> None:
    run = failed_run(schedule)
    assert_login_redirect(client.post(f"/runs/{run.code}/retry/"))
    assert BackupScheduleRun.objects.count() == 1
