from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling.models import BackupScheduleRun, Operation, RunStatus, Trigger
from scheduling.runs import run_now
from scheduling.views import runs as runs_view
from scheduling.views.runs import LOG_TAIL_CHARS, RunFilterForm, duration_text, filtered_runs
from tenants.models import AuditAction, AuditLog
from tests.helpers import make_schedule, make_stored_set


def make_runs(schedule, count: int, status: str = RunStatus.SUCCEEDED, **fields) -> list[BackupScheduleRun]:
    start = fields.pop("start", timezone.now() - timedelta(days=1))
    return BackupScheduleRun.objects.bulk_create(
        BackupScheduleRun(
            tenant=schedule.tenant,
            schedule=schedule,
            status=status,
            slot=start + timedelta(minutes=i),
            created_at=start + timedelta(minutes=i),
            error_message=f"message {i:03}",
            **fields,
        )
        for i in range(count)
    )


def failed_run(schedule, **fields) -> BackupScheduleRun:
    fields.setdefault("created_at", timezone.now())
    return BackupScheduleRun.objects.create(
        tenant=schedule.tenant,
        schedule=schedule,
        status=RunStatus.FAILED,
        error_code="SOURCE_NOT_FOUND",
        error_message="The SQLite file /nowhere does not exist.",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        log="12:00:00 Run started\n12:00:01 Failed: SOURCE_NOT_FOUND <gone>\n",
        **fields,
    )


def assert_login_redirect(response) -> None:
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def shown(response) -> list[str]:
    return [run.error_message for run in response.context["page"]]


def table(response) -> str:
    """The run table alone (the filter form above it names every status too)."""
    text = response.text
    return text[text.index('id="run-table"') :]


# ------------------------------------------------------------------ list


def test_the_list_shows_runs_newest_first(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 3)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/")
    assert response.status_code == 200
    text = response.text
    assert text.index("message 002") < text.index("message 001") < text.index("message 000")
    assert "Nightly" in text


def test_the_list_pages_by_50_without_counting_them_all(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 51)
    client.force_login(rita)
    first = client.get(f"/t/{tenant.code}/runs/")
    assert len(shown(first)) == 50
    assert "Runs 1–50" in first.text
    assert "?page=2" in first.text and 'rel="next"' in first.text and 'rel="prev"' not in first.text
    second = client.get(f"/t/{tenant.code}/runs/?page=2")
    assert shown(second) == ["message 000"]
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text


def test_a_page_past_the_end_says_so_and_links_back(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 3)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?status=succeeded&page=9")
    assert response.status_code == 200
    assert "No runs on page 9" in response.text
    assert "?status=succeeded" in response.text


def test_the_list_filters_by_status(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 2)
    failed_run(schedule)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?status=failed")
    assert [run.status for run in response.context["page"]] == [RunStatus.FAILED]
    assert '<option value="failed" selected>' in response.text


def test_the_list_filters_by_schedule(client, rita, tenant, schedule, source) -> None:
    other = make_schedule(tenant, source, name="Weekly")
    make_runs(schedule, 2)
    make_runs(other, 1, error_code="X")
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?schedule={other.code}")
    assert [run.schedule_id for run in response.context["page"]] == [other.pk]
    assert f'<option value="{other.code}" selected>' in response.text


def test_the_list_filters_by_trigger_and_operation(client, rita, bob, tenant, schedule) -> None:
    make_runs(schedule, 2)
    manual = failed_run(schedule, trigger=Trigger.MANUAL, requested_by=bob)
    verify = BackupScheduleRun.objects.create(
        tenant=tenant,
        schedule=schedule,
        operation=Operation.VERIFY,
        status=RunStatus.SUCCEEDED,
        created_at=timezone.now(),
        error_message="verify run",
    )
    client.force_login(rita)
    by_trigger = client.get(f"/t/{tenant.code}/runs/?trigger=manual")
    assert [run.pk for run in by_trigger.context["page"]] == [manual.pk]
    assert "by bob" in table(by_trigger)
    by_operation = client.get(f"/t/{tenant.code}/runs/?operation=verify")
    assert [run.pk for run in by_operation.context["page"]] == [verify.pk]
    assert "Verify" in table(by_operation)


def test_the_list_filters_by_a_date_range_of_whole_utc_days(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 3, start=datetime(2026, 3, 1, 23, 59, tzinfo=UTC))  # 23:59, 00:00, 00:01
    make_runs(schedule, 1, start=datetime(2026, 3, 3, 0, 0, tzinfo=UTC), error_code="later")
    client.force_login(rita)
    day = client.get(f"/t/{tenant.code}/runs/?date_from=2026-03-02&date_to=2026-03-02")
    assert [run.created_at for run in day.context["page"]] == [
        datetime(2026, 3, 2, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 2, 0, 0, tzinfo=UTC),
    ]
    since = client.get(f"/t/{tenant.code}/runs/?date_from=2026-03-02")
    assert len(shown(since)) == 3
    until = client.get(f"/t/{tenant.code}/runs/?date_to=2026-03-01")
    assert [run.created_at for run in until.context["page"]] == [datetime(2026, 3, 1, 23, 59, tzinfo=UTC)]


def test_filters_combine(client, rita, tenant, schedule, source) -> None:
    other = make_schedule(tenant, source, name="Weekly")
    make_runs(schedule, 2, status=RunStatus.FAILED)
    make_runs(other, 2, status=RunStatus.SUCCEEDED)
    (wanted,) = make_runs(other, 1, status=RunStatus.FAILED, start=timezone.now() - timedelta(hours=1))
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?schedule={other.code}&status=failed")
    assert [run.pk for run in response.context["page"]] == [wanted.pk]
    assert "matching the filters" in response.text


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("status=bogus", "Status: Select a valid choice"),
        ("trigger=%3Cscript%3E", "Trigger: Select a valid choice"),
        ("operation=delete", "Operation: Select a valid choice"),
        ("schedule=not-a-uuid", "Schedule: That is not a schedule of this tenant."),
        ("schedule=00000000-0000-0000-0000-000000000000", "Schedule: That is not a schedule of this tenant."),
        ("date_from=2026-13-45", "From: Enter a valid date."),
        ("date_from=2026-03-05&date_to=2026-03-01", "To: “To” must be on or after “From”."),
        ("sort=password", "Sort: Select a valid choice"),
        ("page=zzz", "Page: Enter a whole number."),
        ("page=0", "Page: Ensure this value is greater than or equal to 1."),
        ("page=99999999999999999999", "Page: Ensure this value is less than or equal to"),
    ],
)
def test_a_bad_filter_is_named_and_ignored_never_a_500(client, rita, tenant, schedule, query, words) -> None:
    make_runs(schedule, 2)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?{query}")
    assert response.status_code == 200
    assert "Some filters were not understood and are ignored" in response.text
    assert words in response.text.replace("&ldquo;", "“").replace("&rdquo;", "”")
    assert len(shown(response)) == 2  # the bad filter is off; the list still shows
    assert "<script>" not in response.text


def test_another_tenants_schedule_is_not_a_filter(client, charlie, rita, tenant, schedule) -> None:
    own = charlie.memberships.get().tenant
    theirs = make_schedule(own, None, name="Charlie's nightly")
    make_runs(theirs, 2)
    make_runs(schedule, 1)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?schedule={theirs.code}")
    assert "That is not a schedule of this tenant." in response.text
    assert [run.schedule_id for run in response.context["page"]] == [schedule.pk]


def test_the_list_keeps_the_filters_in_page_and_sort_links(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 60, status=RunStatus.MISSED)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?status=missed&sort=-started")
    assert "?status=missed&amp;sort=-started&amp;page=2" in response.text
    # A column head re-sorts the same filtered list and goes back to page 1.
    assert "?status=missed&amp;sort=-created" in response.text


def test_sorts_by_each_column_with_a_stable_tie_break(client, rita, tenant, schedule) -> None:
    base = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    same = base  # four runs created at the same instant: id breaks the tie
    rows = []
    for i, (status, seconds) in enumerate(
        [(RunStatus.SUCCEEDED, 30), (RunStatus.FAILED, 5), (RunStatus.SUCCEEDED, 120), (RunStatus.QUEUED, None)]
    ):
        started = base + timedelta(minutes=i) if seconds is not None else None
        rows.append(
            BackupScheduleRun.objects.create(
                tenant=tenant,
                schedule=schedule,
                status=status,
                created_at=same,
                started_at=started,
                finished_at=started + timedelta(seconds=seconds) if started and seconds else None,
                error_message=f"run {i}",
            )
        )
    client.force_login(rita)

    def order(sort: str) -> list[str]:
        return shown(client.get(f"/t/{tenant.code}/runs/?sort={sort}"))

    assert order("-created") == ["run 3", "run 2", "run 1", "run 0"]
    assert order("created") == ["run 0", "run 1", "run 2", "run 3"]
    assert order("-started") == ["run 2", "run 1", "run 0", "run 3"]  # never started: last
    assert order("started") == ["run 0", "run 1", "run 2", "run 3"]
    assert order("-duration") == ["run 2", "run 0", "run 1", "run 3"]
    assert order("duration") == ["run 1", "run 0", "run 2", "run 3"]
    assert order("status") == ["run 1", "run 3", "run 2", "run 0"]  # failed, queued, succeeded (newest first)
    assert order("-status") == ["run 2", "run 0", "run 3", "run 1"]


def test_a_sort_no_index_serves_looks_at_the_newest_runs_only_and_says_so(
    client, rita, tenant, schedule, monkeypatch
) -> None:
    monkeypatch.setattr(runs_view, "SORT_WINDOW", 3)
    for i, seconds in enumerate([500, 10, 20, 30, 40]):  # the oldest ran longest
        created = datetime(2026, 3, 1 + i, 2, 30, tzinfo=UTC)
        BackupScheduleRun.objects.create(
            tenant=tenant,
            schedule=schedule,
            status=RunStatus.SUCCEEDED,
            created_at=created,
            started_at=created,
            finished_at=created + timedelta(seconds=seconds),
            error_message=f"run {i}",
        )
    client.force_login(rita)
    cut = client.get(f"/t/{tenant.code}/runs/?sort=-duration")
    assert shown(cut) == ["run 4", "run 3", "run 2"]
    assert "among the newest 3" in cut.text
    # Narrowed to fewer runs than the window: all of them, and no note.
    narrow = client.get(f"/t/{tenant.code}/runs/?sort=-duration&date_from=2026-03-04")
    assert shown(narrow) == ["run 4", "run 3"]
    assert "among the newest" not in narrow.text
    newest_first = client.get(f"/t/{tenant.code}/runs/?sort=-created")
    assert len(shown(newest_first)) == 5 and "among the newest" not in newest_first.text


def test_the_sorted_column_says_so_to_screen_readers(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 1)
    client.force_login(rita)
    plain = client.get(f"/t/{tenant.code}/runs/")
    assert plain.text.count("aria-sort=") == 1 and 'aria-sort="descending"' in plain.text
    by_duration = client.get(f"/t/{tenant.code}/runs/?sort=duration")
    assert 'aria-sort="ascending"' in by_duration.text
    assert "?sort=-duration" in by_duration.text  # a second click reverses it


def test_the_list_shows_duration_and_bytes_written(client, rita, tenant, schedule) -> None:
    start = timezone.now() - timedelta(hours=1)
    BackupScheduleRun.objects.create(
        tenant=tenant,
        schedule=schedule,
        status=RunStatus.SUCCEEDED,
        created_at=start,
        started_at=start,
        finished_at=start + timedelta(minutes=3, seconds=7),
        bytes_written=5 * 1024 * 1024,
    )
    client.force_login(rita)
    text = table(client.get(f"/t/{tenant.code}/runs/"))
    assert "3 min 07 s" in text
    assert "5.0\xa0MB" in text


def test_duration_text_reads_at_a_glance() -> None:
    assert duration_text(None) == ""
    assert duration_text(timedelta(seconds=0.4)) == "0.4 s"
    assert duration_text(timedelta(seconds=12)) == "12 s"
    assert duration_text(timedelta(minutes=3, seconds=7)) == "3 min 07 s"
    assert duration_text(timedelta(hours=2, minutes=5, seconds=59)) == "2 h 05 min"


def test_queued_and_running_rows_make_the_table_poll_with_the_same_filters(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 2)
    client.force_login(rita)
    url = f"/t/{tenant.code}/runs/?schedule={schedule.code}&sort=-started"
    quiet = client.get(url)
    assert "every 3s" not in quiet.text
    run_now(schedule, actor=None)
    busy = client.get(url)
    match = re.search(r'id="run-table"[^>]*hx-get="([^"]+)" hx-trigger="every 3s"', busy.text)
    assert match is not None
    assert match.group(1).replace("&amp;", "&") == url
    # The poll itself answers with the table alone, still polling while the run is queued.
    poll = client.get(url, headers={"HX-Request": "true"})
    assert "<html" not in poll.text and "every 3s" in poll.text


def test_an_htmx_request_gets_only_the_table(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 2)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/runs/?status=succeeded", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert "<html" not in response.text and "<form" not in response.text
    assert 'id="run-table"' in response.text and "message 001" in response.text
    assert "HX-Request" in response["Vary"]


def test_the_filter_form_works_without_javascript_and_pushes_the_url_with_it(client, rita, tenant) -> None:
    client.force_login(rita)
    text = client.get(f"/t/{tenant.code}/runs/").text
    start = text.index('<form method="get"')
    form = text[start : text.index("</form>", start)]
    assert f'action="/t/{tenant.code}/runs/"' in form and 'hx-push-url="true"' in form
    for name in ("schedule", "status", "trigger", "operation", "date_from", "date_to", "sort"):
        assert f'<label for="id_{name}">' in form
        assert f'name="{name}"' in form


def test_the_list_shows_only_the_tenants_runs(client, charlie, schedule) -> None:
    make_runs(schedule, 2)
    own = charlie.memberships.get().tenant
    client.force_login(charlie)
    response = client.get(f"/t/{own.code}/runs/")
    assert response.status_code == 200
    assert "message 001" not in response.text
    assert "No runs yet" in response.text


def test_the_list_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.get(f"/t/{tenant.code}/runs/").status_code == 404


def test_the_list_rejects_post(client, rita, tenant) -> None:
    client.force_login(rita)
    assert client.post(f"/t/{tenant.code}/runs/").status_code == 405


def test_the_list_requires_login(client, tenant) -> None:
    assert_login_redirect(client.get(f"/t/{tenant.code}/runs/"))


@pytest.mark.parametrize("query", ["", "?status=failed&sort=-duration", "?date_from=2020-01-01&sort=status&page=2"])
def test_the_list_costs_the_same_queries_for_10_and_200_runs(client, rita, bob, tenant, schedule, query) -> None:
    client.force_login(rita)
    url = f"/t/{tenant.code}/runs/{query}"

    def queries_with(count: int) -> int:
        BackupScheduleRun.objects.all().delete()
        runs = make_runs(schedule, count // 2) + make_runs(schedule, count - count // 2, status=RunStatus.FAILED)
        # Every row shows who asked for it, when someone did.
        BackupScheduleRun.objects.filter(pk__in=[run.pk for run in runs[::2]]).update(
            requested_by=bob, trigger=Trigger.MANUAL
        )
        with CaptureQueriesContext(connection) as queries:
            response = client.get(url)
        assert response.status_code == 200
        return len(queries)

    assert queries_with(10) == queries_with(200)


def _plan(queryset) -> str:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL enable_seqscan = off")  # a tiny test table would be read whole
            plan = queryset.explain()
            cursor.execute("SET LOCAL enable_seqscan = on")
        return plan
    return queryset.explain()


def test_the_list_walks_the_tenant_time_status_and_schedule_indexes(tenant, schedule, source) -> None:
    # Enough rows, of several statuses and schedules, for PostgreSQL's planner to weigh.
    other = make_schedule(tenant, source, name="Weekly")
    make_runs(schedule, 1500)
    make_runs(other, 1500, start=timezone.now() - timedelta(days=3))
    make_runs(schedule, 20, status=RunStatus.FAILED, start=timezone.now() - timedelta(days=5))
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE scheduling_backupschedulerun")
    schedules = [schedule, other]
    plain = RunFilterForm({}, schedules=schedules)
    assert "scheduling_run_tenant_time" in _plan(filtered_runs(tenant.pk, plain)[:51])
    with_status = RunFilterForm({"status": "failed", "date_from": "2026-01-01"}, schedules=schedules)
    assert "scheduling_run_tenant_status" in _plan(filtered_runs(tenant.pk, with_status)[:51])
    by_schedule = RunFilterForm({"schedule": str(schedule.code)}, schedules=schedules)
    assert "scheduling_run_schedule_time" in _plan(filtered_runs(tenant.pk, by_schedule)[:51])


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
    assert "every 3s" not in response.text  # finished: nothing to follow


def test_the_detail_shows_a_timeline(client, rita, schedule) -> None:
    created = datetime(2026, 3, 1, 2, 30, tzinfo=UTC)
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant,
        schedule=schedule,
        status=RunStatus.SUCCEEDED,
        created_at=created,
        started_at=created + timedelta(seconds=2),
        finished_at=created + timedelta(seconds=65),
    )
    client.force_login(rita)
    text = client.get(f"/runs/{run.code}/").text
    timeline = text[text.index('class="timeline"') :]
    assert timeline.index("2026-03-01 02:30:00") < timeline.index("2026-03-01 02:30:02") < timeline.index("02:31:05")


def test_the_detail_shows_the_backup_set_and_its_items(client, rita, schedule) -> None:
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    make_stored_set(schedule, run, sha256="cd" * 32, size=2048, source_size=4096)
    client.force_login(rita)
    response = client.get(f"/runs/{run.code}/")
    assert "cd" * 32 in response.text
    assert "2048 bytes" in response.text
    assert "Shop" in response.text and "Stored" in response.text


def test_the_detail_of_a_running_run_follows_it(client, rita, schedule) -> None:
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant,
        schedule=schedule,
        status=RunStatus.RUNNING,
        created_at=timezone.now(),
        started_at=timezone.now(),
        bytes_written=3 * 1024 * 1024,
        log="10:00:00 Run started\n",
    )
    client.force_login(rita)
    page = client.get(f"/runs/{run.code}/")
    assert f'hx-get="/runs/{run.code}/" hx-trigger="every 3s"' in page.text
    assert "Written so far" in page.text and "3.0\xa0MB" in page.text
    assert 'data-follow="true"' in page.text
    # The poll gets the live part alone, with what changed meanwhile.
    BackupScheduleRun.objects.filter(pk=run.pk).update(
        bytes_written=7 * 1024 * 1024, log="10:00:00 Run started\n10:00:05 Stored 7340032 bytes\n"
    )
    poll = client.get(f"/runs/{run.code}/", headers={"HX-Request": "true"})
    assert "<html" not in poll.text and 'id="run-live"' in poll.text
    assert "7.0\xa0MB" in poll.text and "Stored 7340032 bytes" in poll.text
    assert "every 3s" in poll.text
    assert "HX-Request" in poll["Vary"]
    # Once finished, the answer no longer asks to be polled: polling stops.
    BackupScheduleRun.objects.filter(pk=run.pk).update(status=RunStatus.SUCCEEDED, finished_at=timezone.now())
    done = client.get(f"/runs/{run.code}/", headers={"HX-Request": "true"})
    assert "every 3s" not in done.text and "Succeeded" in done.text


def test_the_detail_shows_the_end_of_a_very_long_log(client, rita, schedule) -> None:
    run = failed_run(schedule)
    BackupScheduleRun.objects.filter(pk=run.pk).update(log="early line\n" + "x" * LOG_TAIL_CHARS + "\nlast line\n")
    client.force_login(rita)
    text = client.get(f"/runs/{run.code}/").text
    assert "last line" in text and "early line" not in text
    assert "the end is shown" in text


def test_the_detail_links_the_attempts_of_a_retried_run(client, bob, schedule) -> None:
    first = failed_run(schedule)
    client.force_login(bob)
    client.post(f"/runs/{first.code}/retry/")
    second = BackupScheduleRun.objects.get(retry_of=first)
    BackupScheduleRun.objects.filter(pk=second.pk).update(status=RunStatus.FAILED, finished_at=timezone.now())
    client.post(f"/runs/{second.code}/retry/")
    third = BackupScheduleRun.objects.get(attempt=3)
    text = client.get(f"/runs/{second.code}/").text
    chain = text[text.index('class="attempts"') :]
    assert (
        chain.index(f"/runs/{first.code}/") < chain.index("Attempt 2 (this run)") < chain.index(f"/runs/{third.code}/")
    )
    assert "Attempts" not in client.get(f"/runs/{failed_run(schedule, created_at=timezone.now()).code}/").text


def test_the_detail_costs_the_same_queries_with_1_or_20_items(client, rita, schedule) -> None:
    from backups.models import BackupItem

    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    backup_set = make_stored_set(schedule, run)
    client.force_login(rita)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(f"/runs/{run.code}/").status_code == 200
        return len(queries)

    one = count()
    BackupItem.objects.bulk_create(
        BackupItem(backup_set=backup_set, kind="sqlite", label=f"db {i}", size=1) for i in range(19)
    )
    assert count() == one


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
    assert client.get(f"/runs/{run.code}/", headers={"HX-Request": "true"}).status_code == 404


def test_the_detail_rejects_post(client, rita, schedule) -> None:
    run = failed_run(schedule)
    client.force_login(rita)
    assert client.post(f"/runs/{run.code}/").status_code == 405


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


def test_the_retry_message_shows_as_a_toast(client, bob, schedule) -> None:
    run = failed_run(schedule)
    client.force_login(bob)
    response = client.post(f"/runs/{run.code}/retry/", follow=True)
    toasts = response.text[response.text.index('id="messages"') :]
    assert 'aria-live="polite"' in response.text
    assert "Retry queued (attempt 2)." in toasts and 'class="toast-close"' in toasts
    assert 'data-dismiss-after="8000"' in toasts


def test_retrying_a_succeeded_run_shows_the_refusal(client, bob, schedule) -> None:
    (run,) = make_runs(schedule, 1)
    client.force_login(bob)
    response = client.post(f"/runs/{run.code}/retry/", follow=True)
    assert response.status_code == 200
    assert "Only failed or canceled runs can be retried" in response.text
    assert "toast-error" in response.text and "data-dismiss-after" not in response.text  # errors stay
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


# ------------------------------------------------------------------ the viewer's clock

# Exactly as static/js/app.js writes it (encodeURIComponent), and as the browser sends it.
CHICAGO_COOKIE = "America%2FChicago"


def test_the_list_prints_times_on_the_viewers_clock_from_the_encoded_cookie(client, rita, tenant, schedule) -> None:
    # 1 July 2026 17:04:05 UTC is 12:04:05 CDT; 1 December, 11:04:05 CST (a second offset).
    summer = datetime(2026, 7, 1, 17, 4, 5, tzinfo=UTC)
    make_runs(schedule, 1, start=summer, started_at=summer)
    make_runs(schedule, 1, start=datetime(2026, 12, 1, 17, 4, 5, tzinfo=UTC))
    client.force_login(rita)
    client.cookies["tz"] = CHICAGO_COOKIE
    text = client.get(f"/t/{tenant.code}/runs/").text
    assert "Times are in your zone, America/Chicago." in text
    assert text.count("2026-07-01 12:04:05 CDT") == 2  # created and started
    assert "2026-12-01 11:04:05 CST" in text
    assert "17:04:05" not in text


def test_without_a_zone_cookie_times_are_utc_and_say_so(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 1, start=datetime(2026, 7, 1, 17, 4, 5, tzinfo=UTC))
    client.force_login(rita)
    text = client.get(f"/t/{tenant.code}/runs/").text
    assert "Times are UTC." in text and "2026-07-01 17:04:05 UTC" in text


def test_the_date_filter_counts_whole_days_on_the_viewers_clock(client, rita, tenant, schedule) -> None:
    # 2 March in Chicago (CST, UTC-6) runs from 06:00 UTC on the 2nd to 06:00 UTC on the 3rd.
    for at, message in [
        (datetime(2026, 3, 2, 5, 59, tzinfo=UTC), "1 March late"),
        (datetime(2026, 3, 2, 6, 0, tzinfo=UTC), "2 March first"),
        (datetime(2026, 3, 3, 5, 59, tzinfo=UTC), "2 March last"),
        (datetime(2026, 3, 3, 6, 0, tzinfo=UTC), "3 March"),
    ]:
        run = make_runs(schedule, 1, start=at)[0]
        BackupScheduleRun.objects.filter(pk=run.pk).update(error_message=message)
    client.force_login(rita)
    client.cookies["tz"] = CHICAGO_COOKIE
    response = client.get(f"/t/{tenant.code}/runs/?date_from=2026-03-02&date_to=2026-03-02")
    assert [run.error_message for run in response.context["page"]] == ["2 March last", "2 March first"]


def test_the_detail_prints_its_timeline_and_slot_on_the_viewers_clock(client, rita, schedule) -> None:
    created = datetime(2026, 7, 1, 0, 30, tzinfo=UTC)  # 02:30 CEST in Berlin, 19:30 CDT the day before
    run = BackupScheduleRun.objects.create(
        tenant=schedule.tenant,
        schedule=schedule,
        status=RunStatus.SUCCEEDED,
        slot=created,
        created_at=created,
        started_at=created + timedelta(seconds=2),
        finished_at=created + timedelta(seconds=65),
    )
    client.force_login(rita)
    client.cookies["tz"] = CHICAGO_COOKIE
    text = client.get(f"/runs/{run.code}/").text
    timeline = text[text.index('class="timeline"') :]
    assert timeline.index("2026-06-30 19:30:00 CDT") < timeline.index("19:30:02 CDT") < timeline.index("19:31:05 CDT")
    slot = text[text.index("<dt>Slot</dt>") : text.index("<dt>Attempt</dt>")]
    # The viewer's clock first, then the schedule's own.
    assert slot.index("2026-06-30 19:30 CDT") < slot.index("2026-07-01 02:30 CEST (Europe/Berlin)")


# ------------------------------------------------------------------ verify and restore runs


def test_a_verify_run_names_its_operation_and_the_set_it_checks(client, rita, bob, tenant, schedule) -> None:
    from scheduling.operations import request_verify

    backup = BackupScheduleRun.objects.create(
        tenant=tenant,
        schedule=schedule,
        status=RunStatus.SUCCEEDED,
        created_at=datetime(2026, 7, 1, 17, 4, 5, tzinfo=UTC),
    )
    backup_set = make_stored_set(schedule, backup, sha256="ef" * 32)
    verify = request_verify(backup_set, bob, enqueue=False)
    client.force_login(rita)
    listing = table(client.get(f"/t/{tenant.code}/runs/"))
    row = listing[listing.index(f"/runs/{verify.code}/") :]
    row = row[: row.index("</tr>")]
    assert "Verify requested" in row and "Run now" not in row

    text = client.get(f"/runs/{verify.code}/").text
    trigger = text[text.index("<dt>Trigger</dt>") : text.index("<dt>Slot</dt>")]
    assert "Verify requested" in trigger and "by bob" in trigger and "Run now" not in trigger
    section = text[text.index('id="set-heading"') : text.index('id="log-heading"')]
    assert "Not stored yet" not in section
    assert f'href="/runs/{backup.code}/"' in section and "ef" * 32 in section
    assert "it makes no set of its own" in section


def test_a_restore_run_names_its_operation_and_the_set_it_restores(client, alice, tenant, schedule) -> None:
    from scheduling.operations import request_restore

    backup = BackupScheduleRun.objects.create(
        tenant=tenant, schedule=schedule, status=RunStatus.SUCCEEDED, created_at=timezone.now()
    )
    backup_set = make_stored_set(schedule, backup)
    restore = request_restore(backup_set, alice, enqueue=False)
    client.force_login(alice)
    text = client.get(f"/runs/{restore.code}/").text
    assert "Restore requested" in text[text.index("<dt>Trigger</dt>") : text.index("<dt>Slot</dt>")]
    assert "<dt>Backup set restored</dt>" in text
    section = text[text.index('id="set-heading"') : text.index('id="log-heading"')]
    assert "Not stored yet" not in section and f'href="/runs/{backup.code}/"' in section
    # The schedule's history says the same.
    history = client.get(f"/schedules/{schedule.code}/").text
    assert "Restore requested" in history


# ------------------------------------------------------------------ new runs while the page is open


def newer_url(response) -> str | None:
    match = re.search(r'hx-get="([^"]*newer_than=[^"]*)" hx-trigger="every 10s"', response.text)
    return match.group(1).replace("&amp;", "&") if match else None


def test_a_quiet_first_page_asks_for_newer_runs_and_hears_of_one_matching_its_filters(
    client, rita, tenant, schedule, source
) -> None:
    other = make_schedule(tenant, source, name="Weekly")
    make_runs(schedule, 2)
    client.force_login(rita)
    page = client.get(f"/t/{tenant.code}/runs/?schedule={schedule.code}&status=queued")
    # Nothing active, nothing shown: the table waits for the check's word, it does not poll.
    assert "every 3s" not in page.text and 'hx-trigger="runs-changed from:body"' in page.text
    check = newer_url(page)
    assert check is not None and f"schedule={schedule.code}" in check and "status=queued" in check
    answer = client.get(check, headers={"HX-Request": "true"})
    assert answer.status_code == 204 and "HX-Trigger" not in answer

    run_now(other, actor=None)  # another schedule's run: filtered out
    assert "HX-Trigger" not in client.get(check, headers={"HX-Request": "true"})
    run_now(schedule, actor=None)
    answer = client.get(check, headers={"HX-Request": "true"})
    assert answer.status_code == 204 and answer["HX-Trigger"] == "runs-changed"
    # The table's own URL (what runs-changed fetches) keeps the filters and polls now.
    table_url = re.search(r'id="run-table"[^>]*hx-get="([^"]+)"', page.text).group(1).replace("&amp;", "&")
    assert "newer_than" not in table_url
    redrawn = client.get(table_url, headers={"HX-Request": "true"})
    assert "every 3s" in redrawn.text and newer_url(redrawn) is None


def test_the_newer_check_counts_from_the_newest_matching_run_shown(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 3, start=datetime(2026, 3, 1, tzinfo=UTC))
    client.force_login(rita)
    check = newer_url(client.get(f"/t/{tenant.code}/runs/"))
    assert check is not None and "newer_than=2026-03-01T00%3A02%3A00%2B00%3A00" in check
    assert "HX-Trigger" not in client.get(check, headers={"HX-Request": "true"})
    make_runs(schedule, 1, start=datetime(2026, 3, 1, 0, 2, 0, 1, tzinfo=UTC))  # a microsecond later
    assert client.get(check, headers={"HX-Request": "true"})["HX-Trigger"] == "runs-changed"


@pytest.mark.parametrize("value", ["yesterday", "2026-13-45T00:00", "%00"])
def test_a_newer_check_with_a_bad_instant_says_changed_never_a_500(client, rita, tenant, value) -> None:
    client.force_login(rita)
    answer = client.get(f"/t/{tenant.code}/runs/?newer_than={value}", headers={"HX-Request": "true"})
    assert answer.status_code == 204 and answer["HX-Trigger"] == "runs-changed"


def test_later_pages_and_busy_pages_do_not_ask_for_newer_runs(client, rita, tenant, schedule) -> None:
    make_runs(schedule, 60)
    client.force_login(rita)
    assert newer_url(client.get(f"/t/{tenant.code}/runs/")) is not None
    assert newer_url(client.get(f"/t/{tenant.code}/runs/?page=2")) is None
    run_now(schedule, actor=None)
    busy = client.get(f"/t/{tenant.code}/runs/")
    assert newer_url(busy) is None and "every 3s" in busy.text


def test_the_newer_check_costs_the_same_queries_for_10_and_200_runs(client, rita, tenant, schedule) -> None:
    client.force_login(rita)

    def queries_with(count: int) -> int:
        BackupScheduleRun.objects.all().delete()
        make_runs(schedule, count)
        check = newer_url(client.get(f"/t/{tenant.code}/runs/?status=succeeded"))
        with CaptureQueriesContext(connection) as queries:
            assert client.get(check, headers={"HX-Request": "true"}).status_code == 204
        return len(queries)

    assert queries_with(10) == queries_with(200)


def test_the_newer_check_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.get(f"/t/{tenant.code}/runs/?newer_than=", headers={"HX-Request": "true"}).status_code == 404
