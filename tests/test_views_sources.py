from __future__ import annotations

from backups.models import BackupSource
from tenants.models import AuditAction, AuditLog
from tests.conftest import make_sqlite_database


def assert_login_redirect(response) -> None:
    assert response.status_code == 302
    assert response.url.startswith("/accounts/login/")


def test_the_list_shows_sources_to_a_readonly_member(client, rita, tenant, schedule) -> None:
    client.force_login(rita)
    response = client.get(f"/t/{tenant.code}/sources/")
    assert response.status_code == 200
    assert "Shop" in response.text and "shop.sqlite3" in response.text
    assert "Add a source" not in response.text


def test_the_list_offers_the_form_to_a_manager(client, mia, tenant) -> None:
    client.force_login(mia)
    response = client.get(f"/t/{tenant.code}/sources/")
    assert "Add a source" in response.text
    assert '<label for="id_path">' in response.text


def test_the_list_checks_ownership(client, charlie, tenant) -> None:
    client.force_login(charlie)
    assert client.get(f"/t/{tenant.code}/sources/").status_code == 404


def test_the_list_requires_login(client, tenant) -> None:
    assert_login_redirect(client.get(f"/t/{tenant.code}/sources/"))


def test_a_manager_adds_a_source(client, mia, tenant, settings) -> None:
    path = make_sqlite_database(settings.SOURCE_ROOTS[0] / "crm.sqlite3")
    client.force_login(mia)
    assert client.get(f"/t/{tenant.code}/sources/new/").status_code == 200
    response = client.post(f"/t/{tenant.code}/sources/new/", {"name": "CRM", "kind": "sqlite", "path": str(path)})
    assert response.status_code == 302
    assert response.url == f"/t/{tenant.code}/sources/"
    source = BackupSource.objects.get(name="CRM")
    assert source.tenant == tenant and source.path == str(path)
    assert AuditLog.objects.filter(action=AuditAction.SOURCE_CREATED, actor=mia, target_code=source.code).exists()


def test_adding_a_source_outside_the_allowed_roots_is_refused(client, mia, tenant) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/sources/new/", {"name": "Etc", "kind": "sqlite", "path": "/etc/passwd"})
    assert response.status_code == 200
    assert "outside the folders this tenant may use" in response.text
    assert not BackupSource.objects.exists()


def test_adding_a_source_with_a_relative_path_is_refused(client, mia, tenant) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/sources/new/", {"name": "Rel", "kind": "sqlite", "path": "db.sqlite3"})
    assert response.status_code == 200
    assert not BackupSource.objects.exists()


def test_adding_a_source_with_a_taken_name_is_refused(client, mia, tenant, source, settings) -> None:
    client.force_login(mia)
    path = settings.SOURCE_ROOTS[0] / "other.sqlite3"
    response = client.post(f"/t/{tenant.code}/sources/new/", {"name": "Shop", "kind": "sqlite", "path": str(path)})
    assert response.status_code == 200
    assert "already has this name" in response.text
    assert BackupSource.objects.count() == 1


def test_adding_a_source_requires_manager(client, bob, tenant, settings) -> None:
    client.force_login(bob)
    path = settings.SOURCE_ROOTS[0] / "x.sqlite3"
    assert client.get(f"/t/{tenant.code}/sources/new/").status_code == 403
    response = client.post(f"/t/{tenant.code}/sources/new/", {"name": "X", "kind": "sqlite", "path": str(path)})
    assert response.status_code == 403
    assert not BackupSource.objects.exists()


def test_adding_a_source_checks_ownership(client, charlie, tenant, settings) -> None:
    client.force_login(charlie)
    path = settings.SOURCE_ROOTS[0] / "x.sqlite3"
    response = client.post(f"/t/{tenant.code}/sources/new/", {"name": "X", "kind": "sqlite", "path": str(path)})
    assert response.status_code == 404
    assert not BackupSource.objects.exists()


def test_adding_a_source_requires_login(client, tenant) -> None:
    assert_login_redirect(client.get(f"/t/{tenant.code}/sources/new/"))


def test_a_manager_edits_a_source_and_it_is_audited(client, mia, source, settings) -> None:
    client.force_login(mia)
    url = f"/sources/{source.code}/edit/"
    assert client.get(url).status_code == 200
    response = client.post(url, {"name": "Shop (primary)", "kind": "sqlite", "path": source.path})
    assert response.status_code == 302
    source.refresh_from_db()
    assert source.name == "Shop (primary)"
    entry = AuditLog.objects.get(action=AuditAction.SOURCE_UPDATED)
    assert entry.actor == mia and entry.details["changes"]["name"] == ["Shop", "Shop (primary)"]


def test_editing_a_source_refuses_a_path_outside_the_roots(client, mia, source) -> None:
    client.force_login(mia)
    response = client.post(f"/sources/{source.code}/edit/", {"name": "Shop", "kind": "sqlite", "path": "/etc/passwd"})
    assert response.status_code == 200
    assert "outside the folders" in response.text
    source.refresh_from_db()
    assert source.path != "/etc/passwd"


def test_a_source_in_use_is_not_deleted(client, mia, source, schedule) -> None:
    client.force_login(mia)
    assert "is used by Nightly" in client.get(f"/sources/{source.code}/delete/").text
    response = client.post(f"/sources/{source.code}/delete/", follow=True)
    assert "is used by Nightly" in response.text
    assert BackupSource.objects.filter(pk=source.pk).exists()


def test_a_manager_deletes_an_unused_source(client, mia, source) -> None:
    client.force_login(mia)
    response = client.post(f"/sources/{source.code}/delete/")
    assert response.status_code == 302
    assert not BackupSource.objects.filter(pk=source.pk).exists()
    assert AuditLog.objects.get(action=AuditAction.SOURCE_DELETED).actor == mia


def test_source_edit_and_delete_check_ownership_and_role(client, charlie, bob, source) -> None:
    for user, status in ((charlie, 404), (bob, 403)):
        client.force_login(user)
        for url in (f"/sources/{source.code}/edit/", f"/sources/{source.code}/delete/"):
            assert client.get(url).status_code == status
            assert client.post(url, {"name": "x", "kind": "sqlite", "path": source.path}).status_code == status
    assert BackupSource.objects.get(pk=source.pk).name == "Shop"


def test_source_edit_and_delete_require_login(client, source) -> None:
    assert_login_redirect(client.get(f"/sources/{source.code}/edit/"))
    assert_login_redirect(client.post(f"/sources/{source.code}/delete/"))


def test_source_delete_rejects_other_methods(client, mia, source) -> None:
    client.force_login(mia)
    assert client.put(f"/sources/{source.code}/delete/").status_code == 405
