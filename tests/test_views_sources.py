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
    assert "outside the folders this server may back up" in response.text
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
