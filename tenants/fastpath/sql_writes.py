"""Set-based SQL writes: one INSERT or UPDATE statement for any number of rows.

Django's bulk_create/bulk_update split their work by the database's parameter
limit (999 on SQLite), so their statement count grows with the row count and
bulk_create cannot report which rows an ON CONFLICT skipped. The dispatcher
needs both, so rows travel as a single JSON parameter that the database unpacks
itself (json_each on SQLite, jsonb_array_elements on PostgreSQL).

Part of the fast path (see tenants/fastpath/__init__.py): it writes the
columns' stored forms itself, so a field type Django stores differently is a
change here (tests/tenants/test_fastpath_contract.py checks each type the dispatcher uses).
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from django.db import connections, models, router
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils.dateparse import parse_datetime


def _connection(model: type[models.Model]) -> BaseDatabaseWrapper:
    return connections[router.db_for_write(model)]


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    """A concrete column of `model` (get_field may also give a reverse relation or a
    generic foreign key, neither of which has a column to write)."""
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or field.column is None:
        raise ValueError(f"{model.__name__}.{name} is not a column")
    return field


def _pk(model: type[models.Model]) -> models.Field[Any, Any]:
    pk = model._meta.pk
    assert pk is not None  # every concrete model has one
    return pk


class _CastTypes(Protocol):
    """Two methods every Django Field has that django-stubs does not declare."""

    def rel_db_type(self, connection: BaseDatabaseWrapper) -> str | None: ...
    def cast_db_type(self, connection: BaseDatabaseWrapper) -> str | None: ...


def _cast_type(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    """The PostgreSQL type to cast a JSON text value to: a foreign key takes its target's."""
    types = cast(_CastTypes, field)
    db_type = types.rel_db_type(connection) if field.is_relation else types.cast_db_type(connection)
    if db_type is None:
        raise ValueError(f"{field} has no database type to cast to")
    return db_type


@functools.lru_cache(maxsize=4096)  # many rows share a slot
def _sqlite_datetime(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).replace(tzinfo=None).isoformat(" ")


def _sqlite_uuid(value: Any) -> str | None:
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, str) and len(value) == 32:
        return value  # already the stored form
    return value and uuid.UUID(value).hex


def _prepared(field: models.Field[Any, Any], value: Any, connection: BaseDatabaseWrapper) -> Any:
    convert = _preparer(field, connection)
    return value if convert is None else convert(value)


def _preparer(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> Callable[[Any], Any] | None:
    """A function turning a Python value into the JSON value the database column takes.

    The common types get a direct conversion (the generic path costs ~4 us a value,
    which adds up at 10,000 rows x 12 columns); the rest go through Django.
    """
    if isinstance(field, models.JSONField):
        return lambda value: value  # nested as JSON, unpacked as JSON
    if isinstance(field, models.UUIDField):
        if connection.vendor == "sqlite":  # stored as 32 hex digits
            return _sqlite_uuid
        return lambda value: None if value is None else str(value)
    if isinstance(field, models.DateTimeField) and connection.vendor == "sqlite":
        return _sqlite_datetime
    if isinstance(field, models.DateTimeField):
        return lambda value: None if value is None else value.isoformat()
    if isinstance(field, models.CharField | models.TextField | models.IntegerField | models.ForeignKey):
        return None  # str and int (TextChoices members too: they are str) go into JSON as they are

    def generic(value: Any) -> Any:
        prepared = field.get_db_prep_value(value, connection, prepared=False)
        if prepared is None or isinstance(prepared, bool | int | float | str):
            return prepared
        return str(prepared)

    return generic


def _column_expression(field: models.Field[Any, Any], index: int, connection: BaseDatabaseWrapper) -> str:
    if connection.vendor == "sqlite":
        if isinstance(field, models.JSONField):
            return f"(value -> {index})"
        return f"(value ->> {index})"
    if connection.vendor == "postgresql":
        if isinstance(field, models.JSONField):
            return f"(value->{index})::jsonb"
        return f"(value->>{index})::{_cast_type(field, connection)}"
    raise NotImplementedError(f"set-based writes support SQLite and PostgreSQL, not {connection.vendor}")


def _constant_expression(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    if connection.vendor == "postgresql":
        return f"%s::{_cast_type(field, connection)}"
    return "%s"


def _rows_source(connection: BaseDatabaseWrapper) -> str:
    if connection.vendor == "sqlite":
        return "json_each(%s)"
    return "jsonb_array_elements(%s::jsonb) AS rows(value)"


def insert_rows(
    model: type[models.Model],
    rows: Sequence[Mapping[str, Any]],
    returning: Sequence[str] = (),
    constants: Mapping[str, Any] | None = None,
    convert: bool = True,
) -> list[tuple[Any, ...]]:
    """INSERT every row in one statement; rows that break a unique constraint are skipped.

    Rows and `constants` name columns by field name or attname ("tenant" or
    "tenant_id"); `constants` are columns with the same value in every row, sent once.
    Returns the `returning` columns of the rows actually inserted, converted to
    Python unless `convert` is False (then as the driver gives them).
    """
    if not rows:
        return []
    connection = _connection(model)
    quote = connection.ops.quote_name
    constants = constants or {}
    fields = [_field(model, name) for name in rows[0]]
    constant_fields = [_field(model, name) for name in constants]
    prepare = [(name, _preparer(f, connection)) for name, f in zip(rows[0], fields, strict=True)]
    payload = json.dumps(
        [[row[name] if convert is None else convert(row[name]) for name, convert in prepare] for row in rows],
        separators=(",", ":"),
    )
    params = [_prepared(f, value, connection) for f, value in zip(constant_fields, constants.values(), strict=True)]
    if any(isinstance(f, models.JSONField) for f in constant_fields):
        raise ValueError("JSON columns cannot be constants")
    columns = ", ".join(quote(f.column) for f in fields + constant_fields)
    values = ", ".join(
        [_column_expression(f, i, connection) for i, f in enumerate(fields)]
        + [_constant_expression(f, connection) for f in constant_fields]
    )
    # "WHERE true" keeps SQLite from reading ON CONFLICT as part of the SELECT's join.
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "
        f"SELECT {values} FROM {_rows_source(connection)} WHERE true ON CONFLICT DO NOTHING"
    )
    returned_fields = [_field(model, name) for name in returning]
    if returned_fields:
        sql += " RETURNING " + ", ".join(quote(f.column) for f in returned_fields)
    with connection.cursor() as cursor:
        cursor.execute(sql, params + [payload])
        if not returned_fields:
            return []
        fetched = cursor.fetchall()
    if not convert:
        return fetched
    return [
        tuple(_from_db(field, value, connection) for field, value in zip(returned_fields, row, strict=True))
        for row in fetched
    ]


def _from_db(field: models.Field[Any, Any], value: Any, connection: BaseDatabaseWrapper) -> Any:
    """Turn a raw RETURNING value into what the ORM would give: SQLite returns text, or
    a naive datetime where the driver's converter reads the column's declared type."""
    if value is None:
        return None
    if isinstance(field, models.UUIDField) and not isinstance(value, uuid.UUID):
        return uuid.UUID(value)
    if isinstance(field, models.DateTimeField):
        parsed = parse_datetime(value) if isinstance(value, str) else value
        assert isinstance(parsed, datetime)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return value


def update_rows(model: type[models.Model], changes: Mapping[int, Mapping[str, Any]]) -> int:
    """UPDATE rows by primary key, each with its own values, in one statement."""
    if not changes:
        return 0
    connection = _connection(model)
    quote = connection.ops.quote_name
    names = list(next(iter(changes.values())))
    pk = _pk(model)
    fields = [pk] + [_field(model, name) for name in names]
    converters = [_preparer(f, connection) for f in fields]
    payload = json.dumps(
        [
            [
                value if convert is None else convert(value)
                for convert, value in zip(converters, (key, *(values[name] for name in names)), strict=True)
            ]
            for key, values in changes.items()
        ],
        separators=(",", ":"),
    )
    table = quote(model._meta.db_table)
    assignments = ", ".join(
        f"{quote(f.column)} = {_column_expression(f, i, connection)}" for i, f in enumerate(fields) if i
    )
    key_expression = _column_expression(pk, 0, connection)
    sql = (
        f"UPDATE {table} SET {assignments} FROM {_rows_source(connection)} "
        f"WHERE {table}.{quote(pk.column)} = {key_expression}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [payload])
        return cursor.rowcount
