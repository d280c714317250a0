"""Verify and restore, as runs: requested here, executed by the cluster's task
(scheduling.worker, through scheduling.perform, which calls backups.verify and
backups.restore).

Both go through the queue like a backup (a run with operation verify/restore and
the set as `subject_set`, trigger "Requested"), so they get the same claim,
heartbeat, log, time limit and history, and a restore never runs inside a web request.

Restore writes into a new target by default (engine.default_restore_target); writing
over an existing one needs `confirm` to be the target's name, typed exactly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.utils import timezone

from backups.engines.base import DumpTarget, RestoreTarget
from backups.engines.registry import engine_for, find_engine
from backups.errors import BackupError
from backups.models import BackupItem, BackupSet, ItemStatus
from backups.paths import check_restore_target, resolved_or_literal
from backups.restore import target_label
from scheduling.creation import NewRun, RunConflict
from scheduling.models import BackupScheduleRun, Operation, run_of
from scheduling.runs import RunRefused, create_run
from tenants.access import ADMINISTER, RUN, get_for_member
from tenants.audit import record
from tenants.models import AuditAction
from tenants.validators import validate_path, validate_plain_text

logger = logging.getLogger(__name__)


class OperationRefused(RunRefused):
    """Not requested; the message says why, in words for the user."""


# ---------------------------------------------------------------- requests


def request_verify(backup_set: BackupSet, actor: Any, enqueue: bool = True) -> BackupScheduleRun:
    """Queue a verify run of `backup_set` (operator or higher)."""
    if actor is not None:
        backup_set = get_for_member(actor, BackupSet, backup_set.code, RUN).obj
    made_by = _check_usable(backup_set)
    run = _create_run(backup_set, made_by.schedule_id, actor, Operation.VERIFY, None, enqueue)
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
    engine = find_engine(item.kind)  # an unknown kind (its engine since removed) is named by a path
    if engine is not None and engine.is_server:
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
    made_by = _check_usable(backup_set)
    chosen = pick_item(backup_set, item)
    items = [chosen] if chosen else list(backup_set.items.filter(status=ItemStatus.OK).order_by("id"))
    if target is not None and len(items) > 1:
        raise OperationRefused(f"This backup set holds {len(items)} items; choose the one to restore into that target.")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    plan = [_checked_target(each, target, confirm, stamp) for each in items]
    restore_target = {"items": plan}
    run = _create_run(backup_set, made_by.schedule_id, actor, Operation.RESTORE, restore_target, enqueue)
    record(
        backup_set.tenant_id,
        AuditAction.RESTORE_REQUESTED,
        backup_set,
        actor=actor,
        run=str(run.code),
        targets=[target_label(entry) for entry in plan],
        overwrite=any(entry["overwrite"] for entry in plan),
    )
    return run


def _check_usable(backup_set: BackupSet) -> BackupScheduleRun:
    """The run that made the set (its schedule's time limit applies), if the set may be used."""
    if backup_set.deleted_at is not None:
        raise OperationRefused("This backup set was deleted by retention; its files are gone.")
    made_by = run_of(backup_set)
    if made_by is None:
        raise OperationRefused("The schedule of this backup set was deleted.")
    if not backup_set.items.filter(status=ItemStatus.OK).exists():
        raise OperationRefused("This backup set has no stored item.")
    return made_by


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
    if engine.is_server:
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


def _engine(kind: str) -> Any:
    try:
        return engine_for(kind)
    except BackupError as exc:
        raise OperationRefused(exc.message) from None


def _create_run(
    backup_set: BackupSet,
    schedule_id: int,
    actor: Any,
    operation: str,
    restore_target: dict[str, Any] | None,
    enqueue: bool,
) -> BackupScheduleRun:
    # With enqueue=False (a command runs it in its own process) no task is pushed, but the
    # run is marked as pushed: if that process dies before claiming, the dispatcher's look
    # for lost tasks pushes one LOST_AFTER later (create_run).
    new = NewRun.on_set(operation, backup_set, schedule_id, actor, restore_target)
    try:
        return create_run(new, enqueue)
    except RunConflict as conflict:  # scheduling_run_one_active_per_set
        active = conflict.active.code if conflict.active is not None else None
        what = "A verification" if operation == Operation.VERIFY else "A restore"
        raise OperationRefused(
            f"{what} of this backup set is already queued or running (run {active}); wait for it to finish."
        ) from None
