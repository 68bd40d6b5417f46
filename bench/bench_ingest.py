"""Ingest 1,000,000 usage rows through capsched's path (parse, validate, COPY, upsert into
the partitioned table) and, in the same run, `psql \\copy` of the same CSV into a plain
table. Prints rows/s for both and the ratio.

    python bench/bench_ingest.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import admin_url, psql_binary, scratch_database

from scheduler import database as db
from scheduler.config import parse_config
from scheduler.ingest.files import read_usage_file
from scheduler.ingest.write import ingest_parsed
from scheduler.store import deployments as deployment_store


def write_trace(path: Path, rows: int, deployments: int) -> None:
    per = rows // deployments
    minutes = np.datetime64("2026-01-01T00:00") + np.arange(per).astype("timedelta64[m]")
    stamps = np.datetime_as_string(minutes, unit="s")
    rng = np.random.default_rng(7)
    with path.open("w") as out:
        out.write("deployment,minute_utc,input_tokens,output_tokens,requests\n")
        for d in range(deployments):
            tokens = rng.integers(1000, 5_000_000, size=(per, 3))
            out.writelines(
                f"dep{d:04d},{s}Z,{a},{b},{c}\n"
                for s, (a, b, c) in zip(stamps, tokens.tolist(), strict=True)
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--deployments", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        trace = work / "usage.csv"
        write_trace(trace, args.rows, args.deployments)
        n = args.rows // args.deployments * args.deployments
        config = parse_config(
            {
                "deployment": [
                    {
                        "name": f"dep{d:04d}",
                        "provider": "simulated",
                        "unit_tpm": 1000,
                        "pricing": {"elastic_unit_hour": 1.0},
                    }
                    for d in range(args.deployments)
                ]
            }
        )
        with admin_url(work) as admin, scratch_database(admin) as url:
            db.upgrade(url)
            engine = db.make_engine(url)
            with engine.begin() as conn:
                deployment_store.sync_deployments(conn, config.deployments)

            start = time.perf_counter()
            subprocess.run(
                [
                    psql_binary(),
                    db.libpq_url(url),
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    "CREATE TABLE plain_copy (deployment text, minute_utc timestamptz, "
                    "input_tokens bigint, output_tokens bigint, requests bigint)",
                    "-c",
                    f"\\copy plain_copy FROM '{trace}' WITH (FORMAT csv, HEADER true)",
                ],
                check=True,
            )
            psql_seconds = time.perf_counter() - start

            start = time.perf_counter()
            parsed = read_usage_file(trace)
            parse_seconds = time.perf_counter() - start
            ingest_parsed(engine, parsed, deployment=None, source="bench")
            ours_seconds = time.perf_counter() - start

            start = time.perf_counter()
            ingest_parsed(engine, read_usage_file(trace), deployment=None, source="bench")
            again_seconds = time.perf_counter() - start
            engine.dispose()
    ours, ref = n / ours_seconds, n / psql_seconds
    print(
        f"ingest: {n:,} rows in {ours_seconds:.2f} s = {ours:,.0f} rows/s "
        f"(parse+validate {parse_seconds:.2f} s; COPY+upsert {ours_seconds - parse_seconds:.2f} s)"
    )
    print(f"ingest: psql \\copy into a plain table: {psql_seconds:.2f} s = {ref:,.0f} rows/s")
    print(f"ingest: ratio capsched / psql \\copy = {ours / ref:.2f} (target >= 0.5)")
    print(f"ingest: identical re-ingest (idempotent, no rows change): {again_seconds:.2f} s")


if __name__ == "__main__":
    main()
