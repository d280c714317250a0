"""The one-way architecture, as far as import-linter cannot say it (docs/architecture.md).

`lint-imports` (pyproject.toml, run by `make lint`) checks the layers, the lib's purity and
cycles between siblings. What it cannot express is checked here, from the source with `ast`
(no database): every import, those inside functions included, of the
production modules (lib and the apps; migrations excluded).

* no import cycle between any two modules (a cycle across packages or between a package and
  its own submodule too, which sibling checks do not see);
* no import of one of our modules inside a function, except the few listed below with why:
  such an import exists to dodge a cycle, and the cure is to move the code;
* no lower layer naming a higher app in a string ("scheduling.BackupScheduleRun" in a model
  field, "scheduling.worker.execute_run"): that is the same dependency, hidden;
* every engine module (a kind) imports no other kind, so a new kind is held to it without
  being listed anywhere;
* fewer than 20 `# type: ignore` in production code;
* no lower layer following a relation declared by a higher app's model, by its reverse
  accessor (`source.schedules`) or its query name (`Count("schedules")`, `filter(runs__...)`):
  the names come from Django's app registry (loaded by pytest-django; no database is used).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from django.apps import apps

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: an app may import only those before it. config sits on top.
LAYERS = ("lib", "tenants", "backups", "scheduling", "config")
SKIP_DIRS = {"migrations", "__pycache__"}
MAX_TYPE_IGNORES = 20
# Modules of backups.engines that every kind may use; every other module there is a kind.
ENGINE_SHARED = {"backups.engines", "backups.engines.base", "backups.engines.process", "backups.engines.registry"}

# (importing module, function, imported module) -> why this import must sit in a function.
FUNCTION_IMPORT_ALLOWLIST: dict[tuple[str, str, str], str] = {
    ("tenants.apps", "TenantsConfig.ready", "tenants.lockout"): (
        "connects django-axes' signal receivers; Django's documented place for it is "
        "AppConfig.ready, which runs once the app registry is loaded"
    ),
}


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    function: str | None  # qualified name of the enclosing function, None at module level

    def where(self) -> str:
        place = f" in {self.function}()" if self.function else ""
        return f"{self.importer}:{self.line}{place} -> {self.imported}"


@cache
def production_modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for app in LAYERS:
        for path in sorted((ROOT / app).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if SKIP_DIRS & set(rel.parts):
                continue
            parts = rel.with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _resolve(target: str, known: set[str]) -> str | None:
    """The module of ours that `target` names (a name imported from a module is that module)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.scope: list[str] = []
        self.functions: list[str] = []
        self.found: list[Import] = []

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.functions.append(".".join(self.scope))
        self.generic_visit(node)
        self.functions.pop()
        self.scope.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def _add(self, target: str, line: int) -> None:
        imported = _resolve(target, self.known)
        if imported and imported != self.module:
            found = Import(self.module, imported, line, self.functions[-1] if self.functions else None)
            if found not in self.found:  # `from m import a, b` is one import of m
                self.found.append(found)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            parts = self.package.split(".")[: len(self.package.split(".")) - node.level + 1]
            base = ".".join([*parts, base] if base else parts)
        for alias in node.names:
            # `from backups import operations` imports the module backups.operations.
            self._add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.known else base, node.lineno)


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@cache
def all_imports() -> tuple[Import, ...]:
    modules = production_modules()
    known = set(modules)
    found: list[Import] = []
    for name, path in modules.items():
        collector = _Collector(name, path.name == "__init__.py", known)
        collector.visit(_tree(path))
        found.extend(collector.found)
    return tuple(found)


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components of two or more modules (a module's import of
    itself is not recorded)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph.get(succ, ())))))
                    advanced = True
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def test_no_module_import_cycles() -> None:
    imports = all_imports()
    graph: dict[str, set[str]] = {name: set() for name in production_modules()}
    for imp in imports:
        graph[imp.importer].add(imp.imported)
    cycles = _strongly_connected(graph)
    report = []
    for component in cycles:
        members = set(component)
        report.append("cycle: " + " <-> ".join(component))
        report += ["    " + imp.where() for imp in imports if imp.importer in members and imp.imported in members]
    assert not cycles, f"{len(cycles)} import cycle(s) between modules; move code to break them:\n" + "\n".join(report)


def test_no_function_level_imports_of_our_modules() -> None:
    found = [imp for imp in all_imports() if imp.function is not None]
    listed = {(imp.importer, imp.function, imp.imported) for imp in found}
    offenders = [imp for imp in found if (imp.importer, imp.function, imp.imported) not in FUNCTION_IMPORT_ALLOWLIST]
    stale = sorted(set(FUNCTION_IMPORT_ALLOWLIST) - listed)
    assert not offenders, (
        f"{len(offenders)} import(s) of our own modules inside functions (move the code instead, "
        "or add the import to FUNCTION_IMPORT_ALLOWLIST with the reason it must wait):\n"
        + "\n".join("    " + imp.where() for imp in offenders)
    )
    assert not stale, f"FUNCTION_IMPORT_ALLOWLIST names imports that no longer exist: {stale}"


def test_no_import_reaches_a_higher_layer() -> None:
    # lint-imports says the same; repeated here so that `pytest` alone shows it beside the cycles.
    upward = [imp for imp in all_imports() if _layer(imp.imported) > _layer(imp.importer)]
    assert not upward, f"{len(upward)} import(s) of a higher layer ({' -> '.join(reversed(LAYERS))}):\n" + "\n".join(
        "    " + imp.where() for imp in upward
    )


_APP_STRING = re.compile(r"^(?P<app>" + "|".join(LAYERS) + r")\.[A-Za-z_]")


def test_no_lower_layer_names_a_higher_app_in_a_string() -> None:
    offenders = []
    for name, path in production_modules().items():
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                match = _APP_STRING.match(node.value)
                if match and LAYERS.index(match["app"]) > _layer(name):
                    offenders.append(f"    {name}:{node.lineno} names {node.value!r}")
    assert not offenders, (
        f"{len(offenders)} string(s) naming a higher app (a model reference, a task path): the same "
        "dependency as an import, hidden. Point the relation from the higher app down instead:\n" + "\n".join(offenders)
    )


def test_engine_kinds_import_no_other_kind() -> None:
    kinds = {name for name in production_modules() if name.startswith("backups.engines.")} - ENGINE_SHARED
    offenders = [imp for imp in all_imports() if imp.importer in kinds and imp.imported in kinds]
    assert kinds, "no engine modules found under backups/engines/"
    assert not offenders, "engines share only base, process and the registry:\n" + "\n".join(
        "    " + imp.where() for imp in offenders
    )


def test_type_ignores_in_production_code_stay_under_the_limit() -> None:
    counts = {name: n for name, path in production_modules().items() if (n := path.read_text().count("# type: ignore"))}
    total = sum(counts.values())
    by_module = "\n".join(f"    {n:3d}  {name}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
    assert total < MAX_TYPE_IGNORES, (
        f"{total} `# type: ignore` in production code (limit {MAX_TYPE_IGNORES}):\n{by_module}"
    )


# Query calls whose string arguments are lookups ("schedules", "schedules__name", "-runs")...
_LOOKUP_ARGUMENTS = {
    "Avg", "Count", "F", "FilteredRelation", "Max", "Min", "OuterRef", "Prefetch", "Sum",
    "defer", "distinct", "only", "order_by", "prefetch_related", "select_related", "values", "values_list",
}  # fmt: skip
# ... and those whose keyword names are (filter(schedules__enabled=True)).
_LOOKUP_KEYWORDS = {"Q", "exclude", "filter", "get", "get_or_create", "update_or_create"}


def _reverse_names() -> dict[tuple[str, str], list[str]]:
    """(name, declaring app) -> where it is declared, for every reverse accessor and query name
    that a model gives a lower app's model ("schedules" on BackupSource, from BackupSchedule.sources)."""
    names: dict[tuple[str, str], list[str]] = {}
    for model in apps.get_models():
        declarer = model._meta.app_label
        if declarer not in LAYERS:
            continue
        for field in model._meta.get_fields(include_hidden=True):
            if not field.is_relation or field.auto_created or field.related_model is None:
                continue
            target = field.related_model._meta.app_label
            if target not in LAYERS or LAYERS.index(target) >= LAYERS.index(declarer):
                continue
            where = f"{model.__name__}.{field.name} -> {field.related_model.__name__}"
            for name in {field.remote_field.get_accessor_name(), field.related_query_name()}:
                if name and not name.endswith("+"):
                    names.setdefault((name, declarer), []).append(where)
    return names


def _module_names(tree: ast.Module) -> set[str]:
    """Names bound to an imported module (`subprocess` in subprocess.run is no ORM accessor)."""
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bound |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return bound


def _is_lookup(value: str, name: str) -> bool:
    value = value.lstrip("-")
    return value == name or value.startswith(name + "__")


def test_no_lower_layer_follows_a_relation_declared_above_it() -> None:
    # BackupSchedule.sources (related_name="schedules") makes `source.schedules` and
    # Count("schedules") work in backups: the same upward dependency as an import, carried by a
    # name. Code that needs the higher app's rows belongs in that app.
    offenders = []
    for (name, declarer), declared in _reverse_names().items():
        where = ", ".join(sorted(set(declared)))
        for module, path in production_modules().items():
            if _layer(module) >= LAYERS.index(declarer):
                continue
            tree = _tree(path)
            modules = _module_names(tree)
            for node in ast.walk(tree):
                found = None
                if isinstance(node, ast.Attribute) and node.attr == name:
                    if not (isinstance(node.value, ast.Name) and node.value.id in modules):
                        found = f".{name}"
                elif isinstance(node, ast.Call):
                    called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                    if called in _LOOKUP_ARGUMENTS:
                        for arg in node.args:
                            if (
                                isinstance(arg, ast.Constant)
                                and isinstance(arg.value, str)
                                and _is_lookup(arg.value, name)
                            ):
                                found = f"{called}({arg.value!r})"
                    if called in _LOOKUP_KEYWORDS:
                        for keyword in node.keywords:
                            if keyword.arg and _is_lookup(keyword.arg, name):
                                found = f"{called}({keyword.arg}=...)"
                if found:
                    offenders.append(f"    {module}:{node.lineno} {found} (reverse of {where})")
    assert not offenders, (
        f"{len(offenders)} use(s) of a relation declared by a higher app's model (its reverse accessor "
        "or query name): the same dependency as an import, hidden. Move the code up to that app:\n"
        + "\n".join(sorted(set(offenders)))
    )
