"""One daemon tick for 1,000 deployments (simulated provider, 30 days of stored usage).

Loads 30 days of synthetic per-minute usage for each deployment straight through the
store's COPY path, fits the models once (not timed: refits run on their own cadence), then
times consecutive ticks and prints p50 / p99.

    python bench/bench_tick.py [--deployments 1000] [--ticks 12]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import admin_url, scratch_database

from scheduler import database as db
from scheduler.config import parse_config
from scheduler.daemon.providers import ProviderSet
from scheduler.daemon.tick import Daemon, set_provider_clocks
from scheduler.store import deployments as deployment_store
from scheduler.store import usage as usage_store

START = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
DAYS = 30


def synthetic_usage(rng: np.random.Generator, minutes: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(minutes)
    day = 1 + 0.6 * np.sin(2 * np.pi * (t % 1440) / 1440 - 1.8)
    week = np.where(((t // 1440) % 7) >= 5, 0.7, 1.0)
    level = rng.uniform(5_000, 200_000)
    demand = level * day * week * rng.lognormal(0, 0.08, minutes)
    return demand.astype(np.int64), (demand / 4).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=12)
    args = parser.parse_args()
    n = args.deployments
    config = parse_config({
        "daemon": {"history_days": DAYS, "plan_horizon_minutes": 180},
        "providers": {"simulated": {"max_units": 100000, "max_step": 100000}},
        "deployment": [
            {"name": f"dep{i:04d}", "provider": "simulated", "unit_tpm": 20_000,
             "max_units": 1000, "pricing": {"elastic_unit_hour": 38.0}} for i in range(n)],
    })
    # An hour past the first tick is stored too, as a live feed would deliver it: without
    # it every deployment turns stale after staleness_minutes and the daemon (rightly)
    # re-plans them all to hold capacity. The daemon only reads minutes before its now.
    minutes = DAYS * 1440 + 60
    stamps = np.datetime64(START.replace(tzinfo=None), "m") + np.arange(minutes).astype(
        "timedelta64[m]")
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory() as tmp, admin_url(Path(tmp)) as admin, \
            scratch_database(admin) as url:
        db.upgrade(url)
        engine = db.make_engine(url, pool_size=5)
        with engine.begin() as conn:
            ids = deployment_store.sync_deployments(conn, config.deployments)
        load_started = time.perf_counter()
        chunk = 50
        for first in range(0, n, chunk):
            names = [d.name for d in config.deployments[first:first + chunk]]
            inputs, outputs = zip(*(synthetic_usage(rng, minutes) for _ in names), strict=True)
            batch = usage_store.UsageBatch(
                np.repeat(np.array([ids[x] for x in names], dtype=np.int32), minutes),
                np.tile(stamps, len(names)), np.concatenate(inputs), np.concatenate(outputs),
                np.full(minutes * len(names), 10, dtype=np.int64))
            with engine.begin() as conn:
                usage_store.write_usage(conn, batch, source="bench", file="bench",
                                        deployment_names=names, checksum="-")
        load_seconds = time.perf_counter() - load_started
        now = START + dt.timedelta(days=DAYS)
        providers = ProviderSet(config, engine)
        daemon = Daemon(config, engine, providers, instance_id="bench")
        clock_now = [now]
        set_provider_clocks(providers, config, lambda: clock_now[0])
        refit_started = time.perf_counter()
        daemon.refit(now - dt.timedelta(minutes=1))
        refit_seconds = time.perf_counter() - refit_started
        durations = []
        for i in range(args.ticks):
            clock_now[0] = now + dt.timedelta(minutes=i)
            started = time.perf_counter()
            report = daemon.tick(clock_now[0], refit_inline=False)
            durations.append(time.perf_counter() - started)
            assert report.leader and not report.refitted, report.errors[:3]
        daemon.close()
        engine.dispose()
    ticks = np.array(durations)
    print(f"tick: {n} deployments, {DAYS} days of stored usage each "
          f"({n * minutes:,} minutes, loaded in {load_seconds:.1f} s; refit {refit_seconds:.1f} s, "
          "not part of a tick)")
    print(f"tick: first tick {ticks[0]:.3f} s (plans, stores and sends for every deployment)")
    steady = ticks[1:] if ticks.size > 1 else ticks
    print(f"tick: p50 {np.percentile(steady, 50):.3f} s, p99 {np.percentile(steady, 99):.3f} s "
          f"over {steady.size} ticks (target < 1 s)")


if __name__ == "__main__":
    main()
