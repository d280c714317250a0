"""Test helpers that exercise the real queue instead of calling functions around it."""

from __future__ import annotations

import importlib
from typing import Any

from django_q.brokers import get_broker
from django_q.signing import SignedPackage


def queued_tasks() -> list[dict[str, Any]]:
    """Take every task off the configured broker (ORM or Redis) and acknowledge it."""
    broker = get_broker()
    tasks = []
    while True:
        batch = broker.dequeue()
        if not batch:
            break
        for task_id, payload in batch:
            tasks.append(SignedPackage.loads(payload))
            broker.acknowledge(task_id)
    return tasks


def execute(task: dict[str, Any]) -> Any:
    module_name, _, func_name = task["func"].rpartition(".")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(*task["args"], **task["kwargs"])


def drain() -> list[Any]:
    """Run every queued task the way a cluster worker would."""
    return [execute(task) for task in queued_tasks()]
