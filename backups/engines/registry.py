"""Which engine backs up which kind of source, and what the kinds are.

Each engine module registers itself when imported; ENGINE_MODULES lists them, so a
new kind is one new module plus one line here, and no other kind changes. What a
kind is (label, server or files, default port, name limit, form hints) is declared
on its engine (backups.engines.base.Engine); the model's kind choices and the source
form read it from here.
"""

from __future__ import annotations

from importlib import import_module

from backups.engines.base import Engine
from backups.errors import BackupError, ErrorCode

# In the order the kinds are offered.
ENGINE_MODULES = (
    "backups.engines.postgres",
    "backups.engines.mysql",
    "backups.engines.sqlite",
    "backups.engines.directory",
)
# The kind a new source starts as.
DEFAULT_KIND = "sqlite"
# BackupSource.kind and BackupItem.kind store the kind in a column this wide.
KIND_MAX_LENGTH = 16

_ENGINES: dict[str, Engine] = {}
_loaded = False


def register(engine_class: type[Engine]) -> type[Engine]:
    """Class decorator: `@register class PostgresEngine(Engine): kind = "postgres"`."""
    if not 0 < len(engine_class.kind) <= KIND_MAX_LENGTH:
        raise ValueError(f"A kind has 1 to {KIND_MAX_LENGTH} characters: {engine_class.kind!r}.")
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


def find_engine(kind: str) -> Engine | None:
    """The engine of `kind`, or None for a kind this server does not know."""
    _load()
    return _ENGINES.get(kind)


def engine_for(kind: str) -> Engine:
    engine = find_engine(kind)
    if engine is None:
        raise BackupError(ErrorCode.UNKNOWN, f"Sources of kind “{kind}” cannot be backed up by this server.")
    return engine


def engines() -> list[Engine]:
    """Every registered engine, in the order of ENGINE_MODULES (others after them)."""
    _load()
    modules = {name: position for position, name in enumerate(ENGINE_MODULES)}
    return sorted(_ENGINES.values(), key=lambda engine: modules.get(type(engine).__module__, len(modules)))


def kind_choices() -> list[tuple[str, str]]:
    """(kind, label) of every engine: the choices of BackupSource.kind and BackupItem.kind
    (a callable there, so a new kind needs no migration)."""
    return [(engine.kind, engine.label) for engine in engines()]
