"""Putting run tasks on django-q2's queue, many at a time.

A task carries only the run's public code: never a password or a path, so task
arguments, the queue and its admin pages hold nothing secret.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from django.core.signing import TimestampSigner, b64_encode
from django.db import transaction
from django.utils import timezone
from django.utils.encoding import force_bytes
from django_q.brokers import Broker, get_broker
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import PickleSerializer

from scheduling.bulk import insert_rows
from scheduling.worker import execute_run

# The worker's task, as django-q2 names it (taken from the function: a move cannot leave it stale).
EXECUTE_RUN = f"{execute_run.__module__}.{execute_run.__qualname__}"


def task_package(run_code: UUID | str, now: datetime, signer: TimestampSigner | None = None) -> str:
    """The same signed package django_q.tasks.async_task would build."""
    signer = signer or _signer()
    task = _task(uuid.uuid4().hex, dashed_code(run_code), now)
    return signer.sign_object(task, serializer=PickleSerializer, compress=Conf.COMPRESSED)


def _task(task_id: str, run_code: str, now: datetime) -> dict:
    return {
        "id": task_id,
        "name": "backup run",  # the run code is the argument; a short name keeps 10,000 packages small
        "func": EXECUTE_RUN,
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


class _BatchSigner(TimestampSigner):
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


def _signer() -> TimestampSigner:
    # What django_q.signing.SignedPackage.dumps uses, one signer for a whole batch.
    return _BatchSigner(key=Conf.SECRET_KEY, salt=Conf.PREFIX)


class _PackageMaker:
    """Signed packages for many runs at the cost of one pickle.

    The task dicts differ only in two fixed-length strings (the task id, 32 hex
    digits, and the run code, 36 characters), so the pickle of one dict with
    placeholders is reused with the bytes swapped: pickle stores a string as its
    length and its bytes, and the lengths do not change. Signing is Django's.
    """

    ID_MARK = "i" * 32
    CODE_MARK = "c" * 36

    def __init__(self, now: datetime) -> None:
        self.signer = _signer()
        self.template = None if Conf.COMPRESSED else PickleSerializer.dumps(_task(self.ID_MARK, self.CODE_MARK, now))
        self.now = now

    def __call__(self, run_code: UUID | str) -> str:
        if self.template is None:
            return task_package(run_code, self.now, self.signer)
        data = self.template.replace(self.ID_MARK.encode(), os.urandom(16).hex().encode()).replace(
            self.CODE_MARK.encode(), dashed_code(run_code).encode()
        )
        return self.signer.sign(b64_encode(data).decode())


def enqueue_runs(run_codes: Sequence[UUID | str], broker: Broker | None = None) -> None:
    """Enqueue one task per run, inside the caller's transaction where possible.

    With the ORM broker the queue lives in our database, so tasks commit or roll
    back together with their runs. With Redis the push waits for the commit (a
    task never points at a run that does not exist); if the process dies in
    between, the run stays queued and the dispatcher's next pass pushes it again.
    """
    if not run_codes:
        return
    broker = broker or get_broker()
    now = timezone.now()
    make_package = _PackageMaker(now)
    packages = [make_package(code) for code in run_codes]
    if isinstance(broker, ORM):
        rows = [{"payload": package} for package in packages]
        insert_rows(OrmQ, rows, constants={"key": broker.list_key, "lock": now})
    else:
        # robust: a Redis hiccup after commit must not turn a created run into an error
        # page; the run stays queued and the dispatcher pushes its task again later.
        transaction.on_commit(lambda: push_packages(broker, packages), robust=True)


def push_packages(broker: Broker, packages: Sequence[str]) -> None:
    connection = broker.connection
    if hasattr(connection, "pipeline"):  # Redis: one round trip for the lot
        pipe = connection.pipeline(transaction=False)
        for package in packages:
            pipe.rpush(broker.list_key, package)
        pipe.execute()
    else:
        for package in packages:
            broker.enqueue(package)
