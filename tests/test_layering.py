"""The engine and inspection layers stay free of the UI (DESIGN.md's arrows)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mergetui"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_engine_and_inspect_sources_never_import_textual_or_the_ui() -> None:
    offenders = []
    for layer in ("engine", "inspect"):
        for f in sorted((PKG / layer).rglob("*.py")):
            for name in _imports(f):
                if name.split(".")[0] == "textual" or name.startswith(("mergetui.screens", "mergetui.widgets", "mergetui.app")):
                    offenders.append(f"{f.relative_to(PKG)} imports {name}")
    assert not offenders, offenders


def test_importing_every_engine_and_inspect_module_loads_no_textual() -> None:
    mods = [
        ".".join(f.relative_to(PKG.parent).with_suffix("").parts)
        for layer in ("engine", "inspect")
        for f in sorted((PKG / layer).rglob("*.py"))
        if f.name != "__init__.py"
    ]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods) + "print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PKG.parent, check=True)
    assert out.stdout.strip() == "False"
