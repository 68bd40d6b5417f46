"""Draw a :class:`~scheduler.report.data.ReportData` with matplotlib (Agg, no display).

:func:`html` writes one self-contained page: the totals table, four figures inlined as
base64 PNG data URIs (demand against capacity by tier, spill per day, the commitment
ladder, daily cost against dedicated, pay-as-you-go and the hindsight optimum) and the
table of changes with the plan's reasons. Nothing is fetched when it is viewed: no
script, no stylesheet or font from the network. :func:`png` writes one summary figure.

Totals are printed from the data as they are (``summary.json`` for a backtest) rounded
to the cent, in elements with ids (``total-cost``, ``total-dedicated``...) a test can read.
"""

from __future__ import annotations

import base64
import datetime as dt
import html as html_lib
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from scheduler.report import text
from scheduler.report.data import FloatArray, ReportData

#: Tier colours (matplotlib's tab10): the screenshot test looks for them.
COLORS = {"committed": "#1f77b4", "elastic": "#2ca02c", "demand": "#d62728",
          "spill": "#ff7f0e", "dedicated": "#7f7f7f", "payg": "#9467bd",
          "hindsight": "#17becf"}
#: Changes listed in the page at most (the rest are counted).
MAX_CHANGES = 400
#: Minutes per point of the demand/capacity plot at most: demand is the bin's maximum,
#: capacity the bin's minimum (a dip below demand stays visible).
MAX_POINTS = 4000


def summary_line(data: ReportData) -> str:
    """One line for a terminal: cost, the baselines and the spill against its bound."""
    return text.summary_line(data.deployment, data.start, data.end, data.totals)


def _binned(data: ReportData) -> tuple[np.ndarray, FloatArray, FloatArray, FloatArray]:
    n = data.minutes.size
    step = max(1, -(-n // MAX_POINTS))
    m = -(-n // step) * step
    pad = m - n

    def fold(values: FloatArray, how: str) -> FloatArray:
        v = np.concatenate([values, np.full(pad, np.nan)]).reshape(-1, step)
        out: FloatArray = (np.nanmax(v, axis=1) if how == "max" else np.nanmin(v, axis=1))
        return out

    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            t = data.minutes[::step].astype("datetime64[m]").astype(dt.datetime)
            return (t, fold(data.demand, "max"), fold(data.committed, "min"),
                    fold(data.elastic, "min"))


def _capacity(ax: Axes, data: ReportData) -> None:
    t, demand, committed, elastic = _binned(data)
    ax.fill_between(t, 0, committed, step="post", color=COLORS["committed"], alpha=0.55,
                    label="committed", linewidth=0)
    ax.fill_between(t, committed, committed + elastic, step="post", color=COLORS["elastic"],
                    alpha=0.55, label="elastic", linewidth=0)
    ax.plot(t, demand, color=COLORS["demand"], linewidth=0.8, label="demand")
    ax.set_ylabel("units")
    ax.set_title("Demand against capacity by tier")
    ax.legend(loc="upper right", fontsize=8)


def _spill(ax: Axes, data: ReportData) -> None:
    days = data.minutes.astype("datetime64[D]")
    unique, index = np.unique(days, return_inverse=True)
    spilled = np.bincount(index, weights=(np.nan_to_num(data.spill) > 1e-9).astype(float),
                          minlength=unique.size)
    ax.bar(unique.astype(dt.date), spilled, color=COLORS["spill"], width=0.8)
    ax.set_ylabel("minutes with spill")
    total = int(spilled.sum())
    ax.set_title(f"Spill minutes per day ({total} in all)")
    if total == 0:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, "no spill", transform=ax.transAxes, ha="center", va="center",
                color=COLORS["spill"])


def _ladder(ax: Axes, data: ReportData) -> None:
    t = data.minutes.astype("datetime64[m]")
    bottom = np.zeros(t.size)
    colors = {7: "#aec7e8", 30: COLORS["committed"]}
    for term in sorted({r.term_days for r in data.ladder}):
        units = np.zeros(t.size)
        for r in (r for r in data.ladder if r.term_days == term):
            a = np.datetime64(r.start.astimezone(dt.UTC).replace(tzinfo=None), "m")
            units += ((t >= a) & (t < a + np.timedelta64(r.term_days * 1440, "m"))) * r.units
        x = t.astype(dt.datetime)
        ax.fill_between(x, bottom, bottom + units, step="post", linewidth=0,
                        color=colors.get(term, "#c5b0d5"), label=f"{term}-day")
        bottom = bottom + units
    if not data.ladder:
        ax.set_ylim(0, 1)
        ax.text(0.5, 0.5, "no commitments", transform=ax.transAxes, ha="center",
                va="center")
    else:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_ylabel("committed units")
    ax.set_title("Commitment ladder")


def _daily_cost(ax: Axes, data: ReportData) -> None:
    x = np.array([np.datetime64(d.day, "D") for d in data.days])
    committed = np.array([d.committed for d in data.days])
    elastic = np.array([d.elastic for d in data.days])
    spill = np.array([d.spill for d in data.days])
    ax.bar(x, committed, color=COLORS["committed"], label="committed", width=0.8)
    ax.bar(x, elastic, bottom=committed, color=COLORS["elastic"], label="elastic", width=0.8)
    ax.bar(x, spill, bottom=committed + elastic, color=COLORS["spill"], label="spill",
           width=0.8)
    ax.plot(x, [d.dedicated for d in data.days], color=COLORS["dedicated"], linewidth=2,
            drawstyle="steps-mid", label="dedicated at peak")
    ax.plot(x, [d.payg for d in data.days], color=COLORS["payg"], linewidth=2,
            drawstyle="steps-mid", label="pay-as-you-go")
    if any(d.hindsight is not None for d in data.days):
        ax.plot(x, [np.nan if d.hindsight is None else d.hindsight for d in data.days],
                color=COLORS["hindsight"], linewidth=2, linestyle="--",
                drawstyle="steps-mid", label="hindsight optimum (average)")
    ax.set_ylabel("$ per day")
    ax.set_title("Daily cost against the baselines")
    ax.legend(loc="upper right", fontsize=8, ncol=2)


def _figure(draw: object, data: ReportData, size: tuple[float, float]) -> Figure:
    fig, ax = plt.subplots(figsize=size, dpi=100, layout="constrained")
    draw(ax, data)  # type: ignore[operator]
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return fig


def _data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"${value:,.2f}"


def html(data: ReportData, path: Path) -> Path:
    """Write the self-contained HTML report to ``path`` (parents created); return it."""
    figures = [("capacity", "Demand against capacity by tier", _capacity, (12, 4)),
               ("spill", "Spill minutes per day", _spill, (12, 2.6)),
               ("ladder", "Commitment ladder", _ladder, (12, 2.6)),
               ("daily-cost", "Daily cost against the baselines", _daily_cost, (12, 4))]
    images = "\n".join(
        f'<figure id="fig-{key}"><img alt="{html_lib.escape(title)}" '
        f'src="{_data_uri(_figure(draw, data, size))}"></figure>'
        for key, title, draw, size in figures)
    t = data.totals
    rows = [("total-cost", "Total (committed + elastic + spill)", t.total),
            ("total-committed", "Committed", t.committed),
            ("total-elastic", "Elastic", t.elastic), ("total-spill", "Spill", t.spill),
            ("total-dedicated", "Dedicated at peak", t.dedicated),
            ("total-payg", "Pay-as-you-go", t.payg)]
    if t.hindsight is not None:
        rows.append(("total-hindsight", "Hindsight optimum", t.hindsight))
    if t.commitment_tail is not None:
        rows.append(("total-commitment-tail", "Commitment tail (after the window)",
                     t.commitment_tail))
    table = "\n".join(f'<tr><th>{label}</th><td id="{key}" class="money">{_money(v)}</td></tr>'
                      for key, label, v in rows)
    spill = ("n/a" if t.spill_fraction is None else f"{100 * t.spill_fraction:.4g}%")
    bound = ("" if t.max_spill_fraction is None
             else f" (bound {100 * t.max_spill_fraction:.4g}%)")
    changes = data.changes[:MAX_CHANGES]
    change_rows = "\n".join(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            f"{c.at:%Y-%m-%d %H:%MZ}", html_lib.escape(c.kind),
            "" if c.target_units is None and c.units is None else html_lib.escape(
                f"target {c.target_units}" if c.target_units is not None
                else f"{c.units} units" + (f" x {c.term_days} d" if c.term_days else "")),
            html_lib.escape(c.reason))
        for c in changes)
    more = (f"<p>{len(data.changes) - len(changes)} more changes not listed.</p>"
            if len(data.changes) > len(changes) else "")
    notes = "".join(f"<p class=note>{html_lib.escape(n)}</p>" for n in data.notes)
    title = html_lib.escape(f"capsched report: {data.deployment} ({data.source})")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1250px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; }}
th, td {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }}
td.money {{ text-align: right; font-variant-numeric: tabular-nums; }}
figure {{ margin: 0.5em 0; }} img {{ max-width: 100%; }}
.note {{ color: #555; font-size: 0.9em; }}
</style></head><body>
<h1>{title}</h1>
<p id="summary-line">{html_lib.escape(summary_line(data))}</p>
<p>Window {data.start:%Y-%m-%d %H:%MZ} to {data.end:%Y-%m-%d %H:%MZ};
spill fraction <span id="spill-fraction">{spill}</span>{bound}.</p>
<table id="totals">{table}</table>
{images}
{notes}
<h2>Changes and the plan's reasons</h2>
<table id="changes"><tr><th>effective (UTC)</th><th>kind</th><th>units</th><th>reason</th></tr>
{change_rows}
</table>
{more}
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path


def png(data: ReportData, path: Path) -> Path:
    """Write one summary figure (capacity, daily cost, ladder) as PNG to ``path``."""
    fig, axes = plt.subplots(3, 1, figsize=(12, 10), dpi=100, layout="constrained",
                             gridspec_kw={"height_ratios": [3, 3, 1.5]})
    _capacity(axes[0], data)
    _daily_cost(axes[1], data)
    _ladder(axes[2], data)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(summary_line(data), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
