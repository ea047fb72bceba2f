"""The package's floors: data flows one way and no import goes round in a circle.

Floors (design.md): base utilities (errors, io, stats, version) < data < model <
training | analysis < verify | experiments < figures < report < the package's
``__init__`` (the public API) < cli. An import may only go to a lower floor or stay inside its
own sub-package; training and analysis, on the same floor, never import each other. Every
``import`` statement counts, including those inside functions (a lazy import is still a
dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# source folder -> the package it is installed as (pyproject's package-dir)
SOURCES = {"radius": "radius", "verify": "radius.verify", "figures": "radius.figures"}

# (module prefix, floor); the longest matching prefix wins
FLOORS: list[tuple[str, int]] = [
    ("radius.errors", 0),
    ("radius.io", 0),
    ("radius.stats", 0),
    ("radius.version", 0),
    ("radius.data", 1),
    ("radius.model", 2),
    ("radius.training", 3),
    ("radius.analysis", 3),
    ("radius.adapters", 3),  # another library's model and split -> data and model floors
    ("radius.verify", 4),
    ("radius.experiments", 4),
    ("radius.figures", 5),
    ("radius.report", 6),
    ("radius", 7),  # radius/__init__.py: the public API
    ("radius.cli", 8),
]


def floor_of(module: str) -> tuple[int, str]:
    """(floor, group) of a module; the group is the matched prefix."""
    best = max((p for p, _ in FLOORS if module == p or module.startswith(p + ".")), key=len)
    return dict(FLOORS)[best], best


def collect_sources() -> dict[str, str]:
    """module name -> source text, for every .py file of the installed packages."""
    out: dict[str, str] = {}
    for folder, package in SOURCES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path.read_text()
    return out


def imports_of(module: str, source: str, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that ``source`` imports (absolute and relative, any depth)."""
    is_pkg = any(m.startswith(module + ".") for m in modules)
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module if is_pkg else module.rsplit(".", 1)[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rsplit(".", 1)[0]
                base = f"{pkg}.{base}" if base else pkg
            # `from radius import masking` imports the submodule radius.analysis.masking
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name.startswith("radius") and name != module:
                found.add(name)
    return found


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    modules = set(sources)
    return {m: imports_of(m, s, modules) for m, s in sources.items()}


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go up a floor or across between same-floor groups."""
    bad = []
    for src, targets in sorted(graph.items()):
        f_src, g_src = floor_of(src)
        for dst in sorted(targets):
            f_dst, g_dst = floor_of(dst)
            if g_dst == g_src and dst != "radius":
                continue  # inside one sub-package
            if f_dst >= f_src:
                bad.append(f"{src} (floor {f_src}) -> {dst} (floor {f_dst})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph(collect_sources())


def test_no_import_goes_up_a_floor(graph):
    """Every import goes to a lower floor or stays in its own sub-package."""
    assert violations(graph) == []


def test_no_import_circle(graph):
    """No set of modules imports itself round a circle."""
    assert cycles(graph) == []


def test_every_module_has_a_floor(graph):
    """Each module of the package falls under a named floor (not the catch-all top)."""
    loose = [m for m in graph if m != "radius" and floor_of(m)[1] == "radius"]
    assert loose == []


def test_planted_backwards_import_is_caught():
    """A model module importing the trainer, or analysis importing verify, is reported."""
    sources = collect_sources()
    planted = dict(sources)
    planted["radius.model.multvae"] += "\nfrom radius.training import trainer\n"
    planted["radius.analysis.transfer"] += "\ndef f():\n    import radius.verify.base\n"
    bad = violations(import_graph(planted))
    assert any(b.startswith("radius.model.multvae (floor 2) -> radius.training") for b in bad)
    assert any(b.startswith("radius.analysis.transfer (floor 3) -> radius.verify") for b in bad)


def test_planted_circle_is_caught():
    """Two data modules importing each other form a reported circle."""
    planted = dict(collect_sources())
    planted["radius.data.dataset"] += "\nfrom radius.data import split\n"
    assert ["radius.data.dataset", "radius.data.split"] in [
        [m for m in c if m in ("radius.data.dataset", "radius.data.split")]
        for c in cycles(import_graph(planted))
    ]


def test_adapters_sit_on_floor_three():
    """The adapters read data and model only: importing training, analysis or verify from
    them is a violation, and nothing below them may import them."""
    planted = dict(collect_sources())
    planted["radius.adapters._recbole"] += "\nfrom radius.training.trainer import train\n"
    planted["radius.model.wrap"] += "\ndef f():\n    import radius.adapters\n"
    bad = violations(import_graph(planted))
    assert any(b.startswith("radius.adapters._recbole (floor 3) -> radius.training") for b in bad)
    assert any(b.startswith("radius.model.wrap (floor 2) -> radius.adapters") for b in bad)


def test_training_and_analysis_never_meet():
    """Same floor, separate groups: analysis importing training is a violation."""
    planted = dict(collect_sources())
    planted["radius.analysis.gap"] += "\nfrom radius.training.trainer import train\n"
    assert any(
        b.startswith("radius.analysis.gap (floor 3) -> radius.training")
        for b in violations(import_graph(planted))
    )
