"""Which engine backs up which kind of source.

Each engine module registers itself when imported; ENGINE_MODULES lists them, so a
new kind is one new module plus one line here, and no other kind changes.
"""

from __future__ import annotations

from importlib import import_module

from backups.engines.base import Engine
from backups.errors import BackupError, ErrorCode

ENGINE_MODULES = (
    "backups.engines.sqlite",
    "backups.engines.postgres",
    "backups.engines.mysql",
    "backups.engines.directory",
)

_ENGINES: dict[str, Engine] = {}
_loaded = False


def register(engine_class: type[Engine]) -> type[Engine]:
    """Class decorator: `@register class PostgresEngine(Engine): kind = "postgres"`."""
    _ENGINES[engine_class.kind] = engine_class()
    return engine_class


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for name in ENGINE_MODULES:
        try:
            import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a missing dependency inside the module is a real error
                raise
    _loaded = True


def engine_for(kind: str) -> Engine:
    _load()
    try:
        return _ENGINES[kind]
    except KeyError:
        raise BackupError(ErrorCode.UNKNOWN, f"Sources of kind “{kind}” cannot be backed up by this server.") from None


def kinds() -> list[str]:
    _load()
    return sorted(_ENGINES)
