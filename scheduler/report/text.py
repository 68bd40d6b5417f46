"""The report's one-line summary, also printed after every ``capsched backtest``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from scheduler.report.data import Totals, totals_from_summary


def summary_line(deployment: str, start: dt.datetime, end: dt.datetime, t: Totals) -> str:
    """Cost by tier, the saving against dedicated at peak, pay-as-you-go, the gap to the
    hindsight optimum and the spill fraction against its bound, in one line."""
    parts = [f"{deployment} {start:%Y-%m-%d}..{end:%Y-%m-%d}: "
             f"${t.total:,.2f} (committed ${t.committed:,.2f}, elastic ${t.elastic:,.2f}, "
             f"spill ${t.spill:,.2f})"]
    if t.dedicated > 0:
        parts.append(f"{100 * (1 - t.total / t.dedicated):.1f}% below dedicated "
                     f"${t.dedicated:,.2f}")
    if t.payg > 0:
        parts.append(f"pay-as-you-go ${t.payg:,.2f}")
    if t.hindsight:
        parts.append(f"{100 * (t.total / t.hindsight - 1):+.1f}% vs hindsight optimum "
                     f"${t.hindsight:,.2f}")
    if t.spill_fraction is not None:
        bound = ("" if t.max_spill_fraction is None
                 else f" (bound {100 * t.max_spill_fraction:.3g}%)")
        parts.append(f"spill {100 * t.spill_fraction:.3g}%{bound}")
    return "; ".join(parts)


def backtest_line(summary: dict[str, Any]) -> str:
    """:func:`summary_line` of a backtest's ``summary.json`` content."""
    def at(key: str) -> dt.datetime:
        return dt.datetime.fromisoformat(str(summary[key]).replace("Z", "+00:00"))

    return summary_line(str(summary.get("deployment", "")), at("start_utc"), at("end_utc"),
                        totals_from_summary(summary))
