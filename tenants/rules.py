"""The rules staff set on a tenant, checked when it is saved (Tenant.clean).

File roots (Tenant.file_roots): folders its file sources may read and restores may
write, each absolute, inside the server's SOURCE_ROOTS, and neither equal to, inside,
nor containing another tenant's root, so one tenant never reaches another's files.
backups/paths.py holds every path to these roots, again, when it is used.

Host rules (Tenant.server_hosts): the database servers its server sources may name, as
IP addresses, networks (10.0.5.0/24, fd00::/8), host names, or "*" (anything).
backups/hosts.py resolves a source's host against them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from pathlib import Path

from django.conf import settings

ANY = "*"
_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}))*\.?$")


# ---------------------------------------------------------------- host rules


def validate_rules(raw_rules: Iterable[object]) -> tuple[list[str], list[str]]:
    """(normalized rules, errors) for Tenant.clean and the setting."""
    rules: list[str] = []
    errors: list[str] = []
    for raw in raw_rules:
        text = raw.strip() if isinstance(raw, str) else ""
        if not text:
            errors.append(f"{raw!r} is not a host rule.")
            continue
        try:
            rule = text if text == ANY else str(ipaddress.ip_network(text.strip("[]"), strict=False))
        except ValueError:
            if not _NAME.match(text):
                errors.append(f"“{text}” is neither an IP address, a network (10.0.0.0/8), a host name nor *.")
                continue
            rule = text.lower().rstrip(".")
        if rule not in rules:
            rules.append(rule)
    return rules, errors


# ---------------------------------------------------------------- file roots


def server_roots() -> list[Path]:
    return [Path(root).resolve() for root in settings.SOURCE_ROOTS]


def resolved_roots(file_roots: Iterable[object]) -> list[Path]:
    """Tenants' stored roots (each tenant's list of them) resolved now: a symlink may have
    changed since they were saved."""
    roots = []
    for raw_roots in file_roots:
        for raw in raw_roots if isinstance(raw_roots, list) else []:
            if isinstance(raw, str) and Path(raw).is_absolute():
                roots.append(Path(raw).resolve())
    return roots


def inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def overlaps(a: Path, b: Path) -> bool:
    return inside(a, b) or inside(b, a)


def validate_roots(raw_roots: Iterable[object], others: Iterable[Path]) -> tuple[list[str], list[str]]:
    """(normalized roots, errors) for Tenant.clean: each root absolute, inside SOURCE_ROOTS,
    and neither equal to, inside, nor containing one of `others` (the other tenants' roots)."""
    servers = server_roots()
    others = list(others)
    roots: list[str] = []
    errors: list[str] = []
    for raw in raw_roots:
        if not isinstance(raw, str) or not raw.strip():
            errors.append(f"{raw!r} is not a folder path.")
            continue
        if "\x00" in raw or not Path(raw.strip()).is_absolute():
            errors.append(f"“{raw}” is not an absolute path (it must start with /).")
            continue
        # Stored resolved, so what staff see is where the files really are.
        root = Path(raw.strip()).resolve()
        if not any(inside(root, server_root) for server_root in servers):
            shown = ", ".join(str(server_root) for server_root in servers) or "none configured"
            errors.append(f"“{raw}” is outside the server's source roots ({shown}).")
        elif any(overlaps(root, other) for other in others):
            errors.append(f"“{raw}” is, lies in, or contains another tenant's root.")
        elif str(root) not in roots:
            roots.append(str(root))
    return roots, errors
