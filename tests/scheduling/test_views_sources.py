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


# ---------------------------------------------------------------- server sources and their passwords

SECRET = "pa$$-Wörd-never-shown"


def pg_fields(**overrides) -> dict:
    fields = {
        "name": "Orders DB",
        "kind": "postgres",
        "host": "127.0.0.1",
        "port": "5432",
        "database": "orders",
        "username": "backup",
        "password": SECRET,
        "tls_mode": "require",
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


def all_audit_text() -> str:
    import json

    return json.dumps([[e.action, e.target_label, e.details] for e in AuditLog.objects.all()], ensure_ascii=False)


def test_a_manager_adds_a_postgres_source_and_the_password_is_stored_encrypted(client, mia, tenant, caplog) -> None:
    client.force_login(mia)
    with caplog.at_level("DEBUG"):
        response = client.post(f"/t/{tenant.code}/sources/new/", pg_fields())
    assert response.status_code == 302
    source = BackupSource.objects.get(name="Orders DB")
    assert (source.host, source.port, source.database, source.username) == ("127.0.0.1", 5432, "orders", "backup")
    assert source.tls_mode == "require" and source.path == ""
    assert SECRET not in source.password_encrypted and source.get_password() == SECRET
    entry = AuditLog.objects.get(action=AuditAction.SOURCE_CREATED)
    assert entry.details["password"] == "set" and entry.details["host"] == "127.0.0.1"
    assert SECRET not in all_audit_text() and source.password_encrypted not in all_audit_text()
    assert SECRET not in caplog.text
    listing = client.get(f"/t/{tenant.code}/sources/").text
    assert "backup@127.0.0.1:5432" in listing and "password stored" in listing and SECRET not in listing


def test_the_edit_page_never_renders_the_password(client, mia, tenant) -> None:
    client.force_login(mia)
    client.post(f"/t/{tenant.code}/sources/new/", pg_fields())
    source = BackupSource.objects.get(name="Orders DB")
    page = client.get(f"/sources/{source.code}/edit/").text
    assert SECRET not in page and source.password_encrypted not in page
    assert 'type="password" name="password"' in page and "A password is stored" in page
    assert "Clear the stored password" in page


def test_a_blank_password_on_edit_keeps_the_stored_one(client, mia, tenant) -> None:
    client.force_login(mia)
    client.post(f"/t/{tenant.code}/sources/new/", pg_fields())
    source = BackupSource.objects.get(name="Orders DB")
    response = client.post(f"/sources/{source.code}/edit/", pg_fields(password="", database="orders2"))
    assert response.status_code == 302
    source.refresh_from_db()
    assert source.get_password() == SECRET and source.database == "orders2"
    changes = AuditLog.objects.get(action=AuditAction.SOURCE_UPDATED).details["changes"]
    assert changes == {"database": ["orders", "orders2"]}


def test_a_new_password_replaces_the_stored_one_and_the_audit_says_only_that(client, mia, tenant) -> None:
    client.force_login(mia)
    client.post(f"/t/{tenant.code}/sources/new/", pg_fields())
    source = BackupSource.objects.get(name="Orders DB")
    client.post(f"/sources/{source.code}/edit/", pg_fields(password="another-Secret-9"))
    source.refresh_from_db()
    assert source.get_password() == "another-Secret-9"
    assert AuditLog.objects.get(action=AuditAction.SOURCE_UPDATED).details["changes"] == {"password": "set"}
    assert "another-Secret-9" not in all_audit_text()


def test_clear_password_removes_it(client, mia, tenant) -> None:
    client.force_login(mia)
    client.post(f"/t/{tenant.code}/sources/new/", pg_fields())
    source = BackupSource.objects.get(name="Orders DB")
    client.post(f"/sources/{source.code}/edit/", pg_fields(password="", clear_password="on"))
    source.refresh_from_db()
    assert not source.has_password
    assert AuditLog.objects.get(action=AuditAction.SOURCE_UPDATED).details["changes"] == {"password": "cleared"}


def test_typing_a_password_and_clearing_it_at_once_is_a_form_error(client, mia, tenant) -> None:
    client.force_login(mia)
    client.post(f"/t/{tenant.code}/sources/new/", pg_fields())
    source = BackupSource.objects.get(name="Orders DB")
    response = client.post(f"/sources/{source.code}/edit/", pg_fields(password="x-new", clear_password="on"))
    assert response.status_code == 200 and "not both" in response.text
    assert "x-new" not in response.text and SECRET not in response.text
    source.refresh_from_db()
    assert source.get_password() == SECRET


def test_a_refused_form_does_not_echo_the_typed_password(client, mia, tenant) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/sources/new/", pg_fields(host=""))
    assert response.status_code == 200
    assert "Enter the database server" in response.text and SECRET not in response.text
    assert not BackupSource.objects.exists()


def test_server_sources_need_a_host_a_user_and_a_database_or_all_databases(client, mia, tenant) -> None:
    client.force_login(mia)
    url = f"/t/{tenant.code}/sources/new/"
    response = client.post(url, pg_fields(host=None, username=None, database=None))
    assert response.status_code == 200
    for message in ("Enter the database server", "Enter the user name", "tick “All databases”"):
        assert message in response.text
    for bad_host in ("-oProxyCommand=x", "a b", "host;rm"):
        assert "Enter a host name" in client.post(url, pg_fields(host=bad_host)).text
    assert "from 1 to 65535" in client.post(url, pg_fields(port="70000")).text
    assert "at most 63 characters" in client.post(url, pg_fields(database="x" * 64)).text
    assert not BackupSource.objects.exists()
    response = client.post(url, pg_fields(kind="mysql", database=None, all_databases="on", port=None))
    assert response.status_code == 302
    source = BackupSource.objects.get()
    assert source.all_databases and source.database == "" and source.port == 3306


def test_the_form_groups_the_fields_per_kind(client, mia, tenant) -> None:
    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/sources/new/").text
    assert 'data-kinds="postgres mysql"' in page and 'data-kinds="sqlite directory"' in page
    for field in ("id_host", "id_port", "id_database", "id_all_databases", "id_username", "id_password", "id_tls_mode"):
        assert f'for="{field}"' in page
    assert "Clear the stored password" not in page  # nothing to clear on a new source


def test_switching_a_server_source_to_a_file_kind_drops_the_password(client, mia, tenant, settings) -> None:
    client.force_login(mia)
    client.post(f"/t/{tenant.code}/sources/new/", pg_fields())
    source = BackupSource.objects.get(name="Orders DB")
    path = make_sqlite_database(settings.SOURCE_ROOTS[0] / "moved.sqlite3")
    response = client.post(f"/sources/{source.code}/edit/", {"name": "Orders DB", "kind": "sqlite", "path": str(path)})
    assert response.status_code == 302
    source.refresh_from_db()
    assert not source.has_password and source.host == "" and source.path == str(path)


# ---------------------------------------------------------------- file sources: one error, warnings, help


def test_a_path_outside_the_roots_gets_one_error_only(client, mia, tenant) -> None:
    client.force_login(mia)
    response = client.post(f"/t/{tenant.code}/sources/new/", {"name": "Etc", "kind": "sqlite", "path": "/etc/passwd"})
    assert response.text.count("outside the folders this tenant may use") == 1
    assert "must be an absolute path" not in response.text


def test_a_path_that_does_not_exist_is_saved_with_a_warning(client, mia, tenant, settings) -> None:
    client.force_login(mia)
    path = settings.SOURCE_ROOTS[0] / "later.sqlite3"
    response = client.post(
        f"/t/{tenant.code}/sources/new/", {"name": "Later", "kind": "sqlite", "path": str(path)}, follow=True
    )
    assert BackupSource.objects.get().path == str(path)
    assert "toast-warning" in response.text and f"{path} does not exist (yet)" in response.text


def test_a_folder_given_as_an_sqlite_file_and_a_file_as_a_folder_are_refused(client, mia, tenant, settings) -> None:
    client.force_login(mia)
    url = f"/t/{tenant.code}/sources/new/"
    folder = settings.SOURCE_ROOTS[0]
    assert "choose the kind “Folder”" in client.post(url, {"name": "A", "kind": "sqlite", "path": str(folder)}).text
    shop = make_sqlite_database(folder / "shop.sqlite3")
    response = client.post(url, {"name": "B", "kind": "directory", "path": str(shop)})
    assert "This is a file, not a folder" in response.text
    assert not BackupSource.objects.exists()


def test_the_path_help_names_the_tenants_folders(client, mia, tenant, settings) -> None:
    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/sources/new/").text
    assert f"inside this tenant's folders: {settings.SOURCE_ROOTS[0]}." in page
    tenant.file_roots = []
    tenant.save()
    assert "This tenant has no folders yet" in client.get(f"/t/{tenant.code}/sources/new/").text


def test_the_pages_carry_no_inline_script_or_style(client, mia, tenant, source) -> None:
    import re

    client.force_login(mia)
    for url in (f"/t/{tenant.code}/sources/", f"/t/{tenant.code}/sources/new/", f"/sources/{source.code}/edit/"):
        page = client.get(url).text
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), url
        assert " style=" not in page and not re.search(r"\son[a-z]+=", page), url
