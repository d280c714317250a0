"""django-q2 task packages for many runs at once, and putting them on its brokers.

What django_q.tasks.async_task does for one task (build the task dict, pickle it,
sign it, broker.enqueue), done for thousands at the cost of one pickle, one key
derivation and one statement or round trip. Part of the fast path (see
tenants/fastpath/__init__.py): everything here copies a django-q2 internal,
and tests/tenants/test_fastpath_contract.py checks each copy against django-q2 itself.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.signing import TimestampSigner, b64_decode, b64_encode
from django.utils import timezone
from django.utils.encoding import force_bytes
from django_q.brokers import Broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import PickleSerializer

from tenants.fastpath.sql_writes import insert_rows

# The name shown for every task: the run code is the argument, and a short name
# keeps 10,000 packages small.
TASK_NAME = "backup run"


def task_package(func: str, run_code: UUID | str, now: datetime, signer: TimestampSigner | None = None) -> str:
    """The signed package django_q.tasks.async_task(func, run_code) would build."""
    signer = signer or batch_signer()
    task = _task(func, uuid.uuid4().hex, dashed_code(run_code), now)
    return signer.sign_object(task, serializer=PickleSerializer, compress=Conf.COMPRESSED)


def _task(func: str, task_id: str, run_code: str, now: datetime) -> dict[str, Any]:
    # The keys async_task sets for a task with ack_failure=True and no other option.
    return {
        "id": task_id,
        "name": TASK_NAME,
        "func": func,
        "args": (run_code,),
        "kwargs": {},
        "started": now,
        "ack_failure": True,
    }


def dashed_code(run_code: UUID | str) -> str:
    """The 36-character form of a code given as a UUID, 32 hex digits or 36 characters."""
    if isinstance(run_code, str) and len(run_code) == 32:  # the dispatcher's hex codes: skip parsing
        h = run_code.lower()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return str(run_code if isinstance(run_code, UUID) else UUID(run_code))


class BatchSigner(TimestampSigner):
    """Django's TimestampSigner, tuned for signing thousands of packages at once:
    the HMAC key is derived once (Django derives it on every call) and the
    timestamp is read once per batch. The output is byte-for-byte what
    TimestampSigner would produce at that second, and django-q2 verifies it as usual."""

    def __init__(self, key: str, salt: str) -> None:
        super().__init__(key=key, salt=salt, algorithm="sha256")
        derived = hashlib.sha256(force_bytes(self.salt) + b"signer" + force_bytes(self.key)).digest()
        self._mac = hmac.new(derived, digestmod=hashlib.sha256)
        self._timestamp = super().timestamp()

    def timestamp(self) -> str:
        return self._timestamp

    def signature(self, value: str | bytes, key: str | bytes | None = None) -> str:
        if key is not None:
            return super().signature(value, key)
        mac = self._mac.copy()
        mac.update(force_bytes(value))
        return b64_encode(mac.digest()).decode()


def batch_signer() -> BatchSigner:
    """The key and salt django_q.signing.SignedPackage.dumps signs with, one signer for a batch."""
    return BatchSigner(key=Conf.SECRET_KEY, salt=Conf.PREFIX)


class _PackageMaker:
    """Signed packages for many runs at the cost of one pickle.

    The task dicts differ only in two fixed-length strings (the task id, 32 hex
    digits, and the run code, 36 characters), so the pickle of one dict with
    placeholders is reused with the bytes swapped: pickle stores a string as its
    length and its bytes, and the lengths do not change. Signing is Django's.
    """

    ID_MARK = "i" * 32
    CODE_MARK = "c" * 36

    def __init__(self, func: str, now: datetime) -> None:
        self.func, self.now = func, now
        self.signer = batch_signer()
        self.template = (
            None if Conf.COMPRESSED else PickleSerializer.dumps(_task(func, self.ID_MARK, self.CODE_MARK, now))
        )

    def __call__(self, run_code: UUID | str) -> str:
        if self.template is None:
            return task_package(self.func, run_code, self.now, self.signer)
        data = self.template.replace(self.ID_MARK.encode(), os.urandom(16).hex().encode()).replace(
            self.CODE_MARK.encode(), dashed_code(run_code).encode()
        )
        return self.signer.sign(b64_encode(data).decode())


def signed_packages(func: str, run_codes: Sequence[UUID | str], now: datetime) -> list[str]:
    """One package per run, each calling func(run_code) in a worker."""
    make_package = _PackageMaker(func, now)
    return [make_package(code) for code in run_codes]


def broker_in_database(broker: Broker) -> bool:
    """The ORM broker: its queue is a table of our database, written in our transaction."""
    return isinstance(broker, ORM)


def insert_packages(broker: Broker, packages: Sequence[str], now: datetime) -> None:
    """What ORM.enqueue does for each package (a row, locked until now), in one INSERT."""
    rows = [{"payload": package} for package in packages]
    insert_rows(OrmQ, rows, constants={"key": broker.list_key, "lock": now})


def push_packages(broker: Broker, packages: Sequence[str]) -> None:
    """What broker.enqueue does for each package; on Redis in one round trip."""
    connection = broker.connection
    if hasattr(connection, "pipeline"):  # Redis: RPUSH onto the broker's list, as Redis.enqueue
        pipe = connection.pipeline(transaction=False)
        for package in packages:
            pipe.rpush(broker.list_key, package)
        pipe.execute()
    else:
        for package in packages:
            broker.enqueue(package)


# ---------------------------------------------------------------- what the queue still holds

# A run code as the task's argument holds it (dashed_code); the task id is 32 hex digits
# without dashes, so in one of our packages this matches the argument only.
_RUN_CODE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def package_run_code(package: str | bytes, func: str) -> str | None:
    """The run code a package calls `func` with, or None for any other package.

    Read from the pickle's bytes, never unpickled and without checking the signature:
    unpickling what anyone able to write to Redis put there would run their code in the
    dispatcher, and the worker checks the signature anyway. A forged package can at most
    make a run look as if its task were still queued, which the worker's own check of
    the signature then shows in its log. Format: core_signing.dumps, "[.]b64:ts:sig"
    with "." for a zlib-compressed pickle."""
    raw = package.encode() if isinstance(package, str) else package
    value = raw.split(b":", 1)[0]
    compressed = value.startswith(b".")
    try:
        data = b64_decode(value[1:] if compressed else value)
        if compressed:
            data = zlib.decompress(data)
    except (ValueError, zlib.error):
        return None
    if func.encode() not in data:
        return None
    found = _RUN_CODE.search(data)
    return found.group().decode() if found else None


@dataclass
class QueueScan:
    """The runs whose tasks sit on a broker's queue, from one read of it."""

    # Run codes with a task a worker can still take.
    available: set[str] = field(default_factory=set)
    # ORM broker: run codes whose row a cluster has taken (locked until its `retry`), with the rows.
    taken: dict[str, list[int]] = field(default_factory=dict)
    # False when the queue held more than the read's limit: a code in neither set may be further on.
    complete: bool = True


def scan_queue(broker: Broker, func: str, limit: int) -> QueueScan:
    """Read the first `limit` tasks of the broker's queue (one round trip on Redis, one
    SELECT on the ORM broker) and say which runs they are for.

    Redis: what is in the list can still be taken; a task a cluster took is gone from
    it (BLPOP, no acknowledgement). ORM broker: a row stays until it is acknowledged, a
    cluster that takes it moves its lock to now + `retry`; django-q2 compares locks with
    its own clock (timezone.now()), so we do too."""
    scan = QueueScan()
    if broker_in_database(broker):
        now = timezone.now()
        rows = list(
            OrmQ.objects.using(Conf.ORM or "default")
            .filter(key=broker.list_key)
            .order_by("id")
            .values_list("id", "lock", "payload")[: limit + 1]
        )
        scan.complete = len(rows) <= limit
        for pk, lock, payload in rows[:limit]:
            code = package_run_code(payload, func)
            if code is None:
                continue
            if lock is None or lock < now:
                scan.available.add(code)
            else:
                scan.taken.setdefault(code, []).append(pk)
        return scan
    pipe = broker.connection.pipeline(transaction=False)
    pipe.llen(broker.list_key)
    pipe.lrange(broker.list_key, 0, limit - 1)
    length, packages = pipe.execute()
    scan.complete = length <= limit
    for package in packages:
        code = package_run_code(package, func)
        if code is not None:
            scan.available.add(code)
    return scan


def release_rows(pks: Sequence[int]) -> None:
    """ORM broker: make taken rows available again at once (what its `retry` would do
    hours later), in one UPDATE."""
    if pks:
        OrmQ.objects.using(Conf.ORM or "default").filter(pk__in=pks).update(lock=timezone.now())
