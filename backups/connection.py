""" "Test connection": the cheapest check that a backup of a source could start, audited."""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any

from backups.engines.base import CheckResult
from backups.engines.process import scrub
from backups.engines.registry import engine_for
from backups.errors import BackupError, ErrorCode
from backups.models import BackupSource, SourceKind
from backups.paths import check_source_path
from backups.secrets import SecretError
from tenants.audit import record
from tenants.models import AuditAction

logger = logging.getLogger(__name__)


def test_connection(source: BackupSource, actor: Any) -> CheckResult:
    """Check `source` as its engine would reach it; record the outcome (never a secret)."""
    try:
        result = _check(source)
    except BackupError as exc:
        result = CheckResult(ok=False, message=exc.message, error_code=exc.code)
    except Exception:  # the page must say something, and never show a traceback
        logger.exception("connection test of source %s failed unexpectedly", source.code)
        result = CheckResult(
            ok=False, message="The test failed unexpectedly; the server log has the details.", error_code="UNKNOWN"
        )
    # The engines scrub already; a second pass costs nothing and guards future engines.
    try:
        secrets = [source.get_password()]
    except SecretError:
        secrets = []
    result = CheckResult(ok=result.ok, message=scrub(result.message, secrets), error_code=str(result.error_code))
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


def _check(source: BackupSource) -> CheckResult:
    engine = engine_for(source.kind)
    try:
        return engine.check_connection(source)
    except NotImplementedError:
        return _check_files(source)


def _check_files(source: BackupSource) -> CheckResult:
    """File kinds whose engine has no check of its own: the path is allowed, exists and is readable."""
    path = check_source_path(source.path, source.tenant)
    if source.kind == SourceKind.DIRECTORY:
        if not path.is_dir():
            return CheckResult(False, f"The folder {path} does not exist.", ErrorCode.SOURCE_NOT_FOUND)
        if not os.access(path, os.R_OK | os.X_OK):
            return CheckResult(False, f"The backup worker may not read the folder {path}.", ErrorCode.PERMISSION_DENIED)
        return CheckResult(True, f"The folder {path} exists and can be read.")
    if not path.is_file():
        return CheckResult(False, f"The file {path} does not exist.", ErrorCode.SOURCE_NOT_FOUND)
    if not os.access(path, os.R_OK):
        return CheckResult(False, f"The backup worker may not read the file {path}.", ErrorCode.PERMISSION_DENIED)
    if source.kind == SourceKind.SQLITE:
        try:
            with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as db:
                tables = db.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            return CheckResult(False, f"{path} is not a readable SQLite database: {exc}.", ErrorCode.UNKNOWN)
        return CheckResult(True, f"The SQLite database {path} can be read ({tables} tables).")
    return CheckResult(True, f"The file {path} exists and can be read.")
