"""What a report shows, gathered from a backtest directory or from the store.

Backtest (``capsched backtest --out DIR``): ``schedule.csv`` gives demand, committed and
elastic units and spill per minute, ``commitments.csv`` the ladder, ``actions.csv`` each
change and its reason, ``summary.json`` the window's totals (printed as they are, so the
report and the summary agree to the cent). ``schedule.csv`` holds units, not tokens, so
the daily split of the window's dollars is apportioned: elastic by elastic unit-minutes
(exact: one rate), committed by committed unit-minutes weighted by ``1 - discount_T``
(exact), dedicated by minutes (exact), spill by spilled unit-minutes and pay-as-you-go by
demand unit-minutes (exact when the input/output mix is steady), the hindsight optimum by
minutes (its daily average). Each day's parts add up to the summary's totals.

Live (``--deployment X --since T``): the ledger's minutes with the usage of the same
minutes, the recorded commitments, the journal's actions and their reasons, and the
realised cost per day from ``scheduler/store/costs.py`` (exact per day).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa

from scheduler.config import Pricing
from scheduler.store import costs

FloatArray = npt.NDArray[np.float64]


class ReportInputError(ValueError):
    """A backtest directory or a stored history cannot be reported; names file and field."""


@dataclass(frozen=True)
class Change:
    """A capacity change and the plan's reason for it."""

    at: dt.datetime
    kind: str
    units: int | None
    target_units: int | None
    term_days: int | None
    reason: str


@dataclass(frozen=True)
class Rung:
    """One commitment of the ladder: ``units`` for ``term_days`` from ``start``."""

    start: dt.datetime
    term_days: int
    units: int


@dataclass(frozen=True)
class DayCost:
    """Dollars of one UTC day: the plan by tier and the baselines."""

    day: dt.date
    committed: float
    elastic: float
    spill: float
    dedicated: float
    payg: float
    hindsight: float | None

    @property
    def total(self) -> float:
        return self.committed + self.elastic + self.spill


@dataclass(frozen=True)
class Totals:
    """The window's dollars (as ``summary.json`` or ``cost_day`` give them)."""

    total: float
    committed: float
    elastic: float
    spill: float
    dedicated: float
    payg: float
    hindsight: float | None
    spill_fraction: float | None
    max_spill_fraction: float | None
    commitment_tail: float | None


@dataclass(frozen=True, eq=False)
class ReportData:
    """Everything one report draws; the arrays hold one value per minute of ``minutes``
    (``datetime64[m]``, UTC), in units."""

    source: str  # "backtest" or "live"
    deployment: str
    start: dt.datetime
    end: dt.datetime
    minutes: npt.NDArray[np.datetime64]
    demand: FloatArray
    committed: FloatArray
    elastic: FloatArray
    spill: FloatArray
    ladder: tuple[Rung, ...]
    changes: tuple[Change, ...]
    days: tuple[DayCost, ...]
    totals: Totals
    notes: tuple[str, ...] = ()


def _utc(text: str, where: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ReportInputError(f"{where}: not a UTC time: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _read_csv(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise ReportInputError(f"{path}: missing (is this a `capsched backtest --out` "
                               "directory?)")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise ReportInputError(f"{path}, line 1: missing column(s) {', '.join(missing)}")
        return [(line, row) for line, row in enumerate(reader, start=2)]


def _number(path: Path, line: int, row: dict[str, str], field: str) -> float:
    try:
        return float(row[field])
    except (TypeError, ValueError) as exc:
        raise ReportInputError(
            f"{path}, line {line}, field {field}: not a number: {row[field]!r}") from exc


def _field(summary: dict[str, Any], path: Path, *keys: str) -> Any:
    value: Any = summary
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise ReportInputError(f"{path}: missing field {'.'.join(keys[:depth + 1])}")
        value = value[key]
    return value


def totals_from_summary(summary: dict[str, Any], path: Path | None = None) -> Totals:
    """The totals of a backtest's ``summary.json`` (as printed there, to the cent)."""
    where = path or Path("summary.json")
    cost = _field(summary, where, "cost")
    base = _field(summary, where, "baselines")
    hindsight = base.get("hindsight_optimum", {}).get("total")
    return Totals(
        total=float(_field(cost, where, "total")),
        committed=float(_field(cost, where, "committed")),
        elastic=float(_field(cost, where, "elastic")),
        spill=float(_field(cost, where, "spill")),
        dedicated=float(_field(base, where, "dedicated_at_peak", "cost")),
        payg=float(_field(base, where, "payg", "cost")),
        hindsight=None if hindsight is None else float(hindsight),
        spill_fraction=summary.get("spill_fraction"),
        max_spill_fraction=summary.get("max_spill_fraction"),
        commitment_tail=cost.get("commitment_tail"),
    )


def from_backtest(directory: Path, pricing: Pricing | None = None) -> ReportData:
    """Read a backtest output directory. ``pricing`` (the deployment's, when the config
    has it) weighs 7- against 30-day committed unit-minutes; the contract's default
    discounts otherwise. Raises :class:`ReportInputError` naming file, line and field."""
    summary_path = directory / "summary.json"
    if not summary_path.is_file():
        raise ReportInputError(f"{summary_path}: missing (is this a `capsched backtest "
                               "--out` directory?)")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportInputError(f"{summary_path}, line {exc.lineno}: {exc.msg}") from exc
    totals = totals_from_summary(summary, summary_path)
    sched_path = directory / "schedule.csv"
    rows = _read_csv(sched_path, ("minute_utc", "demand_units", "committed_units",
                                  "elastic_units", "spill_units"))
    if not rows:
        raise ReportInputError(f"{sched_path}: no minutes")
    minutes = np.array([np.datetime64(r["minute_utc"].rstrip("Z"), "m") for _, r in rows])
    cols = {f: np.array([_number(sched_path, line, r, f) for line, r in rows])
            for f in ("demand_units", "committed_units", "elastic_units", "spill_units")}
    ladder_path = directory / "commitments.csv"
    ladder = tuple(
        Rung(_utc(r["start_utc"], f"{ladder_path}, line {line}, field start_utc"),
             int(_number(ladder_path, line, r, "term_days")),
             int(_number(ladder_path, line, r, "units")))
        for line, r in _read_csv(ladder_path, ("start_utc", "term_days", "units")))
    actions_path = directory / "actions.csv"
    changes = tuple(
        Change(_utc(r["effective_utc"] or r["decided_utc"],
                    f"{actions_path}, line {line}, field effective_utc"), r["kind"],
               int(r["units"]) if r["units"] else None,
               int(r["target_units"]) if r["target_units"] else None,
               int(r["term_days"]) if r["term_days"] else None, r["reason"])
        for line, r in _read_csv(actions_path, ("decided_utc", "effective_utc", "kind",
                                                "units", "target_units", "term_days",
                                                "reason")))
    start = _utc(_field(summary, summary_path, "start_utc"), f"{summary_path}: start_utc")
    end = _utc(_field(summary, summary_path, "end_utc"), f"{summary_path}: end_utc")
    days = _apportion(minutes, cols, ladder, totals, pricing or Pricing(elastic_unit_hour=1.0))
    return ReportData(
        source="backtest", deployment=str(summary.get("deployment", "")), start=start, end=end,
        minutes=minutes, demand=cols["demand_units"], committed=cols["committed_units"],
        elastic=cols["elastic_units"], spill=cols["spill_units"], ladder=ladder,
        changes=changes, days=days, totals=totals,
        notes=("Daily dollars apportion the summary's totals: elastic by elastic "
               "unit-minutes, committed by unit-minutes at each term's rate, dedicated by "
               "minutes (all exact); spill by spilled and pay-as-you-go by demanded "
               "unit-minutes; the hindsight optimum is its daily average.",))


def _share(total: float, weights: FloatArray) -> FloatArray:
    s = float(weights.sum())
    if s <= 0:
        return np.full(weights.size, total / weights.size if weights.size else 0.0) \
            if total else np.zeros(weights.size)
    return total * weights / s


def _apportion(minutes: npt.NDArray[np.datetime64], cols: dict[str, FloatArray],
               ladder: Sequence[Rung], totals: Totals, pricing: Pricing) -> tuple[DayCost, ...]:
    day_of = minutes.astype("datetime64[D]")
    days, index = np.unique(day_of, return_inverse=True)

    def per_day(values: FloatArray) -> FloatArray:
        return np.bincount(index, weights=values, minlength=days.size).astype(np.float64)

    weighted = np.zeros(minutes.size)
    for rung in ladder:
        a = np.datetime64(rung.start.astimezone(dt.UTC).replace(tzinfo=None), "m")
        active = (minutes >= a) & (minutes < a + np.timedelta64(rung.term_days * 1440, "m"))
        weighted += active * rung.units * (1 - pricing.commit_discount(rung.term_days))
    if not ladder:
        weighted = cols["committed_units"]
    spill_units = np.maximum(cols["spill_units"], 0.0)
    committed = _share(totals.committed, per_day(weighted))
    elastic = _share(totals.elastic, per_day(cols["elastic_units"]))
    spill = _share(totals.spill, per_day(spill_units))
    count = per_day(np.ones(minutes.size))
    dedicated = _share(totals.dedicated, count)
    payg = _share(totals.payg, per_day(cols["demand_units"]))
    hind = None if totals.hindsight is None else _share(totals.hindsight, count)
    return tuple(
        DayCost(days[i].astype(dt.date), float(committed[i]), float(elastic[i]),
                float(spill[i]), float(dedicated[i]), float(payg[i]),
                None if hind is None else float(hind[i]))
        for i in range(days.size))


def from_store(conn: sa.Connection, deployment_id: int, deployment: str, since: dt.datetime,
               until: dt.datetime, *, now: dt.datetime,
               max_spill_fraction: float | None = None) -> ReportData:
    """A deployment's live history over ``[since, until)`` from the store; reads only."""
    history = costs.history(conn, deployment_id, since, until)
    if not history.minutes:
        raise ReportInputError(
            f"deployment {deployment!r}: no capacity ledger minutes in "
            f"[{since:%Y-%m-%dT%H:%MZ}, {until:%Y-%m-%dT%H:%MZ})")
    minutes = np.array([np.datetime64(m.astimezone(dt.UTC).replace(tzinfo=None), "m")
                        for m in history.minutes])
    demand = np.array([np.nan if d is None else d for d in history.demand], dtype=np.float64)
    committed = np.array(history.committed, dtype=np.float64)
    elastic = np.array(history.elastic, dtype=np.float64)
    spill = np.maximum(0.0, np.nan_to_num(demand) - committed - elastic)
    days = costs.cost_days(conn, [deployment_id], since, until, now=now)
    whole = costs.totals(deployment_id, days)
    totals = Totals(total=whole.total, committed=whole.committed, elastic=whole.elastic,
                    spill=whole.spill, dedicated=whole.dedicated, payg=whole.payg,
                    hindsight=None, spill_fraction=whole.spill_fraction,
                    max_spill_fraction=max_spill_fraction, commitment_tail=None)
    return ReportData(
        source="live", deployment=deployment, start=since, end=until, minutes=minutes,
        demand=demand, committed=committed, elastic=elastic, spill=spill,
        ladder=tuple(Rung(c.start, c.term_days, c.units) for c in history.commitments),
        changes=tuple(Change(a.at, a.kind, a.units, a.target_units, a.term_days, a.reason)
                      for a in history.actions),
        days=tuple(DayCost(d.day, d.committed_cost, d.elastic_cost, d.spill_cost,
                           d.dedicated_cost, d.payg_cost, None) for d in days),
        totals=totals,
        notes=("Realised cost from the capacity ledger and usage of the same minutes "
               "(docs/economics.md); dedicated per day is at that day's peak, the total's at "
               "the window's peak.",))
