from __future__ import annotations

import io
import os
import sqlite3
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError

from backups.dirfd import open_resolved
from backups.engines.base import DumpContext, DumpTarget, RestoreTarget
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupSource, SourceKind
from backups.paths import Place, check_restore_target, check_source_path, open_folder, source_place
from tenants.models import AuditAction, AuditLog, Tenant


@pytest.fixture
def server_root(settings) -> Path:
    return settings.SOURCE_ROOTS[0]


@pytest.fixture
def acme(db, server_root) -> Tenant:
    (server_root / "acme").mkdir()
    return Tenant.objects.create(name="Acme", file_roots=[str(server_root / "acme")])


@pytest.fixture
def globex(db, server_root) -> Tenant:
    (server_root / "globex").mkdir()
    (server_root / "globex" / "secret.sqlite3").write_bytes(b"globex's data")
    return Tenant.objects.create(name="Globex", file_roots=[str(server_root / "globex")])


def roots_error(tenant: Tenant, roots: list) -> list[str]:
    tenant.file_roots = roots
    with pytest.raises(ValidationError) as caught:
        tenant.full_clean()
    return caught.value.message_dict["file_roots"]


# ---------------------------------------------------------------- Tenant.clean


def test_a_tenant_root_inside_the_server_roots_is_accepted_and_stored_resolved(acme, server_root) -> None:
    (server_root / "acme" / "db").mkdir()
    acme.file_roots = [str(server_root / "acme" / "x" / ".." / "db"), str(server_root / "acme" / "db")]
    acme.full_clean()
    assert acme.file_roots == [str(server_root / "acme" / "db")]  # resolved, duplicates folded


@pytest.mark.parametrize("root", ["relative/path", "", "/etc", "/"])
def test_a_tenant_root_must_be_absolute_and_inside_the_server_roots(acme, root) -> None:
    assert roots_error(acme, [root])


def test_a_dot_dot_trick_does_not_lead_a_root_out_of_the_server_roots(acme, server_root) -> None:
    (message,) = roots_error(acme, [str(server_root / "acme" / ".." / ".." / "elsewhere")])
    assert "outside the server's source roots" in message


def test_a_root_that_is_a_symlink_leading_out_is_refused(acme, server_root, tmp_path) -> None:
    (server_root / "sneaky").symlink_to(tmp_path)
    assert "outside the server's source roots" in roots_error(acme, [str(server_root / "sneaky")])[0]


@pytest.mark.parametrize("relation", ["equal", "inside", "containing"])
def test_a_root_may_not_overlap_another_tenants_root(acme, globex, server_root, relation) -> None:
    root = {
        "equal": server_root / "globex",
        "inside": server_root / "globex" / "sub",
        "containing": server_root,
    }[relation]
    assert "another tenant's root" in roots_error(acme, [str(root)])[0]


def test_a_symlink_into_another_tenants_root_is_no_way_around(acme, globex, server_root) -> None:
    (server_root / "acme" / "shortcut").symlink_to(server_root / "globex")
    assert "another tenant's root" in roots_error(acme, [str(server_root / "acme" / "shortcut")])[0]


def test_roots_must_be_a_list_of_strings(acme) -> None:
    assert roots_error(acme, [42])
    acme.file_roots = "/srv"
    with pytest.raises(ValidationError):
        acme.full_clean()


# ---------------------------------------------------------------- sources and restore targets


@pytest.mark.parametrize("check", [check_source_path, check_restore_target])
def test_paths_leaving_the_tenants_root_are_refused(acme, globex, server_root, tmp_path, check) -> None:
    (tmp_path / "outside.sqlite3").touch()
    (server_root / "acme" / "link-out").symlink_to(tmp_path)
    (server_root / "acme" / "link-to-globex").symlink_to(server_root / "globex")
    for path in [
        "/etc/passwd",
        str(server_root / "acme" / ".." / "globex" / "secret.sqlite3"),
        str(server_root / "acme" / ".." / ".." / "outside.sqlite3"),
        str(server_root / "acme" / "link-out" / "outside.sqlite3"),
        str(server_root / "acme" / "link-to-globex" / "secret.sqlite3"),
        str(server_root / "globex" / "secret.sqlite3"),
        "relative.sqlite3",
        "",
    ]:
        with pytest.raises(BackupError) as caught:
            check(path, acme)
        assert caught.value.code == ErrorCode.PERMISSION_DENIED, path


@pytest.mark.parametrize("check", [check_source_path, check_restore_target])
def test_another_tenants_folder_is_refused_even_if_roots_were_saved_overlapping(acme, server_root, check, db) -> None:
    # Saved without Tenant.clean (a script, an old row): the check at use time still holds.
    inner = server_root / "acme" / "shared"
    inner.mkdir()
    Tenant.objects.create(name="Squatter", file_roots=[str(inner)])
    with pytest.raises(BackupError, match="another tenant"):
        check(str(inner / "file.sqlite3"), acme)
    with pytest.raises(BackupError, match="another tenant"):  # a folder containing it is refused too
        check_source_path(str(server_root / "acme"), acme)


@pytest.mark.parametrize("check", [check_source_path, check_restore_target])
def test_a_symlink_loop_on_the_way_is_refused_with_a_code(acme, server_root, check) -> None:
    (server_root / "acme" / "loop").symlink_to(server_root / "acme" / "loop")
    with pytest.raises(BackupError) as caught:
        check(str(server_root / "acme" / "loop" / "db.sqlite3"), acme)
    assert caught.value.code == ErrorCode.PERMISSION_DENIED and "loops" in caught.value.message


def test_a_root_itself_is_no_restore_target(acme, server_root) -> None:
    with pytest.raises(BackupError, match="whole root"):
        check_restore_target(str(server_root / "acme"), acme)
    assert check_restore_target(str(server_root / "acme" / "new-folder"), acme) == server_root / "acme" / "new-folder"


def test_a_tenant_without_roots_may_use_no_path(db, server_root) -> None:
    lonely = Tenant.objects.create(name="Lonely")
    with pytest.raises(BackupError, match="no folder"):
        check_source_path(str(server_root / "x.sqlite3"), lonely)


def test_an_engine_restore_never_writes_outside_the_tenants_roots(acme, globex, server_root) -> None:
    path = server_root / "acme" / "app.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    source = BackupSource.objects.create(tenant=acme, name="App", kind=SourceKind.SQLITE, path=str(path))
    passwd = Path("/etc/passwd").read_bytes()
    secret = server_root / "globex" / "secret.sqlite3"
    for target in ["/etc/passwd", str(secret), str(server_root / "acme" / ".." / "globex" / "secret.sqlite3")]:
        with pytest.raises(BackupError) as caught:
            engine_for("sqlite").restore(
                source,
                DumpTarget(label="App"),
                io.BytesIO(path.read_bytes()),
                RestoreTarget(path=target, overwrite=True),
                DumpContext(log=lambda _: None),
            )
        assert caught.value.code == ErrorCode.PERMISSION_DENIED
    assert Path("/etc/passwd").read_bytes() == passwd
    assert secret.read_bytes() == b"globex's data"
    folder = BackupSource.objects.create(
        tenant=acme, name="Files", kind=SourceKind.DIRECTORY, path=str(server_root / "acme")
    )
    with pytest.raises(BackupError):
        engine_for("directory").restore(
            folder,
            DumpTarget(label="Files"),
            io.BytesIO(b""),
            RestoreTarget(path=str(server_root / "globex"), overwrite=True),
            DumpContext(log=lambda _: None),
        )
    assert sorted(os.listdir(server_root / "globex")) == ["secret.sqlite3"]


# ---------------------------------------------------------------- opening by descriptors


def test_a_stored_path_that_now_leads_through_a_symlink_is_refused_when_opened(acme, server_root) -> None:
    real = server_root / "acme" / "real"
    real.mkdir()
    (real / "db.sqlite3").touch()
    (server_root / "acme" / "alias").symlink_to(real)  # inside the root: the check itself accepts it
    assert check_source_path(str(server_root / "acme" / "alias" / "db.sqlite3"), acme) == real / "db.sqlite3"
    with pytest.raises(BackupError) as caught:
        source_place(str(server_root / "acme" / "alias" / "db.sqlite3"), acme)
    assert caught.value.code == ErrorCode.PERMISSION_DENIED and "symlink" in caught.value.message
    assert source_place(str(real / "db.sqlite3"), acme).parts == ("real", "db.sqlite3")


def test_a_symlink_above_the_root_is_the_servers_layout_and_is_followed(acme, server_root, tmp_path) -> None:
    (server_root / "acme" / "db.sqlite3").touch()
    (tmp_path / "layout").symlink_to(server_root)  # e.g. /srv -> /data/srv, made by staff
    place = source_place(str(tmp_path / "layout" / "acme" / "db.sqlite3"), acme)
    assert place == Place(root=server_root / "acme", parts=("db.sqlite3",))


def test_a_folder_on_the_way_swapped_for_a_symlink_after_the_check_is_not_followed(acme, server_root) -> None:
    (server_root / "acme" / "a" / "b").mkdir(parents=True)
    place = source_place(str(server_root / "acme" / "a" / "b"), acme)
    os.close(open_folder(place))
    # Swapped after the check, for a link that even stays inside the root: refused all the same.
    (server_root / "acme" / "a").rename(server_root / "acme" / "a-real")
    (server_root / "acme" / "a").symlink_to(server_root / "acme" / "a-real")
    with pytest.raises(BackupError) as caught:
        open_folder(place)
    assert caught.value.code == ErrorCode.PERMISSION_DENIED
    assert caught.value.message == f"{server_root / 'acme' / 'a'} is a symlink; " + (
        "the backup service never follows symlinks in a tenant's folders."
    )


def test_a_root_is_opened_from_slash_without_following_a_symlink_made_since(server_root, tmp_path) -> None:
    (server_root / "acme").mkdir()
    os.close(open_resolved(server_root / "acme"))
    (server_root / "acme").rename(server_root / "acme-moved")
    (server_root / "acme").symlink_to(tmp_path)
    with pytest.raises(BackupError, match="is a symlink"):
        open_resolved(server_root / "acme")


def test_a_sqlite_source_that_is_a_symlink_is_neither_backed_up_nor_tested(acme, server_root) -> None:
    real = server_root / "acme" / "real.sqlite3"
    with sqlite3.connect(real) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    source = BackupSource.objects.create(tenant=acme, name="App", kind=SourceKind.SQLITE, path=str(real))
    real.rename(server_root / "acme" / "moved.sqlite3")
    real.symlink_to(server_root / "acme" / "moved.sqlite3")  # made after the source was saved
    engine = engine_for("sqlite")
    with pytest.raises(BackupError) as caught, engine.dump(source, DumpTarget(label="App"), DumpContext(print)):
        pass
    assert caught.value.code == ErrorCode.PERMISSION_DENIED and "symlink" in caught.value.message
    result = engine.check_connection(source)
    assert not result.ok and result.error_code == ErrorCode.PERMISSION_DENIED


# ---------------------------------------------------------------- admin


@pytest.fixture
def admin_user(db) -> User:
    return User.objects.create_superuser("root", "root@example.org", "password-for-tests")


def admin_post(client, tenant: Tenant, roots: str):
    return client.post(
        f"/admin/tenants/tenant/{tenant.pk}/change/",
        {
            "name": tenant.name,
            "file_roots": roots,
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        },
    )


def test_staff_set_roots_one_per_line_and_the_change_is_audited(client, admin_user, acme, server_root) -> None:
    client.force_login(admin_user)
    page = client.get(f"/admin/tenants/tenant/{acme.pk}/change/")
    assert str(server_root / "acme") in page.content.decode()
    (server_root / "acme-2").mkdir()
    response = admin_post(client, acme, f"{server_root / 'acme'}\r\n\r\n{server_root / 'acme-2'}\r\n")
    assert response.status_code == 302
    acme.refresh_from_db()
    assert acme.file_roots == [str(server_root / "acme"), str(server_root / "acme-2")]
    entry = AuditLog.objects.get(action=AuditAction.TENANT_ROOTS_CHANGED)
    assert entry.actor == admin_user and entry.tenant == acme
    assert entry.details == {"before": [str(server_root / "acme")], "after": acme.file_roots}
    # Saving again without a change adds no entry.
    assert admin_post(client, acme, "\n".join(acme.file_roots)).status_code == 302
    assert AuditLog.objects.filter(action=AuditAction.TENANT_ROOTS_CHANGED).count() == 1


def test_the_admin_shows_a_form_error_for_another_tenants_root(client, admin_user, acme, globex, server_root) -> None:
    client.force_login(admin_user)
    response = admin_post(client, acme, f"{server_root / 'globex'}\n/etc")
    assert response.status_code == 200
    text = response.content.decode()
    assert "another tenant&#x27;s root" in text and "outside the server&#x27;s source roots" in text
    acme.refresh_from_db()
    assert acme.file_roots == [str(server_root / "acme")]
    assert not AuditLog.objects.filter(action=AuditAction.TENANT_ROOTS_CHANGED).exists()
