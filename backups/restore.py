"""Restoring stored items of a backup set into targets: the execution, given a set,
the planned entries (item code, target, overwrite), a deadline and a log.

Also what a restore touches: the sources a backup of which would read what it writes,
so that the caller (scheduling) can hold them while it runs.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import zstandard

from backups import storage
from backups.engines.base import DumpContext, DumpTarget, Log, RestoreTarget
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupItem, BackupSet, BackupSource, ItemStatus
from backups.paths import overlaps, resolved_or_literal
from backups.pipeline import DeadlineReader
from backups.verify import check_stored_file


@dataclass
class Restored:
    done: list[str] = field(default_factory=list)  # the targets written, in order
    failure: BackupError | None = None  # what stopped it, if anything did


def target_label(entry: dict[str, Any]) -> str:
    return str(entry.get("database") or entry.get("path") or "")


def sources_a_restore_touches(
    tenant_id: int, backup_set: BackupSet, entries: list[dict[str, Any]]
) -> list[BackupSource]:
    """The tenant's sources a backup of which would read what this restore writes, so must
    not run meanwhile: the item's own source when the restore overwrites an existing target
    (it may be that source), every file source whose path overlaps a target path (a folder
    restored inside a folder source), and every server source of the same kind, host and
    port that covers a target database (by name, or all databases)."""
    codes = [entry["item"] for entry in entries]
    items = {
        str(item.code): item
        for item in backup_set.items.filter(code__in=codes, source__isnull=False).select_related("source")
    }
    tenant_sources = list(BackupSource.objects.filter(tenant_id=tenant_id))
    addresses = functools.cache(_addresses)  # one DNS lookup per host name for this restore
    touched: dict[int, BackupSource] = {}
    for entry in entries:
        item = items.get(str(entry["item"]))
        if item is None or item.source is None:
            continue
        origin = item.source
        if entry.get("overwrite"):
            touched[origin.pk] = origin
        for source in tenant_sources:
            if _reads_target(source, origin, entry, addresses):
                touched[source.pk] = source
    return list(touched.values())


def _reads_target(
    source: BackupSource, origin: BackupSource, entry: dict[str, Any], addresses: Callable[[str], frozenset[str]]
) -> bool:
    if entry.get("path") and not source.is_server and source.path:
        return overlaps(resolved_or_literal(source.path), resolved_or_literal(entry["path"]))
    if entry.get("database") and source.kind == origin.kind and origin.is_server:
        covers = source.all_databases or source.database == entry["database"]
        return covers and _same_server(source, origin, addresses)
    return False


def _same_server(a: BackupSource, b: BackupSource, addresses: Callable[[str], frozenset[str]]) -> bool:
    """Same port (blank: the kind's default) and the same host, by name or by any address
    it resolves to, so "localhost" and "127.0.0.1" are one server."""
    if (a.port or engine_for(a.kind).default_port) != (b.port or engine_for(b.kind).default_port):
        return False
    if a.host.strip().lower() == b.host.strip().lower():
        return True
    return bool(addresses(a.host) & addresses(b.host))


def _addresses(host: str) -> frozenset[str]:
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host.strip(), None))
    except (OSError, UnicodeError):  # unresolvable here: only the name itself can match
        return frozenset()


def restore_entries(
    backup_set: BackupSet,
    entries: list[dict[str, Any]],
    deadline: float,
    timeout: BackupError,
    log: Log,
    started_at: datetime | None = None,
) -> Restored:
    """Restore each planned entry in order, stopping at the first failure."""
    ctx = DumpContext(log=log, deadline=deadline, started_at=started_at)
    result = Restored()
    for entry in entries:
        item = backup_set.items.filter(code=entry["item"], status=ItemStatus.OK).select_related("source").first()
        try:
            if item is None or item.source is None:
                raise BackupError(ErrorCode.SOURCE_NOT_FOUND, f"“{entry.get('label', '?')}” or its source is gone.")
            to = RestoreTarget(
                database=entry.get("database", ""),
                path=entry.get("path", ""),
                overwrite=bool(entry.get("overwrite")),
                extra=dict(entry.get("extra") or {}),
            )
            summary = _restore_item(item, to, ctx, deadline, timeout)
        except BackupError as exc:
            log(f"“{entry.get('label', '?')}”: restore failed: {exc.code}: {exc.message}")
            result.failure = exc
            break  # a restore is acted on by people: stop at the first failure
        except zstandard.ZstdError as exc:
            result.failure = BackupError(ErrorCode.CORRUPTED, f"The stored file does not decompress: {exc}.")
            log(f"“{entry.get('label', '?')}”: restore failed: {result.failure.message}")
            break
        log(f"“{item.label}”: restored ({summary})")
        result.done.append(target_label(entry))
    return result


def _restore_item(item: BackupItem, to: RestoreTarget, ctx: DumpContext, deadline: float, timeout: BackupError) -> str:
    assert item.source is not None
    # A corrupted file must never be restored over anything: check it first.
    check_stored_file(item)
    engine = engine_for(item.kind)
    target = DumpTarget(label=item.label, database=item.database)
    with storage.open_decompressed(item.storage_key) as stream:
        reader = DeadlineReader(stream, deadline, timeout)
        try:
            return engine.restore(item.source, target, reader, to, ctx)
        except NotImplementedError:
            raise BackupError(ErrorCode.UNKNOWN, f"Sources of kind “{item.kind}” cannot be restored here.") from None
