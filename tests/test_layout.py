"""The package layout's rules, checked on the source's own imports (AST, no import side effects).

Wings are ranked top to bottom as drawn in the README's "Architecture" section; a module may
import its own wing and any wing ranked below it, never one above. On top of that:

* ``scheduler.planning`` and ``forecasting`` are pure: no store, no SQL driver, no provider SDK,
  no HTTP client and no clock (``now`` is always an argument);
* nothing outside ``scheduler.cli`` imports it (``python -m scheduler`` is the one door in);
* ``scheduler.observe`` imports no other wing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Top first. "ground" is scheduler/config.py, credentials.py, database.py and __init__.py.
RANKS = [
    "cli",
    "report",
    "daemon",
    "pipeline",
    "planning",
    "ingest",
    "providers",
    "store",
    "forecasting",
    "observe",
    "ground",
]
WINGS = set(RANKS) - {"forecasting", "ground"}

PURE_FORBIDDEN = (
    "scheduler.store",
    "scheduler.providers",
    "scheduler.daemon",
    "scheduler.cli",
    "sqlalchemy",
    "psycopg",
    "alembic",
    "httpx",
    "urllib.request",
    "boto3",
    "botocore",
    "azure",
    "requests",
    "socket",
)
CLOCK_CALLS = {"now", "utcnow", "today", "time", "monotonic", "perf_counter", "time_ns"}


def wing_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "forecasting":
        return "forecasting"
    if parts[0] != "scheduler":
        return None
    if len(parts) > 1 and parts[1] in WINGS:
        return parts[1]
    return "ground"


def modules() -> Iterator[tuple[str, Path]]:
    for package in ("scheduler", "forecasting"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            name = ".".join(p for p in rel.parts if p != "__init__")
            yield name, path


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every absolute module name that ``path`` imports, with its line (``from a import b``
    yields ``a`` and ``a.b``, since ``b`` may be a submodule)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
            for alias in node.names:
                yield node.lineno, f"{node.module}.{alias.name}"


ALL = list(modules())


def test_the_walk_finds_every_wing() -> None:
    # Guards the other tests against passing on an empty tree.
    found = {wing_of(name) for name, _ in ALL}
    assert found == set(RANKS)


@pytest.mark.parametrize(("name", "path"), ALL, ids=[n for n, _ in ALL])
def test_imports_run_down(name: str, path: Path) -> None:
    own = wing_of(name)
    assert own is not None
    for line, target in imports(path):
        other = wing_of(target)
        if other is None or other == own:
            continue
        if name == "scheduler.__main__" and other == "cli":
            continue  # `python -m scheduler` is the command line itself
        assert RANKS.index(other) > RANKS.index(own), (
            f"{path.relative_to(ROOT)}:{line}: the {own} wing imports {target} "
            f"from the {other} wing, which sits above it"
        )


@pytest.mark.parametrize(
    ("name", "path"),
    [(n, p) for n, p in ALL if wing_of(n) in {"planning", "forecasting"}],
    ids=[n for n, _ in ALL if wing_of(n) in {"planning", "forecasting"}],
)
def test_planning_and_forecasting_are_pure(name: str, path: Path) -> None:
    for line, target in imports(path):
        assert not any(
            target == bad or target.startswith(bad + ".") for bad in PURE_FORBIDDEN
        ), f"{path.relative_to(ROOT)}:{line}: pure module {name} imports {target}"
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_CALLS
            and isinstance(node.func.value, ast.Name | ast.Attribute)
        ):
            owner = ast.unparse(node.func.value)
            if owner.split(".")[-1] in {"datetime", "date", "time", "dt"}:
                pytest.fail(
                    f"{path.relative_to(ROOT)}:{node.lineno}: pure module {name} reads the "
                    f"clock ({ast.unparse(node.func)}); take `now` as an argument"
                )


def test_nothing_imports_the_command_line() -> None:
    for name, path in ALL:
        if wing_of(name) == "cli" or name == "scheduler.__main__":
            continue
        for line, target in imports(path):
            assert wing_of(target) != "cli", f"{path.relative_to(ROOT)}:{line}: imports {target}"


def test_observe_imports_no_other_wing() -> None:
    for name, path in ALL:
        if wing_of(name) != "observe":
            continue
        for line, target in imports(path):
            other = wing_of(target)
            assert other in (None, "observe"), f"{path.relative_to(ROOT)}:{line}: imports {target}"


def test_the_reference_server_is_not_in_the_package() -> None:
    assert not list((ROOT / "scheduler").rglob("*reference*.py"))
    assert (ROOT / "examples" / "http_provider" / "reference_server.py").is_file()
