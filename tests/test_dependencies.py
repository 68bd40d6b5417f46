"""Every third-party module the installed packages import is declared in pyproject.toml.

A module the package imports but does not declare works in the developer's venv (some other
dependency pulled it in) and breaks a user's fresh install: scipy did exactly that (#10 item 18).
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scheduler", "forecasting")


def _imported_top_level_modules() -> dict[str, str]:
    """Top-level module name -> first file importing it (absolute imports only)."""
    found: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra, reqs in project.get("optional-dependencies", {}).items():
        if extra != "dev":
            requirements += reqs
    return {_normalise(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}


def test_every_third_party_import_is_declared() -> None:
    declared = _declared_distributions()
    providers = importlib.metadata.packages_distributions()
    undeclared = []
    for module, where in sorted(_imported_top_level_modules().items()):
        if module in sys.stdlib_module_names or module in PACKAGES:
            continue
        distributions = {_normalise(d) for d in providers.get(module, [])}
        assert distributions, f"{where} imports {module!r}, no distribution provides"
        if not distributions & declared:
            undeclared.append(f"{module} ({where}; from {sorted(distributions)})")
    assert not undeclared, "imported but not declared in pyproject.toml: " + ", ".join(undeclared)


def test_scipy_is_declared() -> None:
    # The planner's solver imports scipy.optimize (#10 item 18).
    assert "scipy" in _declared_distributions()
