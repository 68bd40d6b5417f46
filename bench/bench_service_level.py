"""Month-to-date service level for a dry run late in a month: raw ledger vs daily roll-ups.

Stores ``--days`` days of per-minute usage and capacity ledger for ``--deployments``
deployments, then reads the month to date three ways, on the same data in the same run:

* reference: ``ledger.spill_to_date``, the raw ledger joined to the usage, minute by minute;
* cold: ``ledger.month_to_date`` on an empty roll-up table (computes and stores each day);
* warm: ``ledger.month_to_date`` again (stored days plus the raw part of today).

    python bench/bench_service_level.py [--deployments 200] [--days 21]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import admin_url, scratch_database

from scheduler import database as db
from scheduler.config import parse_config
from scheduler.store import deployments as deployment_store
from scheduler.store import ledger
from scheduler.store import usage as usage_store

MONTH = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=200)
    parser.add_argument("--days", type=int, default=21)
    args = parser.parse_args()
    n, days = args.deployments, args.days
    config = parse_config({"deployment": [
        {"name": f"dep{i:04d}", "provider": "simulated", "unit_tpm": 20_000,
         "pricing": {"elastic_unit_hour": 38.0}} for i in range(n)]})
    # Late on day `days + 1`: `days` whole days to roll up and most of today read raw.
    now = MONTH + dt.timedelta(days=days, hours=20)
    minutes = int((now - MONTH) / dt.timedelta(minutes=1))
    stamps = np.datetime64(MONTH.replace(tzinfo=None), "m") + np.arange(minutes).astype(
        "timedelta64[m]")
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory() as tmp, admin_url(Path(tmp)) as admin, \
            scratch_database(admin) as url:
        db.upgrade(url)
        engine = db.make_engine(url)
        with engine.begin() as conn:
            ids = deployment_store.sync_deployments(conn, config.deployments)
        load_started = time.perf_counter()
        names = [d.name for d in config.deployments]
        for first in range(0, n, 50):
            chunk = names[first:first + 50]
            demand = rng.lognormal(np.log(200_000), 0.3, (len(chunk), minutes)).astype(np.int64)
            batch = usage_store.UsageBatch(
                np.repeat(np.array([ids[x] for x in chunk], dtype=np.int32), minutes),
                np.tile(stamps, len(chunk)), demand.ravel(), np.zeros(demand.size, np.int64),
                np.ones(demand.size, np.int64))
            with engine.begin() as conn:
                usage_store.write_usage(conn, batch, source="bench", file="bench",
                                        deployment_names=chunk, checksum="-")
                # The ledger as ticks would have left it: 10 units held every minute
                # (the bench's own bulk fill; the daemon writes it a tick at a time, and
                # its first row makes the month's partition).
                ledger.record_capacity(conn, [ledger.CapacityRecord(ids[chunk[0]], MONTH, 10, 0)])
                conn.execute(sa.text(
                    "INSERT INTO capacity_minute SELECT d, m, 10, 0 "
                    "FROM unnest(CAST(:ids AS int4[])) d, "
                    "generate_series(CAST(:start AS timestamptz), CAST(:end AS timestamptz), "
                    "interval '1 minute') m ON CONFLICT DO NOTHING"),
                    {"ids": [ids[x] for x in chunk], "start": MONTH,
                     "end": now - dt.timedelta(minutes=1)})
        with engine.begin() as conn:  # batches older than the in-flight margin
            conn.execute(sa.text("UPDATE ingest_batch SET ingested_at = ingested_at - :age"),
                         {"age": ledger.INGEST_MARGIN * 2})
            conn.execute(sa.text("ANALYZE"))
        load_seconds = time.perf_counter() - load_started
        every = list(ids.values())
        timings = {}
        results = {}
        for label in ("reference", "cold", "warm"):
            started = time.perf_counter()
            with engine.begin() as conn:
                if label == "reference":
                    results[label] = ledger.spill_to_date(conn, every, MONTH, now)
                else:
                    results[label] = ledger.month_to_date(conn, every, MONTH, now, now=now)
            timings[label] = time.perf_counter() - started
        engine.dispose()
    for label in ("cold", "warm"):
        for ident, level in results["reference"].items():
            got = results[label][ident]
            assert got.minutes_covered == level.minutes_covered, (label, ident)
            assert np.isclose(got.spill_unit_minutes, level.spill_unit_minutes), (label, ident)
    covered = sum(level.minutes_covered for level in results["reference"].values())
    print(f"service level: {n} deployments, {days} whole days + 20 h of today "
          f"({covered:,} covered minutes; loaded in {load_seconds:.1f} s)")
    ref = timings["reference"]
    print(f"service level: raw ledger (reference) {ref:.2f} s; daily roll-ups cold "
          f"{timings['cold']:.2f} s ({timings['cold'] / ref:.2f}x), warm {timings['warm']:.2f} s "
          f"({timings['warm'] / ref:.3f}x)")


if __name__ == "__main__":
    main()
