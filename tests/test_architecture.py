"""The package's import graph, read from the source (every ``import``, at module level or inside
a function): no cycles between modules, no module importing a layer above its own, and the
evaluation never importing the photo pipeline or the command line.

The layers, lowest first (README, "Architecture"); a module may import its own layer and the
layers below it:

1. foundations: ``errors``, ``runtime``, ``checksums``, ``quality``, ``colour``,
   ``projection``, ``stale``, ``data_parallel`` (and the package's ``__init__``)
2. ``io`` (reading and writing images) and ``download`` (fetching weights into the cache)
3. ``faces``: detection, alignment, crops, blending
4. ``zoo``: the face models, their weights and thresholds
5. ``locate`` (faces found and aligned with the zoo's landmark net) and ``diffusion`` (score
   networks, DDIM, the latent cache)
6. ``objectives`` (losses on faces) and ``prior`` (the offline prior: face sets, training,
   evaluation, card)
7. ``protector`` (MAP fine-tuning, adaptation, the artifact) and ``refine`` (per-face
   refinement)
8. ``baselines`` (noise-based protections) and ``default_protectors`` (the shipped ones)
9. ``evaluation``: metrics, protocols, the benchmark
10. ``report``: what a protection run did, measured
11. ``protect``: the photo pipeline
12. ``web``: the web page
13. ``commands``, ``cli`` and ``__main__``: the ``pareidolia`` command
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "pareidolia"

LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "",
        "errors",
        "runtime",
        "checksums",
        "quality",
        "colour",
        "projection",
        "stale",
        "data_parallel",
    ),
    ("io", "download"),
    ("faces",),
    ("zoo",),
    ("locate", "diffusion"),
    ("objectives", "prior"),
    ("protector", "refine"),
    ("baselines", "default_protectors"),
    ("evaluation",),
    ("report",),
    ("inputs", "protect"),
    ("web",),
    ("commands", "cli", "__main__"),
)


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            # ``from pkg import sub`` imports the module pkg.sub when there is one
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # ``import a.b.c`` of a name inside c
                target = target.rpartition(".")[0]
            if target.startswith("pareidolia") and target != name:
                found.add(target)
    return found


@cache
def _graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports."""
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    """The layer of ``pareidolia.a.b``: the one listing ``a`` (``""`` for the package itself)."""
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: in no layer of LAYERS; add it to the list (and the README)")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def test_the_graph_is_read() -> None:
    """A guard for the tests below: the parser sees the package's real imports."""
    graph = _graph()
    assert "pareidolia.report" in graph["pareidolia.protect"]
    assert (
        "pareidolia.zoo.registry" in graph["pareidolia.locate"]
    )  # ``from pareidolia.zoo import registry``
    assert "pareidolia.protect" in graph["pareidolia.commands.protect"]  # inside a function
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_evaluation_imports_neither_the_pipeline_nor_the_command_line() -> None:
    graph = _graph()
    bad = {
        (module, target)
        for module, targets in graph.items()
        if module.startswith("pareidolia.evaluation")
        for target in targets
        if target == "pareidolia.protect"
        or target.startswith("pareidolia.commands")
        or target == "pareidolia.cli"
    }
    assert not bad


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_upward_imports(module: str) -> None:
    graph = _graph()
    upward = sorted(t for t in graph[module] if _layer(t) > _layer(module))
    assert not upward, f"{module} (layer {_layer(module) + 1}) imports a higher layer: {upward}"
