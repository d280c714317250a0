"""The database's clock: the one clock every node shares.

Heartbeats are written by workers and judged by dispatchers, source leases taken on one
node and taken over on another, slots classified late or fresh by whichever node's pass
gets there first. Judged across nodes, each node's own clock would let a node ten minutes
off fail live runs as lost or record future slots as missed. So those instants come from
the database server, and each pass measures how far its node's clock is from it
(NodeClock, scheduling/health.py shows a node beyond CLOCK_SKEW_LIMIT_SECONDS).

On SQLite the database is a file on this host, and SQLite's own 'now' is this process's
clock: there is no second clock to disagree with, so no query is spent asking."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import connection
from django.utils import timezone


@dataclass(frozen=True)
class ClockReading:
    db_time: datetime
    # This node's clock minus the database's (positive: the node is ahead), in seconds,
    # taken at the middle of the query's round trip; uncertain by half the round trip.
    offset_seconds: float
    round_trip_seconds: float


def read_clock() -> ClockReading:
    """The database's time now, and this node's offset from it (one query on PostgreSQL)."""
    if connection.vendor != "postgresql":
        return ClockReading(timezone.now(), 0.0, 0.0)
    before = time.time()
    with connection.cursor() as cursor:
        # clock_timestamp(), not now(): now() is the transaction's start, which inside a
        # pass that waited for the dispatch lock is not the time of the reading.
        cursor.execute("SELECT clock_timestamp()")
        (db_time,) = cursor.fetchone()
    after = time.time()
    db_time = db_time.astimezone(UTC)
    return ClockReading(db_time, (before + after) / 2 - db_time.timestamp(), after - before)


def db_now() -> datetime:
    """The database's time now: what heartbeats, claims and leases are written with."""
    return read_clock().db_time
