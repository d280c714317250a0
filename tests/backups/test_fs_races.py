"""The tenant swaps things in its own folder while a worker is in it: real races.

A helper process (true parallelism, the worker's GIL does not pace it) loops
swapping a folder or file of the tenant's root for a symlink to a fake
application `var/` outside every root, while the engine backs up or restores
data large enough to keep the window open. Each test then opens what was stored
or looks outside the roots: no byte of the outside files may be in a set, and
nothing outside the roots may be created or changed. Restores and backups may
fail under attack (refused, with a code); they must never leak.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from backups import storage
from backups.engines.base import DumpContext, DumpTarget, RestoreTarget
from backups.engines.registry import engine_for
from backups.errors import BackupError
from backups.models import BackupSource, SourceKind
from tenants.models import Tenant

# Bounded: enough that the old path-based code leaked in every run we measured.
BACKUPS = 25
RESTORES = 8

# Swaps `path` (a folder or a file) with a symlink to `outside`, forever, as a tenant
# with a shell could: renameat2(RENAME_EXCHANGE) swaps the two names in one step, so
# `path` is always one or the other, each about half of the time.
SWAPPER = r"""
import ctypes, os, sys
path, outside = sys.argv[1:3]
partner = path + ".link"
os.symlink(outside, partner)
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, RENAME_EXCHANGE = -100, 2
def exchange():
    if libc.renameat2(AT_FDCWD, path.encode(), AT_FDCWD, partner.encode(), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
exchange()
exchange()
print("swapping", flush=True)
while True:
    exchange()
"""

# Waits for a restore's scratch entry to appear in `parent`, moves it aside and puts a
# symlink to `outside` in its place.
ATTACKER = r"""
import os, sys
parent, outside = sys.argv[1:3]
print("watching", flush=True)
count = 0
while True:
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if ".restoring-" in name and not os.path.islink(path):
            count += 1
            try:
                os.rename(path, os.path.join(parent, "stolen-%d" % count))
                os.symlink(outside, path)
            except OSError:
                pass
"""


@contextmanager
def helper(script: str, *args: Path) -> Iterator[None]:
    process = subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() in (b"swapping\n", b"watching\n"), process.stderr.read()  # type: ignore[union-attr]
        yield
        assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]  # still attacking
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def marker() -> bytes:
    return b"APP-SECRET-" + secrets.token_hex(16).encode()


@pytest.fixture
def app_var(tmp_path: Path, marker: bytes) -> Path:
    """The application's own var/ (outside every root): its database and other files."""
    var = tmp_path / "app" / "var"
    var.mkdir(parents=True)
    with sqlite3.connect(var / "secret.sqlite3") as db:
        db.execute("CREATE TABLE secrets (value TEXT)")
        db.execute("INSERT INTO secrets VALUES (?)", [marker.decode()])
    db.close()
    for number in range(20):
        (var / f"secret-{number:02}.txt").write_bytes(marker)
    return var


def outside_state(folder: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every entry below `folder` (not following links): inode, links, mtime, content."""
    state = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        content = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        state[str(path)] = (info.st_ino, info.st_nlink, info.st_mtime_ns, content)
    return state


def files_holding(folder: Path, marker: bytes) -> list[str]:
    """Regular files below `folder` (links not followed) whose bytes contain the marker."""
    found = []
    for base, _dirs, names in os.walk(folder):
        for name in names:
            path = Path(base) / name
            if not path.is_symlink() and path.is_file() and marker in path.read_bytes():
                found.append(str(path))
    return found


def stored_bytes(key: str) -> bytes:
    with storage.open_decompressed(key) as stream:
        return stream.read()


def make_site(site: Path, app_var: Path | None = None) -> None:
    """A few MB in many files, and the subfolder `swap` the tenant will swap. With
    `app_var`, `swap` also holds files named and sized like the application's (a
    tenant can know them: db.sqlite3 is a common name), so a walk that checks a name
    in one folder and opens it in the other finds a file of the expected size."""
    (site / "bulk").mkdir(parents=True)
    for number in range(40):
        (site / "bulk" / f"blob-{number:02}.bin").write_bytes(os.urandom(64 * 1024))
    (site / "swap").mkdir()
    for number in range(100):
        (site / "swap" / f"page-{number:03}.html").write_text(f"<p>page {number}</p>\n" * 50)
    for twin in app_var.iterdir() if app_var else []:
        (site / "swap" / twin.name).write_bytes(b"t" * twin.stat().st_size)


def back_up(engine_kind: str, source: BackupSource, key: str) -> str:
    ctx = DumpContext(log=lambda _: None)
    with engine_for(engine_kind).dump(source, DumpTarget(label=source.name), ctx) as stream:
        return storage.store_stream(key, stream).key


def restore(engine_kind: str, source: BackupSource, key: str, to: RestoreTarget) -> None:
    with storage.open_decompressed(key) as stream:
        engine_for(engine_kind).restore(source, DumpTarget(label=source.name), stream, to, DumpContext(lambda _: None))


def test_a_subfolder_swapped_for_a_symlink_mid_backup_never_brings_outside_files_into_the_set(
    tenant: Tenant, settings, app_var: Path, marker: bytes
) -> None:
    site = settings.SOURCE_ROOTS[0] / "site"
    make_site(site, app_var)
    source = BackupSource.objects.create(tenant=tenant, name="Site", kind=SourceKind.DIRECTORY, path=str(site))
    before = outside_state(app_var.parent)
    leaked = stored = 0
    failures = []
    with helper(SWAPPER, site / "swap", app_var):
        for attempt in range(BACKUPS):
            try:
                key = back_up(SourceKind.DIRECTORY, source, f"t/site-{attempt}.tar.zst")
            except BackupError as exc:
                failures.append(f"{exc.code}: {exc.message}")
                continue
            stored += 1
            leaked += marker in stored_bytes(key)
    assert leaked == 0, f"{leaked} of {stored} stored sets hold the application's files"
    assert outside_state(app_var.parent) == before
    assert failures == []  # a swap mid-walk is skipped and logged, not a failed backup


def test_a_sqlite_source_swapped_for_a_symlink_mid_backup_never_copies_the_other_database(
    tenant: Tenant, settings, app_var: Path, marker: bytes
) -> None:
    path = settings.SOURCE_ROOTS[0] / "shop.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (label TEXT)")
        db.executemany("INSERT INTO items VALUES (?)", [("x" * 200,)] * 5000)  # about 1 MB
    db.close()
    source = BackupSource.objects.create(tenant=tenant, name="Shop", kind=SourceKind.SQLITE, path=str(path))
    before = outside_state(app_var.parent)
    leaked = stored = 0
    with helper(SWAPPER, path, app_var / "secret.sqlite3"):
        for attempt in range(BACKUPS):
            try:
                key = back_up(SourceKind.SQLITE, source, f"t/shop-{attempt}.sqlite3.zst")
            except BackupError:
                continue
            stored += 1
            leaked += marker in stored_bytes(key)
    assert leaked == 0, f"{leaked} of {stored} stored snapshots are the application's database"
    assert outside_state(app_var.parent) == before


@pytest.fixture
def watched(tmp_path: Path) -> Path:
    """An empty folder outside the roots that a restore must never write into."""
    folder = tmp_path / "app" / "watched"
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
def site_backup(tenant: Tenant, settings) -> tuple[BackupSource, str]:
    """A folder source of a few MB and the key of its stored backup."""
    site = settings.SOURCE_ROOTS[0] / "site"
    make_site(site)
    source = BackupSource.objects.create(tenant=tenant, name="Site", kind=SourceKind.DIRECTORY, path=str(site))
    return source, back_up(SourceKind.DIRECTORY, source, "t/site.tar.zst")


def test_a_scratch_folder_swapped_for_a_symlink_mid_restore_writes_nothing_outside(
    settings, site_backup: tuple[BackupSource, str], watched: Path
) -> None:
    root = settings.SOURCE_ROOTS[0]
    source, key = site_backup
    leaked = 0
    with helper(ATTACKER, root, watched):
        for attempt in range(RESTORES):
            with suppress(BackupError):
                restore(SourceKind.DIRECTORY, source, key, RestoreTarget(path=str(root / f"restored-{attempt}")))
            leaked += bool(os.listdir(watched))
    assert leaked == 0, f"{leaked} of {RESTORES} restores wrote outside the roots: {os.listdir(watched)[:5]}"


def test_a_folder_swapped_for_a_symlink_during_an_overwrite_restore_writes_nothing_outside(
    settings, site_backup: tuple[BackupSource, str], watched: Path
) -> None:
    source, key = site_backup
    existing = settings.SOURCE_ROOTS[0] / "existing"
    (existing / "swap").mkdir(parents=True)
    leaked = 0
    with helper(SWAPPER, existing / "swap", watched):
        for _attempt in range(RESTORES):
            with suppress(BackupError):
                restore(SourceKind.DIRECTORY, source, key, RestoreTarget(path=str(existing), overwrite=True))
            leaked += bool(os.listdir(watched))
    assert leaked == 0, f"{leaked} of {RESTORES} restores wrote outside the roots: {os.listdir(watched)[:5]}"


def test_a_sqlite_scratch_file_swapped_for_a_symlink_mid_restore_never_hands_over_the_other_database(
    tenant: Tenant, settings, app_var: Path, marker: bytes
) -> None:
    root = settings.SOURCE_ROOTS[0]
    path = root / "shop.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (label TEXT)")
        db.executemany("INSERT INTO items VALUES (?)", [("y" * 500,)] * 8000)  # a few MB to write
    db.close()
    source = BackupSource.objects.create(tenant=tenant, name="Shop", kind=SourceKind.SQLITE, path=str(path))
    key = back_up(SourceKind.SQLITE, source, "t/shop.sqlite3.zst")
    restored_bytes = stored_bytes(key)
    secret = app_var / "secret.sqlite3"
    before = outside_state(app_var.parent)
    wrong = 0
    with helper(ATTACKER, root, secret):
        for attempt in range(RESTORES):
            target = root / f"restored-{attempt}.sqlite3"
            try:
                restore(SourceKind.SQLITE, source, key, RestoreTarget(path=str(target)))
            except BackupError:
                # Refused: nothing may be left under the target's name (a symlink to the
                # application's database, say).
                wrong += os.path.lexists(target)
            else:
                # Done: the target is the restored database itself, not a link to another.
                wrong += target.is_symlink() or not target.is_file() or target.read_bytes() != restored_bytes
    assert wrong == 0, f"{wrong} of {RESTORES} restores left something other than the restored database"
    assert files_holding(root, marker) == []
    assert outside_state(app_var.parent) == before  # not linked (st_nlink), not changed


def test_the_helpers_really_attack(tmp_path: Path) -> None:
    """The swapper does swap (so the tests above exercise a race, not a quiet folder)."""
    folder = tmp_path / "folder"
    folder.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    seen = set()
    with helper(SWAPPER, folder, target):
        for _ in range(20000):
            seen.add(folder.is_symlink())
            if seen == {True, False}:
                break
    assert seen == {True, False}
    parent = tmp_path / "parent"
    parent.mkdir()
    with helper(ATTACKER, parent, target):
        (parent / ".x.restoring-1").mkdir()
        for _ in range(200000):
            if (parent / ".x.restoring-1").is_symlink():
                break
    assert (parent / ".x.restoring-1").is_symlink() and (parent / "stolen-1").is_dir()


def test_a_sqlite_source_swapped_just_before_sqlite_opens_it_is_refused_not_copied(
    tenant: Tenant, settings, app_var: Path, marker: bytes, monkeypatch
) -> None:
    """The worst moment, every time: after the engine opened and checked the file,
    before SQLite opens it by name. (The random race above rarely lands there.)"""
    path = settings.SOURCE_ROOTS[0] / "shop.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (label TEXT)")
    db.close()
    source = BackupSource.objects.create(tenant=tenant, name="Shop", kind=SourceKind.SQLITE, path=str(path))
    real_connect = sqlite3.connect

    def swap_then_connect(database, *args, **kwargs):
        if str(database).startswith("file:") and not path.is_symlink():  # the source, once
            path.rename(path.with_name("hidden.sqlite3"))
            path.symlink_to(app_var / "secret.sqlite3")
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", swap_then_connect)
    with pytest.raises(BackupError) as caught:
        back_up(SourceKind.SQLITE, source, "t/shop.sqlite3.zst")
    assert caught.value.code == "PERMISSION_DENIED" and "changed while SQLite opened it" in caught.value.message
    assert not [p for p in storage.backups_root().rglob("*") if p.is_file()]
