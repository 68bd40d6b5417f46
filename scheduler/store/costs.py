"""Realised cost (docs/economics.md applied to the capacity ledger and usage), per
deployment and UTC day, and the commitments that price the committed tier.

* ``capacity_commitment``: the commitments the provider reported (:func:`record_commitments`,
  written by the daemon's tick beside the ledger row). A ledger minute's committed units
  are priced at the terms of the commitments active at that minute:
  ``units x elastic_unit_hour x (1 - discount_T) / 60``. Committed units no recorded
  commitment explains (a ledger older than migration 0010) are priced at the 7-day rate,
  the dearer one, so the figure errs high rather than flattering the plan.
* ``cost_day``: whole UTC days over the minutes the ledger holds (the minutes the daemon
  observed). Committed and elastic dollars count every ledger minute; demand, spill and
  pay-as-you-go count the minutes that also have a usage value (a minute no source
  reported is skipped, never read as zero, as in ``scheduler/store/ledger.py``). Spill
  costs ``spill_units/demand_units x payg(t)`` with ``spill = "payg"`` and nothing with
  ``"throttle"``. Prices come from the deployment's stored settings at roll-up time.
* Roll-ups are written by :func:`roll_up` (the daemon's hourly pass, before retention drops
  ledger months) and kept a year (:data:`KEEP_DAYS`), so the raw ledger may be pruned after
  two months. Readers (:func:`cost_days`, :func:`month_to_date`) compute the days not yet
  rolled up from the raw ledger and never write.
* Dedicated at peak over a window: ``ceil(max demand_units) x dedicated_unit_month x
  minutes / 43,200`` (``cost_month`` and :attr:`CostTotals.dedicated`).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg

from scheduler.store.ledger import SETTLE
from scheduler.store.metadata import metadata

#: Days of ``cost_day`` kept: a year of roll-ups and a margin for the year-ago month.
KEEP_DAYS = 400
#: Settled days the daemon's roll-up recomputes each pass (late usage of yesterday).
RECOMPUTE_DAYS = 2
MINUTES_PER_MONTH = 43_200

capacity_commitment_table = sa.Table(
    "capacity_commitment",
    metadata,
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployment.id"), nullable=False),
    sa.Column("commitment_id", sa.Text, nullable=False),
    sa.Column("units", sa.Integer, nullable=False),
    sa.Column("term_days", sa.Integer, nullable=False),
    sa.Column("start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("end", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("deployment_id", "commitment_id"),
)

cost_day_table = sa.Table(
    "cost_day",
    metadata,
    sa.Column("deployment_id", sa.Integer, sa.ForeignKey("deployment.id"), nullable=False),
    sa.Column("day", sa.Date, nullable=False),
    sa.Column("minutes_billed", sa.Integer, nullable=False),
    sa.Column("minutes_covered", sa.Integer, nullable=False),
    sa.Column("committed_cost", sa.Float, nullable=False),
    sa.Column("elastic_cost", sa.Float, nullable=False),
    sa.Column("spill_cost", sa.Float, nullable=False),
    sa.Column("payg_cost", sa.Float, nullable=False),
    sa.Column("demand_unit_minutes", sa.Float, nullable=False),
    sa.Column("spill_unit_minutes", sa.Float, nullable=False),
    sa.Column("peak_demand_units", sa.Float, nullable=False),
    sa.Column("committed_unit_minutes", sa.BigInteger, nullable=False),
    sa.Column("elastic_unit_minutes", sa.BigInteger, nullable=False),
    sa.Column("dedicated_unit_month", sa.Float, nullable=False),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint("deployment_id", "day"),
)

_COST_FIELDS = (
    "minutes_billed", "minutes_covered", "committed_cost", "elastic_cost", "spill_cost",
    "payg_cost", "demand_unit_minutes", "spill_unit_minutes", "peak_demand_units",
    "committed_unit_minutes", "elastic_unit_minutes", "dedicated_unit_month",
)


@dataclass(frozen=True)
class CostDay:
    """Dollars of one deployment's UTC day by tier, and the baselines' inputs."""

    deployment_id: int
    day: dt.date
    minutes_billed: int
    minutes_covered: int
    committed_cost: float
    elastic_cost: float
    spill_cost: float
    payg_cost: float
    demand_unit_minutes: float
    spill_unit_minutes: float
    peak_demand_units: float
    committed_unit_minutes: int
    elastic_unit_minutes: int
    dedicated_unit_month: float

    @property
    def total(self) -> float:
        return self.committed_cost + self.elastic_cost + self.spill_cost

    @property
    def dedicated_cost(self) -> float:
        """Dedicated at this day's peak for its billed minutes."""
        return (math.ceil(self.peak_demand_units) * self.dedicated_unit_month
                * self.minutes_billed / MINUTES_PER_MONTH)


@dataclass(frozen=True)
class CostTotals:
    """The account of several days of one deployment (docs/economics.md's window)."""

    deployment_id: int
    committed: float = 0.0
    elastic: float = 0.0
    spill: float = 0.0
    payg: float = 0.0
    demand_unit_minutes: float = 0.0
    spill_unit_minutes: float = 0.0
    peak_demand_units: float = 0.0
    minutes_billed: int = 0
    dedicated_unit_month: float = 0.0

    @property
    def total(self) -> float:
        return self.committed + self.elastic + self.spill

    @property
    def dedicated(self) -> float:
        """Dedicated at the window's peak for its billed minutes."""
        return (math.ceil(self.peak_demand_units) * self.dedicated_unit_month
                * self.minutes_billed / MINUTES_PER_MONTH)

    @property
    def spill_fraction(self) -> float | None:
        if self.demand_unit_minutes <= 0:
            return None
        return self.spill_unit_minutes / self.demand_unit_minutes


def totals(deployment_id: int, days: Iterable[CostDay]) -> CostTotals:
    """Sum ``days`` (of ``deployment_id``) into one window's account."""
    out = CostTotals(deployment_id)
    for d in days:
        if d.deployment_id != deployment_id:
            raise ValueError("cannot add the cost days of two deployments")
        out = CostTotals(
            deployment_id,
            out.committed + d.committed_cost, out.elastic + d.elastic_cost,
            out.spill + d.spill_cost, out.payg + d.payg_cost,
            out.demand_unit_minutes + d.demand_unit_minutes,
            out.spill_unit_minutes + d.spill_unit_minutes,
            max(out.peak_demand_units, d.peak_demand_units),
            out.minutes_billed + d.minutes_billed,
            max(out.dedicated_unit_month, d.dedicated_unit_month),
        )
    return out


def record_commitments(
    conn: sa.Connection, held: Mapping[int, Sequence[tuple[str, int, int, dt.datetime,
                                                            dt.datetime]]],
) -> int:
    """Upsert the commitments each deployment holds: ``{deployment_id: [(commitment_id,
    units, term_days, start, end), ...]}``; return how many rows were given."""
    rows = [
        {"deployment_id": ident, "commitment_id": cid, "units": units, "term_days": term,
         "start": start, "end": end}
        for ident, commitments in held.items()
        for cid, units, term, start, end in commitments
    ]
    if not rows:
        return 0
    t = capacity_commitment_table
    stmt = pg.insert(t).values(rows)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[t.c.deployment_id, t.c.commitment_id],
        set_={"units": stmt.excluded.units, "term_days": stmt.excluded.term_days,
              "start": stmt.excluded.start, "end": stmt.excluded["end"]},
        where=sa.tuple_(t.c.units, t.c.term_days, t.c.start, t.c.end).is_distinct_from(
            sa.tuple_(stmt.excluded.units, stmt.excluded.term_days, stmt.excluded.start,
                      stmt.excluded["end"]))))
    return len(rows)


# The ledger's minutes joined with the usage of the same minutes (summed over sources,
# unreported minutes skipped) and the recorded commitments active at each minute; priced by
# the deployment's stored settings. One row per deployment and UTC day.
_COST_BY_DAY = sa.text(
    "WITH u AS ("
    " SELECT h.deployment_id, m.minute, sum(t.inp)::float8 AS inp, sum(t.outp)::float8 AS outp"
    " FROM usage_hour h"
    " CROSS JOIN LATERAL unnest(h.input_tokens, h.output_tokens)"
    " WITH ORDINALITY AS t(inp, outp, i)"
    " CROSS JOIN LATERAL (SELECT h.hour + make_interval(mins => t.i::int - 1) AS minute) m"
    " WHERE h.deployment_id = ANY(CAST(:ids AS int4[])) AND h.hour >= :start"
    " AND h.hour < :until AND t.inp >= 0"
    " GROUP BY h.deployment_id, m.minute), "
    "x AS ("
    " SELECT c.deployment_id, (c.minute AT TIME ZONE 'UTC')::date AS day,"
    " c.committed_units AS cu, c.elastic_units AS eu, u.inp, u.outp,"
    " (u.inp + d.output_token_weight * u.outp) / d.unit_tpm AS demand,"
    " p.eh, p.d7, p.d30, p.pin, p.pout, p.ded, d.settings ->> 'spill' AS spill_mode,"
    " k.u7, k.u30"
    " FROM capacity_minute c JOIN deployment d ON d.id = c.deployment_id"
    " CROSS JOIN LATERAL (SELECT"
    "  (d.settings -> 'pricing' ->> 'elastic_unit_hour')::float8 AS eh,"
    "  (d.settings -> 'pricing' ->> 'commit_7d_discount')::float8 AS d7,"
    "  (d.settings -> 'pricing' ->> 'commit_30d_discount')::float8 AS d30,"
    "  (d.settings -> 'pricing' ->> 'payg_input_per_mtok')::float8 AS pin,"
    "  (d.settings -> 'pricing' ->> 'payg_output_per_mtok')::float8 AS pout,"
    "  coalesce((d.settings -> 'pricing' ->> 'dedicated_unit_month')::float8,"
    "   (d.settings -> 'pricing' ->> 'elastic_unit_hour')::float8 * 720) AS ded) p"
    " LEFT JOIN u ON u.deployment_id = c.deployment_id AND u.minute = c.minute"
    " CROSS JOIN LATERAL (SELECT"
    "  coalesce(sum(k.units) FILTER (WHERE k.term_days = 30), 0) AS u30,"
    "  coalesce(sum(k.units) FILTER (WHERE k.term_days <> 30), 0) AS u7"
    "  FROM capacity_commitment k WHERE k.deployment_id = c.deployment_id"
    "  AND k.start <= c.minute AND k.\"end\" > c.minute) k"
    " WHERE c.deployment_id = ANY(CAST(:ids AS int4[])) AND c.minute >= :start"
    " AND c.minute < :until) "
    "SELECT deployment_id, day, count(*)::int, count(inp)::int,"
    " sum((u7 * (1 - d7) + u30 * (1 - d30) + greatest(0, cu - u7 - u30) * (1 - d7))"
    "  * eh / 60),"
    " sum(eu * eh / 60),"
    " coalesce(sum(CASE WHEN spill_mode = 'payg' AND demand > 0"
    "  THEN greatest(0, demand - (cu + eu)) / demand * (inp * pin + outp * pout) / 1e6"
    "  ELSE 0 END), 0),"
    " coalesce(sum((inp * pin + outp * pout) / 1e6), 0),"
    " coalesce(sum(demand), 0), coalesce(sum(greatest(0, demand - (cu + eu))), 0),"
    " coalesce(max(demand), 0), sum(cu)::int8, sum(eu)::int8, max(ded) "
    "FROM x GROUP BY deployment_id, day"
)


def _utc(at: dt.datetime) -> dt.datetime:
    if at.tzinfo is None:
        raise ValueError(f"cost periods must be timezone-aware, got {at!r}")
    return at.astimezone(dt.UTC)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def compute_days(
    conn: sa.Connection, deployment_ids: Sequence[int], start: dt.datetime, until: dt.datetime,
) -> list[CostDay]:
    """The cost of ``[start, until)`` from the raw ledger, one :class:`CostDay` per
    deployment and UTC day that has a ledger row (a partial day when the bounds cut it).
    Reads only; a few microseconds per ledger minute."""
    ids = sorted({int(i) for i in deployment_ids})
    start, until = _utc(start), _utc(until)
    if not ids or until <= start:
        return []
    rows = conn.execute(_COST_BY_DAY, {"ids": ids, "start": start, "until": until})
    out = []
    for r in rows:
        f = [float(v) for v in r[4:11]]
        out.append(CostDay(int(r[0]), r[1], int(r[2]), int(r[3]), f[0], f[1], f[2], f[3],
                           f[4], f[5], f[6], int(r[11]), int(r[12]), float(r[13])))
    return sorted(out, key=lambda d: (d.deployment_id, d.day))


def stored_days(
    conn: sa.Connection, deployment_ids: Sequence[int], first: dt.date, last: dt.date,
) -> list[CostDay]:
    """The rolled-up days in ``[first, last)``."""
    t = cost_day_table
    rows = conn.execute(
        sa.select(t.c.deployment_id, t.c.day, *[t.c[f] for f in _COST_FIELDS])
        .where(t.c.deployment_id.in_(list(deployment_ids)), t.c.day >= first, t.c.day < last)
        .order_by(t.c.deployment_id, t.c.day))
    return [CostDay(*row) for row in rows]


def roll_up(
    conn: sa.Connection, deployment_ids: Sequence[int], now: dt.datetime,
    *, since: dt.datetime | None = None,
) -> int:
    """Store the settled UTC days (ended ``SETTLE`` before ``now``) not rolled up yet, and
    recompute the last :data:`RECOMPUTE_DAYS` of them (late usage); in the caller's
    transaction. ``since`` bounds the search for missing days (default: the ledger's first
    minute). Deletes roll-ups older than :data:`KEEP_DAYS`. Returns the days written."""
    ids = sorted({int(i) for i in deployment_ids})
    now = _utc(now)
    last = (now - SETTLE).date()  # days before this one have ended SETTLE ago
    t = cost_day_table
    conn.execute(t.delete().where(t.c.day < now.date() - dt.timedelta(days=KEEP_DAYS)))
    if not ids:
        return 0
    if since is None:
        first_minute = conn.execute(sa.text(
            "SELECT min(minute) FROM capacity_minute "
            "WHERE deployment_id = ANY(CAST(:ids AS int4[]))"), {"ids": ids}).scalar()
        if first_minute is None:
            return 0
        since = first_minute
    first = max(_utc(since).date(), now.date() - dt.timedelta(days=KEEP_DAYS))
    if first >= last:
        return 0
    have = {(d.deployment_id, d.day) for d in stored_days(conn, ids, first, last)}
    recompute_from = last - dt.timedelta(days=RECOMPUTE_DAYS)
    todo = [(i, first + dt.timedelta(days=k)) for i in ids
            for k in range((last - first).days)]
    todo = [(i, day) for i, day in todo if (i, day) not in have or day >= recompute_from]
    if not todo:
        return 0
    lo, hi = min(day for _, day in todo), max(day for _, day in todo)
    wanted = set(todo)
    computed = [d for d in compute_days(conn, sorted({i for i, _ in todo}), _midnight(lo),
                                        _midnight(hi) + dt.timedelta(days=1))
                if (d.deployment_id, d.day) in wanted]
    if not computed:
        return 0
    stmt = pg.insert(t).values([
        {"deployment_id": d.deployment_id, "day": d.day, "computed_at": now,
         **{f: getattr(d, f) for f in _COST_FIELDS}} for d in computed])
    conn.execute(stmt.on_conflict_do_update(
        index_elements=[t.c.deployment_id, t.c.day],
        set_={f: stmt.excluded[f] for f in (*_COST_FIELDS, "computed_at")}))
    return len(computed)


def cost_days(
    conn: sa.Connection, deployment_ids: Sequence[int], start: dt.datetime, until: dt.datetime,
    *, now: dt.datetime,
) -> list[CostDay]:
    """The days of ``[start, until)``: whole days from ``cost_day`` where rolled up, the
    rest (today, partial edge days, days not rolled up yet) from the raw ledger. Reads
    only."""
    ids = sorted({int(i) for i in deployment_ids})
    start, until = _utc(start), _utc(until)
    first_whole = start.date() if start == _midnight(start.date()) else (
        start.date() + dt.timedelta(days=1))
    last_whole = min(until.date(), (_utc(now) - SETTLE).date())
    stored = ({(d.deployment_id, d.day): d
               for d in stored_days(conn, ids, first_whole, last_whole)}
              if first_whole < last_whole else {})
    out = dict(stored)
    spans = [(start, min(until, _midnight(first_whole))),
             (max(start, _midnight(last_whole)), until)]
    missing = sorted({day for i in ids
                      for day in (first_whole + dt.timedelta(days=k)
                                  for k in range(max(0, (last_whole - first_whole).days)))
                      if (i, day) not in stored})
    if missing:
        spans.append((_midnight(missing[0]), _midnight(missing[-1]) + dt.timedelta(days=1)))
    for lo, hi in spans:
        for d in compute_days(conn, ids, lo, hi):
            out.setdefault((d.deployment_id, d.day), d)
    return [out[k] for k in sorted(out)]


def month_to_date(
    conn: sa.Connection, deployment_ids: Sequence[int], now: dt.datetime,
) -> dict[int, CostTotals]:
    """Each deployment's account from the start of ``now``'s UTC month to ``now``."""
    now = _utc(now)
    start = _midnight(now.date().replace(day=1))
    days = cost_days(conn, deployment_ids, start, now, now=now)
    return {ident: totals(ident, [d for d in days if d.deployment_id == ident])
            for ident in sorted({int(i) for i in deployment_ids})}


@dataclass(frozen=True)
class StoredCommitment:
    """A commitment the provider reported for a deployment."""

    commitment_id: str
    units: int
    term_days: int
    start: dt.datetime
    end: dt.datetime


@dataclass(frozen=True)
class StoredChange:
    """An action of the journal and the plan's reason for it."""

    at: dt.datetime
    kind: str
    units: int | None
    target_units: int | None
    term_days: int | None
    state: str
    reason: str


@dataclass(frozen=True)
class History:
    """A deployment's ledger minutes over a period, with demand in units (``None`` where
    no source reported), its commitments and its journal's actions."""

    minutes: tuple[dt.datetime, ...]
    committed: tuple[int, ...]
    elastic: tuple[int, ...]
    demand: tuple[float | None, ...]
    commitments: tuple[StoredCommitment, ...]
    actions: tuple[StoredChange, ...]


def history(conn: sa.Connection, deployment_id: int, start: dt.datetime,
            until: dt.datetime) -> History:
    """What ``capsched report --deployment`` draws over ``[start, until)``; reads only."""
    start, until = _utc(start), _utc(until)
    params = {"id": deployment_id, "start": start, "until": until,
              "first_hour": start.replace(minute=0, second=0, microsecond=0)}
    rows = conn.execute(sa.text(
        "WITH u AS ("
        " SELECT m.minute, sum((t.inp + d.output_token_weight * t.outp) / d.unit_tpm) AS demand"
        " FROM usage_hour h JOIN deployment d ON d.id = h.deployment_id"
        " CROSS JOIN LATERAL unnest(h.input_tokens, h.output_tokens)"
        " WITH ORDINALITY AS t(inp, outp, i)"
        " CROSS JOIN LATERAL (SELECT h.hour + make_interval(mins => t.i::int - 1) AS minute) m"
        " WHERE h.deployment_id = :id AND h.hour >= :first_hour AND h.hour < :until"
        " AND t.inp >= 0 GROUP BY m.minute) "
        "SELECT c.minute, c.committed_units, c.elastic_units, u.demand "
        "FROM capacity_minute c LEFT JOIN u ON u.minute = c.minute "
        "WHERE c.deployment_id = :id AND c.minute >= :start AND c.minute < :until "
        "ORDER BY c.minute"), params).all()
    t = capacity_commitment_table
    held = conn.execute(
        sa.select(t.c.commitment_id, t.c.units, t.c.term_days, t.c.start, t.c.end)
        .where(t.c.deployment_id == deployment_id, t.c.start < until, t.c.end > start)
        .order_by(t.c.start)).all()
    actions = conn.execute(sa.text(
        "SELECT coalesce(effective_at, decided_at), kind, units, target_units, term_days,"
        " state, coalesce(reason, '') FROM action WHERE deployment_id = :id"
        " AND decided_at >= :start AND decided_at < :until"
        " AND state NOT IN ('superseded') ORDER BY decided_at, id"), params).all()
    return History(
        minutes=tuple(r[0] for r in rows), committed=tuple(int(r[1]) for r in rows),
        elastic=tuple(int(r[2]) for r in rows),
        demand=tuple(None if r[3] is None else float(r[3]) for r in rows),
        commitments=tuple(StoredCommitment(*r) for r in held),
        actions=tuple(StoredChange(*r) for r in actions))
