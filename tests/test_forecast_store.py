from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.cli.main import main

CONFIG = """
[[deployment]]
name = "m-small"
provider = "simulated"
unit_tpm = 500000
timezone = "Asia/Shanghai"
[deployment.pricing]
elastic_unit_hour = 38.0264
"""


def test_forecast_command_stores_a_queryable_run(
    db_url: str, engine: sa.Engine, tmp_path: Path, traces_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "capsched.toml"
    config.write_text(CONFIG)
    base = ["--config", str(config), "--database-url", db_url]
    trace = str(traces_dir / "servegen_m-small.csv")
    assert main([*base, "ingest", trace, "--deployment", "m-small"]) == 0
    capsys.readouterr()
    assert main([*base, "forecast", "--now", "2025-01-17T12:00Z", "--horizon", "6h",
                 "--format", "json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["horizon_minutes"] == 360
    assert summary["minutes_observed"] > 10_000
    with engine.connect() as conn:
        points = conn.execute(sa.text(
            "SELECT minute, mean, p50, p90, quantile_values FROM forecast_point "
            "WHERE run_id = :r ORDER BY minute"), {"r": summary["run_id"]}).all()
        latest = conn.execute(sa.text("SELECT id, as_of FROM latest_forecast")).one()
    assert len(points) == 360
    assert points[0].minute.isoformat() == "2025-01-17T12:00:00+00:00"
    assert latest.id == summary["run_id"]
    for point in points:
        assert point.p50 <= point.p90
        assert list(point.quantile_values) == sorted(point.quantile_values)
    # m-small's demand at this hour is about 25 units; a forecast off by 2x is broken.
    assert 10 < points[0].mean < 50


def _eval_m_small(tmp_path: Path, traces_dir: Path, *args: str) -> int:
    """``capsched forecast eval`` on the bundled m-small trace with ``args``."""
    config = tmp_path / "capsched.toml"
    config.write_text(CONFIG)
    return main(["--config", str(config), "forecast", "eval", "--usage",
                 str(traces_dir / "servegen_m-small.csv"), *args])


def test_forecast_eval_reports_every_horizon(
    tmp_path: Path, traces_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _eval_m_small(tmp_path, traces_dir, "--eval-days", "1", "--horizons", "5m,1h",
                         "--format", "json")
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["horizons"]) == {"5", "60"}
    for score in report["horizons"].values():
        assert score["n_points"] > 0
        assert 0 < score["mase"] < 1.5
        assert 0 <= score["coverage_80"] <= score["coverage_95"] <= 1


def test_forecast_eval_text_shows_the_day_block_range(
    tmp_path: Path, traces_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = _eval_m_small(tmp_path, traces_dir, "--eval-days", "5", "--origin-every", "60m",
                         "--horizons", "1h")
    assert code == 0
    out = capsys.readouterr().out.splitlines()
    header = next(line for line in out if line.startswith("HORIZON"))
    assert "REL MAE 90%" in header
    row = next(line for line in out if line.startswith("60 "))
    cells = row.split()
    rel = float(cells[2])
    lo, hi = (float(v) for v in cells[3].split("-"))
    assert lo <= rel <= hi and lo < hi
    assert any("day-block bootstrap over 5 origin day(s)" in line for line in out)
