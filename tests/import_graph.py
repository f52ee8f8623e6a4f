"""Which xraylib modules a piece of code uses, read with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "xraylib"


def referenced(source: str, *, run_targets: bool = False) -> set[str]:
    """xraylib modules ``source`` imports, at the top or inside functions (``from xraylib import x`` counts x).

    With ``run_targets``, also modules it runs as ``python -m xraylib.<name>`` (a string
    constant ``"xraylib.<name>"``): not an import, but code the caller depends on.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module == "xraylib":
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xraylib."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("xraylib.")}
        elif (run_targets and isinstance(node, ast.Constant) and isinstance(node.value, str)
              and re.fullmatch(r"xraylib\.\w+", node.value)):
            found.add(node.value.split(".")[1])
    return {m for m in found if (PACKAGE / f"{m}.py").is_file()}


def module_imports(module: str, *, run_targets: bool = False) -> set[str]:
    return referenced((PACKAGE / f"{module}.py").read_text(), run_targets=run_targets) - {module}


def closure(modules, *, run_targets: bool = False) -> set[str]:
    """``modules`` and everything they reach through :func:`module_imports`."""
    seen, todo = set(), list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += module_imports(module, run_targets=run_targets)
    return seen
