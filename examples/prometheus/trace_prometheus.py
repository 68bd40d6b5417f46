"""A real Prometheus serving a usage trace as token counters: no cloud account needed.

Turns per-minute usage (the trace CSV format) into cumulative counters, one sample at every
minute boundary (the sample at T+60 counts everything up to the end of minute T), in the
OpenMetrics text format; backfills a fresh TSDB with ``promtool tsdb create-blocks-from
openmetrics``; runs ``prometheus`` on that TSDB. Needs the ``prometheus`` package
(Debian/Ubuntu: ``apt-get install prometheus``; it brings ``promtool``).

    python examples/prometheus/trace_prometheus.py examples/traces/servegen_m-small.csv \\
        --deployment m-small --dir /tmp/capsched-prometheus --port 9091

serves until Ctrl-C (``make run-prometheus`` does this, then pulls from it). The counters:

    llm_tokens_total{deployment="m-small", direction="input"|"output"}
    llm_requests_total{deployment="m-small"}

Used by tests/test_sources_prometheus.py as well. Never imported by the capsched package.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

#: One series: labels and its (unix seconds, cumulative value) samples, ascending.
Series = tuple[Mapping[str, str], Sequence[tuple[int, float]]]


def tools() -> tuple[str, str] | None:
    """Paths of ``prometheus`` and ``promtool``, or None when the package is missing."""
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    return (prometheus, promtool) if prometheus and promtool else None


def openmetrics(families: Mapping[str, Iterable[Series]]) -> str:
    """OpenMetrics text of counter families (name without ``_total``) -> series."""
    lines = []
    for family, series in families.items():
        lines.append(f"# HELP {family} Counter backfilled by capsched's example.")
        lines.append(f"# TYPE {family} counter")
        for labels, samples in series:
            text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            lines.extend(f"{family}_total{{{text}}} {value:.0f} {ts}" for ts, value in samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def trace_families(rows: Iterable[tuple[dt.datetime, int, int, int]], deployment: str
                   ) -> dict[str, list[Series]]:
    """Counters of a trace: the sample at minute m + 1 holds the sum of minutes <= m."""
    totals = [0, 0, 0]
    samples: list[list[tuple[int, float]]] = [[], [], []]
    first = True
    for minute, *counts in rows:
        ts = int(minute.timestamp())
        if first:
            for k in range(3):
                samples[k].append((ts, 0.0))
            first = False
        for k in range(3):
            totals[k] += counts[k]
            samples[k].append((ts + 60, float(totals[k])))
    return {
        "llm_tokens": [({"deployment": deployment, "direction": "input"}, samples[0]),
                       ({"deployment": deployment, "direction": "output"}, samples[1])],
        "llm_requests": [({"deployment": deployment}, samples[2])],
    }


def read_trace(path: Path) -> Iterator[tuple[dt.datetime, int, int, int]]:
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            minute = dt.datetime.fromisoformat(row["minute_utc"].replace("Z", "+00:00"))
            yield (minute, int(row["input_tokens"]), int(row["output_tokens"]),
                   int(row["requests"]))


def backfill(promtool: str, text: str, tsdb: Path) -> None:
    tsdb.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".om", delete=False) as f:
        f.write(text)
    try:
        subprocess.run([promtool, "tsdb", "create-blocks-from", "openmetrics", f.name,
                        str(tsdb)], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"promtool failed: {exc.stderr}") from None
    finally:
        os.unlink(f.name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(prometheus: str, tsdb: Path, port: int, *, log: Path | None = None
          ) -> subprocess.Popen[bytes]:
    """Start prometheus on 127.0.0.1:port over ``tsdb`` and wait until it is ready."""
    config = tsdb.parent / f"{tsdb.name}-prometheus.yml"
    config.write_text("global:\n  scrape_interval: 60s\nscrape_configs: []\n")
    out = open(log or os.devnull, "wb")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={tsdb}",
         f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y"],
        stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {proc.returncode} (log: {log})")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("prometheus did not become ready within 60 s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("trace", type=Path)
    parser.add_argument("--deployment", required=True)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "capsched-prom")
    parser.add_argument("--port", type=int, default=9091)
    args = parser.parse_args(argv)
    found = tools()
    if found is None:
        print("prometheus/promtool not found: apt-get install prometheus", file=sys.stderr)
        return 2
    prometheus, promtool = found
    tsdb = args.dir / "tsdb"
    if not tsdb.exists():
        print(f"backfilling {tsdb} from {args.trace} ...", file=sys.stderr)
        backfill(promtool, openmetrics(trace_families(read_trace(args.trace),
                                                      args.deployment)), tsdb)
    proc = start(prometheus, tsdb, args.port, log=args.dir / "prometheus.log")
    print(f"prometheus on http://127.0.0.1:{args.port} (pid {proc.pid})", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
