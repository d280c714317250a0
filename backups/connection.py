""" "Test connection": the cheapest check that a backup of a source could start, audited."""

from __future__ import annotations

import logging
from typing import Any

from backups.engines.base import CheckResult
from backups.engines.registry import engine_for
from backups.errors import BackupError
from backups.models import BackupSource
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)


def test_connection(source: BackupSource, actor: Any) -> CheckResult:
    """Check `source` as its engine would reach it; record the outcome (never a secret)."""
    try:
        result = engine_for(source.kind).check_connection(source)
    except BackupError as exc:
        result = CheckResult(ok=False, message=exc.summary, error_code=exc.code)
    except Exception:  # the page must say something, and never show a traceback
        logger.exception("connection test of source %s failed unexpectedly", source.code)
        result = CheckResult(
            ok=False, message="The test failed unexpectedly; the server log has the details.", error_code="UNKNOWN"
        )
    result = CheckResult(ok=result.ok, message=result.message, error_code=str(result.error_code))
    record(
        source.tenant,
        AuditAction.SOURCE_TESTED,
        source,
        actor=actor,
        ok=result.ok,
        error_code=result.error_code,
        message=result.message,
    )
    logger.info("source %s tested: %s", source.code, "ok" if result.ok else result.error_code)
    return result


# Not a pytest test, whatever its name says (tests import it).
test_connection.__test__ = False  # type: ignore[attr-defined]
