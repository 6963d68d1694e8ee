"""The package's layering, read from the source: the library never prints, and commands do not lean on each other."""

from __future__ import annotations

import ast
from pathlib import Path

import dualpt_cli

PACKAGE = Path(dualpt_cli.__file__).parent
TERMINAL = {"cli", "ui", "__main__"}  # with every *_ui module: where rich output lives


def imports(module: str) -> set[str]:
    """Names a module imports anywhere in its source (also inside functions): package modules by their short
    name ("ui", "predict"), others by their top-level name ("rich", "torch")."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.add((node.module or "").split(".")[0])
            elif node.module:  # from .x import y
                out.add(node.module.split(".")[0])
            else:  # from . import x, y
                out |= {alias.name for alias in node.names}
    return out


def library_modules() -> list[str]:
    names = sorted(p.stem for p in PACKAGE.glob("*.py"))
    return [n for n in names if n not in TERMINAL and not n.endswith("_ui") and not n.startswith("cli_")]


def test_library_modules_never_import_the_terminal_side():
    printing = {m: sorted(imports(m) & {"ui", "rich"}) for m in library_modules()}
    assert {m: found for m, found in printing.items() if found} == {}


def test_evaluate_does_not_import_predict_even_indirectly():
    seen, todo = set(), ["evaluate"]
    while todo:
        module = todo.pop()
        seen.add(module)
        todo += [m for m in imports(module) if (PACKAGE / f"{m}.py").is_file() and m not in seen]
    assert "predict" not in seen and "classifier" in seen


def test_the_check_sees_imports_inside_functions(tmp_path, monkeypatch):
    """The rule would catch a library module that imports ui only where it prints."""
    (tmp_path / "sneaky.py").write_text("def f():\n    from . import ui\n    from rich.table import Table\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    assert imports("sneaky") >= {"ui", "rich"}
