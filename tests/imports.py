"""What the modules of a package import, read with ``ast`` (nothing is imported or run).

Used by the import-rule tests (tests/test_architecture.py, the open_clip check in tests/clip/test_backbone.py).
Every form counts: ``import x``, ``import x.y as z``, ``from x import y``, ``from . import x``,
``from .x import y``, imports inside functions or ``if TYPE_CHECKING:`` blocks, and
``importlib.import_module("x")`` / ``__import__("x")`` with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path


def module_name(path: Path, package: Path) -> str:
    """Dotted name of ``path`` inside the package folder ``package`` (``pkg/a.py`` -> ``pkg.a``)."""
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: Path) -> set[str]:
    """Absolute dotted names ``path`` imports; ``from a import b`` gives both ``a`` and ``a.b``."""
    name = module_name(path, package)
    # the package a relative import starts from: the module's own package (itself for an __init__.py)
    here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(here[: len(here) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names if alias.name != "*")
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and _is_import_call(node.func)
        ):
            found.add(node.args[0].value)
    return found


def _is_import_call(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def imports(name: str, found: set[str]) -> bool:
    """True when ``found`` (from :func:`imports_of`) includes module ``name`` or anything inside it."""
    return any(f == name or f.startswith(name + ".") for f in found)


def package_imports(package: Path) -> dict[str, set[str]]:
    """``imports_of`` for every ``.py`` file under ``package``, keyed by the path relative to it."""
    return {str(p.relative_to(package)): imports_of(p, package) for p in sorted(package.rglob("*.py"))}
