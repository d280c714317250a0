from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduling.models import Notification, NotificationKind
from scheduling.notifications import UNREAD_CAP


def notify(user, tenant, count: int = 1, **fields) -> list[Notification]:
    now = timezone.now()
    return Notification.objects.bulk_create(
        Notification(
            tenant=tenant,
            user=user,
            kind=fields.get("kind", NotificationKind.RUN_FAILED),
            run=fields.get("run"),
            message=f"note {i:03}",
            created_at=now + timedelta(seconds=i),
            read_at=fields.get("read_at"),
        )
        for i in range(count)
    )


def assert_login_redirect(response) -> None:
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


# ------------------------------------------------------------------ the bell


def test_the_bell_shows_the_unread_count_on_every_tenant_page(client, rita, alice, tenant) -> None:
    notify(rita, tenant, 3)
    notify(rita, tenant, 2, read_at=timezone.now())
    notify(alice, tenant, 5)  # someone else's
    client.force_login(rita)
    for path in ("schedules", "runs", "sources", "audit"):
        text = client.get(f"/t/{tenant.code}/{path}/").text
        bell = text[text.index('id="bell"') : text.index("</a>", text.index('id="bell"'))]
        assert '<span class="bell-count">3</span>' in bell
        assert f'href="/t/{tenant.code}/notifications/"' in text


def test_the_bell_says_none_unread(client, rita, tenant) -> None:
    client.force_login(rita)
    text = client.get(f"/t/{tenant.code}/runs/").text
    assert "bell-count" not in text and "none unread" in text


def test_the_bell_caps_its_count(client, rita, tenant) -> None:
    notify(rita, tenant, UNREAD_CAP + 5)
    client.force_login(rita)
    text = client.get(f"/t/{tenant.code}/runs/").text
    assert f'<span class="bell-count">{UNREAD_CAP - 1}+</span>' in text


def test_the_bell_counts_only_this_tenants(client, rita, tenant, charlie) -> None:
    own = charlie.memberships.get().tenant
    notify(rita, own, 4)  # from a tenant rita has since left, say
    client.force_login(rita)
    assert "bell-count" not in client.get(f"/t/{tenant.code}/runs/").text


def test_the_bell_costs_one_query_whatever_the_count(client, rita, tenant) -> None:
    client.force_login(rita)

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            client.get(f"/t/{tenant.code}/audit/")
        return len(queries)

    empty = count()
    notify(rita, tenant, 30)
    assert count() == empty


# ------------------------------------------------------------------ the list


def bell_url(tenant, section: str = "runs") -> str:
    return f"/t/{tenant.code}/notifications/bell/?section={section}"


def test_every_page_polls_the_bell(client, rita, tenant) -> None:
    client.force_login(rita)
    text = client.get(f"/t/{tenant.code}/schedules/").text
    bell = text[text.index('id="bell"') : text.index(">", text.index('id="bell"'))]
    assert f'hx-get="{bell_url(tenant, "schedules")}"' in bell
    assert 'hx-trigger="every 60s"' in bell and 'hx-swap="outerHTML"' in bell


def test_the_polled_bell_counts_what_came_since_the_page_loaded(client, rita, tenant) -> None:
    client.force_login(rita)
    assert "bell-count" not in client.get(f"/t/{tenant.code}/runs/").text
    notify(rita, tenant, 2)  # a run failed while the page was open
    response = client.get(bell_url(tenant), headers={"HX-Request": "true"})
    assert response.status_code == 200 and "HX-Request" in response["Vary"]
    fragment = response.text.strip()
    assert fragment.startswith('<a id="bell"') and "<html" not in fragment
    assert '<span class="bell-count">2</span>' in fragment
    assert f'hx-get="{bell_url(tenant)}"' in fragment  # and it goes on polling


def test_the_polled_bell_keeps_aria_current_on_the_notifications_page_only(client, rita, tenant) -> None:
    client.force_login(rita)
    on_list = client.get(bell_url(tenant, "notifications"), headers={"HX-Request": "true"}).text
    elsewhere = client.get(bell_url(tenant, "runs"), headers={"HX-Request": "true"}).text
    made_up = client.get(bell_url(tenant, '"><script>'), headers={"HX-Request": "true"}).text
    assert 'aria-current="page"' in on_list and 'aria-current="page"' not in elsewhere
    assert "<script>" not in made_up and "section=" in made_up


def test_the_polled_bell_costs_the_same_queries_whatever_the_count(client, rita, tenant) -> None:
    client.force_login(rita)

    def queries_with(count: int) -> int:
        Notification.objects.all().delete()
        notify(rita, tenant, count)
        with CaptureQueriesContext(connection) as queries:
            assert client.get(bell_url(tenant), headers={"HX-Request": "true"}).status_code == 200
        return len(queries)

    assert queries_with(1) == queries_with(UNREAD_CAP + 10)


def test_the_bell_without_htmx_goes_to_the_notifications(client, rita, tenant) -> None:
    client.force_login(rita)
    response = client.get(bell_url(tenant))
    assert response.status_code == 302 and response.url == f"/t/{tenant.code}/notifications/"


def test_the_polled_bell_checks_ownership_and_login(client, charlie, tenant) -> None:
    assert_login_redirect(client.get(bell_url(tenant), headers={"HX-Request": "true"}))
    client.force_login(charlie)
    assert client.get(bell_url(tenant), headers={"HX-Request": "true"}).status_code == 404
    assert client.post(bell_url(tenant)).status_code == 405


def test_marking_read_with_htmx_keeps_the_bell_polling(client, rita, tenant) -> None:
    (note,) = notify(rita, tenant)
    client.force_login(rita)
    text = client.post(f"/notifications/{note.code}/read/", headers={"HX-Request": "true"}).text
    bell = text[text.index('id="bell"') : text.index(">", text.index('id="bell"'))]
    assert "hx-get=" in bell and 'hx-swap-oob="true"' in bell


def test_the_list_shows_the_users_notifications_newest_first(client, rita, alice, tenant, schedule) -> None:
    from scheduling.models import BackupScheduleRun, RunStatus

    run = BackupScheduleRun.objects.create(
        tenant=tenant, schedule=schedule, status=RunStatus.FAILED, created_at=timezone.now()
    )
    mine = notify(rita, tenant, 3, run=run)
    notify(alice, tenant, 1, kind=NotificationKind.RUN_REQUESTED)
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/notifications/")
    assert response.status_code == 200
    text = response.text
    assert text.index("note 002") < text.index("note 001") < text.index("note 000")
    assert all(f'href="/notifications/{note.code}/"' in text for note in mine)  # the detail, one click away
    assert "Run now / Retry requested" not in text  # alice's
    assert "Mark all read" in text and 'aria-current="page"' in text


def test_the_list_pages_without_a_total(client, rita, tenant) -> None:
    notify(rita, tenant, 31)
    client.force_login(rita)
    first = client.get(f"/t/{tenant.code}/notifications/")
    assert len(first.context["page"]) == 30 and first.context["page"].has_next
    second = client.get(f"/t/{tenant.code}/notifications/?page=2", headers={"HX-Request": "true"})
    assert "note 000" in second.text and "<html" not in second.text
    assert client.get(f"/t/{tenant.code}/notifications/?page=x").status_code == 200


def test_the_list_says_when_there_is_nothing(client, rita, tenant) -> None:
    client.force_login(rita)
    assert "No notifications yet." in client.get(f"/t/{tenant.code}/notifications/").text


def test_the_list_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.get(f"/t/{tenant.code}/notifications/").status_code == 404


def test_the_list_rejects_post(client, rita, tenant) -> None:
    client.force_login(rita)
    assert client.post(f"/t/{tenant.code}/notifications/").status_code == 405


def test_the_list_requires_login(client, tenant) -> None:
    assert_login_redirect(client.get(f"/t/{tenant.code}/notifications/"))


# ------------------------------------------------------------------ mark read


def test_marking_one_read_goes_back_to_the_list(client, rita, tenant) -> None:
    first, second = notify(rita, tenant, 2)
    client.force_login(rita)
    response = client.post(f"/notifications/{first.code}/read/", {"next": f"/t/{tenant.code}/notifications/?page=1"})
    assert response.status_code == 302 and response.url == f"/t/{tenant.code}/notifications/?page=1"
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.read_at is not None and second.read_at is None


def test_marking_read_twice_keeps_the_first_time(client, rita, tenant) -> None:
    (note,) = notify(rita, tenant, 1)
    client.force_login(rita)
    client.post(f"/notifications/{note.code}/read/")
    note.refresh_from_db()
    first_time = note.read_at
    client.post(f"/notifications/{note.code}/read/")
    note.refresh_from_db()
    assert note.read_at == first_time


def test_marking_read_with_htmx_swaps_the_item_and_the_bell(client, rita, tenant) -> None:
    first, _second = notify(rita, tenant, 2)
    client.force_login(rita)
    response = client.post(f"/notifications/{first.code}/read/", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert f'id="note-{first.code}"' in response.text and "Mark read" not in response.text
    assert 'id="bell"' in response.text and 'hx-swap-oob="true"' in response.text
    assert '<span class="bell-count">1</span>' in response.text


def test_marking_read_ignores_an_outside_next(client, rita, tenant) -> None:
    (note,) = notify(rita, tenant, 1)
    client.force_login(rita)
    response = client.post(f"/notifications/{note.code}/read/", {"next": "https://evil.example/"})
    assert response.url == f"/t/{tenant.code}/notifications/"


def test_another_members_notification_cannot_be_marked(client, rita, alice, tenant) -> None:
    (note,) = notify(alice, tenant, 1)
    client.force_login(rita)
    assert client.post(f"/notifications/{note.code}/read/").status_code == 404
    note.refresh_from_db()
    assert note.read_at is None


def test_marking_read_checks_ownership(client, charlie, rita, tenant) -> None:
    (note,) = notify(rita, tenant, 1)
    client.force_login(charlie)
    assert client.post(f"/notifications/{note.code}/read/").status_code == 404


def test_marking_read_rejects_get(client, rita, tenant) -> None:
    (note,) = notify(rita, tenant, 1)
    client.force_login(rita)
    assert client.get(f"/notifications/{note.code}/read/").status_code == 405


def test_marking_read_requires_login(client, rita, tenant) -> None:
    (note,) = notify(rita, tenant, 1)
    assert_login_redirect(client.post(f"/notifications/{note.code}/read/"))


def test_marking_all_read_marks_only_mine_in_this_tenant(client, rita, alice, tenant, charlie) -> None:
    notify(rita, tenant, 3)
    notify(alice, tenant, 2)
    client.force_login(rita)
    response = client.post(f"/t/{tenant.code}/notifications/read-all/", follow=True)
    assert response.status_code == 200
    assert "Marked 3 notifications read." in response.text
    assert not Notification.objects.filter(user=rita, read_at__isnull=True).exists()
    assert Notification.objects.filter(user=alice, read_at__isnull=True).count() == 2


def test_marking_all_read_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.post(f"/t/{tenant.code}/notifications/read-all/").status_code == 404


def test_marking_all_read_rejects_get(client, rita, tenant) -> None:
    client.force_login(rita)
    assert client.get(f"/t/{tenant.code}/notifications/read-all/").status_code == 405


def test_marking_all_read_requires_login(client, tenant) -> None:
    assert_login_redirect(client.post(f"/t/{tenant.code}/notifications/read-all/"))


def test_marking_all_read_with_htmx_swaps_the_list_the_bell_and_adds_a_toast(client, rita, tenant) -> None:
    notify(rita, tenant, 2)
    client.force_login(rita)
    response = client.post(f"/t/{tenant.code}/notifications/read-all/", headers={"HX-Request": "true"})
    assert response.status_code == 200 and "<html" not in response.text
    assert 'id="notification-items"' in response.text and "Mark read" not in response.text
    assert 'id="bell"' in response.text and "bell-count" not in response.text
    assert '<div hx-swap-oob="beforeend:#messages">' in response.text
    assert "Marked 2 notifications read." in response.text
    # The toast was shown: it does not come back on the next page.
    assert "Marked 2 notifications read." not in client.get(f"/t/{tenant.code}/runs/").text


# ------------------------------------------------------------------ one notification in full


def _failed_run_note(user, tenant, schedule) -> Notification:
    from scheduling.models import BackupScheduleRun, RunStatus

    run = BackupScheduleRun.objects.create(
        tenant=tenant, schedule=schedule, status=RunStatus.FAILED, created_at=timezone.now()
    )
    return Notification.objects.create(
        tenant=tenant,
        user=user,
        kind=NotificationKind.RUN_FAILED,
        run=run,
        title="Backup of “Nightly” failed after 3 attempts",
        message="TIMEOUT: The backup was still going after the schedule's time limit (60 minutes) and was stopped.",
        created_at=timezone.now(),
    )


def test_the_list_shows_the_short_title_and_the_detail_page_the_rest(client, rita, tenant, schedule) -> None:
    note = _failed_run_note(rita, tenant, schedule)
    client.force_login(rita)
    listed = client.get(f"/t/{tenant.code}/notifications/").text
    assert f'<a href="/notifications/{note.code}/">Backup of “Nightly” failed after 3 attempts</a>' in listed
    assert "time limit" not in listed  # the detail is one click away
    response = client.get(f"/notifications/{note.code}/")
    assert response.status_code == 200
    text = response.text
    assert "<h1" in text and "Backup of “Nightly” failed after 3 attempts</h1>" in text
    assert "TIMEOUT: The backup was still going after the schedule&#x27;s time limit" in text
    assert f'href="/runs/{note.run.code}/"' in text
    assert f'href="/t/{tenant.code}/notifications/"' in text


def test_opening_a_notification_reads_it_once(client, rita, tenant, schedule) -> None:
    note = _failed_run_note(rita, tenant, schedule)
    client.force_login(rita)
    client.get(f"/notifications/{note.code}/")
    note.refresh_from_db()
    first = note.read_at
    assert first is not None
    client.get(f"/notifications/{note.code}/")
    note.refresh_from_db()
    assert note.read_at == first


def test_an_old_notification_without_a_title_shows_its_message(client, rita, tenant) -> None:
    (note,) = notify(rita, tenant, 1)
    client.force_login(rita)
    assert "note 000</h1>" in client.get(f"/notifications/{note.code}/").text


def test_the_detail_checks_ownership(client, charlie, rita, tenant, schedule) -> None:
    note = _failed_run_note(rita, tenant, schedule)
    client.force_login(charlie)
    assert client.get(f"/notifications/{note.code}/").status_code == 404


def test_another_members_notification_cannot_be_opened(client, rita, alice, tenant, schedule) -> None:
    note = _failed_run_note(alice, tenant, schedule)
    client.force_login(rita)
    assert client.get(f"/notifications/{note.code}/").status_code == 404
    note.refresh_from_db()
    assert note.read_at is None


def test_the_detail_rejects_post_and_requires_login(client, rita, tenant, schedule) -> None:
    note = _failed_run_note(rita, tenant, schedule)
    assert_login_redirect(client.get(f"/notifications/{note.code}/"))
    client.force_login(rita)
    assert client.post(f"/notifications/{note.code}/").status_code == 405
    assert client.get("/notifications/not-a-code/").status_code == 404
