"""Set-based writes: one SQL statement for any number of rows.

Django's bulk_create/bulk_update split their work by the database's parameter
limit (999 on SQLite), so their statement count grows with the row count and
bulk_create cannot report which rows an ON CONFLICT skipped. The dispatcher
needs both, so rows travel as a single JSON parameter that the database unpacks
itself (json_each on SQLite, jsonb_array_elements on PostgreSQL).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.dateparse import parse_datetime


def _connection(model: type[models.Model]) -> BaseDatabaseWrapper:
    return connections[router.db_for_write(model)]


def _prepare(field: models.Field, value: Any, connection: BaseDatabaseWrapper) -> Any:
    if isinstance(field, models.JSONField):
        return value  # nested as JSON, unpacked as JSON
    prepared = field.get_db_prep_value(value, connection, prepared=False)
    if prepared is None or isinstance(prepared, bool | int | float | str):
        return prepared
    return str(prepared)


def _column_expression(field: models.Field, index: int, connection: BaseDatabaseWrapper) -> str:
    if connection.vendor == "sqlite":
        if isinstance(field, models.JSONField):
            return f"json(json_extract(value, '$[{index}]'))"
        return f"json_extract(value, '$[{index}]')"
    if connection.vendor == "postgresql":
        if isinstance(field, models.JSONField):
            return f"(value->{index})::jsonb"
        db_type = field.rel_db_type(connection) if field.is_relation else field.cast_db_type(connection)
        return f"(value->>{index})::{db_type}"
    raise NotImplementedError(f"set-based writes support SQLite and PostgreSQL, not {connection.vendor}")


def _rows_source(connection: BaseDatabaseWrapper) -> str:
    if connection.vendor == "sqlite":
        return "json_each(%s)"
    return "jsonb_array_elements(%s::jsonb) AS rows(value)"


def insert_rows(
    model: type[models.Model], rows: Sequence[Mapping[str, Any]], returning: Sequence[str] = ()
) -> list[tuple[Any, ...]]:
    """INSERT every row in one statement; rows that break a unique constraint are skipped.

    Returns the `returning` columns of the rows actually inserted, converted to Python.
    """
    if not rows:
        return []
    connection = _connection(model)
    quote = connection.ops.quote_name
    fields = [model._meta.get_field(name) for name in rows[0]]
    payload = json.dumps([[_prepare(f, row[f.name], connection) for f in fields] for row in rows])  # type: ignore[arg-type]
    columns = ", ".join(quote(f.column) for f in fields)  # type: ignore[union-attr]
    values = ", ".join(_column_expression(f, i, connection) for i, f in enumerate(fields))  # type: ignore[arg-type]
    # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT's join.
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "
        f"SELECT {values} FROM {_rows_source(connection)} WHERE true ON CONFLICT DO NOTHING"
    )
    returned_fields = [model._meta.get_field(name) for name in returning]
    if returned_fields:
        sql += " RETURNING " + ", ".join(quote(f.column) for f in returned_fields)  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(sql, [payload])
        if not returned_fields:
            return []
        fetched = cursor.fetchall()
    return [
        tuple(
            _from_db(field, value, connection)  # type: ignore[arg-type]
            for field, value in zip(returned_fields, row, strict=True)
        )
        for row in fetched
    ]


def _from_db(field: models.Field, value: Any, connection: BaseDatabaseWrapper) -> Any:
    """Turn a raw RETURNING value into what the ORM would give (SQLite returns text)."""
    if value is None:
        return None
    if isinstance(field, models.UUIDField) and not isinstance(value, uuid.UUID):
        return uuid.UUID(value)
    if isinstance(field, models.DateTimeField) and isinstance(value, str):
        parsed = parse_datetime(value)
        assert parsed is not None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value


def update_rows(model: type[models.Model], changes: Mapping[int, Mapping[str, Any]]) -> int:
    """UPDATE rows by primary key, each with its own values, in one statement."""
    if not changes:
        return 0
    connection = _connection(model)
    quote = connection.ops.quote_name
    names = list(next(iter(changes.values())))
    pk = model._meta.pk
    fields = [pk] + [model._meta.get_field(name) for name in names]
    payload = json.dumps(
        [[_prepare(pk, key, connection)] + [_prepare(f, values[f.name], connection) for f in fields[1:]]  # type: ignore[arg-type,union-attr]
         for key, values in changes.items()]
    )
    table = quote(model._meta.db_table)
    assignments = ", ".join(
        f"{quote(f.column)} = {_column_expression(f, i, connection)}"  # type: ignore[union-attr,arg-type]
        for i, f in enumerate(fields)
        if i
    )
    key_expression = _column_expression(pk, 0, connection)  # type: ignore[arg-type]
    sql = (
        f"UPDATE {table} SET {assignments} FROM {_rows_source(connection)} "
        f"WHERE {table}.{quote(pk.column)} = {key_expression}"  # type: ignore[union-attr]
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [payload])
        return cursor.rowcount
