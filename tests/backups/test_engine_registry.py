"""The registry is the one place that knows the kinds: an engine registered here (and
nowhere else) is offered by the model and the source form with its own label, port,
name limit and hints."""

from __future__ import annotations

import pytest

from backups.engines import registry
from backups.engines.base import Engine
from backups.errors import BackupError
from backups.models import BackupSource, SourceKind


@pytest.fixture
def columnar(monkeypatch):
    """A server kind registered for one test, then gone again."""
    registry.engines()  # the real ones first: the fake one is offered after them
    monkeypatch.setattr(registry, "_ENGINES", dict(registry._ENGINES))

    @registry.register
    class ColumnarEngine(Engine):
        kind = "columnar"
        label = "Columnar DB"
        suffix = ".col.zst"
        is_server = True
        default_port = 7070
        max_database_name = 12
        form_hints = {"database": "Columnar DB calls its databases keyspaces."}

    return registry.engine_for("columnar")


def columnar_fields(**overrides) -> dict:
    fields = {
        "name": "Metrics",
        "kind": "columnar",
        "host": "127.0.0.1",
        "database": "metrics",
        "username": "backup",
        "tls_mode": "require",
    }
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not None}


def test_the_kinds_are_the_registered_engines_in_their_order() -> None:
    assert registry.kind_choices() == [
        ("postgres", "PostgreSQL"),
        ("mysql", "MariaDB / MySQL"),
        ("sqlite", "SQLite database file"),
        ("directory", "Folder"),
    ]
    assert [engine.kind for engine in registry.engines() if engine.is_server] == ["postgres", "mysql"]
    assert {engine.kind: engine.default_port for engine in registry.engines() if engine.is_server} == {
        "postgres": 5432,
        "mysql": 3306,
    }
    assert SourceKind.POSTGRES == "postgres" and SourceKind.DIRECTORY == "directory"
    with pytest.raises(AttributeError):
        SourceKind.ORACLE  # noqa: B018


def test_an_unknown_kind_has_no_engine() -> None:
    assert registry.find_engine("oracle") is None
    with pytest.raises(BackupError, match="oracle"):
        registry.engine_for("oracle")
    assert not BackupSource(kind="oracle").is_server


def test_a_kind_must_fit_the_kind_column() -> None:
    with pytest.raises(ValueError, match="1 to 16 characters"):

        @registry.register
        class TooLong(Engine):
            kind = "a-kind-name-too-long"

    assert registry.find_engine("a-kind-name-too-long") is None


def test_the_database_name_limit_is_the_engines(client, mia, tenant) -> None:
    client.force_login(mia)
    url = f"/t/{tenant.code}/sources/new/"
    # PostgreSQL counts bytes (63), MariaDB characters (64).
    assert registry.engine_for("postgres").database_name_length("é" * 32) == 64
    response = client.post(url, columnar_fields(kind="postgres", database="é" * 32))
    assert "at most 63 characters" in response.text
    response = client.post(url, columnar_fields(kind="mysql", database="é" * 64))
    assert response.status_code == 302
    assert BackupSource.objects.get().port == 3306


def test_a_registered_engine_is_offered_with_its_label_port_and_hints(client, mia, tenant, columnar) -> None:
    client.force_login(mia)
    page = client.get(f"/t/{tenant.code}/sources/new/").text
    assert '<option value="columnar">Columnar DB</option>' in page
    assert 'data-kinds="postgres mysql columnar"' in page
    assert "(PostgreSQL, MariaDB / MySQL, Columnar DB)" in page
    assert "Blank: 5432 for PostgreSQL, 3306 for MariaDB / MySQL, 7070 for Columnar DB." in page
    assert "Columnar DB calls its databases keyspaces." in page


def test_a_source_of_a_registered_kind_is_saved_with_its_default_port(client, mia, tenant, columnar) -> None:
    client.force_login(mia)
    url = f"/t/{tenant.code}/sources/new/"
    assert "at most 12 characters" in client.post(url, columnar_fields(database="x" * 13)).text
    response = client.post(url, columnar_fields())
    assert response.status_code == 302
    source = BackupSource.objects.get()
    assert source.kind == "columnar" and source.port == 7070 and source.is_server and source.path == ""
    assert source.get_kind_display() == "Columnar DB"
    assert "Columnar DB" in client.get(f"/t/{tenant.code}/sources/").text


def test_a_registered_engine_is_gone_after_its_test() -> None:
    assert registry.find_engine("columnar") is None
    assert "columnar" not in dict(registry.kind_choices())
