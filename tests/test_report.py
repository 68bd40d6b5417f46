"""``capsched report`` (#13): the field-case backtest's report rendered in headless
Chromium (the Debian package), screenshotted, its plots checked drawn and its printed
totals checked against ``summary.json`` to the cent; ``--format png``; bad input."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from scheduler.cli.main import main
from tests.test_backtest import field_trace

ROOT = Path(__file__).resolve().parent.parent
FIELD_CONFIG = ROOT / "examples" / "field_case" / "capsched.toml"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--force-color-profile=srgb",
                  "--hide-scrollbars")


def chromium() -> str:
    """The Chromium binary; under CI=true its absence fails the test instead of skipping."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run([chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def field_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The field case through `capsched backtest` (as a user runs it): its output
    directory and what it printed on stderr."""
    tmp = tmp_path_factory.mktemp("field")
    out = tmp / "out"
    trace = field_trace(tmp / "field_case.csv")
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert main(["--config", str(FIELD_CONFIG), "backtest", "--usage", str(trace),
                     "--deployment", "support-bot", "--out", str(out),
                     "--start", "2026-03-09T00:00Z", "--end", "2026-04-08T00:00Z"]) == 0
    assert json.loads(stdout.getvalue()) == json.loads((out / "summary.json").read_text())
    return out, stderr.getvalue()


@pytest.fixture(scope="module")
def field_backtest(field_run: tuple[Path, str]) -> Path:
    return field_run[0]


def test_backtest_prints_a_human_summary_line(field_run: tuple[Path, str]) -> None:
    out, stderr = field_run
    summary = json.loads((out / "summary.json").read_text())
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("support-bot 2026-03-09..2026-04-08: ")
    assert f"${summary['cost']['total']:,.2f}" in line
    assert f"dedicated ${summary['baselines']['dedicated_at_peak']['cost']:,.2f}" in line
    assert "spill 0% (bound 0%)" in line


def _pixels_near(rgb: np.ndarray, hex_color: str, tol: float = 0.06) -> int:
    target = np.array([int(hex_color[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(rgb - target).max(axis=2) < tol).sum())


def _money(dom: str, ident: str) -> float:
    found = re.search(rf'id="{ident}"[^>]*>\$([0-9,.-]+)<', dom)
    assert found, f"{ident} not printed in the report"
    return float(found.group(1).replace(",", ""))


def test_field_case_report_draws_its_plots_and_prints_the_summary_to_the_cent(
    field_backtest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.html"
    assert main(["--config", str(FIELD_CONFIG), "report", str(field_backtest),
                 "--out", str(report)]) == 0
    line = capsys.readouterr().out
    summary = json.loads((field_backtest / "summary.json").read_text())
    assert f"${summary['cost']['total']:,.2f}" in line
    page = report.read_text()
    # Self-contained: no script, and nothing fetched over the network.
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)

    shot = tmp_path / "shot.png"
    done = run_chromium(tmp_path, "--window-size=1300,2600", f"--screenshot={shot}",
                        report.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    rgb = image.imread(str(shot))[:, :, :3]
    # Every figure drew: the committed and elastic bars of the daily cost and the ladder,
    # the demand line, the dedicated baseline (solid tier colours of render.COLORS).
    assert _pixels_near(rgb, "#1f77b4") > 20_000, "committed tier not drawn"
    assert _pixels_near(rgb, "#2ca02c") > 10_000, "elastic tier not drawn"
    assert _pixels_near(rgb, "#d62728") > 300, "demand not drawn"
    assert _pixels_near(rgb, "#7f7f7f") > 300, "dedicated baseline not drawn"
    # Not blank: a good share of the page is neither white nor near-white.
    assert (rgb.min(axis=2) < 0.9).mean() > 0.10

    dom = run_chromium(tmp_path, "--dump-dom", report.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    expected = {"total-cost": summary["cost"]["total"],
                "total-committed": summary["cost"]["committed"],
                "total-elastic": summary["cost"]["elastic"],
                "total-spill": summary["cost"]["spill"],
                "total-dedicated": summary["baselines"]["dedicated_at_peak"]["cost"],
                "total-payg": summary["baselines"]["payg"]["cost"],
                "total-hindsight": summary["baselines"]["hindsight_optimum"]["total"]}
    for ident, value in expected.items():
        assert _money(dom.stdout, ident) == round(value, 2), ident
    assert dom.stdout.count("<img") == 4


def test_png_summary_figure(field_backtest: Path, tmp_path: Path) -> None:
    out = tmp_path / "summary.png"
    assert main(["--config", str(FIELD_CONFIG), "report", str(field_backtest),
                 "--format", "png", "--out", str(out)]) == 0
    rgb = image.imread(str(out))[:, :, :3]
    assert rgb.shape[0] >= 800 and _pixels_near(rgb, "#2ca02c") > 5_000


def test_a_broken_backtest_directory_is_named_with_line_and_field(
    field_backtest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(field_backtest, broken)
    lines = (broken / "schedule.csv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "lots", 1)
    (broken / "schedule.csv").write_text("\n".join(lines) + "\n")
    assert main(["--config", str(FIELD_CONFIG), "report", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "schedule.csv, line 4, field demand_units" in err
    assert not (broken / "report.html").exists()
    assert main(["--config", str(FIELD_CONFIG), "report", str(tmp_path / "nowhere")]) == 2
