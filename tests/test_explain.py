"""``capsched explain`` and ``capsched report --deployment`` (#13) over a daemon's real
ticks (``run --once``) across the 08:00 scale-up of the synthetic deployment."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from scheduler.cli.main import EXIT_OK, EXIT_USAGE, main
from scheduler.store import costs
from tests.daemon_support import START, cli_with_usage

NOW = START + dt.timedelta(days=14, hours=7, minutes=50)
AT = NOW + dt.timedelta(minutes=14)  # 08:04, after the scale-up for the 08:00 peak


@pytest.fixture
def ticked(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    args = cli_with_usage(db_url, tmp_path, until=NOW + dt.timedelta(hours=1))
    for minute in range(17):
        now = NOW + dt.timedelta(minutes=minute)
        assert main([*args, "run", "--once", "--now", now.isoformat()]) == EXIT_OK
    capsys.readouterr()
    return args


def _counts(engine: sa.Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one())
                     for t in ("cost_day", "plan", "action", "capacity_minute"))


def test_explain_names_the_plan_forecast_and_reasons_at_a_minute(
    ticked: list[str], engine: sa.Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _counts(engine)
    assert main([*ticked, "explain", "--deployment", "bot", "--at", AT.isoformat(),
                 "--format", "json"]) == EXIT_OK
    out = json.loads(capsys.readouterr().out)
    with engine.connect() as conn:
        held = conn.execute(sa.text(
            "SELECT committed_units, elastic_units FROM capacity_minute WHERE minute = :at"),
            {"at": AT}).one()
        plan_id = conn.execute(sa.text(
            "SELECT id FROM plan WHERE as_of <= :at ORDER BY as_of DESC, id DESC LIMIT 1"),
            {"at": AT}).scalar_one()
    assert (out["committed_units"], out["elastic_units"]) == tuple(held)
    assert held[0] + held[1] >= 3, "the peak's 3 units are held by 08:04"
    assert out["plan"]["plan_id"] == plan_id and out["plan"]["reasons"]
    assert out["plan"]["demand_quantiles"], "the interval's planned-on quantiles"
    assert out["forecast"] and out["forecast"]["mean"] is not None
    assert out["forecast"]["quantiles"] and out["demand_units"] == pytest.approx(3.0)

    assert main([*ticked, "explain", "--deployment", "bot", "--at", AT.isoformat()]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"{held[0]} committed + {held[1]} elastic" in text
    assert re.search(r"reason at .*\] \w+", text), text
    # Quantiles are printed to four significant digits, not the stored float's seventeen.
    assert re.search(r" q=\d", text), "no reason with a quantile to check"
    assert all(len(q.rstrip(":").split(".")[-1]) <= 4
               for q in re.findall(r" q=(\d*\.\d+)", text)), text
    assert "forecast run #" in text and "last action in effect: elastic" in text
    assert _counts(engine) == before, "explain reads only"

    assert main([*ticked, "explain", "--deployment", "nobody", "--at", AT.isoformat()]
                ) == EXIT_USAGE


def test_live_report_prints_the_realised_cost_of_the_ledger(
    ticked: list[str], engine: sa.Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _counts(engine)
    out = tmp_path / "live.html"
    until = NOW + dt.timedelta(minutes=17)
    assert main([*ticked, "report", "--deployment", "bot", "--since", NOW.isoformat(),
                 "--until", until.isoformat(), "--now", until.isoformat(),
                 "--out", str(out)]) == EXIT_OK
    with engine.connect() as conn:
        ident = conn.execute(sa.text("SELECT id FROM deployment WHERE name = 'bot'")).scalar_one()
        whole = costs.totals(ident, costs.cost_days(conn, [ident], NOW, until, now=until))
    page = out.read_text()
    assert f'id="total-cost" class="money">${whole.total:,.2f}<' in page
    assert whole.elastic > 0 and page.count("<img") == 4
    assert "$" + f"{whole.total:,.2f}" in capsys.readouterr().out
    assert _counts(engine) == before, "a report reads only"
