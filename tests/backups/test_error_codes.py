"""CORRUPTED is kept for what the stored file is to blame for; the rest stays UNKNOWN."""

from __future__ import annotations

import pytest

from backups.engines.postgres import _verify_error
from backups.engines.process import ToolCall, run_tool
from backups.errors import BackupError, ErrorCode


def test_pg_restore_failing_on_the_file_is_corrupted() -> None:
    code, message = _verify_error("pg_restore: error: could not read from input file: end of file\n")
    assert code == ErrorCode.CORRUPTED and "damaged or incomplete" in message


@pytest.mark.parametrize(
    "stderr",
    [
        "pg_restore: error: unsupported version (1.16) in file header\n",
        "pg_restore: error: out of memory\n",
    ],
)
def test_pg_restore_failing_for_reasons_of_this_machine_is_not_corrupted(stderr: str) -> None:
    code, _ = _verify_error(stderr)
    assert code == ErrorCode.UNKNOWN


def corrupted(stderr: str) -> tuple[ErrorCode, str]:
    return ErrorCode.CORRUPTED, "The backup file is damaged."


def test_a_checker_killed_from_outside_did_not_judge_the_file() -> None:
    call = ToolCall(argv=["sh", "-c", "echo 'reading' >&2; kill -9 $$"], what="a check", mapper=corrupted)
    with pytest.raises(BackupError) as caught:
        run_tool(call)
    assert caught.value.code == ErrorCode.UNKNOWN
    assert "stopped before it finished" in caught.value.message and "killed by signal 9" in caught.value.message


def test_a_checker_that_exits_with_an_error_keeps_its_code() -> None:
    call = ToolCall(argv=["sh", "-c", "echo 'bad block' >&2; exit 1"], what="a check", mapper=corrupted)
    with pytest.raises(BackupError) as caught:
        run_tool(call)
    assert caught.value.code == ErrorCode.CORRUPTED
