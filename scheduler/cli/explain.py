"""``capsched explain --deployment X --at T``: why the deployment held what it held at T,
from the stored plan and forecast (quantiles, rule, headroom, reasons). Reads only."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from scheduler.cli import main as cli
from scheduler.store import deployments as deployment_store
from scheduler.store.explain import Explanation, explain_at

#: Plan reasons shown around T: the latest ones at or before it, and the next one after.
REASONS_BEFORE = 3


def add_commands(sub: Any) -> None:
    p = sub.add_parser("explain", help="why a deployment's capacity was what it was at a "
                                       "minute: the stored plan, forecast and reasons")
    p.add_argument("--deployment", required=True)
    p.add_argument("--at", required=True, type=cli.parse_time, help="the minute (UTC)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(handler=cmd_explain)


def _reasons_near(reasons: tuple[dict[str, Any], ...], at: dt.datetime) -> list[dict[str, Any]]:
    def when(r: dict[str, Any]) -> dt.datetime:
        try:
            return dt.datetime.fromisoformat(str(r.get("at")))
        except ValueError:
            return dt.datetime.min.replace(tzinfo=dt.UTC)

    before = [r for r in reasons if when(r) <= at][-REASONS_BEFORE:]
    after = [r for r in reasons if when(r) > at][:1]
    return before + after


def render_text(name: str, e: Explanation) -> str:
    lines = [f"{name} at {e.at:%Y-%m-%d %H:%MZ}"]
    s = e.settings
    if e.committed_units is None:
        lines.append("  held: no ledger row (the daemon did not observe this minute)")
    else:
        lines.append(f"  held: {e.committed_units} committed + {e.elastic_units} elastic = "
                     f"{e.committed_units + (e.elastic_units or 0)} units")
    if e.demand_units is None:
        lines.append("  demand: not reported")
    else:
        cap = (e.committed_units or 0) + (e.elastic_units or 0)
        lines.append(f"  demand: {e.demand_units:.3f} units; spill "
                     f"{max(0.0, e.demand_units - cap):.3f} units")
    lines.append(f"  bound: max_spill_fraction {s.get('max_spill_fraction')}, lead "
                 f"{s.get('scale_up_lead_minutes')} min, min hold {s.get('min_hold_minutes')}"
                 f" min, spill {s.get('spill')}")
    p = e.plan
    if p is None:
        lines.append("  plan: none stored at or before this minute")
    else:
        lines.append(f"  plan #{p.plan_id} ({p.mode}) made {p.as_of:%Y-%m-%d %H:%MZ}"
                     f"{' [held: stale usage]' if p.held else ''}: expected spill "
                     f"{100 * p.expected_spill_fraction:.3f}%, expected cost "
                     f"${p.expected_total_cost:,.2f} over its horizon")
        if p.interval_start is None:
            lines.append("    no interval of this plan covers the minute (beyond its horizon)")
        else:
            q = ", ".join(f"q{k}={v:.3f}" for k, v in sorted(
                (p.demand_quantiles or {}).items(), key=lambda kv: float(kv[0])))
            lines.append(f"    interval {p.interval_start:%H:%M}-{p.interval_end:%H:%MZ}: "
                         f"{p.committed_units} committed + elastic target {p.elastic_target}"
                         f"; planned-on demand quantiles (interval max) {q}; expected spill "
                         f"{p.expected_spill_units or 0:.3f} units")
        for r in _reasons_near(p.reasons, e.at):
            # Reasons store the quantile at full precision (e.g. an economic quantile of
            # 0.28571428); four digits are all a reader can use.
            value = r.get("quantile")
            quant = "" if value is None else (
                f" q={value:.4g}" if isinstance(value, (int, float)) else f" q={value}")
            lines.append(f"    reason at {r.get('at')}: [{r.get('tier')}] {r.get('rule')}"
                         f"{quant}: {r.get('detail')}")
    f = e.forecast
    if f is not None:
        chosen = f" (chosen {f.chosen_model}, validation MASE {f.validation_mase:.3f})" \
            if f.chosen_model and f.validation_mase is not None else ""
        if f.mean is None:
            lines.append(f"  forecast run #{f.run_id} ({f.model}{chosen}) made "
                         f"{f.as_of:%Y-%m-%d %H:%MZ}: does not reach this minute")
        else:
            q = ", ".join(f"q{k}={v:.3f}" for k, v in f.quantiles.items())
            lines.append(f"  forecast run #{f.run_id} ({f.model}{chosen}) made "
                         f"{f.as_of:%Y-%m-%d %H:%MZ}: mean {f.mean:.3f}, {q} units")
    a = e.action
    if a is not None:
        eff = a.effective_at or a.decided_at
        what = (f"target {a.target_units}" if a.target_units is not None
                else f"{a.units} units x {a.term_days} d")
        lines.append(f"  last action in effect: {a.kind} {what} (decided "
                     f"{a.decided_at:%Y-%m-%d %H:%MZ}, effective {eff:%Y-%m-%d %H:%MZ})"
                     f": {a.reason or 'no reason recorded'}")
    return "\n".join(lines)


def cmd_explain(ctx: cli.Context) -> int:
    name, at = ctx.args.deployment, ctx.args.at.replace(second=0, microsecond=0)
    with cli.connected(ctx, sync=False) as engine, engine.connect() as conn:
        ids = deployment_store.deployment_ids(conn, [name])
        if name not in ids:
            raise cli.CommandError(f"unknown deployment {name!r} (not in the database)",
                                   cli.EXIT_USAGE)
        explanation = explain_at(conn, ids[name], at)
    if ctx.args.format == "json":
        print(json.dumps({"deployment": name, **dataclasses.asdict(explanation)}, indent=2,
                         default=str))
    else:
        print(render_text(name, explanation))
    return cli.EXIT_OK


cli.EXTENSIONS.append(add_commands)
