"""Where a tenant's file sources may live, and restores of them may write.

A path is accepted only when, with every symlink and `..` resolved, it lies inside
one of the tenant's file roots (Tenant.file_roots), which staff set inside the
server's SOURCE_ROOTS. So a tenant can never read the server's own files or another
tenant's, whatever the path says.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from backups.errors import BackupError, ErrorCode
from tenants.models import Tenant


def allowed_roots(tenant: Tenant) -> list[Path]:
    """The tenant's roots that still lie inside the server's SOURCE_ROOTS (resolved)."""
    server_roots = [Path(root).resolve() for root in settings.SOURCE_ROOTS]
    roots = []
    for raw in tenant.file_roots or []:
        root = Path(raw).resolve()
        if any(_inside(root, server_root) for server_root in server_roots):
            roots.append(root)
    return roots


def check_source_path(path: str, tenant: Tenant) -> Path:
    """The resolved path, if it lies inside one of the tenant's roots; else PERMISSION_DENIED."""
    if not path or not Path(path).is_absolute():
        raise BackupError(ErrorCode.PERMISSION_DENIED, "The path must be absolute (start with /).")
    resolved = Path(path).resolve()
    roots = allowed_roots(tenant)
    if not roots:
        raise BackupError(
            ErrorCode.PERMISSION_DENIED,
            "This tenant has no folder it may back up yet; an administrator sets its file roots.",
        )
    if not any(_inside(resolved, root) for root in roots):
        shown = ", ".join(str(root) for root in roots)
        raise BackupError(
            ErrorCode.PERMISSION_DENIED, f"The path is outside the folders this tenant may use ({shown})."
        )
    return resolved


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
