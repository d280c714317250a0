"""Where a tenant's file sources may live, and restores of them may write.

A path is accepted only when, with every symlink and `..` resolved, it lies inside
one of the tenant's file roots (Tenant.file_roots), which staff set inside the
server's SOURCE_ROOTS, and neither lies in nor contains another tenant's root. So a
tenant can never read or overwrite the server's own files or another tenant's,
whatever the path says, even if roots were saved overlapping (bypassing
Tenant.clean) or a symlink on disk changed after they were saved.

That check names a place; the engines then reach it through directory
descriptors (source_place / restore_place, then open_folder / open_parent): the
root is opened once by its resolved path, each component below it with
O_NOFOLLOW, so a symlink that appears on the way after the check is refused
instead of followed (backups/dirfd.py, docs/security.md).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from backups import dirfd
from backups.errors import BackupError, ErrorCode
from tenants.models import Tenant, other_tenants_roots
from tenants.rules import inside, overlaps, server_roots


def allowed_roots(tenant: Tenant) -> list[Path]:
    """The tenant's roots that still lie inside the server's SOURCE_ROOTS (resolved)."""
    servers = server_roots()
    roots = []
    for raw in tenant.file_roots or []:
        if not isinstance(raw, str) or not Path(raw).is_absolute():
            continue
        root = Path(raw).resolve()
        if any(inside(root, server_root) for server_root in servers):
            roots.append(root)
    return roots


def check_source_path(path: str, tenant: Tenant) -> Path:
    """The resolved path, if it lies inside one of the tenant's roots; else PERMISSION_DENIED."""
    return _check(path, tenant, "path")


def check_restore_target(path: str, tenant: Tenant) -> Path:
    """Like check_source_path, for where a restore writes (the target may not exist yet).

    A root itself is no target: a restore writes a new file or folder inside one."""
    resolved = _check(path, tenant, "restore target")
    if resolved in allowed_roots(tenant):
        raise BackupError(
            ErrorCode.PERMISSION_DENIED, "A restore cannot replace a whole root folder; choose a path inside it."
        )
    return resolved


def _check(path: str, tenant: Tenant, what: str) -> Path:
    if not path or "\x00" in path or not Path(path).is_absolute():
        raise BackupError(ErrorCode.PERMISSION_DENIED, f"The {what} must be an absolute path (start with /).")
    # resolve() follows every symlink that exists and folds `..` after it, so the
    # check sees where the bytes really are (a missing tail is taken literally).
    try:
        resolved = Path(path).resolve()
    except (OSError, RuntimeError):  # a link changing under readlink (EINVAL), a link loop
        raise BackupError(
            ErrorCode.PERMISSION_DENIED, f"The {what} has a symlink on the way that loops or changed while checked."
        ) from None
    roots = allowed_roots(tenant)
    if not roots:
        raise BackupError(
            ErrorCode.PERMISSION_DENIED,
            "This tenant has no folder it may back up yet; an administrator sets its file roots.",
        )
    if not any(inside(resolved, root) for root in roots):
        shown = ", ".join(str(root) for root in roots)
        raise BackupError(
            ErrorCode.PERMISSION_DENIED, f"The {what} is outside the folders this tenant may use ({shown})."
        )
    if any(overlaps(resolved, other) for other in other_tenants_roots(tenant)):
        raise BackupError(ErrorCode.PERMISSION_DENIED, f"The {what} is (or contains) another tenant's folder.")
    return resolved


def resolved_or_literal(path: str) -> Path:
    """`path` resolved, or as written when a symlink on the way loops or changes meanwhile
    (for comparisons that must not fail, like which sources a restore touches)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):
        return Path(os.path.normpath(path))


# ---------------------------------------------------------------- opening by descriptors


@dataclass(frozen=True)
class Place:
    """A checked path, as the tenant root it lies in and the names below that root."""

    root: Path
    parts: tuple[str, ...]

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.parts)

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else self.root.name


def source_place(path: str, tenant: Tenant) -> Place:
    """check_source_path, as a Place to open by descriptors."""
    return _place(path, check_source_path(path, tenant), tenant)


def restore_place(path: str, tenant: Tenant) -> Place:
    """check_restore_target, as a Place (never a root itself: it has a parent below the root)."""
    return _place(path, check_restore_target(path, tenant), tenant)


def _place(path: str, resolved: Path, tenant: Tenant) -> Place:
    root = max((root for root in allowed_roots(tenant) if inside(resolved, root)), key=lambda root: len(root.parts))
    parts = resolved.relative_to(root).parts
    # Stored paths are resolved when saved; one whose part below the root now differs from
    # its resolved form goes through a symlink made since: refused, not followed. (Above the
    # root a link is the server's layout, staff's business: /srv -> /data/srv is fine.)
    lexical = Path(os.path.normpath(path))
    above = Path(*lexical.parts[: len(lexical.parts) - len(parts)])
    if lexical.parts[len(lexical.parts) - len(parts) :] != parts or resolved_or_literal(str(above)) != root:
        raise BackupError(
            ErrorCode.PERMISSION_DENIED,
            f"{lexical} leads through a symlink (to {resolved}); the backup service never follows symlinks "
            "in a tenant's folders. Use the real path.",
        )
    return Place(root=root, parts=parts)


def open_folder(place: Place) -> int:
    """A descriptor of the folder `place` (the caller closes it)."""
    root_fd = dirfd.open_resolved(place.root)
    try:
        return dirfd.walk(root_fd, place.parts, place.root)
    finally:
        os.close(root_fd)


def open_parent(place: Place) -> int:
    """A descriptor of the folder holding `place`, which must lie below its root."""
    if not place.parts:
        raise BackupError(ErrorCode.PERMISSION_DENIED, f"{place.root} is a whole root folder.")
    return open_folder(Place(root=place.root, parts=place.parts[:-1]))


def open_restore_destination(
    path: str, tenant: Tenant, overwrite: bool, *, folder: bool
) -> tuple[Place, int, os.stat_result | None]:
    """(the target, a descriptor of its folder, its lstat or None if new) if the target
    may be written: new, or an existing file or folder of the right kind whose overwrite
    the user confirmed. The caller closes the descriptor."""
    place = restore_place(path, tenant)
    parent_fd = open_parent(place)
    try:
        existing = dirfd.lstat_at(parent_fd, place.name)
        if existing is not None:
            if stat.S_ISLNK(existing.st_mode):
                raise dirfd.symlink_refused(place.path)
            if not (stat.S_ISDIR(existing.st_mode) if folder else stat.S_ISREG(existing.st_mode)):
                kind = "a folder" if folder else "a file"
                raise BackupError(ErrorCode.PERMISSION_DENIED, f"{place.path} exists and is not {kind}.")
            if not overwrite:
                how = "restore into it" if folder else "restore over it"
                raise BackupError(
                    ErrorCode.PERMISSION_DENIED, f"{place.path} already exists; confirm an overwrite to {how}."
                )
    except BaseException:
        os.close(parent_fd)
        raise
    return place, parent_fd, existing
