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
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import EmailMessage, get_connection
from django.db import transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from scheduling.models import (
    BackupSchedule,
    BackupScheduleRun,
    Notification,
    NotificationKind,
    Operation,
    RunStatus,
)
from tenants.audit import record
from tenants.models import AuditAction, Membership, Role, Tenant

logger = logging.getLogger(__name__)

# Roles that receive e-mail and hear about requests: the ones that can change things.
MANAGING_ROLES = (Role.MANAGER, Role.OWNER)
# A dispatcher pass that misses many slots of a tenant makes one notification naming a few.
NAMED_IN_MESSAGE = 5
MESSAGE_LIMIT = 500  # Notification.message's max_length (the detail)
TITLE_LIMIT = 200  # Notification.title's max_length
# A recovery counts the failures since the last success among this many recent runs.
RECOVERY_LOOKBACK = 50
# The bell shows "99+" beyond this: the count reads at most this many index entries.
UNREAD_CAP = 100
# Every page asks for the bell's count again this often (notifications/bell.html).
BELL_POLL_SECONDS = 60


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


def unread_count(user: User, tenant: Tenant) -> int:
    """Unread notifications, capped: one COUNT over the partial index scheduling_notif_unread."""
    return Notification.objects.filter(user=user, tenant=tenant, read_at__isnull=True)[:UNREAD_CAP].count()


def bell_context(user: User, tenant: Tenant) -> dict[str, Any]:
    """What notifications/bell.html needs, on a page or alone (its poll, a mark-read answer)."""
    return {"unread": unread_count(user, tenant), "unread_cap": UNREAD_CAP, "bell_poll_seconds": BELL_POLL_SECONDS}


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
    once, when the last attempt failed ("failed after 3 attempts"), when the dispatcher
    gave it up for lost, or when its retry was canceled (notify_retry_canceled). A
    backup that succeeds after a failure people were told of says so once, the same way.
    A finished restore: the requester and the managers and owners. Anything else: nobody.
    """
    what = _run_words(run)
    if run.status == RunStatus.FAILED:
        if retrying:
            return 0
        kind, title = NotificationKind.RUN_FAILED, _failed_title(run)
        detail = _error(run) or "The run failed without a message; its log may say more."
    elif run.status == RunStatus.PARTIAL:
        kind, title = NotificationKind.RUN_PARTIAL, f"{what} partly failed"
        detail = _error(run) or "Some items were not stored."
    elif run.operation == Operation.RESTORE and run.status == RunStatus.SUCCEEDED:
        title = f"{what} finished"
        detail = "The restore succeeded; its log says what was written where."
        users = [
            user for user, role in _members(run.tenant_id) if role in MANAGING_ROLES or user.pk == run.requested_by_id
        ]
        return _create(run.tenant_id, users, NotificationKind.RESTORE_FINISHED, title, detail, run.pk)
    elif run.operation == Operation.BACKUP and run.status == RunStatus.SUCCEEDED:
        # Compare-and-swap: of two good runs finishing at once (a run given up for lost
        # that finished after all, and the next one), one says it.
        if not BackupSchedule.objects.filter(pk=run.schedule_id, recovery_pending=True).update(recovery_pending=False):
            return 0
        kind, title = NotificationKind.RUN_RECOVERED, f"{what} works again"
        detail = _recovery_detail(_failures_before(run))
    else:
        return 0
    return _tell(run, kind, title, detail)


def notify_retry_canceled(run: BackupScheduleRun, actor: Any) -> int:
    """Call after the automatic retry that followed the failed attempt `run` was canceled
    (the schedule was disabled): that failure told nobody, since a retry was pending."""
    who = actor.get_username() if getattr(actor, "is_authenticated", False) else ""
    when = f"when {who} disabled the schedule" if who else "when the schedule was disabled"
    detail = f"{_error(run) or 'The run failed without a message'}. Its automatic retry was canceled {when}."
    return _tell(run, NotificationKind.RUN_FAILED, f"{_failed_title(run)}; retry canceled", detail)


def _failed_title(run: BackupScheduleRun) -> str:
    title = f"{_run_words(run)} failed"
    return title + f" after {run.attempt} attempts" if run.attempt > 1 else title


def _error(run: BackupScheduleRun) -> str:
    return ": ".join(part for part in (run.error_code, run.error_message) if part)


def _tell(run: BackupScheduleRun, kind: str, title: str, detail: str) -> int:
    """Every member in the app, and an e-mail to the managers and owners."""
    if run.operation == Operation.BACKUP and kind != NotificationKind.RUN_RECOVERED:
        # Told: the schedule's next good backup says it works again.
        BackupSchedule.objects.filter(pk=run.schedule_id, recovery_pending=False).update(recovery_pending=True)
    members = _members(run.tenant_id)
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


def _recovery_detail(failures: _Failures) -> str:
    if not failures.count:  # the failure told was this very run's, given up for lost and finished after all
        return "It succeeded after the failure people were told of."
    plural = "" if failures.count == 1 else "s"
    detail = f"It succeeded after {failures.count} failed run{plural}{' or more' if failures.more else ''}"
    return detail + f"; the last failure was {failures.last_error or 'unexplained'}."


def _failures_before(run: BackupScheduleRun) -> _Failures:
    """The schedule's failed and partial backups since its last success, for the words
    of a recovery (whether to tell one is recovery_pending's). One query along
    scheduling_run_schedule_time, at most RECOVERY_LOOKBACK rows."""
    rows = list(
        BackupScheduleRun.objects.filter(
            schedule_id=run.schedule_id,
            operation=Operation.BACKUP,
            status__in=[RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED],
        )
        .exclude(pk=run.pk)
        .order_by("-created_at", "-id")
        .values("status", "error_code", "error_message")[:RECOVERY_LOOKBACK]
    )
    count, last_error, succeeded = 0, "", False
    for row in rows:
        if row["status"] == RunStatus.SUCCEEDED:
            succeeded = True
            break
        count += 1
        last_error = last_error or ": ".join(part for part in (row["error_code"], row["error_message"]) if part)
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
    # Only Run now and Retry come here (scheduling.runs); verify and restore requests tell nobody.
    verb = "asked for a retry of" if run.retry_of_id else "pressed Run now on"
    message = f"{who} {verb} “{run.schedule.name}”."
    actor_pk = actor.pk if getattr(actor, "is_authenticated", False) else None
    users = [user for user, _ in _members(run.tenant_id, MANAGING_ROLES) if user.pk != actor_pk]
    return _create(run.tenant_id, users, NotificationKind.RUN_REQUESTED, message.rstrip("."), message, run.pk)
