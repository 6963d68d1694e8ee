"""The shape of the package, read with ``ast`` from the source (nothing is imported).

Folder rules (docs/architecture.md):

- the library never prints: only ``cli/`` and ``ui/`` import ``rich`` or the package's ``ui``;
- ``predict/`` never reaches ``train/`` or ``describe/``, not even through another module: using a prompt file
  needs neither the trainer nor the LLM code;
- ``model/`` is maths: it imports only ``model/``, ``clip/``, ``core.vocab`` and ``errors`` of the package, and
  no file format (no json, yaml, safetensors, the prompt file or the project's files);
- no import cycle between modules, counting imports under ``if TYPE_CHECKING:`` and inside functions, and none
  between the subpackages;
- at most :data:`MAX_TOP_MODULES` modules directly under the package, none longer than :data:`MAX_LINES` lines;
- docs/architecture.md lists every module.

Each rule is a function of a package folder, run on dualpt_cli and on small synthetic packages that break it,
so every rule is shown to fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dualpt_cli
from imports import imports, imports_of, module_name

PACKAGE = Path(dualpt_cli.__file__).parent
MAX_LINES = 350
MAX_TOP_MODULES = 12
TERMINAL = ("cli", "ui")  # the subpackages allowed to print
MODEL_MAY_IMPORT = ("model", "clip", "core.vocab", "errors")  # inside the package
FILE_FORMATS = ("json", "yaml", "safetensors", "pickle", "csv")  # libraries model/ must not import


def _modules(package: Path) -> list[Path]:
    return sorted(package.rglob("*.py"))


def _rel(path: Path, package: Path) -> str:
    return path.relative_to(package).as_posix()


def _subpackage(path: Path, package: Path) -> str | None:
    """The first folder of ``path`` under the package (None for a top-level module)."""
    parts = path.relative_to(package).parts
    return parts[0] if len(parts) > 1 else None


def module_graph(package: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports}, every import form counted (see tests/imports.py).

    ``from a.b import c`` counts as importing the module ``a.b.c`` when that is a module, else ``a.b``.
    """
    names = {module_name(p, package) for p in _modules(package)}
    graph = {}
    for path in _modules(package):
        me = module_name(path, package)
        deps = set()
        for found in imports_of(path, package):
            parts = found.split(".")
            for n in range(len(parts), 0, -1):
                if ".".join(parts[:n]) in names:
                    deps.add(".".join(parts[:n]))
                    break
        graph[me] = deps - {me, package.name}  # the package's __init__ is the root, not a dependency
    return graph


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for dep in graph.get(todo.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (or a node importing itself), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def package_graph(package: Path) -> dict[str, set[str]]:
    """The module graph folded onto the subpackages (top-level modules stand for themselves)."""
    top = package.name

    def fold(module: str) -> str:
        return ".".join(module.split(".")[:2]) if module != top else top

    graph: dict[str, set[str]] = {}
    for module, deps in module_graph(package).items():
        graph.setdefault(fold(module), set()).update(fold(d) for d in deps if fold(d) != fold(module))
    return graph


def printing_imports(package: Path) -> dict[str, list[str]]:
    """{library module: the terminal modules it imports (``rich`` or the package's ``ui``)}."""
    out = {}
    for path in _modules(package):
        if _subpackage(path, package) in TERMINAL:
            continue
        bad = [name for name in ("rich", f"{package.name}.ui") if imports(name, imports_of(path, package))]
        if bad:
            out[_rel(path, package)] = bad
    return out


def predict_reaches(package: Path, forbidden: tuple[str, ...] = ("train", "describe")) -> dict[str, list[str]]:
    """{predict/ module: the forbidden modules it reaches, directly or through others}."""
    graph, top = module_graph(package), package.name
    out = {}
    for path in _modules(package):
        if _subpackage(path, package) == "predict":
            bad = sorted(
                m
                for m in reaches(graph, module_name(path, package))
                if any(m == f"{top}.{f}" or m.startswith(f"{top}.{f}.") for f in forbidden)
            )
            if bad:
                out[_rel(path, package)] = bad
    return out


def model_imports(package: Path) -> dict[str, list[str]]:
    """{model/ module: what it imports that the maths layer may not}."""
    top, out = package.name, {}
    allowed = tuple(f"{top}.{a}" for a in MODEL_MAY_IMPORT)
    for path in _modules(package):
        if _subpackage(path, package) != "model":
            continue
        found = imports_of(path, package)
        bad = sorted(
            {f for f in found if f.startswith(top + ".") and not any(f == a or f.startswith(a + ".") for a in allowed)}
        )
        bad += sorted(f for f in FILE_FORMATS if imports(f, found))
        if bad:
            out[_rel(path, package)] = bad
    return out


def top_modules(package: Path) -> list[str]:
    return sorted(p.name for p in package.glob("*.py"))


def long_modules(package: Path, limit: int = MAX_LINES) -> dict[str, int]:
    """{module: line count} for the modules over ``limit`` lines."""
    counts = {_rel(p, package): len(p.read_text().splitlines()) for p in _modules(package)}
    return {name: n for name, n in counts.items() if n > limit}


# ---------------------------------------------------------------------------------------------------------
# the rules on dualpt_cli

MODULES = [_rel(p, PACKAGE) for p in _modules(PACKAGE)]


def test_library_modules_do_not_print():
    assert printing_imports(PACKAGE) == {}


def test_predict_needs_neither_train_nor_describe():
    assert predict_reaches(PACKAGE) == {}


def test_model_is_maths_without_file_formats():
    assert model_imports(PACKAGE) == {}


def test_no_import_cycle_between_modules():
    assert cycles(module_graph(PACKAGE)) == []


def test_no_import_cycle_between_subpackages():
    assert cycles(package_graph(PACKAGE)) == []


def test_few_modules_at_the_top():
    assert len(top_modules(PACKAGE)) <= MAX_TOP_MODULES, top_modules(PACKAGE)


@pytest.mark.parametrize("module", MODULES)
def test_modules_are_short(module):
    assert module not in long_modules(PACKAGE), f"{module}: {long_modules(PACKAGE)[module]} lines"


def test_the_rules_see_every_stage():
    """The package the rules read is the one under test, with its stages and their graph."""
    assert {
        "cli/app.py",
        "ui/console.py",
        "train/loop.py",
        "predict/classifier.py",
        "model/matching.py",
        "clip/backbone.py",
        "describe/ask.py",
    } <= set(MODULES)
    graph = module_graph(PACKAGE)
    assert "dualpt_cli.model.matching" in graph["dualpt_cli.train.objective"]
    assert "dualpt_cli.predict.classifier" in reaches(graph, "dualpt_cli.cli.app")


# ---------------------------------------------------------------------------------------------------------
# each rule fails on a package that breaks it


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "pkg"
    base = {
        "__init__.py": "",
        "ui/__init__.py": "",
        "ui/console.py": "import rich\n",
        "cli/__init__.py": "",
        "cli/app.py": "from ..ui import console\nimport rich\n",
        "train/__init__.py": "",
        "train/loop.py": "",
        "describe/__init__.py": "",
        "describe/ask.py": "",
        "predict/__init__.py": "",
        "predict/classifier.py": "",
        "model/__init__.py": "",
        "model/maths.py": "import torch\n",
        "core/__init__.py": "",
        "core/vocab.py": "",
        "core/project.py": "import json\n",
        "errors.py": "",
    }
    for name, text in {**base, **files}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    return pkg


def test_the_synthetic_package_passes_every_rule(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "model/head.py": "from .maths import x\nfrom ..core.vocab import Method\nfrom ..errors import E\n",
            "predict/rows.py": "from .classifier import C\nfrom ..model import head\n",
            "train/loop.py": "from ..predict.classifier import C\nfrom ..describe import ask\n",
        },
    )
    assert printing_imports(pkg) == {} and predict_reaches(pkg) == {} and model_imports(pkg) == {}
    assert cycles(module_graph(pkg)) == [] and cycles(package_graph(pkg)) == []


@pytest.mark.parametrize(
    "text",
    [
        "from .. import ui\n",
        "from ..ui import console\n",
        "import pkg.ui.console\n",
        "from pkg import ui as screen\n",
        "import rich\n",
        "from rich.console import Console\n",
        "def report():\n    from ..ui.console import console\n    console.print('x')\n",
        "import importlib\nui = importlib.import_module('pkg.ui.console')\n",
    ],
)
def test_printing_rule_catches_every_import_form(tmp_path, text):
    pkg = _package(
        tmp_path,
        {"train/report.py": text, "train/deep/__init__.py": "", "train/deep/deeper.py": "from ...ui import console\n"},
    )
    assert set(printing_imports(pkg)) == {"train/report.py", "train/deep/deeper.py"}  # not cli/ or ui/


@pytest.mark.parametrize(
    "text",
    [
        "from ..train import loop\n",
        "from ..train.loop import fit\n",
        "import pkg.describe.ask as ask\n",
        "def f():\n    from ..describe.ask import q\n",
        "from .helper import h\n",
    ],
)
def test_predict_rule_fails_when_predict_reaches_train_or_describe(tmp_path, text):
    pkg = _package(tmp_path, {"predict/rows.py": text, "predict/helper.py": "from ..train.loop import fit\n"})
    assert "predict/rows.py" in predict_reaches(pkg)


def test_predict_rule_follows_other_packages(tmp_path):
    """predict/ -> model/ -> train/ is caught too (the rule follows every module on the way)."""
    pkg = _package(
        tmp_path,
        {"predict/rows.py": "from ..model.maths import x\n", "model/maths.py": "from ..train.loop import fit\n"},
    )
    assert predict_reaches(pkg) == {"predict/rows.py": ["pkg.train.loop"]}


@pytest.mark.parametrize(
    "text",
    [
        "from ..core.project import Project\n",
        "import json\n",
        "from safetensors.torch import load_file\n",
        "from ..train import loop\n",
        "if True:\n    import yaml\n",
        "def f():\n    from ..predict.classifier import C\n",
    ],
)
def test_model_rule_fails_on_file_formats_and_upper_stages(tmp_path, text):
    pkg = _package(tmp_path, {"model/head.py": text})
    assert list(model_imports(pkg)) == ["model/head.py"]


@pytest.mark.parametrize(
    "files",
    [
        {"train/a.py": "from .b import x\n", "train/b.py": "from .a import y\n"},
        {
            "train/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import x\n",
            "train/b.py": "from .a import y\n",
        },
        {"train/a.py": "def f():\n    from .b import x\n", "train/b.py": "from . import a\n"},
        {"train/a.py": "from .b import x\n", "train/b.py": "from .c import y\n", "train/c.py": "import pkg.train.a\n"},
    ],
)
def test_cycle_rule_fails_on_a_module_cycle(tmp_path, files):
    pkg = _package(tmp_path, files)
    assert [m for c in cycles(module_graph(pkg)) for m in c if m.startswith("pkg.train.")]


def test_cycle_rule_fails_on_a_package_cycle_without_a_module_cycle(tmp_path):
    pkg = _package(
        tmp_path,
        {
            "train/a.py": "from ..predict.classifier import C\n",
            "predict/classifier.py": "from ..train.loop import fit\n",
        },
    )
    assert cycles(module_graph(pkg)) == []
    assert cycles(package_graph(pkg)) == [["pkg.predict", "pkg.train"]]


def test_top_rule_fails_with_too_many_top_modules(tmp_path):
    pkg = _package(tmp_path, {f"m{i}.py": "" for i in range(MAX_TOP_MODULES)})
    assert len(top_modules(pkg)) > MAX_TOP_MODULES


def test_length_rule_fails_on_a_long_module(tmp_path):
    pkg = _package(tmp_path, {"core/short.py": "x = 1\n" * MAX_LINES, "core/long.py": "x = 1\n" * (MAX_LINES + 1)})
    assert long_modules(pkg) == {"core/long.py": MAX_LINES + 1}


# ---------------------------------------------------------------------------------------------------------
# docs/architecture.md is the map of the package: every module is on it, and it names no module that is gone

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def mapped_modules(text: str) -> set[str]:
    """The ``folder/name.py`` (or top-level ``name.py``) files named in the rows of the "Modules" section."""
    section = text.split("## Modules", 1)[-1]
    rows = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    return set(re.findall(r"`((?:[a-z_]+/)?[a-z_]+\.py)`", rows))


def test_the_architecture_map_lists_every_module():
    listed = mapped_modules(ARCHITECTURE.read_text())
    assert set(MODULES) - listed == set(), "add these modules to docs/architecture.md"
    assert listed - set(MODULES) == set(), "docs/architecture.md names modules that do not exist"


def test_the_map_check_sees_a_missing_module():
    text = "intro names `tests/t.py`\n## Modules\n| x | `a.py` | y |\n| | `ui/b.py`, `c.py` | z |\nsee `d.py`"
    assert mapped_modules(text) == {"a.py", "ui/b.py", "c.py"}
