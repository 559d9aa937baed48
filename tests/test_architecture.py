"""The import rules of docs/architecture.md, read from the source with ``ast``.

Every ``import`` and ``from ... import`` of every module counts, at the top of the file or
inside a function (a deferred import is still a dependency). The rules:

* a physics module (spec, rng, scene/*, activity, motion, sensor) imports no output, I/O or UI
  module of minisim and none of the heavy libraries (dask, zarr, xarray, widgets, video);
* spec and rng import no other minisim module (everything else is built on them);
* no module imports back from the package root (``from . import __version__``,
  ``from minisim import simulate``): the root only re-exports;
* only the UI (cli, studio) imports the UI;
* no import cycle between minisim modules.

The checker is tested on small hand-made graphs too, so a rule that silently stopped firing
would show.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import minisim

PACKAGE = "minisim"
#: Module prefixes of the physics: pure numpy functions of Spec sections.
PHYSICS = ("minisim.spec", "minisim.rng", "minisim.scene", "minisim.activity", "minisim.motion",
           "minisim.sensor")
#: What a physics module may never import (minisim modules: the prefix; libraries: top name).
PHYSICS_MUST_NOT_IMPORT = (
    "minisim.render", "minisim.recording", "minisim.store", "minisim.truth", "minisim.video",
    "minisim.export", "minisim.sweep", "minisim.studio", "minisim.cli", "minisim.readout",
    "minisim.score", "minisim.presets", "minisim._compute",
    "dask", "distributed", "zarr", "xarray", "ipywidgets", "IPython", "matplotlib", "imageio", "av",
)
#: Modules that import no other minisim module.
FOUNDATIONS = ("minisim.spec", "minisim.rng")
#: The user interface: imported only by itself.
UI = ("minisim.cli", "minisim.studio")


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module name -> what it imports: full names of minisim modules, top-level names of others.

    ``from X import y`` counts as importing the module ``X.y`` where that is a module of the
    package, else ``X`` itself (so ``from . import __version__`` in a top-level module is an
    edge to the package root ``minisim``). Standard-library imports are left out.
    """
    files: dict[str, tuple[Path, bool]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        files[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    graph: dict[str, set[str]] = {}
    for name, (path, is_pkg) in files.items():
        here = name.split(".") if is_pkg else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".")
                base = base if node.level else node.module or ""
                targets = [(base, a.name) for a in node.names]
            else:
                continue
            for module, attr in targets:
                top = module.split(".")[0]
                if top != PACKAGE:
                    if top not in sys.stdlib_module_names and top != "__future__":
                        deps.add(top)
                elif attr is not None and f"{module}.{attr}" in files:
                    deps.add(f"{module}.{attr}")
                else:
                    deps.add(module)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), among minisim modules."""
    nodes = [n for n in graph if _under(n, (PACKAGE,))]
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in nodes:
        if v not in index:
            visit(v)
    return sorted(found)


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every broken rule of the module docstring, one line each."""
    out = []
    for mod, deps in sorted(graph.items()):
        for dep in sorted(deps):
            if _under(mod, PHYSICS) and _under(dep, PHYSICS_MUST_NOT_IMPORT):
                out.append(f"physics module {mod} imports {dep}")
            if mod in FOUNDATIONS and _under(dep, (PACKAGE,)):
                out.append(f"{mod} is a foundation but imports {dep}")
            if dep == PACKAGE and mod != PACKAGE:
                out.append(f"{mod} imports back from the package root")
            if _under(dep, UI) and not _under(mod, UI):
                out.append(f"{mod} imports the user interface {dep}")
    out += [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(Path(minisim.__file__).parent)


def test_the_graph_reads_every_module_and_deferred_imports(graph):
    assert {"minisim", "minisim.spec", "minisim.render", "minisim.scene.optics",
            "minisim.studio.panels", "minisim.sweep", "minisim.sweep.plan", "minisim.sweep.cluster",
            "minisim.sweep.runner", "minisim.sweep.results"} <= set(graph)
    assert "minisim.spec" in graph["minisim.scene.optics"]  # from ..spec import Spec
    assert "minisim.spec" in graph["minisim.sweep.plan"]  # from ..spec import ..., two levels up
    assert "minisim.recording" in graph["minisim.sweep.runner"]  # deferred, inside run()
    assert "minisim.sweep.plan" in graph["minisim.sweep"]  # the package re-exports its modules
    # the standard library is left out: the sweep's manifest writer does import os
    results = Path(minisim.__file__).parent / "sweep" / "results.py"
    assert "import os\n" in results.read_text()
    assert "numpy" in graph["minisim.render"] and "os" not in graph["minisim.sweep.results"]


def test_physics_modules_import_no_output_io_or_ui(graph):
    assert [v for v in violations(graph) if v.startswith("physics")] == []


def test_nothing_imports_back_from_the_package_root(graph):
    assert [v for v in violations(graph) if "package root" in v] == []


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_every_import_rule_holds(graph):
    assert violations(graph) == []


def test_the_checker_flags_a_bad_graph():
    bad = {
        "minisim": {"minisim.recording"},
        "minisim.spec": {"pydantic", "minisim.rng"},
        "minisim.rng": {"numpy"},
        "minisim.motion": {"minisim.spec", "minisim.render", "numpy"},
        "minisim.scene.optics": {"zarr", "minisim.spec"},
        "minisim.render": {"minisim.motion", "dask"},
        "minisim.recording": {"minisim.render", "minisim.video"},
        "minisim.video": {"minisim", "minisim.recording"},
        "minisim.sweep": {"minisim.sweep.runner"},
        "minisim.sweep.runner": {"minisim.studio.panels"},  # a module inside a package counts too
        "minisim.studio.panels": {"minisim.recording", "ipywidgets"},
    }
    assert violations(bad) == [
        "physics module minisim.motion imports minisim.render",
        "physics module minisim.scene.optics imports zarr",
        "minisim.spec is a foundation but imports minisim.rng",
        "minisim.sweep.runner imports the user interface minisim.studio.panels",
        "minisim.video imports back from the package root",
        # a back-import from the root closes a loop through the root's own imports
        "import cycle: minisim <-> minisim.recording <-> minisim.video",
        "import cycle: minisim.motion <-> minisim.render",
    ]
    good = {k: {d for d in v if d in ("numpy", "pydantic", "dask", "ipywidgets", "minisim.sweep.runner")}
            for k, v in bad.items()}
    assert violations(good) == []


def test_relative_imports_resolve_to_modules_or_the_root(tmp_path):
    pkg = tmp_path / "minisim"
    (pkg / "scene").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .video import x\n__version__ = '1'\n")
    (pkg / "video.py").write_text("def f():\n    from . import __version__\n    import zarr\n")
    (pkg / "scene" / "__init__.py").write_text("from . import optics\n")
    (pkg / "scene" / "optics.py").write_text("import os\nfrom ..spec import Spec\nfrom .. import rng\n")
    (pkg / "spec.py").write_text("")
    (pkg / "rng.py").write_text("")
    (pkg / "sweep").mkdir()
    (pkg / "sweep" / "__init__.py").write_text("from .runner import run\nfrom . import plan\n")
    (pkg / "sweep" / "plan.py").write_text("import os\nfrom ..spec import Spec\n")
    (pkg / "sweep" / "runner.py").write_text(
        "from .plan import x\ndef run():\n    from ..recording import simulate\n    from ..studio import y\n")
    g = import_graph(pkg)
    assert g["minisim.video"] == {"minisim", "zarr"}             # deferred imports count
    assert g["minisim.scene"] == {"minisim.scene.optics"}
    assert g["minisim.scene.optics"] == {"minisim.spec", "minisim.rng"}
    assert g["minisim"] == {"minisim.video"}
    # a sub-package: its __init__ is the package, its modules resolve one or two levels up
    assert g["minisim.sweep"] == {"minisim.sweep.runner", "minisim.sweep.plan"}
    assert g["minisim.sweep.plan"] == {"minisim.spec"}                # os: standard library
    assert g["minisim.sweep.runner"] == {"minisim.sweep.plan", "minisim.recording", "minisim.studio"}
    assert "minisim.sweep.runner imports the user interface minisim.studio" in violations(g)
