"""In-app notifications (the bell) and e-mail about runs.

Who hears about what:

* a run that failed or partly failed, and slots the dispatcher recorded as missed:
  every member of the tenant in the app (a backup that did not happen concerns everyone
  who relies on it), and an e-mail to its managers and owners (the people who can fix
  a source or a schedule);
* a Run now or Retry request: the tenant's managers and owners in the app, except the
  person who asked (they know). No e-mail: nothing is wrong yet;
* a finished restore: the person who asked for it, and the managers and owners.

The worker, the dispatcher and the run services call these functions once per change,
after their compare-and-swap succeeded, so one change makes one notification per person.
Each call costs a fixed number of queries whatever the number of members or runs.
E-mail goes out after the surrounding transaction commits (a rolled-back pass sends
nothing), and a mail server that is down is logged, never raised into the caller.
Messages carry schedule names, error codes and messages, and links: never a secret
(engines keep passwords out of their error messages).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from backups.errors import ErrorCode
from scheduling.models import BackupScheduleRun, Operation, RunStatus, Trigger
from tenants.audit import record
from tenants.models import AuditAction, Membership, Notification, NotificationKind, Role, Tenant

logger = logging.getLogger(__name__)

# Roles that receive e-mail and hear about requests: the ones that can change things.
MANAGING_ROLES = (Role.MANAGER, Role.OWNER)
# A dispatcher pass that misses many slots of a tenant makes one notification naming a few.
NAMED_IN_MESSAGE = 5
MESSAGE_LIMIT = 500  # Notification.message's max_length (the detail)
TITLE_LIMIT = 200  # Notification.title's max_length
# A recovery counts the failures since the last success among this many recent runs.
RECOVERY_LOOKBACK = 50


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _members(tenant_id: int, roles: Sequence[str] | None = None) -> list[tuple[User, str]]:
    """The tenant's active members (optionally of these roles) with their roles, in one query."""
    memberships = (
        Membership.objects.filter(tenant_id=tenant_id, user__is_active=True).select_related("user").order_by("user_id")
    )
    if roles is not None:
        memberships = memberships.filter(role__in=roles)
    return [(m.user, m.role) for m in memberships]


def _managers(members: list[tuple[User, str]]) -> list[User]:
    return [user for user, role in members if role in MANAGING_ROLES]


def _create(tenant_id: int, users: Iterable[User], kind: str, title: str, detail: str, run_id: int | None) -> int:
    now = timezone.now()
    rows = [
        Notification(
            tenant_id=tenant_id,
            user=user,
            kind=kind,
            run_id=run_id,
            title=_cut(title, TITLE_LIMIT),
            message=_cut(detail, MESSAGE_LIMIT),
            created_at=now,
        )
        for user in users
    ]
    Notification.objects.bulk_create(rows)
    return len(rows)


def site_url(path: str) -> str:
    return settings.SITE_URL.rstrip("/") + path


def _send_after_commit(
    tenant_id: int, recipients: list[User], subject: str, body: str, run: BackupScheduleRun | None, kind: str
) -> None:
    """One message per recipient (members do not see each other's addresses), one connection."""
    addressed = [user for user in recipients if user.email]
    if not addressed or not settings.EMAIL_NOTIFICATIONS:
        return
    # Names are people's text: a line break in a header would be refused (BadHeaderError).
    subject = " ".join(f"{settings.EMAIL_SUBJECT_PREFIX}{subject}".split())
    messages = [
        EmailMessage(subject=subject, body=body, to=[user.email], from_email=settings.DEFAULT_FROM_EMAIL)
        for user in addressed
    ]
    names = [user.get_username() for user in addressed]

    def send() -> None:
        try:
            sent = get_connection().send_messages(messages) or 0
        except Exception as exc:  # a mail server that is down must not break the worker or the pass
            # The class name only: some SMTP errors echo the login they were given.
            logger.warning("notification e-mail (%s) not sent: %s", kind, type(exc).__name__)
            return
        target: Any = run if run is not None else Tenant.objects.get(pk=tenant_id)
        record(tenant_id, AuditAction.NOTIFICATION_SENT, target, kind=kind, sent=sent, recipients=names)

    transaction.on_commit(send)


# ------------------------------------------------------------------ finished runs


def _run_words(run: BackupScheduleRun) -> str:
    if run.operation == Operation.VERIFY:
        return f"Verification for “{run.schedule.name}”"
    if run.operation == Operation.RESTORE:
        return f"Restore for “{run.schedule.name}”"
    return f"Backup of “{run.schedule.name}”"


def notify_run_finished(run: BackupScheduleRun, retrying: bool = False) -> int:
    """Call once a run reached its final status. Returns the notifications made.

    Failed and partial runs: every member; e-mail to managers and owners. A failed
    attempt with an automatic retry pending (`retrying`) tells nobody yet: people hear
    once, when the last attempt failed ("failed after 3 attempts"). A backup that
    succeeds after failures people were told about says so once, the same way.
    A finished restore: the requester and the managers and owners. Anything else: nobody.
    """
    what = _run_words(run)
    error = ": ".join(part for part in (run.error_code, run.error_message) if part)
    if run.status == RunStatus.FAILED:
        if retrying:
            return 0
        kind, title = NotificationKind.RUN_FAILED, f"{what} failed"
        if run.attempt > 1:
            title += f" after {run.attempt} attempts"
        detail = error or "The run failed without a message; its log may say more."
    elif run.status == RunStatus.PARTIAL:
        kind, title = NotificationKind.RUN_PARTIAL, f"{what} partly failed"
        detail = error or "Some items were not stored."
    elif run.operation == Operation.RESTORE and run.status == RunStatus.SUCCEEDED:
        kind, title = NotificationKind.RESTORE_FINISHED, f"{what} finished"
        detail = "The restore succeeded; its log says what was written where."
    elif run.operation == Operation.BACKUP and run.status == RunStatus.SUCCEEDED:
        failures = _failures_before(run)
        if not failures:
            return 0
        kind, title = NotificationKind.RUN_RECOVERED, f"{what} works again"
        detail = f"It succeeded after {failures.count} failed run{'' if failures.count == 1 else 's'}"
        detail += f"{' or more' if failures.more else ''}; the last failure was {failures.last_error or 'unexplained'}."
    else:
        return 0
    members = _members(run.tenant_id)
    if kind == NotificationKind.RESTORE_FINISHED:
        users = [user for user, role in members if role in MANAGING_ROLES or user.pk == run.requested_by_id]
        return _create(run.tenant_id, users, kind, title, detail, run.pk)
    made = _create(run.tenant_id, [user for user, _ in members], kind, title, detail, run.pk)
    link = reverse("run_detail", args=[run.code])
    body = "\n".join(
        [
            f"{title}.",
            "",
            f"Tenant: {run.tenant.name}",
            f"Schedule: {run.schedule.name}",
            f"Attempt: {run.attempt}",
            f"{'Details' if kind == NotificationKind.RUN_RECOVERED else 'Error'}: {detail}",
            "",
            f"Details and log: {site_url(link)}",
        ]
    )
    subject = f"{run.tenant.name}: {title}"
    _send_after_commit(run.tenant_id, _managers(members), subject, body + "\n", run, kind)
    return made


@dataclass
class _Failures:
    count: int  # failed and partial runs since the last success
    more: bool  # the look-back ended before a success
    last_error: str


def _failures_before(run: BackupScheduleRun) -> _Failures | None:
    """The schedule's failures since its last success, if people were told of one.

    People were told of a partial run and of a failed one that got no automatic retry
    (the chain's last attempt). Not of a failed attempt a retry followed, nor of a
    run the dispatcher gave up for lost (WORKER_LOST tells nobody). One query along
    scheduling_run_schedule_time, at most RECOVERY_LOOKBACK rows."""
    rows = list(
        BackupScheduleRun.objects.filter(
            schedule_id=run.schedule_id,
            operation=Operation.BACKUP,
            status__in=[RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED, RunStatus.CANCELED],
        )
        .exclude(pk=run.pk)
        .order_by("-created_at", "-id")
        .values("pk", "status", "attempt", "retry_of_id", "trigger", "not_before", "error_code", "error_message")[
            :RECOVERY_LOOKBACK
        ]
    )
    # (chain, attempt) of each attempt an automatic retry followed: it told nobody.
    runs: list[tuple[int | None, int, str, datetime | None]] = [
        (row["retry_of_id"], row["attempt"], row["trigger"], row["not_before"]) for row in rows
    ]
    runs.append((run.retry_of_id, run.attempt, run.trigger, run.not_before))
    retried = {
        (chain, attempt - 1)
        for chain, attempt, trigger, not_before in runs
        if trigger == Trigger.RETRY and not_before is not None
    }
    count, told, last_error, succeeded = 0, False, "", False
    for row in rows:
        if row["status"] == RunStatus.SUCCEEDED:
            succeeded = True
            break
        if row["status"] == RunStatus.CANCELED:
            continue
        count += 1
        last_error = last_error or ": ".join(part for part in (row["error_code"], row["error_message"]) if part)
        chain = row["retry_of_id"] or row["pk"]
        if row["status"] == RunStatus.PARTIAL or (
            row["error_code"] != ErrorCode.WORKER_LOST and (chain, row["attempt"]) not in retried
        ):
            told = True
    if not told:
        return None
    return _Failures(count, not succeeded and len(rows) == RECOVERY_LOOKBACK, last_error)


# ------------------------------------------------------------------ missed slots


def notify_slots_missed(tenant_id: int, run_ids: Iterable[int | str | UUID]) -> int:
    """Call after a dispatcher pass recorded missed slots for this tenant.

    `run_ids`: the missed runs, as primary keys or codes (the dispatcher knows codes).
    One notification per member for the whole pass, naming the schedules; one e-mail
    to each manager and owner.
    """
    ids = list(run_ids)
    pks = [value for value in ids if isinstance(value, int)]
    codes = [value for value in ids if not isinstance(value, int)]
    runs = list(
        BackupScheduleRun.objects.filter(
            Q(pk__in=pks) | Q(code__in=codes), tenant_id=tenant_id, status=RunStatus.MISSED
        )
        .select_related("schedule")
        .only("pk", "code", "slot", "missed_count", "error_message", "schedule__name")
        .order_by("schedule__name", "slot")
    )
    if not runs:
        return 0
    slots = sum(max(run.missed_count, 1) for run in runs)
    names = [run.schedule.name for run in runs]
    named = ", ".join(f"“{name}”" for name in names[:NAMED_IN_MESSAGE])
    if len(names) > NAMED_IN_MESSAGE:
        named += f" and {len(names) - NAMED_IN_MESSAGE} more"
    title = f"{slots} backup slot{'' if slots == 1 else 's'} missed"
    headline = f"{title}: {named}."
    single = runs[0] if len(runs) == 1 else None
    members = _members(tenant_id)
    made = _create(
        tenant_id,
        [user for user, _ in members],
        NotificationKind.SLOT_MISSED,
        title,
        headline,
        single.pk if single else None,
    )
    tenant = Tenant.objects.only("code", "name").get(pk=tenant_id)
    if single is not None:
        link = reverse("run_detail", args=[single.code])
    else:
        link = reverse("runs", args=[tenant.code]) + "?status=missed"
    lines = [headline, "", f"Tenant: {tenant.name}"]
    lines += [f"- {run.schedule.name}: {run.error_message or 'missed'}" for run in runs]
    lines += ["", f"Details: {site_url(link)}", ""]
    subject = f"{tenant.name}: {headline}"
    _send_after_commit(tenant_id, _managers(members), subject, "\n".join(lines), single, NotificationKind.SLOT_MISSED)
    return made


# ------------------------------------------------------------------ requests


def notify_run_requested(run: BackupScheduleRun, actor: Any) -> int:
    """Call after Run now or Retry created `run`: managers and owners hear of it, not the actor."""
    who = actor.get_username() if getattr(actor, "is_authenticated", False) else "The system"
    verb = "asked for a retry of" if run.retry_of_id else "pressed Run now on"
    message = f"{who} {verb} “{run.schedule.name}”."
    if run.operation != Operation.BACKUP:
        message = f"{who} asked for a {run.get_operation_display().lower()} of “{run.schedule.name}”."
    actor_pk = actor.pk if getattr(actor, "is_authenticated", False) else None
    users = [user for user, _ in _members(run.tenant_id, MANAGING_ROLES) if user.pk != actor_pk]
    return _create(run.tenant_id, users, NotificationKind.RUN_REQUESTED, message.rstrip("."), message, run.pk)
