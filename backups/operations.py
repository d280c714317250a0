"""Verify and restore, as runs: requested here, executed by the cluster's task.

Both go through the queue like a backup (a run with operation verify/restore and
the set as `subject_set`), so they get the same claim, heartbeat, log, time limit
and history, and a restore never runs inside a web request.

Verify re-reads every stored file of a set: its sha256 must match the one recorded
when it was written, it must decompress, and the engine must accept what comes out
(e.g. SQLite's integrity check). The result is kept on the set.

Restore writes into a new target by default (engine.default_restore_target); writing
over an existing one needs `confirm` to be the target's name, typed exactly.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import zstandard
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from backups import leases, storage, tasks
from backups.engines.base import DumpContext, DumpTarget, RestoreTarget
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import DEFAULT_PORTS, SERVER_KINDS, BackupItem, BackupSet, BackupSource, ItemStatus, VerifyStatus
from backups.paths import check_restore_target, overlaps, resolved_or_literal
from backups.tasks import DeadlineReader, Outcome, RunLog, deadline_for, timeout_error
from scheduling.models import ACTIVE_STATUSES, BackupScheduleRun, Operation, RunStatus, Trigger
from scheduling.queue import enqueue_runs
from scheduling.runs import RunRefused
from tenants.access import ADMINISTER, RUN, get_for_member
from tenants.audit import record
from tenants.models import AuditAction
from tenants.validators import validate_path, validate_plain_text

logger = logging.getLogger(__name__)

CHUNK = 1024 * 1024
# How often an overwriting restore looks again for a source a backup holds.
LEASE_WAIT_SECONDS = 2.0
wait_a_moment = time.sleep  # a seam: tests finish the other run here instead of sleeping


class OperationRefused(RunRefused):
    """Not requested; the message says why, in words for the user."""


# ---------------------------------------------------------------- requests


def request_verify(backup_set: BackupSet, actor: Any, enqueue: bool = True) -> BackupScheduleRun:
    """Queue a verify run of `backup_set` (operator or higher)."""
    if actor is not None:
        backup_set = get_for_member(actor, BackupSet, backup_set.code, RUN).obj
    _check_usable(backup_set)
    run = _create_run(backup_set, actor, Operation.VERIFY, None, enqueue)
    record(backup_set.tenant_id, AuditAction.VERIFY_REQUESTED, backup_set, actor=actor, run=str(run.code))
    return run


def pick_item(backup_set: BackupSet, item: BackupItem | int | None) -> BackupItem | None:
    """The stored item meant by `item` (an item, or its number 1..N in the set), or
    None for the whole set. Refuses a number or item that is not a stored item of it."""
    stored = list(backup_set.items.filter(status=ItemStatus.OK).order_by("id"))
    if item is None:
        return stored[0] if len(stored) == 1 else None
    if isinstance(item, BackupItem):
        if item.backup_set_id != backup_set.pk or item.status != ItemStatus.OK:
            raise OperationRefused("That item is not a stored item of this backup set.")
        return item
    numbers = {number: each for number, each in enumerate(backup_set.items.order_by("id"), start=1)}
    chosen = numbers.get(item)
    if chosen is None:
        raise OperationRefused(f"This backup set has items 1 to {len(numbers)}; there is no item {item}.")
    if chosen.status != ItemStatus.OK:
        raise OperationRefused(f"Item {item} (“{chosen.label}”) failed in its backup; nothing was stored to restore.")
    return chosen


def target_named(item: BackupItem, name: str, overwrite: bool = False) -> RestoreTarget:
    """The restore target a person named: a database for server kinds, else a path
    (relative to the folder of the item's source)."""
    if item.kind in SERVER_KINDS:
        return RestoreTarget(database=name, overwrite=overwrite)
    return RestoreTarget(path=name, overwrite=overwrite)


def request_restore(
    backup_set: BackupSet,
    actor: Any,
    item: BackupItem | int | None = None,
    target: RestoreTarget | None = None,
    confirm: str = "",
    enqueue: bool = True,
) -> BackupScheduleRun:
    """Queue a restore of `backup_set` (owner only), of one item or of all.

    Without `target` each item goes to its engine's default target (a new database,
    file or folder). An existing target is written over only with target.overwrite
    and `confirm` equal to the target's name."""
    if actor is None:
        raise OperationRefused("A restore is requested by a person (an owner of the tenant).")
    backup_set = get_for_member(actor, BackupSet, backup_set.code, ADMINISTER).obj
    _check_usable(backup_set)
    chosen = pick_item(backup_set, item)
    items = [chosen] if chosen else list(backup_set.items.filter(status=ItemStatus.OK).order_by("id"))
    if target is not None and len(items) > 1:
        raise OperationRefused(f"This backup set holds {len(items)} items; choose the one to restore into that target.")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    plan = [_checked_target(each, target, confirm, stamp) for each in items]
    restore_target = {"items": plan}
    run = _create_run(backup_set, actor, Operation.RESTORE, restore_target, enqueue)
    record(
        backup_set.tenant_id,
        AuditAction.RESTORE_REQUESTED,
        backup_set,
        actor=actor,
        run=str(run.code),
        targets=[_target_label(entry) for entry in plan],
        overwrite=any(entry["overwrite"] for entry in plan),
    )
    return run


def _check_usable(backup_set: BackupSet) -> None:
    if backup_set.deleted_at is not None:
        raise OperationRefused("This backup set was deleted by retention; its files are gone.")
    if backup_set.schedule_id is None:
        raise OperationRefused("The schedule of this backup set was deleted.")
    if not backup_set.items.filter(status=ItemStatus.OK).exists():
        raise OperationRefused("This backup set has no stored item.")


def _checked_target(item: BackupItem, target: RestoreTarget | None, confirm: str, stamp: str) -> dict[str, Any]:
    source = item.source
    if source is None:
        raise OperationRefused(f"The source of “{item.label}” was deleted; a restore needs its connection details.")
    engine = _engine(item.kind)
    dump_target = DumpTarget(label=item.label, database=item.database)
    if target is None:
        try:
            chosen = engine.default_restore_target(source, dump_target, stamp)
        except NotImplementedError:
            raise OperationRefused(f"Sources of kind “{item.kind}” cannot be restored by this server.") from None
    else:
        chosen = RestoreTarget(
            database=target.database, path=target.path, overwrite=target.overwrite, extra=dict(target.extra)
        )
    typed = chosen.database or chosen.path
    if item.kind in SERVER_KINDS:
        if not chosen.database:
            raise OperationRefused("Name the database to restore into.")
        _check_typed(validate_plain_text, chosen.database)
        exists = chosen.overwrite  # the engine refuses to write into an existing database without it
        name = chosen.database
    else:
        if not chosen.path:
            raise OperationRefused("Name the file or folder to restore into.")
        path = Path(chosen.path)
        if not path.is_absolute():
            path = Path(source.path).parent / path
        _check_typed(validate_path, str(path))
        try:
            resolved = check_restore_target(str(path), source.tenant)
        except BackupError as exc:
            raise OperationRefused(exc.message) from None
        chosen.path = name = str(resolved)
        exists = resolved.exists()
        if resolved == resolved_or_literal(source.path) and not chosen.overwrite:
            raise OperationRefused(f"{name} is the source itself; overwriting it needs the overwrite confirmation.")
    if exists and not chosen.overwrite:
        raise OperationRefused(
            f"“{name}” exists. To replace it, ask for an overwrite and type its name “{name}” to confirm."
        )
    if chosen.overwrite and exists and confirm not in (name, typed):
        raise OperationRefused(
            f"Overwriting “{name}” replaces what is there now. Type its name “{name}” exactly to confirm."
        )
    chosen.overwrite = chosen.overwrite and exists
    return {"item": str(item.code), "label": item.label, **asdict(chosen)}


def _check_typed(validator: Callable[[str], None], value: str) -> None:
    try:
        validator(value)
    except ValidationError as exc:
        raise OperationRefused(" ".join(exc.messages)) from None


def _target_label(entry: dict[str, Any]) -> str:
    return str(entry.get("database") or entry.get("path") or "")


def _engine(kind: str) -> Any:
    try:
        return engine_for(kind)
    except BackupError as exc:
        raise OperationRefused(exc.message) from None


def _create_run(
    backup_set: BackupSet, actor: Any, operation: str, restore_target: dict[str, Any] | None, enqueue: bool
) -> BackupScheduleRun:
    now = timezone.now()
    try:
        with transaction.atomic():
            run = BackupScheduleRun.objects.create(
                tenant_id=backup_set.tenant_id,
                schedule_id=backup_set.schedule_id,  # type: ignore[misc]  # _check_usable: not None
                trigger=Trigger.MANUAL,
                operation=operation,
                subject_set=backup_set,
                restore_target=restore_target,
                status=RunStatus.QUEUED,
                requested_by=actor if getattr(actor, "is_authenticated", False) else None,
                created_at=now,
                # Also when executed in-process (enqueue=False): if that process dies
                # before claiming, the dispatcher pushes a task after REQUEUE_AFTER.
                enqueued_at=now,
            )
            if enqueue:
                enqueue_runs([run.code])
    except IntegrityError:  # scheduling_run_one_active_per_set
        active = (
            BackupScheduleRun.objects.filter(subject_set=backup_set, operation=operation, status__in=ACTIVE_STATUSES)
            .values_list("code", flat=True)
            .first()
        )
        what = "A verification" if operation == Operation.VERIFY else "A restore"
        raise OperationRefused(
            f"{what} of this backup set is already queued or running (run {active}); wait for it to finish."
        ) from None
    return run


# ---------------------------------------------------------------- execution (in the task)


def _subject(run: BackupScheduleRun) -> BackupSet:
    if run.subject_set_id is None:
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "The backup set is gone (deleted by retention or by hand).")
    backup_set = BackupSet.objects.filter(pk=run.subject_set_id).first()
    if backup_set is None or backup_set.deleted_at is not None:
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "The backup set is gone (deleted by retention or by hand).")
    return backup_set


def _check_stored_file(item: BackupItem) -> None:
    """The file is there and its bytes are the ones written (sha256)."""
    digest = hashlib.sha256()
    try:
        with storage.open_raw(item.storage_key) as raw:
            while chunk := raw.read(CHUNK):
                digest.update(chunk)
    except FileNotFoundError:
        raise BackupError(ErrorCode.SOURCE_NOT_FOUND, "The stored file is missing.") from None
    except OSError as exc:
        raise BackupError(ErrorCode.UNKNOWN, f"The stored file cannot be read: {exc.strerror}.") from None
    if digest.hexdigest() != item.sha256:
        raise BackupError(ErrorCode.CORRUPTED, "The stored file has changed since it was written (sha256 mismatch).")


def perform_verify(run: BackupScheduleRun, log: RunLog) -> Outcome:
    backup_set = _subject(run)
    deadline = deadline_for(run.schedule)
    ctx = DumpContext(log=log, deadline=deadline, started_at=run.started_at)
    problems: list[str] = []
    codes: list[str] = []
    items = list(backup_set.items.filter(status=ItemStatus.OK).order_by("id"))
    for item in items:
        try:
            summary = _verify_item(item, ctx, deadline, run)
        except BackupError as exc:
            log(f"“{item.label}”: verification failed: {exc.message}")
            problems.append(f"“{item.label}”: {exc.message}")
            codes.append(exc.code)
        else:
            # Engines log their own summary; the item's line names what it was about.
            log(f"“{item.label}”: verified ({summary})")
    ok = not problems
    message = (
        f"All {len(items)} stored item(s) verified."
        if ok
        else f"{len(problems)} of {len(items)} item(s) failed: " + "; ".join(problems)
    )
    BackupSet.objects.filter(pk=backup_set.pk).update(
        verified_at=timezone.now(),
        verify_status=VerifyStatus.OK if ok else VerifyStatus.FAILED,
        verify_message=message,
    )
    record(
        run.tenant_id,
        AuditAction.SET_VERIFIED,
        backup_set,
        run=str(run.code),
        status=VerifyStatus.OK if ok else VerifyStatus.FAILED,
    )
    if ok:
        log(message)
        return Outcome(RunStatus.SUCCEEDED)
    return Outcome(RunStatus.FAILED, codes[0], f"Verification failed. {message}")


def _verify_item(item: BackupItem, ctx: DumpContext, deadline: float, run: BackupScheduleRun) -> str:
    _check_stored_file(item)
    engine = engine_for(item.kind)
    try:
        with storage.open_decompressed(item.storage_key) as stream:
            reader = DeadlineReader(stream, deadline, timeout_error(run.schedule))
            try:
                summary = engine.verify_stream(reader, ctx)  # type: ignore[arg-type]
            except NotImplementedError:
                # The checksum and a full decompression are still a real check.
                while reader.read(CHUNK):
                    pass
                summary = f"checksum and decompression ok (sources of kind “{item.kind}” have no deeper check)."
    except zstandard.ZstdError as exc:
        raise BackupError(ErrorCode.CORRUPTED, f"The stored file does not decompress: {exc}.") from None
    return summary


def perform_restore(run: BackupScheduleRun, log: RunLog) -> Outcome:
    backup_set = _subject(run)
    entries = (run.restore_target or {}).get("items") or []
    if not entries:
        raise BackupError(ErrorCode.UNKNOWN, "This restore run names nothing to restore.")
    touched = _sources_a_restore_touches(run, backup_set, entries)
    _wait_for_leases(run, touched, deadline_for(run.schedule), log)
    try:
        # The time limit counts from here: waiting for a backup must not leave the restore
        # itself too little time and stop it halfway through an overwrite.
        deadline = deadline_for(run.schedule)
        ctx = DumpContext(log=log, deadline=deadline, started_at=run.started_at)
        return _restore_entries(run, backup_set, entries, ctx, deadline, log)
    finally:
        if touched:
            tasks.release_leases(run)


def _sources_a_restore_touches(
    run: BackupScheduleRun, backup_set: BackupSet, entries: list[dict[str, Any]]
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
    tenant_sources = list(BackupSource.objects.filter(tenant_id=run.tenant_id))
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
    if entry.get("path") and source.kind not in SERVER_KINDS and source.path:
        return overlaps(resolved_or_literal(source.path), resolved_or_literal(entry["path"]))
    if entry.get("database") and source.kind == origin.kind and origin.kind in SERVER_KINDS:
        covers = source.all_databases or source.database == entry["database"]
        return covers and _same_server(source, origin, addresses)
    return False


def _same_server(a: BackupSource, b: BackupSource, addresses: Callable[[str], frozenset[str]]) -> bool:
    """Same port (blank: the kind's default) and the same host, by name or by any address
    it resolves to, so "localhost" and "127.0.0.1" are one server."""
    if (a.port or DEFAULT_PORTS[a.kind]) != (b.port or DEFAULT_PORTS[b.kind]):
        return False
    if a.host.strip().lower() == b.host.strip().lower():
        return True
    return bool(addresses(a.host) & addresses(b.host))


def _addresses(host: str) -> frozenset[str]:
    try:
        return frozenset(str(info[4][0]) for info in socket.getaddrinfo(host.strip(), None))
    except (OSError, UnicodeError):  # unresolvable here: only the name itself can match
        return frozenset()


def _wait_for_leases(run: BackupScheduleRun, sources: list[BackupSource], deadline: float, log: RunLog) -> None:
    """Take the sources' leases, waiting (up to the time limit) while a backup holds one:
    a restore someone asked for is not skipped like a scheduled backup would be."""
    if not sources:
        return
    told = ""
    while (busy := leases.acquire(run, sources)) is not None:
        if busy.run_code != told:
            log(f"Waiting: source “{busy.source_name}” is being {busy.holder}; the restore writes what it reads.")
            told = busy.run_code
        if tasks.clock() + LEASE_WAIT_SECONDS >= deadline:
            raise BackupError(
                ErrorCode.TIMEOUT,
                f"Source “{busy.source_name}” was still busy ({busy.holder}) at the schedule's time limit; "
                "nothing was restored.",
            )
        wait_a_moment(LEASE_WAIT_SECONDS)
    if told:
        log("The source is free; restoring.")


def _restore_entries(
    run: BackupScheduleRun,
    backup_set: BackupSet,
    entries: list[dict[str, Any]],
    ctx: DumpContext,
    deadline: float,
    log: RunLog,
) -> Outcome:
    done: list[str] = []
    failure: BackupError | None = None
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
            summary = _restore_item(item, to, ctx, deadline, run)
        except BackupError as exc:
            log(f"“{entry.get('label', '?')}”: restore failed: {exc.code}: {exc.message}")
            failure = exc
            break  # a restore is acted on by people: stop at the first failure
        except zstandard.ZstdError as exc:
            failure = BackupError(ErrorCode.CORRUPTED, f"The stored file does not decompress: {exc}.")
            log(f"“{entry.get('label', '?')}”: restore failed: {failure.message}")
            break
        log(f"“{item.label}”: restored ({summary})")
        done.append(_target_label(entry))
    status = RunStatus.FAILED if failure else RunStatus.SUCCEEDED
    record(run.tenant_id, AuditAction.RESTORE_FINISHED, backup_set, run=str(run.code), status=status, restored=done)
    if failure:
        return Outcome(RunStatus.FAILED, failure.code, failure.message)
    return Outcome(RunStatus.SUCCEEDED)


def _restore_item(
    item: BackupItem, to: RestoreTarget, ctx: DumpContext, deadline: float, run: BackupScheduleRun
) -> str:
    assert item.source is not None
    # A corrupted file must never be restored over anything: check it first.
    _check_stored_file(item)
    engine = engine_for(item.kind)
    target = DumpTarget(label=item.label, database=item.database)
    with storage.open_decompressed(item.storage_key) as stream:
        reader = DeadlineReader(stream, deadline, timeout_error(run.schedule))
        try:
            return engine.restore(item.source, target, reader, to, ctx)  # type: ignore[arg-type]
        except NotImplementedError:
            raise BackupError(ErrorCode.UNKNOWN, f"Sources of kind “{item.kind}” cannot be restored here.") from None
