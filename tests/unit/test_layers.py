"""The layer contract in pyproject.toml ([tool.importlinter]): nothing imports upward."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def test_no_module_imports_a_higher_layer():
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert lint, "import-linter is not installed (make install)"
    result = subprocess.run([lint, "--no-cache"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def test_no_private_names_cross_modules():
    # `from productstudio.x import _private` couples a module to another's internals.
    offenders = []
    for path in (REPO_ROOT / "src" / "productstudio").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("from productstudio") and " import " in stripped:
                names = stripped.split(" import ", 1)[1].strip("()").split(",")
                private = [n.strip().split(" as ")[0] for n in names if n.strip().startswith("_")]
                if any(not name.startswith("__") for name in private):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {stripped}")
    assert not offenders, offenders


def test_init_files_hold_no_logic():
    # A package's __init__.py is its docstring (and the top package's __version__), nothing else.
    for path in (REPO_ROOT / "src" / "productstudio").rglob("__init__.py"):
        body = [node for node in ast.parse(path.read_text()).body
                if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        assert all(isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
                   for node in body), path
