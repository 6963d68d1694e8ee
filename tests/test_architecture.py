"""Import rules of the package (issue 14), read with ``ast`` from the source (nothing is imported).

- the library never prints: only ``cli*.py`` and ``*_ui.py`` modules import ``ui`` or ``rich``;
- one command is not a library of another: ``evaluate`` does not import ``predict``, and ``train`` (any
  ``train*`` module) does not import ``describe``;
- no module is longer than :data:`MAX_LINES` lines.

Each rule is a function of a package folder, run on dualpt_cli and on small synthetic packages that break
it, so every rule is shown to fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dualpt_cli
from imports import imports, imports_of

PACKAGE = Path(dualpt_cli.__file__).parent
MAX_LINES = 350


def _modules(package: Path) -> list[Path]:
    return sorted(package.rglob("*.py"))


def _is_terminal(path: Path) -> bool:
    """Modules allowed to print: the CLI and the ``*_ui.py`` modules."""
    return path.name.startswith("cli") or path.stem.endswith("_ui") or path.stem == "ui"


def printing_imports(package: Path) -> dict[str, list[str]]:
    """{library module: the terminal modules it imports (the package's ``ui``, ``*_ui`` or ``rich``)}."""
    out = {}
    for path in _modules(package):
        if _is_terminal(path):
            continue
        found = imports_of(path, package)
        bad = [name for name in ("rich", f"{package.name}.ui") if imports(name, found)]
        bad += sorted({f.split(".")[1] for f in found if f.startswith(package.name + ".")
                       and f.split(".")[1].endswith("_ui")})
        if bad:
            out[str(path.relative_to(package))] = bad
    return out


def command_imports(package: Path, command: str, forbidden: str) -> list[str]:
    """Modules named ``command*`` (``*_ui`` too) that import the module ``forbidden`` of the package."""
    return [str(p.relative_to(package)) for p in _modules(package)
            if p.stem.startswith(command) and imports(f"{package.name}.{forbidden}", imports_of(p, package))]


def long_modules(package: Path, limit: int = MAX_LINES) -> dict[str, int]:
    """{module: line count} for the modules over ``limit`` lines."""
    counts = {str(p.relative_to(package)): len(p.read_text().splitlines()) for p in _modules(package)}
    return {name: n for name, n in counts.items() if n > limit}


# ---------------------------------------------------------------------------------------------------------
# the rules on dualpt_cli: one case per module, so each module that breaks a rule today is named


MODULES = [str(p.relative_to(PACKAGE)) for p in _modules(PACKAGE)]


@pytest.mark.parametrize("module", MODULES)
def test_library_modules_do_not_print(module):
    assert module not in printing_imports(PACKAGE), printing_imports(PACKAGE)[module]


def test_evaluate_does_not_import_predict():
    assert command_imports(PACKAGE, "evaluate", "predict") == []


def test_evaluate_does_not_reach_predict_even_indirectly():
    """Not through another module either: evaluate scores with ``classifier``, as predict does."""
    seen, todo = set(), ["evaluate.py"]
    while todo:
        module = todo.pop()
        seen.add(module)
        found = imports_of(PACKAGE / module, PACKAGE)
        todo += [f"{name.split('.')[1]}.py" for name in found if name.startswith(PACKAGE.name + ".")
                 and (PACKAGE / f"{name.split('.')[1]}.py").is_file() and f"{name.split('.')[1]}.py" not in seen]
    assert "predict.py" not in seen and "classifier.py" in seen


def test_train_does_not_import_describe():
    assert command_imports(PACKAGE, "train", "describe") == []


@pytest.mark.parametrize("module", MODULES)
def test_modules_are_short(module):
    assert module not in long_modules(PACKAGE), f"{module}: {long_modules(PACKAGE)[module]} lines"


def test_the_rules_see_every_module():
    """The package the rules read is the one under test, with its command and terminal modules."""
    assert {"cli.py", "train.py", "train_ui.py", "ui.py", "backbone.py", "models.py"} <= set(MODULES)


# ---------------------------------------------------------------------------------------------------------
# each rule fails on a package that breaks it


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name, text in {"ui.py": "import rich\n", "predict.py": "", "describe.py": "", **files}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    return pkg


@pytest.mark.parametrize(
    "text",
    [
        "from . import ui\n",
        "from .ui import console\n",
        "import pkg.ui\n",
        "from pkg import ui as screen\n",
        "import rich\n",
        "from rich.console import Console\n",
        "def report():\n    from .ui import console\n    console.print('x')\n",
        "from .train_ui import RichCallbacks\n",
        "import importlib\nui = importlib.import_module('pkg.ui')\n",
    ],
)
def test_printing_rule_catches_every_import_form(tmp_path, text):
    terminal = {"cli.py": "from . import ui\nimport rich\n", "train_ui.py": "import rich\n"}
    deep = {"sub/__init__.py": "", "sub/deep.py": "from .. import ui\n"}
    pkg = _package(tmp_path, {"library.py": text, **terminal, **deep})
    assert set(printing_imports(pkg)) == {"library.py", "sub/deep.py"}  # not cli.py, train_ui.py, ui.py


def test_printing_rule_passes_a_quiet_library(tmp_path):
    pkg = _package(tmp_path, {"library.py": '"""Never imports rich or ui."""\nfrom .uid import x\nimport richer\n',
                              "uid.py": "x = 1\n"})
    assert printing_imports(pkg) == {}


@pytest.mark.parametrize("text", ["from . import predict\n", "from .predict import Classifier\n",
                                  "import pkg.predict as p\n", "def f():\n    from .predict import g\n"])
def test_evaluate_rule_fails_when_evaluate_imports_predict(tmp_path, text):
    pkg = _package(tmp_path, {"evaluate.py": text, "evaluate_ui.py": "", "other.py": "from . import predict\n"})
    assert command_imports(pkg, "evaluate", "predict") == ["evaluate.py"]
    assert command_imports(_package(tmp_path / "ok", {"evaluate.py": "from . import classifier\n",
                                                      "classifier.py": ""}), "evaluate", "predict") == []


@pytest.mark.parametrize("module", ["train.py", "train_loop.py", "train_ui.py"])
def test_train_rule_fails_when_any_train_module_imports_describe(tmp_path, module):
    pkg = _package(tmp_path, {module: "from .describe import load_descriptions\n", "descriptions.py": "",
                              "cli.py": "from . import describe\n"})
    assert command_imports(pkg, "train", "describe") == [module]
    pkg = _package(tmp_path / "ok", {module: "from .descriptions import load\n", "descriptions.py": ""})
    assert command_imports(pkg, "train", "describe") == []  # descriptions is not describe


def test_length_rule_fails_on_a_long_module(tmp_path):
    pkg = _package(tmp_path, {"short.py": "x = 1\n" * MAX_LINES, "long.py": "x = 1\n" * (MAX_LINES + 1)})
    assert long_modules(pkg) == {"long.py": MAX_LINES + 1}


# ---------------------------------------------------------------------------------------------------------
# docs/architecture.md is the map of the package: every module is on it, and it names no module that is gone

ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def mapped_modules(text: str) -> set[str]:
    """The ``name.py`` files named in the module table of docs/architecture.md."""
    return set(re.findall(r"`([a-z_]+\.py)`", text))


def test_the_architecture_map_lists_every_module():
    listed = mapped_modules(ARCHITECTURE.read_text())
    assert set(MODULES) - listed == set(), "add these modules to docs/architecture.md"
    assert listed - set(MODULES) == set(), "docs/architecture.md names modules that do not exist"


def test_the_map_check_sees_a_missing_module():
    assert mapped_modules("| x | `a.py` | y |\n| | `b_ui.py`, `c.py` | z |") == {"a.py", "b_ui.py", "c.py"}
