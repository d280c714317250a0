"""The worker's reading of what the pipeline returns."""

from __future__ import annotations

from backups import pipeline
from scheduling.models import RunStatus
from scheduling.worker import RUN_STATUS_OF


def test_every_way_a_backup_can_go_has_its_own_run_status() -> None:
    assert set(RUN_STATUS_OF) == set(pipeline.Result)
    assert len(set(RUN_STATUS_OF.values())) == len(pipeline.Result)
    assert set(RUN_STATUS_OF.values()) <= set(RunStatus)
