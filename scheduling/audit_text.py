"""Audit entries as sentences people read: "alice pressed Run now on “Shop DB nightly”".

An entry stores codes (the schedule's, the set's) and a label taken when it was written;
`sentences()` turns a page of entries into text with the objects' current names, in two
queries whatever the page's length (schedules by code, backup sets by code). An object
deleted since is named by the label the entry kept."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from backups.models import BackupSet
from scheduling.models import BackupSchedule, NotificationKind
from tenants.models import AuditAction, AuditLog

# The dispatcher's entries name at most this many schedules in their sentence.
NAMED = 3


@dataclass
class Names:
    """Current names of what a page of entries refers to."""

    schedules: dict[str, str]  # schedule code -> name
    set_schedules: dict[str, str]  # backup set code -> its schedule's name

    def schedule(self, entry: AuditLog) -> str:
        code = entry.details.get("schedule")
        if isinstance(code, str) and code in self.schedules:
            return self.schedules[code]
        if entry.target_type == "backupschedule":
            return self.schedules.get(str(entry.target_code), entry.target_label)
        if entry.target_type == "backupset":
            return self.set_schedules.get(str(entry.target_code), "")
        # A run's label is "<schedule>: <trigger> run" (BackupScheduleRun.__str__).
        return entry.target_label.rsplit(": ", 1)[0]


def load_names(tenant_id: int, entries: Iterable[AuditLog]) -> Names:
    entries = list(entries)
    schedule_codes = {_uuid(entry.details.get("schedule")) for entry in entries}
    schedule_codes |= {entry.target_code for entry in entries if entry.target_type == "backupschedule"}
    schedule_codes.discard(None)
    set_codes = {entry.target_code for entry in entries if entry.target_type == "backupset" and entry.target_code}
    schedules: dict[str, str] = {}
    if schedule_codes:
        rows = BackupSchedule.objects.filter(tenant_id=tenant_id, code__in=schedule_codes).values_list("code", "name")
        schedules = {str(code): name for code, name in rows}
    set_schedules: dict[str, str] = {}
    if set_codes:
        sets = BackupSet.objects.filter(tenant_id=tenant_id, code__in=set_codes).values_list(
            "code", "run__schedule__name"
        )
        set_schedules = {str(code): name or "" for code, name in sets}
    return Names(schedules, set_schedules)


def _who(entry: AuditLog) -> str:
    return entry.actor.get_username() if entry.actor else "The system"


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value)) if value else None
    except ValueError:
        return None


def _q(name: str) -> str:
    return f"“{name}”" if name else "a schedule deleted since"


def _count(number: Any, noun: str) -> str:
    number = number if isinstance(number, int) else 0
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _listed(entry: AuditLog) -> str:
    runs = entry.details.get("runs") or []
    names = sorted({str(run.get("schedule", "")) for run in runs if isinstance(run, dict)} - {""})
    if not names:
        return ""
    text = ", ".join(f"“{name}”" for name in names[:NAMED])
    if len(names) > NAMED:
        text += f" and {len(names) - NAMED} more"
    return f" of {text}"


def _operation(entry: AuditLog) -> str:
    return {"verify": "verification", "restore": "restore"}.get(str(entry.details.get("operation")), "backup")


def _set(entry: AuditLog, names: Names) -> str:
    schedule = names.schedule(entry)
    return f"{entry.target_label} of {_q(schedule)}" if schedule else entry.target_label


def _changed(entry: AuditLog) -> str:
    fields = [name.replace("_", " ") for name in entry.details.get("changes") or {}]
    return f" ({', '.join(fields)})" if fields else ""


def _finished(entry: AuditLog, names: Names) -> str:
    status = str(entry.details.get("status", "")).replace("_", " ")
    code = entry.details.get("error_code")
    what = f"The {_operation(entry)} of {_q(names.schedule(entry))} finished: {status or 'done'}"
    return f"{what} ({code})" if code else what


def _tested(entry: AuditLog, names: Names) -> str:
    result = "it worked" if entry.details.get("ok") else f"it failed ({entry.details.get('error_code') or 'error'})"
    return f"{_who(entry)} tested the connection of the source “{entry.target_label}”: {result}"


def _retry_scheduled(entry: AuditLog, names: Names) -> str:
    details = entry.details
    attempt = f"attempt {details.get('attempt', '?')} of {details.get('max_attempts', '?')}"
    cause = details.get("error_code", "a failure")
    return f"An automatic retry of {_q(names.schedule(entry))} was scheduled after {cause} ({attempt})"


def _mailed(entry: AuditLog, names: Names) -> str:
    kind = str(entry.details.get("kind", ""))
    about = NotificationKind(kind).label.lower() if kind in NotificationKind.values else kind
    who = ", ".join(str(name) for name in entry.details.get("recipients") or [])
    return f"E-mailed {_count(entry.details.get('sent'), 'person')} about “{about}”" + (f": {who}" if who else "")


def _restore_requested(entry: AuditLog, names: Names) -> str:
    targets = ", ".join(str(target) for target in entry.details.get("targets") or [])
    into = f" into {targets}" if targets else ""
    overwrite = " (overwriting)" if entry.details.get("overwrite") else ""
    return f"{_who(entry)} asked to restore {_set(entry, names)}{into}{overwrite}"


def _locked(entry: AuditLog, names: Names) -> str:
    details = entry.details
    minutes, failures = details.get("locked_minutes", "?"), details.get("failures", "?")
    where = details.get("ip_address") or "an unknown address"
    locked = f"Logging in as “{entry.target_label}” was locked for {minutes} minutes"
    return f"{locked} after {failures} failed logins (last from {where})"


Sentence = Callable[[AuditLog, Names], str]

SENTENCES: dict[str, Sentence] = {
    AuditAction.SCHEDULE_CREATED: lambda e, n: f"{_who(e)} created the schedule {_q(n.schedule(e))}",
    AuditAction.SCHEDULE_UPDATED: lambda e, n: f"{_who(e)} changed the schedule {_q(n.schedule(e))}{_changed(e)}",
    AuditAction.SCHEDULE_DELETED: lambda e, n: f"{_who(e)} deleted the schedule “{e.target_label}”",
    AuditAction.SCHEDULE_ENABLED: lambda e, n: f"{_who(e)} enabled the schedule {_q(n.schedule(e))}",
    AuditAction.SCHEDULE_DISABLED: lambda e, n: f"{_who(e)} disabled the schedule {_q(n.schedule(e))}",
    AuditAction.RETENTION_CHANGED: lambda e, n: f"{_who(e)} changed the retention of {_q(n.schedule(e))}",
    AuditAction.SOURCE_CREATED: lambda e, n: f"{_who(e)} created the source “{e.target_label}”",
    AuditAction.SOURCE_UPDATED: lambda e, n: f"{_who(e)} changed the source “{e.target_label}”{_changed(e)}",
    AuditAction.SOURCE_DELETED: lambda e, n: f"{_who(e)} deleted the source “{e.target_label}”",
    AuditAction.SOURCE_TESTED: _tested,
    AuditAction.TENANT_ROOTS_CHANGED: lambda e, n: f"{_who(e)} changed the tenant's file roots",
    AuditAction.TENANT_HOSTS_CHANGED: lambda e, n: f"{_who(e)} changed the servers the tenant's sources may name",
    AuditAction.RUN_NOW: lambda e, n: f"{_who(e)} pressed Run now on {_q(n.schedule(e))}",
    AuditAction.RUN_RETRY: lambda e, n: f"{_who(e)} pressed Retry on {_q(n.schedule(e))}",
    AuditAction.RUN_CREATED: lambda e, n: f"The dispatcher queued {_count(e.details.get('count'), 'run')}{_listed(e)}",
    AuditAction.RUN_SKIPPED: lambda e, n: f"The dispatcher skipped {_count(e.details.get('count'), 'run')}{_listed(e)}",
    AuditAction.RUN_MISSED: lambda e, n: (
        f"The dispatcher recorded {_count(e.details.get('count'), 'missed slot')}{_listed(e)}"
    ),
    AuditAction.RUN_STARTED: lambda e, n: (
        f"A worker started the {_operation(e)} of {_q(n.schedule(e))} (attempt {e.details.get('attempt', 1)})"
    ),
    AuditAction.RUN_FINISHED: _finished,
    AuditAction.RUN_RETRY_SCHEDULED: _retry_scheduled,
    AuditAction.SET_PRUNED: lambda e, n: f"Retention removed {_set(e, n)}",
    AuditAction.SET_PINNED: lambda e, n: f"{_who(e)} pinned {_set(e, n)}",
    AuditAction.SET_UNPINNED: lambda e, n: f"{_who(e)} unpinned {_set(e, n)}",
    AuditAction.SET_DELETED: lambda e, n: f"{_who(e)} deleted the backup set “{e.target_label}”",
    AuditAction.VERIFY_REQUESTED: lambda e, n: f"{_who(e)} asked to verify {_set(e, n)}",
    AuditAction.SET_VERIFIED: lambda e, n: f"Verification of {_set(e, n)}: {e.details.get('status', 'done')}",
    AuditAction.RESTORE_REQUESTED: _restore_requested,
    AuditAction.RESTORE_FINISHED: lambda e, n: f"Restore of {_set(e, n)} finished: {e.details.get('status', 'done')}",
    AuditAction.NOTIFICATION_SENT: _mailed,
    AuditAction.LOGIN_LOCKED: _locked,
}


def sentence(entry: AuditLog, names: Names) -> str:
    write = SENTENCES.get(entry.action)
    if write is None:  # an action added without a sentence: still readable, never a 500
        return f"{_who(entry)}: {entry.action} {entry.target_label}".strip()
    return write(entry, names)
