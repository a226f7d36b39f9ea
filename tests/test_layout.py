"""The package's shape, checked: no import cycles, no module-level mutable state.

Import cycles: every `import` and `from ... import` in nginxgen/**.py counts, at module
level and inside functions alike (and under TYPE_CHECKING): an import moved into a
function to dodge a cycle at import time is still a cycle between the two modules'
meanings. Importing a submodule also runs its package's __init__; that implicit edge is
not counted, or every package that re-exports its modules would be a cycle.

Module state: an AST check flags what keeps state at module level (a `global` statement,
an lru_cache'd module function, a module-level dict, list or set that something mutates,
an instance of one of our classes that is not a frozen value), and a run in fresh
interpreters shows that builds with different specs in one process give the texts and
plans fresh processes give, and leave every module global as it was.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "nginxgen"

# The one piece of module state, and why it stays: the cycle collector is one per
# process, so the count of passes that paused it is too (see util/heap.py).
ALLOWED_GLOBALS = {("nginxgen.util.heap", "_depth"), ("nginxgen.util.heap", "_was_enabled")}
# Module-level objects that are not state: the CLI's command table and its stderr console
# (typer and rich objects, filled once at import, never changed after).
ALLOWED_OBJECTS = {("nginxgen.cli", "app"), ("nginxgen.cli", "err")}

MUTATORS = {
    "append", "extend", "insert", "add", "update", "setdefault", "pop", "popitem", "clear",
    "remove", "discard", "appendleft", "extendleft", "__setitem__", "__delitem__",
}  # fmt: skip
CONTAINER_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "deque", "Counter"}
CACHE_DECORATORS = {"lru_cache", "cache", "cached_property"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a `from X import ...` names."""
    if node.level == 0:
        return node.module or ""
    package = module if is_package(path) else module.rpartition(".")[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, path: Path, known: dict[str, Path]) -> Iterator[tuple[str, int]]:
    """(imported nginxgen module, line) for every import in the file, wherever it is."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = resolve(module, path, node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in known:  # `from package import module`
                    yield sub, node.lineno
                elif target in known:
                    yield target, node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    known = modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in known.items():
        edges = graph.setdefault(name, {})
        for target, line in imports(name, path, known):
            if target != name:
                edges.setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 50 and "nginxgen.pipeline" in graph["nginxgen.cli"]
    found = cycles(graph)
    described = [
        "; ".join(f"{a} imports {b} (line {graph[a][b]})" for a in c for b in c if b in graph[a])
        for c in found
    ]
    assert not found, "import cycles:\n" + "\n".join(described)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_the_top_of_the_package_holds_the_cli_the_pipeline_and_the_stages():
    plain = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert len(plain) <= 12, plain
    assert {"cli", "pipeline"} <= set(plain)
    stages = {"model", "spec", "registry", "sources", "plan", "render", "verify", "deploy"}
    assert stages | {"watch", "agent", "lint", "util"} <= set(packages)


# --- module-level state -------------------------------------------------------------------


def _frozen_classes(trees: dict[str, ast.Module]) -> tuple[set[str], set[str]]:
    """Names of the package's classes: (all, frozen values)."""
    every, frozen = set(), set()
    for tree in trees.values():
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            every.add(node.name)
            bases = {ast.unparse(b) for b in node.bases}
            decorators = {ast.unparse(d) for d in node.decorator_list}
            if any("frozen=True" in d for d in decorators) or bases & {
                "NamedTuple", "Enum", "Exception", "ValueError", "RuntimeError", "OSError",
            }:  # fmt: skip
                frozen.add(node.name)
    return every, frozen


def state_problems(trees: dict[str, ast.Module]) -> list[str]:
    ours, frozen = _frozen_classes(trees)
    problems = []
    for module, tree in trees.items():
        containers: dict[str, int] = {}
        for node in tree.body:
            targets: list[ast.expr] = []
            value = None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for d in node.decorator_list:
                    name = ast.unparse(d).split("(")[0].split(".")[-1]
                    if name in CACHE_DECORATORS:
                        problems.append(f"{module}.{node.name} (line {node.lineno}): @{name}")
            for target in targets:
                if not isinstance(target, ast.Name):
                    continue
                called = (
                    ast.unparse(value.func).split(".")[-1] if isinstance(value, ast.Call) else ""
                )
                literal = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
                if isinstance(value, literal) or called in CONTAINER_CALLS:
                    containers[target.id] = node.lineno
                elif (
                    called in ours
                    and called not in frozen
                    and (module, target.id) not in ALLOWED_OBJECTS
                ):
                    problems.append(
                        f"{module}.{target.id} (line {node.lineno}): a {called} at module level"
                    )
        for node in ast.walk(tree):
            if isinstance(node, ast.Global):
                for name in node.names:
                    if (module, name) not in ALLOWED_GLOBALS:
                        problems.append(f"{module}.{name} (line {node.lineno}): `global`")
            mutated = None
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in MUTATORS
                and isinstance(node.func.value, ast.Name)
            ):
                mutated = node.func.value.id
            elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Delete)):
                for t in getattr(node, "targets", None) or [getattr(node, "target", None)]:
                    if isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name):
                        mutated = t.value.id
                    elif isinstance(node, ast.AugAssign) and isinstance(t, ast.Name):
                        mutated = t.id
            # Filling a table in the module's own statements is building a constant; state
            # is what a function changes after import.
            if (
                mutated in containers
                and _in_function(tree, node)
                and not _shadowed(tree, node, mutated)
            ):
                problems.append(
                    f"{module}.{mutated} (line {containers[mutated]}): mutated at line "
                    f"{node.lineno}"
                )
    return sorted(set(problems))


def _in_function(tree: ast.Module, node: ast.AST) -> bool:
    return any(
        isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        and any(n is node for n in ast.walk(fn))
        for fn in ast.walk(tree)
    )


def _shadowed(tree: ast.Module, node: ast.AST, name: str) -> bool:
    """Is `name` a local (a parameter or an assignment) of the function holding `node`?"""
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if not any(n is node for n in ast.walk(fn)):
            continue
        args = fn.args
        params = {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}
        params |= {a.arg for a in (args.vararg, args.kwarg) if a is not None}
        if name in params:
            return True
        for inner in ast.walk(fn):
            if isinstance(inner, (ast.Assign, ast.AnnAssign, ast.For, ast.With)):
                names = {n.id for n in ast.walk(inner) if isinstance(n, ast.Name)}
                stores = {
                    n.id
                    for n in ast.walk(inner)
                    if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)
                }
                if name in stores and name in names:
                    return True
    return False


def parsed_package() -> dict[str, ast.Module]:
    return {name: ast.parse(path.read_text(), str(path)) for name, path in modules().items()}


def test_no_module_keeps_mutable_state():
    problems = state_problems(parsed_package())
    assert not problems, "module-level state:\n" + "\n".join(problems)


def test_the_state_check_flags_what_it_should():
    src = {
        "m": ast.parse(
            "import functools\n"
            "_SEEN = {}\n"
            "_ORDER = []\n"
            "LIMITS = {'a': 1}\n"  # a constant nobody changes: fine
            "TABLE = {}\nTABLE['x'] = 1\n"  # built by the module's own statements: fine
            "COUNT = 0\n"
            "class Memo: pass\n"
            "@dataclass(frozen=True)\nclass Value: pass\n"
            "_MEMO = Memo()\n"
            "_ZERO = Value()\n"  # a frozen value: fine
            "@functools.lru_cache(maxsize=8)\ndef slow(x): return x\n"
            "def remember(k, v):\n    _SEEN[k] = v\n    _ORDER.append(k)\n"
            "def bump():\n    global COUNT\n    COUNT += 1\n"
            "def local(_SEEN):\n    _SEEN['x'] = 1\n"  # a parameter of the same name
        )
    }
    problems = state_problems(src)
    assert [p.split(" ")[0] for p in problems] == [
        "m.COUNT", "m._MEMO", "m._ORDER", "m._SEEN", "m.slow",
    ], problems  # fmt: skip


PROBE = "tests.helpers.state_probe"


def probe(work: Path, *steps: str) -> dict[str, object]:
    """Run the state probe in a fresh interpreter (see tests/helpers/state_probe.py)."""
    out = subprocess.run(
        [sys.executable, "-m", PROBE, str(work), *steps],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    work = tmp_path_factory.mktemp("state")
    return {
        "a": probe(work, "a"),
        "b": probe(work, "b"),
        "a,b,a fresh caches": probe(work, "a", "b", "a"),
        "a,b,a one cache": probe(work, "shared", "a", "b", "a"),
        "b,a one cache": probe(work, "shared", "b", "a"),
    }


def test_builds_in_one_process_give_what_fresh_processes_give(runs):
    alone = {"a": runs["a"]["builds"][0], "b": runs["b"]["builds"][0]}  # type: ignore[index]
    assert alone["a"] != alone["b"]
    for label, run in runs.items():
        order = label.split(" ")[0].split(",")
        for step, got in zip(order, run["builds"], strict=True):  # type: ignore[arg-type]
            assert got == alone[step], f"{label}: build of spec {step} differs"


def test_builds_leave_every_module_global_as_it_was(runs):
    allowed = {f"{module}.{name}" for module, name in ALLOWED_GLOBALS}
    for label, run in runs.items():
        changed = [g for g in run["changed_globals"] if g not in allowed]  # type: ignore[union-attr]
        assert changed == [], f"{label}: {changed}"
