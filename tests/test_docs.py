"""Every SQL snippet and shell command in README.md and docs/*.md runs (#10 item 2).

The fenced blocks tagged ``sql`` run statement by statement against a migrated database
holding a deployment with usage; blocks tagged ``sh`` run verbatim under ``bash -euo
pipefail`` in a scratch directory with ``capsched`` on the PATH, ``CAPSCHED_DATABASE_URL``
pointing at that database, ``CAPSCHED_CONFIG`` at a config declaring the deployments the
docs name, and the files they read (``usage.csv``, ``usage.jsonl.gz``, ``examples/``).

Opt-out: a block that cannot run here (it needs root, systemd, a server left running, or
it runs the test suite itself) is preceded by the line

    <!-- docs-test: skip <reason> -->

and must be listed in :data:`SKIPPED` below, so the list stays short and deliberate. Skipped
shell blocks are still parsed by ``bash -n``.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_MARKER = re.compile(r"^\s*<!-- docs-test: skip (?P<reason>\S.*?) -->\s*$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w-]*)\s*$")

#: (file, first line of the block's text) of every block allowed to opt out.
SKIPPED = {
    ('README.md',
     'make run    # venv + install, embedded PostgreSQL, migrate, load the example, run the '
     'daemon'),
    ('docs/http-provider.md',
     'export CAPSCHED_REFERENCE_TOKEN=dev-token'),
    ('docs/http-provider.md',
     'T=dev-token; U=http://127.0.0.1:8765/v1'),
    ('docs/install.md',
     'sudo useradd --system --home-dir /var/lib/capsched --shell /usr/sbin/nologin capsched'),
    ('docs/install.md',
     'sudo python3.11 -m venv /opt/capsched/.venv'),
    ('docs/install.md',
     'sudo install -o root -g capsched -m 0640 systemd/capsched.toml.example '
     '/etc/capsched/capsched.toml'),
    ('docs/install.md',
     "printf '%s\\n' 'postgresql://capsched:PASSWORD@db.internal/capsched' |"),
    ('docs/install.md',
     'sudo install -o root -g capsched -m 0640 /dev/null /etc/capsched/capsched.env'),
    ('docs/install.md',
     'capsched_as_service() {'),
    ('docs/install.md',
     'capsched_as_service db psql'),
    ('docs/install.md',
     'sudo install -m 0644 systemd/capsched.service systemd/capsched-plan.service \\'),
    ('docs/install.md',
     'capsched_as_service health'),
    ('docs/install.md',
     'gzip -c usage.jsonl | curl -sS --fail-with-body \\'),
    ('docs/install.md',
     'journalctl -u capsched -f -o cat | jq .                       # follow, as JSON'),
    ('docs/install.md',
     'sudo /opt/capsched/.venv/bin/pip install --upgrade /path/to/capsched-NEW.whl'),
}


@dataclass(frozen=True)
class Block:
    file: str
    line: int
    lang: str
    text: str
    skip: str | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.file, self.text.strip().splitlines()[0])

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, start = len(opening["indent"]), i
        j = i + 1
        while j < len(lines) and not FENCE.match(lines[j]):
            j += 1
        body = "\n".join(line[indent:] for line in lines[start + 1 : j]) + "\n"
        k = start - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = SKIP_MARKER.match(lines[k]) if k >= 0 else None
        blocks.append(Block(str(path.relative_to(ROOT)), start + 1, opening["lang"], body,
                            marker["reason"] if marker else None))
        i = j + 1
    return blocks


ALL = [b for path in DOCS for b in fenced_blocks(path)]
SQL = [b for b in ALL if b.lang == "sql"]
SHELL = [b for b in ALL if b.lang in ("sh", "bash", "shell", "console")]


def test_the_opt_out_list_is_explicit() -> None:
    assert SQL and SHELL
    skipped = {b.key for b in ALL if b.skip}
    assert skipped == SKIPPED, "a block's skip marker and SKIPPED disagree"
    assert not [b for b in SQL if b.skip], "every SQL snippet runs"


CONFIG = """
[[deployment]]
name = "{name}"
provider = "simulated"
unit_tpm = 500000
max_units = 100
[deployment.pricing]
elastic_unit_hour = 38.0264
"""


@pytest.fixture
def docs_env(db_url: str, tmp_path: Path, traces_dir: Path) -> dict[str, str]:
    """A scratch directory like a user's: config, usage files, the examples, a database."""
    (tmp_path / "capsched.toml").write_text(
        "".join(CONFIG.format(name=n) for n in ("support-bot", "gpt-4o-prod", "gpt-4o"))
    )
    header = "minute_utc,input_tokens,output_tokens,requests\n"
    # Yesterday: inside the accepted window around now, whenever the test runs.
    import datetime as dt

    day = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%Y-%m-%d")
    rows = [f"{day}T10:{m:02d}:00Z,{1000 + m},{100 + m},3" for m in range(30)]
    (tmp_path / "usage.csv").write_text(header + "".join(r + "\n" for r in rows))
    jsonl = "".join(
        f'{{"minute_utc": "{day}T11:{m:02d}:00Z", "input_tokens": 5, "output_tokens": 1, '
        f'"requests": 1}}\n'
        for m in range(30)
    )
    (tmp_path / "usage.jsonl").write_text(jsonl)
    (tmp_path / "usage.jsonl.gz").write_bytes(gzip.compress(jsonl.encode()))
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSCHED_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        CAPSCHED_DATABASE_URL=db_url,
        CAPSCHED_CONFIG=str(tmp_path / "capsched.toml"),
        CAPSCHED_LOG_FORMAT="json",
        HOME=str(tmp_path),
    )
    return env


@pytest.mark.parametrize("block", SHELL, ids=str)
def test_shell_block_runs(block: Block, docs_env: dict[str, str], tmp_path: Path) -> None:
    if block.skip:
        syntax = subprocess.run(["bash", "-n"], input=block.text, text=True,
                                capture_output=True, check=False)
        assert syntax.returncode == 0, f"{block}: {syntax.stderr}"
        pytest.skip(f"{block}: {block.skip}")
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block.text], cwd=tmp_path, env=docs_env,
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, f"{block} failed:\n{block.text}\n{result.stderr[-2000:]}"


def sql_statements(text: str) -> list[str]:
    """Statements of a snippet: ``;`` ends one at the end of a line; ``--`` comments go."""
    statements, current = [], []
    for line in text.splitlines():
        code = line.split("--", 1)[0].rstrip()
        if not code.strip():
            continue
        current.append(code)
        if code.endswith(";"):
            statements.append("\n".join(current))
            current = []
    assert not current, f"unterminated statement: {current}"
    return statements


@pytest.mark.parametrize("block", SQL, ids=str)
def test_sql_block_runs(block: Block, docs_env: dict[str, str], tmp_path: Path,
                        engine: sa.Engine) -> None:
    # Usage and a dry-run plan, so the views have rows to read.
    for command in (["ingest", "usage.csv", "--deployment", "support-bot"],
                    ["deployments", "sync"]):
        subprocess.run([str(Path(sys.executable).parent / "capsched"), *command],
                       cwd=tmp_path, env=docs_env, check=True, capture_output=True, timeout=300)
    statements = sql_statements(block.text)
    assert statements
    with engine.connect() as conn:
        # As the documented read-only role: the snippets must need no more than the views.
        conn.execute(sa.text("SET ROLE capsched_reader"))
        for statement in statements:
            conn.execute(sa.text(statement.replace(":", r"\:"))).all()


def test_example_config_peak_claim_matches_its_trace(traces_dir: Path) -> None:
    """examples/capsched.toml states the trace's peak, and max_units lies above it (#10
    item 3: it claimed 37 units with max_units = 80 against a real peak of 88.4)."""
    import tomllib

    import numpy as np

    from scheduler.ingest.files import read_usage_file

    text = (ROOT / "examples" / "capsched.toml").read_text(encoding="utf-8")
    (deployment,) = tomllib.loads(text)["deployment"]
    usage = read_usage_file(traces_dir / "servegen_m-small.csv")
    units = usage.demand_units(deployment["unit_tpm"], deployment["output_token_weight"])
    claimed = re.search(r"demand peaks at ([\d.]+) units", text)
    assert claimed is not None
    assert float(claimed[1]) == round(float(np.max(units)), 1)
    assert deployment["max_units"] >= np.max(units)
