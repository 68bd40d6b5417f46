"""Partial grants are taken in the minute of the refusal (issue #9, cases/out-of-capacity).

When the provider refuses a scale-up whole because its pool can grant less than the target,
the capped target max(grantable, held) is asked for right away: in the backtest in the same
minute, in the daemon in the same tick (one more journalled action), not a minute/tick later.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Any

UTC = dt.UTC


def test_daemon_takes_the_grantable_units_in_the_tick_of_the_refusal(
    engine: Any, tmp_path: Path
) -> None:
    """Ticks every minute through the 08:00 ramp of a pool of 2 (the peak needs 3): the
    tick whose scale-up is refused also journals and confirms the capped target 2, decided
    and sent in the same minute; the provider holds 2 units from that minute + lead."""
    from scheduler.store import journal as journal_store

    cfg, providers, daemon, t0, now = _pool_daemon(engine, tmp_path, "partial-timing")
    dep = cfg.deployment("bot")
    try:
        for i in range(0, 30):  # a tick every minute, 07:40 .. 08:09
            now[0] = t0 + dt.timedelta(minutes=i)
            daemon.tick(now[0])
        with engine.connect() as conn:
            actions = journal_store.list_actions(conn, kind=journal_store.KIND_ELASTIC)
        refused = [a for a in actions if a.state == "failed"
                   and a.error_class == "OutOfCapacityError"]
        assert refused, [(a.target_units, a.state, a.decided_at) for a in actions]
        first = refused[0]
        assert first.target_units is not None and first.target_units > 2
        at = first.sent_at
        assert at is not None
        # The capped target, decided and confirmed in the refusal's minute.
        capped = [a for a in actions if a.target_units == 2 and a.state == "confirmed"
                  and a.id > first.id]
        assert capped, [(a.id, a.target_units, a.state, a.decided_at) for a in actions]
        minute = at.replace(second=0, microsecond=0)
        assert capped[0].decided_at.replace(second=0, microsecond=0) == minute
        assert capped[0].confirmed_at is not None
        assert capped[0].confirmed_at.replace(second=0, microsecond=0) == minute
        held = providers.get("simulated").holdings("bot")
        lead = dt.timedelta(minutes=dep.scale_up_lead_minutes)
        assert held.capacity_at(minute + lead) == 2
        # Never beyond the pool, and no request was confirmed above it.
        assert all(a.target_units is not None and a.target_units <= 2
                   for a in actions if a.state == "confirmed")
    finally:
        daemon.close()



def test_backtest_takes_the_grantable_units_in_the_minute_of_the_refusal(
    tmp_path: Path
) -> None:
    """capacity-2-of-3 (pool 2, peak 3): every refused scale-up made while fewer than 2
    units were held is followed in the same minute by a request for the capped target
    max(grantable, held), so the units it adds serve from refusal + lead, not a minute
    later."""
    import csv

    from bench.scenarios.suite import SCENARIOS, build, provider_capacity
    from scheduler.config import load_config
    from scheduler.ingest.files import read_usage_file
    from scheduler.planning.backtest import run_backtest

    built = build(SCENARIOS["capacity-2-of-3"], tmp_path, quick=True)
    cap = provider_capacity(built)
    assert cap is not None and cap.available_units == 2
    dep = load_config(built.config).deployment(built.deployment)
    out = tmp_path / "out"
    run_backtest(read_usage_file(built.usage), dep, out, start=built.start, end=built.end,
                 capacity=cap)
    with (out / "actions.csv").open(encoding="utf-8") as fh:
        actions = list(csv.DictReader(fh))
    with (out / "schedule.csv").open(encoding="utf-8") as fh:
        elastic = [int(r["elastic_units"]) for r in csv.DictReader(fh)]
    assert built.start is not None
    origin = built.start

    def minute(a: dict[str, str]) -> int:
        t = dt.datetime.fromisoformat(a["decided_utc"].replace("Z", "+00:00"))
        return int((t - origin) // dt.timedelta(minutes=1))

    lead = dep.scale_up_lead_minutes
    changes = [(minute(a), int(a["target_units"])) for a in actions
               if a["kind"] in ("elastic_request", "elastic_release")]
    partial = 0
    for a in actions:
        if a["kind"] != "elastic_refused":
            continue
        k = minute(a)
        prior = [t for m, t in changes if m < k]
        held = prior[-1] if prior else 0
        if held >= 2:
            continue
        partial += 1
        # The capped target is requested in the refusal's minute ...
        assert (k, 2) in changes, (a, [c for c in changes if k - 2 <= c[0] <= k + 2])
        # ... so the added units serve from refusal + lead.
        if k + lead < len(elastic):
            assert elastic[k + lead] == 2, (k, elastic[k:k + lead + 2])
    assert partial >= 1  # the morning ramp asks for 3 while holding fewer than 2


def test_daemon_plans_say_the_bound_cannot_be_met_with_the_pool(
    engine: Any, tmp_path: Path
) -> None:
    """After a refusal the daemon knows the pool (2 units, no term sold): its plans' cover
    reason says the 1 % bound is not possible with those units, instead of pricing a
    cover the provider cannot grant (cases/out-of-capacity)."""
    import sqlalchemy as sa

    _cfg, _providers, daemon, t0, now = _pool_daemon(engine, tmp_path, "pool-alert",
                                                     max_spill_fraction=0.01)
    try:
        for i in range(0, 40):
            now[0] = t0 + dt.timedelta(minutes=i)
            daemon.tick(now[0])
        with engine.connect() as conn:
            details = conn.execute(sa.text(
                "SELECT r->>'detail' FROM plan p, jsonb_array_elements(p.reasons) r "
                "WHERE r->>'rule' = 'cover_on_replay' ORDER BY p.id")).scalars().all()
    finally:
        daemon.close()
    assert details, "no plan carries the cover's reason"
    assert "not possible with the provider's 2 units" in details[-1], details[-1]
    assert "the provider sells no reservation" in details[-1]
    assert not any("not possible" in d for d in details[:1]), "known before any refusal"


def _pool_daemon(engine: Any, tmp_path: Path, instance: str, *,
                 max_spill_fraction: float | None = None) -> tuple[Any, Any, Any, dt.datetime,
                                                                   list[dt.datetime]]:
    """The daemon of tests/daemon_support.py against a simulated pool of 2 units that sells
    no term, two weeks of usage ingested, its clock at ``now[0]`` = 07:40 of day 14:
    (config, providers, daemon, t0, now)."""
    from scheduler.config import parse_config
    from scheduler.daemon.providers import ProviderSet
    from scheduler.daemon.tick import Daemon, set_provider_clocks
    from scheduler.ingest.write import ingest_files
    from scheduler.store import deployments as deployment_store
    from tests.daemon_support import CONFIG, START, write_trace

    text = CONFIG.replace("[providers.simulated]\n",
                          "[providers.simulated]\navailable_units = 2\nsupported_terms = []\n")
    if max_spill_fraction is not None:
        text = text.replace("max_spill_fraction = 0.0",
                            f"max_spill_fraction = {max_spill_fraction}")
    path = tmp_path / "capsched.toml"
    path.write_text(text)
    cfg = parse_config(tomllib.loads(text), path=path)
    day = START + dt.timedelta(days=14)
    providers = ProviderSet(cfg, engine)
    daemon = Daemon(cfg, engine, providers, instance_id=instance)
    with engine.begin() as conn:
        deployment_store.sync_deployments(conn, cfg.deployments)
    ingest_files(engine, [str(write_trace(tmp_path / "u.csv", 0, until=day + dt.timedelta(
        days=1)))], deployment="bot", source="gw")
    t0 = day.replace(hour=7, minute=40)
    now = [t0]
    set_provider_clocks(providers, cfg, lambda: now[0])
    return cfg, providers, daemon, t0, now
