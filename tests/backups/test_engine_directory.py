from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from backups import storage
from backups.dirfd import open_resolved
from backups.engines.base import DumpContext, DumpTarget, RestoreTarget
from backups.engines.directory import archive_stream
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupSource, SourceKind
from scheduling.models import RunStatus
from scheduling.runs import run_now
from scheduling.worker import execute_run
from tenants.models import Tenant
from tests.helpers import make_schedule, stored_path

ENGINE = engine_for(SourceKind.DIRECTORY)


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under root: a file's sha256, a symlink's target, or 'dir'."""
    entries = {}
    for folder, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                entries[rel] = "dir"
            else:
                entries[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def make_tree(root: Path) -> Path:
    (root / "docs" / "deep" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "empty-too" / "inner").mkdir(parents=True)
    (root / "docs" / "readme.txt").write_text("hello\n")
    (root / "docs" / "deep" / "deeper" / "data.bin").write_bytes(os.urandom(300_000))
    (root / "Ünïcødé — 日本語.txt").write_text("unicode name ✓")
    (root / "docs" / "large.log").write_bytes(b"line of log\n" * 200_000)
    (root / "zero-bytes").write_bytes(b"")
    os.symlink("docs/readme.txt", root / "readme-link")
    os.symlink("docs", root / "docs-link")
    return root


@pytest.fixture
def folder(settings) -> Path:
    root = settings.SOURCE_ROOTS[0] / "site"
    root.mkdir()
    return make_tree(root)


@pytest.fixture
def folder_source(tenant: Tenant, folder: Path) -> BackupSource:
    return BackupSource.objects.create(tenant=tenant, name="Site", kind=SourceKind.DIRECTORY, path=str(folder))


def back_up(source: BackupSource, key: str = "t/site.tar.zst", **ctx_fields) -> tuple[storage.StoredFile, list[str]]:
    lines: list[str] = []
    ctx = DumpContext(log=lines.append, **ctx_fields)
    with ENGINE.dump(source, DumpTarget(label=source.name), ctx) as stream:
        stored = storage.store_stream(key, stream)
    return stored, lines


def restore(source: BackupSource, key: str, to: RestoreTarget) -> tuple[str, list[str]]:
    lines: list[str] = []
    with storage.open_decompressed(key) as stream:
        summary = ENGINE.restore(source, DumpTarget(label=source.name), stream, to, DumpContext(log=lines.append))
    return summary, lines


def test_a_folder_backs_up_and_restores_into_a_new_folder_identically(folder_source, folder) -> None:
    before = tree_digest(folder)
    stored, lines = back_up(folder_source)
    assert any("Archived" in line and "2 symlinks" in line for line in lines)
    target = ENGINE.default_restore_target(folder_source, DumpTarget(label="Site"), "20261127T0200Z")
    assert target.path == str(folder.parent / "site-restore-20261127T0200Z") and not target.overwrite
    summary, _ = restore(folder_source, stored.key, target)
    restored = Path(target.path)
    assert tree_digest(restored) == before
    assert os.readlink(restored / "readme-link") == "docs/readme.txt"  # a link, not a copy
    assert "Restored into" in summary
    assert not [p for p in restored.parent.iterdir() if p.name.startswith(".")]  # no scratch left


def test_verify_lists_the_archive_and_counts_its_members(folder_source) -> None:
    stored, _ = back_up(folder_source)
    with storage.open_decompressed(stored.key) as stream:
        summary = ENGINE.verify_stream(stream, DumpContext(log=lambda _: None))
    # folders: docs, deep, deeper, empty, empty-too, inner; files: readme, data, unicode, log, empty file
    assert summary.startswith("Archive readable: 5 files, 6 folders, 2 symlinks")


def raw_tar(stored_key: str) -> bytes:
    with storage.open_decompressed(stored_key) as stream:
        return stream.read()


@pytest.mark.parametrize("cut", ["mid_member", "member_boundary"])
def test_verify_fails_on_a_truncated_archive(folder_source, cut) -> None:
    stored, _ = back_up(folder_source)
    data = raw_tar(stored.key)
    if cut == "mid_member":
        truncated = data[: len(data) // 2]
    else:  # right after the last member's data: only the end-of-archive marker is missing
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            last = archive.getmembers()[-1]
        end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        truncated = data[:end]
    with pytest.raises(BackupError, match="damaged|incomplete") as caught:
        ENGINE.verify_stream(io.BytesIO(truncated), DumpContext(log=lambda _: None))
    assert caught.value.code == ErrorCode.CORRUPTED


def test_a_symlink_leading_out_of_the_root_is_stored_as_a_link_and_never_followed(folder_source, folder) -> None:
    os.symlink("/etc/passwd", folder / "passwd-link")
    os.symlink("/etc", folder / "etc-link")
    stored, _ = back_up(folder_source)
    data = raw_tar(stored.key)
    assert b"root:x:0:0" not in data  # /etc/passwd's content never entered the archive
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        link = archive.getmember("passwd-link")
        assert link.issym() and link.linkname == "/etc/passwd"
        assert not any(name.startswith("etc-link/") for name in archive.getnames())
    # A restore skips links that would point out of the restored folder, and says so.
    target = RestoreTarget(path=str(folder.parent / "restored"))
    summary, lines = restore(folder_source, stored.key, target)
    assert not (folder.parent / "restored" / "passwd-link").is_symlink()
    assert any("Skipped the link passwd-link -> /etc/passwd" in line for line in lines)
    assert (folder.parent / "restored" / "readme-link").is_symlink()
    assert "2 special files skipped" in summary


def test_a_missing_folder_fails_as_source_not_found(folder_source, folder) -> None:
    folder_source.path = str(folder / "gone")
    with pytest.raises(BackupError) as caught:
        back_up(folder_source)
    assert caught.value.code == ErrorCode.SOURCE_NOT_FOUND
    assert not storage.backups_root().exists() or not list(storage.backups_root().rglob("*.zst"))


def run_as_nobody(function):
    """Run `function` in a child process without root's right to read everything."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read_fd)
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            result = function()
        except BaseException as exc:  # report whatever happened to the parent
            result = f"{type(exc).__name__}: {exc}"
        os.write(write_fd, str(result).encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        output = pipe.read().decode()
    os.waitpid(pid, 0)
    return output


def test_an_unreadable_file_fails_the_backup_as_permission_denied() -> None:
    # A world-traversable folder of its own: pytest's tmp folders are closed to other users.
    base = Path(tempfile.mkdtemp(prefix="unreadable-"))
    try:
        os.chmod(base, 0o755)
        (base / "ok.txt").write_text("fine")
        (base / "secret.txt").write_text("no")
        for path in (base / "ok.txt",):
            os.chmod(path, 0o644)
        os.chmod(base / "secret.txt", 0o000)

        def archive() -> str:
            fd = open_resolved(base)
            try:
                with archive_stream(fd, base, DumpContext(log=lambda _: None)) as stream:
                    while stream.read(1 << 20):
                        pass
            except BackupError as exc:
                return f"{exc.code}: {exc.message}"
            finally:
                os.close(fd)
            return "no error"

        result = run_as_nobody(archive) if os.geteuid() == 0 else archive()
        assert result == "PERMISSION_DENIED: Cannot read secret.txt in the folder (permission denied)."
        # An unreadable subfolder too.
        os.chmod(base / "secret.txt", 0o644)
        (base / "private").mkdir(mode=0o700)
        os.chmod(base / "private", 0o000)
        result = run_as_nobody(archive) if os.geteuid() == 0 else archive()
        assert result == "PERMISSION_DENIED: Cannot read private in the folder (permission denied)."
    finally:
        os.chmod(base / "secret.txt", 0o600)
        if (base / "private").exists():
            os.chmod(base / "private", 0o700)
            (base / "private").rmdir()
        for path in base.iterdir():
            path.unlink()
        base.rmdir()


def test_the_deadline_stops_the_backup_as_timeout_and_stores_nothing(folder_source) -> None:
    with pytest.raises(BackupError) as caught:
        back_up(folder_source, deadline=time.monotonic() - 1)
    assert caught.value.code == ErrorCode.TIMEOUT
    assert not [p for p in storage.backups_root().rglob("*") if p.is_file()]


def test_a_fifo_in_the_folder_is_skipped_and_logged(folder_source, folder) -> None:
    os.mkfifo(folder / "a-pipe")
    stored, lines = back_up(folder_source)
    assert any("Skipped a-pipe" in line for line in lines)
    with tarfile.open(fileobj=io.BytesIO(raw_tar(stored.key))) as archive:
        assert "a-pipe" not in archive.getnames()


def test_a_restore_refuses_an_existing_folder_unless_overwrite_is_confirmed(folder_source, folder) -> None:
    stored, _ = back_up(folder_source)
    existing = folder.parent / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    (existing / "docs").mkdir()
    (existing / "docs" / "readme.txt").write_text("old")
    with pytest.raises(BackupError, match="already exists"):
        restore(folder_source, stored.key, RestoreTarget(path=str(existing)))
    assert (existing / "docs" / "readme.txt").read_text() == "old"
    restore(folder_source, stored.key, RestoreTarget(path=str(existing), overwrite=True))
    assert (existing / "docs" / "readme.txt").read_text() == "hello\n"
    assert (existing / "keep.txt").read_text() == "mine"  # an overwrite replaces, it does not wipe


@pytest.mark.parametrize("planted", ["folder", "file"])
def test_an_overwrite_never_writes_through_a_symlink_already_in_the_target(
    folder_source, folder, tmp_path, planted
) -> None:
    stored, _ = back_up(folder_source)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("untouched")
    existing = folder.parent / "existing"
    existing.mkdir()
    if planted == "folder":  # docs/readme.txt would land in `outside`
        os.symlink(outside, existing / "docs")
    else:  # writing docs/readme.txt would write victim.txt
        (existing / "docs").mkdir()
        os.symlink(outside / "victim.txt", existing / "docs" / "readme.txt")
    with pytest.raises(BackupError) as caught:
        restore(folder_source, stored.key, RestoreTarget(path=str(existing), overwrite=True))
    assert caught.value.code == ErrorCode.PERMISSION_DENIED
    assert [p.name for p in outside.iterdir()] == ["victim.txt"]
    assert (outside / "victim.txt").read_text() == "untouched"


def malicious_archive(name: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = 4
        archive.addfile(info, io.BytesIO(b"evil"))
    return buffer.getvalue()


def test_an_absolute_member_name_is_restored_inside_the_target(folder_source, folder) -> None:
    target = folder.parent / "restored"
    ENGINE.restore(
        folder_source,
        DumpTarget(label="Site"),
        io.BytesIO(malicious_archive("/tmp/absolute-escape.txt")),
        RestoreTarget(path=str(target)),
        DumpContext(log=lambda _: None),
    )
    assert (target / "tmp" / "absolute-escape.txt").read_bytes() == b"evil"  # the data filter strips the "/"
    assert not Path("/tmp/absolute-escape.txt").exists()


@pytest.mark.parametrize("name", ["../escaped.txt", "a/../../escaped.txt"])
def test_a_restore_refuses_archive_members_that_leave_the_target(folder_source, folder, name) -> None:
    target = folder.parent / "restored"
    with pytest.raises(BackupError) as caught:
        ENGINE.restore(
            folder_source,
            DumpTarget(label="Site"),
            io.BytesIO(malicious_archive(name)),
            RestoreTarget(path=str(target)),
            DumpContext(log=lambda _: None),
        )
    assert caught.value.code == ErrorCode.PERMISSION_DENIED
    assert not (folder.parent.parent / "escaped.txt").exists()
    assert not (folder.parent / "escaped.txt").exists()
    assert not target.exists()  # a failed restore leaves no half folder
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_a_damaged_backup_restores_nothing_into_a_new_folder(folder_source, folder) -> None:
    stored, _ = back_up(folder_source)
    data = raw_tar(stored.key)
    target = folder.parent / "restored"
    with pytest.raises(BackupError, match="damaged"):
        ENGINE.restore(
            folder_source,
            DumpTarget(label="Site"),
            io.BytesIO(data[: len(data) // 2]),
            RestoreTarget(path=str(target)),
            DumpContext(log=lambda _: None),
        )
    assert not target.exists()


def test_the_default_restore_target_of_a_whole_root_lies_inside_it(tenant, settings) -> None:
    root = settings.SOURCE_ROOTS[0]
    source = BackupSource.objects.create(tenant=tenant, name="All", kind=SourceKind.DIRECTORY, path=str(root))
    target = ENGINE.default_restore_target(source, DumpTarget(label="All"), "S")
    assert Path(target.path).parent == root


def test_check_connection_reports_a_readable_folder_and_a_missing_one(folder_source, folder) -> None:
    assert ENGINE.check_connection(folder_source).ok
    folder_source.path = str(folder / "nope")
    result = ENGINE.check_connection(folder_source)
    assert not result.ok and result.error_code == ErrorCode.SOURCE_NOT_FOUND


def test_a_folder_schedule_runs_through_the_queue_into_a_stored_archive(tenant, folder_source, folder) -> None:
    schedule = make_schedule(tenant, folder_source, name="Site nightly")
    run = run_now(schedule, actor=None)
    assert execute_run(str(run.code)) == "succeeded"
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    item = run.backup_set.items.get()
    assert item.storage_key.endswith(".tar.zst")
    assert hashlib.sha256(stored_path(item.storage_key).read_bytes()).hexdigest() == item.sha256


def test_hard_links_come_back_as_hard_links(folder_source, folder) -> None:
    os.link(folder / "docs" / "readme.txt", folder / "readme-hard.txt")
    stored, _ = back_up(folder_source)
    target = folder.parent / "restored"
    restore(folder_source, stored.key, RestoreTarget(path=str(target)))
    assert (target / "readme-hard.txt").stat().st_ino == (target / "docs" / "readme.txt").stat().st_ino
    assert tree_digest(target) == tree_digest(folder)


def test_an_overwrite_replaces_a_symlink_inside_the_target_instead_of_writing_through_it(folder_source, folder) -> None:
    stored, _ = back_up(folder_source)
    existing = folder.parent / "existing"
    (existing / "docs").mkdir(parents=True)
    (existing / "mine.txt").write_text("mine")
    os.symlink("../mine.txt", existing / "docs" / "readme.txt")  # points inside: the filter lets it be
    restore(folder_source, stored.key, RestoreTarget(path=str(existing), overwrite=True))
    assert not (existing / "docs" / "readme.txt").is_symlink()
    assert (existing / "docs" / "readme.txt").read_text() == "hello\n"
    assert (existing / "mine.txt").read_text() == "mine"


def test_an_archive_member_below_a_symlink_it_made_is_refused(folder_source, folder) -> None:
    """tarfile's own extraction writes `link/file.txt` through the link made just before
    (its filter allows it: the link points inside). Ours never writes through a link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        sub = tarfile.TarInfo("sub")
        sub.type = tarfile.DIRTYPE
        archive.addfile(sub)
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "sub"
        archive.addfile(link)
        member = tarfile.TarInfo("link/file.txt")
        member.size = 4
        archive.addfile(member, io.BytesIO(b"data"))
    target = folder.parent / "restored"
    with pytest.raises(BackupError) as caught:
        ENGINE.restore(
            folder_source,
            DumpTarget(label="Site"),
            io.BytesIO(buffer.getvalue()),
            RestoreTarget(path=str(target)),
            DumpContext(log=lambda _: None),
        )
    assert caught.value.code == ErrorCode.PERMISSION_DENIED and "link is a symlink" in caught.value.message
    assert not target.exists()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # the scratch folder is gone
