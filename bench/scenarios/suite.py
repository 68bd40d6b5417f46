"""The scenario suite of issue #9: deterministic traffic shapes and faults, one backtest each.

Every scenario is a per-minute usage trace (written as the usage CSV ``capsched ingest``
and ``capsched backtest`` read), a deployment config (TOML) and a billed window. Traces
are generated here with seeded numpy, no network, no file outside the repository.

Sources (adapted, not read at run time): the bug cases of the QA round on commit 1fa750a
(``cases/_lib/gen.py`` for the token split and the daily shape, ``cases/*/gen.py`` for
each situation, ``cases/_lib/base.toml`` for the prices, ``cases/bursty/gen_bursty.py``
for the idle-heavy traffic). The field case is ``examples/field_case/generate.py``; the
ServeGen traces and their config are ``examples/traces/servegen_*.csv`` and
``examples/backtests/servegen.toml`` (see ``examples/traces/SOURCES.md``).

Demand is in provisioned units: ``units = (input + 3 * output) / unit_tpm``; the synthetic
traces carry exactly ``round(units * unit_tpm)`` weighted tokens a minute (output = a
seventh of them, as in the cases' generator), so a 3-unit minute is 3.0 units exactly.

    from bench.scenarios.suite import SCENARIOS, build
    built = build(SCENARIOS["level-up-2x"], Path("/tmp/x"), quick=True)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import numpy as np
import numpy.typing as npt

from scheduler.planning.simulator import CapacityWindow, ProviderCapacity

ROOT = Path(__file__).resolve().parents[2]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
UTC = dt.UTC
DAY = 1440

#: cases/_lib/base.toml: the field case's prices (docs/economics.md), unit_tpm 2,500.
BASE = {
    "unit_tpm": 2500,
    "output_token_weight": 3,
    "min_units": 0,
    "max_units": 50,
    "scale_up_lead_minutes": 5,
    "min_hold_minutes": 60,
    "spill": "payg",
    "max_spill_fraction": 0.01,
    "timezone": "UTC",
}
PRICING = """[deployment.pricing]
elastic_unit_hour = 38.02638888888889
commit_7d_discount = 0.15
commit_30d_discount = 0.30
dedicated_unit_month = 27379
payg_input_per_mtok = 2.50
payg_output_per_mtok = 10.00
"""


@dataclass(frozen=True)
class Trace:
    """A synthetic trace: ``units[k]`` is the demand of minute ``start + k`` (NaN: no row).

    ``tokens`` (input, output, requests), when given, replaces the units-to-tokens split
    (the bursty generator draws tokens directly).
    """

    start: dt.datetime
    units: FloatArray
    tokens: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]] | None = None


@dataclass(frozen=True)
class Scenario:
    """One row of the suite.

    ``trace`` builds the usage (or ``usage_file`` names a file in the repo); ``window`` is
    the billed ``[start, end)`` (None: the trace's bounds) and ``quick`` the short variant's
    window (tests and ``--quick``); ``deployment`` overrides :data:`BASE`; ``calendar``
    declares (date, multiplier) days; ``config_file`` uses a config from the repo instead.
    """

    name: str
    kind: str
    about: str
    window: tuple[dt.datetime | None, dt.datetime | None]
    quick: tuple[dt.datetime | None, dt.datetime | None]
    trace: Callable[[], Trace] | None = None
    usage_file: str | None = None
    config_file: str | None = None
    deployment_name: str = "bot"
    deployment: dict[str, object] = field(default_factory=dict)
    calendar: tuple[tuple[dt.date, float], ...] = ()
    #: ``[providers.simulated]`` keys of the config (``available_units``,
    #: ``supported_terms``): the provider's capacity pool, as the daemon would meet it.
    provider: dict[str, object] = field(default_factory=dict)
    #: ``(start, end, units)``: the pool holds at most ``units`` over ``[start, end)`` (a
    #: regional outage; backtest only, the simulated provider's pool is constant).
    capacity_windows: tuple[tuple[dt.datetime, dt.datetime, int], ...] = ()


@dataclass(frozen=True)
class Built:
    """A scenario written to disk: the usage file, the config and the window to bill."""

    scenario: Scenario
    usage: Path
    config: Path
    deployment: str
    start: dt.datetime | None
    end: dt.datetime | None


# ----------------------------------------------------------------------------- shapes


def minutes_utc(start: dt.datetime, n: int) -> npt.NDArray[np.datetime64]:
    t0 = np.datetime64(start.astimezone(UTC).replace(tzinfo=None), "m")
    return t0 + np.arange(n).astype("timedelta64[m]")


def local_hours(start: dt.datetime, n: int, tz: str) -> FloatArray:
    """Local wall-clock hour (fractional) of each minute, DST-aware (zoneinfo)."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    # The UTC offset changes at most a few times: compute it per hour, not per minute.
    hours = (n + 59) // 60 + 1
    offs = np.array([(start + dt.timedelta(hours=h)).astimezone(zone).utcoffset()
                     .total_seconds() / 60 for h in range(hours)])  # type: ignore[union-attr]
    k = np.arange(n)
    first_min = start.astimezone(UTC).hour * 60 + start.astimezone(UTC).minute
    # Offsets change on the hour in every zone used here, so the hour's offset is exact.
    local_min = (first_min + k + offs[k // 60]) % DAY
    return np.asarray(local_min / 60.0, np.float64)


def daily(start: dt.datetime, n: int, base: float = 1.0, peak: float = 3.0,
          start_h: float = 8, end_h: float = 18, tz: str = "UTC") -> FloatArray:
    """cases/_lib/gen.py daily_shape: ``peak`` from start_h to end_h local, ``base`` else."""
    h = local_hours(start, n, tz)
    return np.where((h >= start_h) & (h < end_h), peak, base).astype(np.float64)


def index_of(start: dt.datetime, t: dt.datetime) -> int:
    return int((t - start).total_seconds() // 60)


def tokens_for(units: FloatArray, unit_tpm: float) -> tuple[npt.NDArray[np.int64], ...]:
    """cases/_lib/gen.py units_to_tokens: input + 3 * output = round(units * unit_tpm)."""
    w = np.rint(np.nan_to_num(units) * unit_tpm).astype(np.int64)
    out = w // 7
    inp = w - 3 * out
    req = np.maximum(0, np.rint(np.nan_to_num(units) * 20)).astype(np.int64)
    return inp, out, req


def write_usage(path: Path, trace: Trace, unit_tpm: float) -> None:
    """Write the usage CSV (minute_utc,input_tokens,output_tokens,requests); NaN = no row."""
    n = trace.units.size
    inp, out, req = trace.tokens if trace.tokens is not None else tokens_for(trace.units,
                                                                            unit_tpm)
    keep = np.isfinite(trace.units)
    stamps = np.datetime_as_string(minutes_utc(trace.start, n), unit="m")
    lines = ["minute_utc,input_tokens,output_tokens,requests"]
    lines += [f"{s}Z,{a},{b},{c}" for s, a, b, c in
              zip(stamps[keep], inp[keep], out[keep], req[keep], strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


# ------------------------------------------------------------------------- generators


def tidal(days: int = 28, start: dt.datetime = dt.datetime(2026, 3, 2, tzinfo=UTC),
          base: float = 1.0, peak: float = 3.0) -> Trace:
    """The field case's shape: ``base`` units at night, ``peak`` 08:00-18:00 UTC."""
    return Trace(start, daily(start, days * DAY, base, peak))


def level_shift(factor: float, at: dt.datetime) -> Trace:
    """cases/level-shift/gen.py: 2/6 units from 2026-02-23, times ``factor`` from ``at``."""
    start = dt.datetime(2026, 2, 23, tzinfo=UTC)
    n = 35 * DAY
    u = daily(start, n, 2.0, 6.0)
    u[index_of(start, at):] *= factor
    return Trace(start, u)


def reported_zeros() -> Trace:
    """cases/drop-to-zero/gen.py: 14 days of 1/3 units, then 7 days of rows with 0 tokens."""
    start = dt.datetime(2026, 3, 2, tzinfo=UTC)
    u = daily(start, 21 * DAY)
    u[14 * DAY:] = 0.0
    return Trace(start, u)


def stale_feed() -> Trace:
    """cases/stale-usage/gen.py: 1/3 units; the feed stops for good at 2026-03-16 09:00."""
    start = dt.datetime(2026, 3, 2, tzinfo=UTC)
    stop = dt.datetime(2026, 3, 16, 9, tzinfo=UTC)
    return Trace(start, daily(start, index_of(start, stop)))


def dst(tz: str, change: dt.date) -> Trace:
    """cases/dst-shift/gen.py: 1 unit at night, 4 units 08:00-18:00 *local*, 24 days
    around a daylight-saving change (3 weeks before it, 10 days after)."""
    start = dt.datetime(change.year, change.month, change.day, tzinfo=UTC) - dt.timedelta(days=21)
    return Trace(start, daily(start, 31 * DAY, 1.0, 4.0, tz=tz))


def missing(fraction: float, seed: int = 7, daily_hole: bool = False) -> Trace:
    """cases/sparse-missing/gen*.py: 21 days of 1/3 units, ``fraction`` of the minutes
    absent at random (seeded), optionally 12:00-12:45 UTC absent every day."""
    start = dt.datetime(2026, 3, 2, tzinfo=UTC)
    n = 21 * DAY
    u = daily(start, n)
    rng = np.random.default_rng(seed)
    drop = rng.random(n) < fraction
    if daily_hole:
        m = np.arange(n) % DAY
        drop |= (m >= 720) & (m < 765)
    u[drop] = np.nan
    return Trace(start, u)


def launch_day(day: dt.date, factor: float = 3.0) -> Trace:
    """cases/one-off-spike/gen.py: 1/3 units from 2026-02-16, ``factor`` x on ``day``."""
    start = dt.datetime(2026, 2, 16, tzinfo=UTC)
    u = daily(start, 37 * DAY)
    a = index_of(start, dt.datetime(day.year, day.month, day.day, tzinfo=UTC))
    u[a:a + DAY] *= factor
    return Trace(start, u)


def short_history(minutes: int) -> Trace:
    """cases/short-history/gen.py: a new deployment, 2 units, 4 units from half-way
    (a one-row trace when ``minutes`` is 1); longer histories carry the daily 1/3 shape
    times 1.5 after the first half."""
    start = dt.datetime(2026, 3, 16, 9, tzinfo=UTC)
    if minutes <= 180:
        u = np.where(np.arange(minutes) < max(1, minutes // 2), 2.0, 4.0).astype(np.float64)
        return Trace(start, u)
    return Trace(start, daily(start, minutes))


def bursty(days: int, seed: int) -> Trace:
    """cases/bursty/gen_bursty.py (verbatim draws): idle minutes, heavy-tailed bursts and a
    weak daily cycle, from Monday 2024-06-03; tokens drawn directly (unit_tpm 2,000)."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 6, 3, tzinfo=UTC)
    n = days * DAY
    m = np.arange(n)
    rate = 0.6 + 0.4 * np.sin(2 * np.pi * (m % DAY) / DAY - 1.5)
    req = rng.poisson(rate * rng.pareto(1.6, n).clip(0, 12))
    inp = (req * rng.lognormal(6.5, 1.0, n)).astype(np.int64)
    out = (req * rng.lognormal(5.2, 0.8, n)).astype(np.int64)
    units = (inp + 3 * out) / 2000.0
    return Trace(start, units.astype(np.float64), (inp, out, req.astype(np.int64)))


# -------------------------------------------------------------------------- the suite


def _d(y: int, m: int, d: int, h: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, h, tzinfo=UTC)


def _all() -> list[Scenario]:
    s: list[Scenario] = [
        Scenario("tidal", "tidal", "1/3 units 08-18 UTC, steady (control)",
                 (_d(2026, 3, 23), _d(2026, 3, 26)), (_d(2026, 3, 23), _d(2026, 3, 25)),
                 trace=tidal),
    ]
    for name, factor, at in (
        ("level-up-2x", 2.0, _d(2026, 3, 16)),
        ("level-up-3x-noon", 3.0, _d(2026, 3, 16, 12)),
        ("level-down-0.5x", 0.5, _d(2026, 3, 16)),
        ("level-down-0.25x-10h", 0.25, _d(2026, 3, 16, 10)),
    ):
        s.append(Scenario(name, "level-shift",
                          f"2/6 units, x{factor:g} for good from {at:%m-%d %H:%M} UTC",
                          (_d(2026, 3, 15), _d(2026, 3, 18)),
                          (_d(2026, 3, 15, 20), _d(2026, 3, 16, 20)),
                          trace=partial(level_shift, factor, at)))
    s += [
        Scenario("zeros", "reported-zeros", "1/3 units, then rows of 0 tokens from 03-16",
                 (_d(2026, 3, 15), _d(2026, 3, 18)), (_d(2026, 3, 15, 18), _d(2026, 3, 16, 14)),
                 trace=reported_zeros),
        Scenario("stale", "stale-feed", "1/3 units; no rows after 03-16 09:00 (billed on)",
                 (_d(2026, 3, 15), _d(2026, 3, 18, 12)), (_d(2026, 3, 16, 6), _d(2026, 3, 17, 2)),
                 trace=stale_feed),
    ]
    for name, tz, change in (
        ("dst-berlin-spring", "Europe/Berlin", dt.date(2026, 3, 29)),
        ("dst-berlin-autumn", "Europe/Berlin", dt.date(2026, 10, 25)),
        ("dst-newyork-spring", "America/New_York", dt.date(2026, 3, 8)),
        ("dst-newyork-autumn", "America/New_York", dt.date(2026, 11, 1)),
    ):
        c0 = dt.datetime(change.year, change.month, change.day, tzinfo=UTC)
        s.append(Scenario(name, "dst", f"1/4 units 08-18 {tz} local, DST change {change}",
                          (c0 - dt.timedelta(days=1), c0 + dt.timedelta(days=2)),
                          (c0, c0 + dt.timedelta(hours=24)),
                          trace=partial(dst, tz, change),
                          deployment={"timezone": tz}))
    for name, frac, hole in (("missing-0pct", 0.0, False), ("missing-1pct", 0.01, False),
                             ("missing-5pct", 0.05, False), ("missing-20pct", 0.20, True)):
        about = ("complete control of the missing-minute rows" if frac == 0 else
                 f"1/3 units, {frac:.0%} of minutes absent"
                 + (" + 12:00-12:45 daily" if hole else ""))
        s.append(Scenario(name, "missing", about,
                          (_d(2026, 3, 16), _d(2026, 3, 19)), (_d(2026, 3, 16), _d(2026, 3, 17)),
                          trace=partial(missing, frac, daily_hole=hole)))
    s += [
        Scenario("launch-past-undeclared", "launch-day",
                 "1/3 units, one 3x day on 03-10 (before the window), not declared",
                 (_d(2026, 3, 11), _d(2026, 3, 14)), (_d(2026, 3, 11), _d(2026, 3, 11, 6)),
                 trace=lambda: launch_day(dt.date(2026, 3, 10))),
        Scenario("launch-past-declared", "launch-day",
                 "the same, 03-10 declared in the calendar (multiplier 3)",
                 (_d(2026, 3, 11), _d(2026, 3, 14)), (_d(2026, 3, 11), _d(2026, 3, 11, 6)),
                 trace=lambda: launch_day(dt.date(2026, 3, 10)),
                 calendar=((dt.date(2026, 3, 10), 3.0),)),
        Scenario("launch-past-week-on", "launch-day",
                 "the same undeclared 03-10 day, a week on: 03-17 follows the usual shape",
                 (_d(2026, 3, 16), _d(2026, 3, 19)), (_d(2026, 3, 17), _d(2026, 3, 17, 20)),
                 trace=lambda: launch_day(dt.date(2026, 3, 10))),
        Scenario("launch-ahead-declared", "launch-day",
                 "1/3 units, a 3x day on 03-17 declared ahead in the calendar",
                 (_d(2026, 3, 16), _d(2026, 3, 19)), (_d(2026, 3, 16, 12), _d(2026, 3, 18)),
                 trace=lambda: launch_day(dt.date(2026, 3, 17)),
                 calendar=((dt.date(2026, 3, 17), 3.0),)),
        Scenario("launch-ahead-undeclared", "launch-day",
                 "1/3 units, an unannounced 3x day on 03-17",
                 (_d(2026, 3, 16), _d(2026, 3, 19)), (_d(2026, 3, 16, 12), _d(2026, 3, 18)),
                 trace=lambda: launch_day(dt.date(2026, 3, 17))),
    ]
    for name, minutes in (("short-1row", 1), ("short-90min", 90), ("short-6h", 360),
                          ("short-2d", 2 * DAY)):
        s.append(Scenario(name, "short-history", f"a new deployment, {minutes} minute(s) of "
                          "history, billed from its first minute",
                          (None, None), (None, None), trace=partial(short_history, minutes)))
    for seed in (1, 2, 3):
        s.append(Scenario(f"bursty-seed{seed}", "bursty",
                          f"idle-heavy heavy-tailed traffic (gen_bursty 7 {seed}), 3 days",
                          (_d(2024, 6, 5), _d(2024, 6, 8)), (_d(2024, 6, 5), _d(2024, 6, 6)),
                          trace=partial(bursty, 7, seed),
                          deployment={"unit_tpm": 2000, "max_units": 400}))
    s.append(Scenario("field-case", "field-case", "docs/economics.md worked example "
                      "(examples/field_case)",
                      (_d(2026, 3, 9), _d(2026, 4, 8)), (_d(2026, 3, 9), _d(2026, 3, 10)),
                      usage_file="field_case", config_file="examples/field_case/capsched.toml",
                      deployment_name="support-bot"))
    for tr in ("m-small", "m-mid", "m-large"):
        s.append(Scenario(f"servegen-{tr}", "servegen", f"examples/traces/servegen_{tr}.csv",
                          (_d(2025, 1, 13), None), (_d(2025, 1, 13), _d(2025, 1, 14)),
                          usage_file=f"examples/traces/servegen_{tr}.csv",
                          config_file="examples/backtests/servegen.toml", deployment_name=tr))
    return s


def _capacity() -> list[Scenario]:
    """cases/out-of-capacity: the provider cannot grant all the peak needs (1/3 units).

    Constant: 2 of the 3 units, no commitment on offer (the case as filed). Two outage
    shapes with every term on offer: none at all for 6 hours from before the peak (the
    scale-up is refused, the committed unit serves alone), and a pool cut to 1 unit from
    the night until mid-peak (part of the scale-up granted, the rest asked for again).
    """
    day = _d(2026, 3, 17)
    hours = dt.timedelta(hours=1)
    return [
        Scenario("capacity-2-of-3", "partial-capacity",
                 "1/3 units; the provider grants 2 units at most, sells no commitment",
                 (_d(2026, 3, 16), _d(2026, 3, 19)), (day + 6 * hours, day + 20 * hours),
                 trace=partial(tidal, 21), provider={"available_units": 2,
                                                    "supported_terms": []}),
        Scenario("capacity-outage-6h", "partial-capacity",
                 "1/3 units; no unit to be had 03-17 07:00-13:00 UTC (terms on offer)",
                 (_d(2026, 3, 16), _d(2026, 3, 19)), (day + 6 * hours, day + 20 * hours),
                 trace=partial(tidal, 21),
                 capacity_windows=((day + 7 * hours, day + 13 * hours, 0),)),
        Scenario("capacity-cut-to-1", "partial-capacity",
                 "1/3 units; the pool holds 1 unit 03-17 02:00-14:00 UTC (terms on offer)",
                 (_d(2026, 3, 16), _d(2026, 3, 19)), (day + 6 * hours, day + 20 * hours),
                 trace=partial(tidal, 21),
                 capacity_windows=((day + 2 * hours, day + 14 * hours, 1),)),
    ]


SCENARIOS: dict[str, Scenario] = {sc.name: sc for sc in [*_all(), *_capacity()]}


def config_text(sc: Scenario) -> str:
    """The TOML of a synthetic scenario's one deployment (``bot``)."""
    values = {**BASE, **sc.deployment}
    lines = ["[[deployment]]", 'name = "bot"', 'provider = "simulated"']
    for k, v in values.items():
        lines.append(f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}")
    text = "\n".join(lines) + "\n\n" + PRICING
    for day, mult in sc.calendar:
        text += f"\n[[deployment.calendar]]\ndate = {day.isoformat()}\nmultiplier = {mult}\n"
    if sc.provider:
        text = "[providers.simulated]\n" + "".join(
            f"{k} = {list(v) if isinstance(v, list | tuple) else v}\n"
            for k, v in sc.provider.items()) + "\n" + text
    return text


def provider_capacity(built: Built) -> ProviderCapacity | None:
    """The provider pool the scenario's backtest runs against: ``[providers.<name>]`` of
    its config (as ``capsched backtest`` would read it) plus its outage windows."""
    from scheduler.config import load_config
    from scheduler.planning.backtest import capacity_from_settings

    cfg = load_config(built.config)
    cap = capacity_from_settings(cfg.providers, cfg.deployment(built.deployment))
    windows = tuple(CapacityWindow(a, b, u) for a, b, u in built.scenario.capacity_windows)
    if windows:
        cap = replace(cap or ProviderCapacity(), windows=windows)
    return cap


def build(sc: Scenario, workdir: Path, *, quick: bool = False) -> Built:
    """Write the scenario's usage file and config under ``workdir``; return where."""
    workdir.mkdir(parents=True, exist_ok=True)
    start, end = sc.quick if quick else sc.window
    if sc.usage_file == "field_case":
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            "field_case_generate", ROOT / "examples" / "field_case" / "generate.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        usage = workdir / "field_case.csv"
        usage.write_text("\n".join(mod.rows()) + "\n", encoding="ascii")
    elif sc.usage_file is not None:
        usage = ROOT / sc.usage_file
    else:
        assert sc.trace is not None
        usage = workdir / f"{sc.name}.csv"
        unit_tpm = float(sc.deployment.get("unit_tpm", BASE["unit_tpm"]))  # type: ignore[arg-type]
        write_usage(usage, sc.trace(), unit_tpm)
    if sc.config_file is not None:
        config = ROOT / sc.config_file
    else:
        config = workdir / f"{sc.name}.toml"
        config.write_text(config_text(sc), encoding="utf-8")
    return Built(sc, usage, config, sc.deployment_name, start, end)
