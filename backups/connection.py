""" "Test connection": the cheapest check that a backup of a source could start.

A page asks for one (request_test); a worker does it (execute_check, whose only
argument is the check's code) and records the result, which the page then shows.
So no web request waits 10-20 s on a server, a tenant can start only
SOURCE_TESTS_PER_MINUTE of them a minute, and the engines connect only where the
tenant's host rules allow (backups/hosts.py). What is shown is the mapped error code
and our own sentence, never what answered on the port: the button is no port scanner
or banner grabber.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.brokers.orm import ORM
from django_q.tasks import async_task

from backups.engines.base import CheckResult
from backups.engines.registry import engine_for
from backups.errors import BackupError
from backups.models import BackupSource, CheckStatus, SourceCheck
from tenants.audit import record
from tenants.models import AuditAction, Tenant

logger = logging.getLogger(__name__)

RATE_WINDOW = timedelta(minutes=1)
# A check no worker took by then is shown as stuck, and a new one may be requested.
STALE_AFTER = timedelta(minutes=5)
# Finished checks older than this are removed when the source is tested again.
KEEP_FOR = timedelta(minutes=10)


class TooManyTests(Exception):
    """The tenant asked for more tests this minute than SOURCE_TESTS_PER_MINUTE."""


def request_test(source: BackupSource, actor: Any) -> SourceCheck:
    """A queued check of `source` (or the one already waiting); TooManyTests past the limit."""
    now = timezone.now()
    with transaction.atomic():
        # Serializes the count below per tenant on PostgreSQL; SQLite's write lock
        # (BEGIN IMMEDIATE) already does. Two requests at once cannot both slip past it.
        Tenant.objects.select_for_update().only("pk").get(pk=source.tenant_id)
        waiting = SourceCheck.objects.filter(
            source=source, status__in=[CheckStatus.QUEUED, CheckStatus.RUNNING], created_at__gte=now - STALE_AFTER
        ).first()
        if waiting is not None:
            return waiting
        limit = settings.SOURCE_TESTS_PER_MINUTE
        if SourceCheck.objects.filter(tenant_id=source.tenant_id, created_at__gte=now - RATE_WINDOW).count() >= limit:
            raise TooManyTests(
                f"This tenant has asked for {limit} connection tests in the last minute, the most allowed;"
                " try again in a minute."
            )
        SourceCheck.objects.filter(source=source, created_at__lt=now - KEEP_FOR).delete()
        check = SourceCheck.objects.create(
            tenant_id=source.tenant_id, source=source, requested_by=actor, created_at=now
        )
        _enqueue(str(check.code))
    return check


def _enqueue(check_code: str) -> None:
    broker = get_broker()

    def push() -> None:
        async_task(EXECUTE_CHECK, check_code, task_name="connection test", broker=broker, ack_failure=True)

    if isinstance(broker, ORM):
        push()  # a row in our database: commits or rolls back with the check
    else:
        # After commit, so the task never names a check that does not exist; a lost
        # push leaves the check queued, shown as stuck after STALE_AFTER.
        transaction.on_commit(push, robust=True)


def execute_check(check_code: str) -> str:
    """The worker's task: claim the check (compare-and-swap), test, record the result."""
    if not SourceCheck.objects.filter(code=check_code, status=CheckStatus.QUEUED).update(status=CheckStatus.RUNNING):
        return "not claimed"  # a second delivery
    check = SourceCheck.objects.select_related("source__tenant", "requested_by").get(code=check_code)
    result = check_source(check.source)
    SourceCheck.objects.filter(pk=check.pk, status=CheckStatus.RUNNING).update(
        status=CheckStatus.DONE,
        ok=result.ok,
        error_code=result.error_code,
        message=result.message,
        finished_at=timezone.now(),
    )
    record(
        check.tenant_id,
        AuditAction.SOURCE_TESTED,
        check.source,
        actor=check.requested_by,
        ok=result.ok,
        error_code=result.error_code,
        message=result.message,
    )
    logger.info("source %s tested: %s", check.source.code, "ok" if result.ok else result.error_code)
    return "ok" if result.ok else result.error_code


EXECUTE_CHECK = f"{execute_check.__module__}.{execute_check.__qualname__}"


def check_source(source: BackupSource) -> CheckResult:
    """Check `source` as its engine would reach it. The message is always one of ours."""
    try:
        result = engine_for(source.kind).check_connection(source)
    except BackupError as exc:
        result = CheckResult(ok=False, message=exc.summary, error_code=exc.code)
    except Exception:  # the page must say something, and never show a traceback
        logger.exception("connection test of source %s failed unexpectedly", source.code)
        result = CheckResult(
            ok=False, message="The test failed unexpectedly; the server log has the details.", error_code="UNKNOWN"
        )
    return CheckResult(ok=result.ok, message=result.message, error_code=str(result.error_code or ""))


def is_stale(check: SourceCheck) -> bool:
    return check.pending and check.created_at < timezone.now() - STALE_AFTER
