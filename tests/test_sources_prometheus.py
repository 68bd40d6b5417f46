"""Prometheus source against a real Prometheus (Debian's ``prometheus`` package).

The test backfills a fresh TSDB with ``promtool tsdb create-blocks-from openmetrics``
(two instances, a counter reset, a scrape outage), starts ``prometheus`` on a free loopback
port and compares the ingested minutes with the backfilled counters exactly. Without the
package the tests skip, except under CI=true where they fail (`.ci/run` installs it).
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
import trace_prometheus as tp

from scheduler.ingest.sources.base import SourceError
from scheduler.ingest.sources.prometheus import PrometheusSource
from scheduler.ingest.sources.pull import PullError, pull
from scheduler.store import sources as source_store
from tests.daemon_support import kill_advisory_lock_holders
from tests.sources_support import source_config, stored, synced

# Four days before today: close enough to the clock that the daemon's catch-up in the kill
# test is a few days of chunks, whatever day the tests run.
T0 = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0) - dt.timedelta(
    days=4)
MINUTES = 3 * 1440 + 17  # more than one query chunk (a day), not a whole number of them
OUTAGE = range(2000, 2011)  # boundaries with no sample at all: a scrape outage
RESET_AT = 1500  # instance b restarts: its counter starts again from zero


def tools() -> tuple[str, str]:
    found = tp.tools()
    if found is None:
        message = "prometheus/promtool not installed (apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def events(seed: int) -> dict[str, np.ndarray]:
    """Per-minute events by series: (MINUTES,) int arrays."""
    rng = np.random.default_rng(seed)
    return {
        "in_a": rng.integers(0, 50_000, MINUTES), "in_b": rng.integers(0, 20_000, MINUTES),
        "out_a": rng.integers(0, 9_000, MINUTES), "out_b": rng.integers(0, 4_000, MINUTES),
        "req": rng.integers(0, 300, MINUTES),
    }


def counter(per_minute: np.ndarray, reset_at: int | None = None) -> list[tuple[int, float]]:
    """Samples at each minute boundary k (k = 0..MINUTES): events of minutes < k, restarted
    from zero just before minute reset_at - 1 when reset_at is given; none in OUTAGE."""
    samples = []
    for k in range(MINUTES + 1):
        if k in OUTAGE:
            continue
        if reset_at is not None and k >= reset_at:
            value = int(per_minute[reset_at - 1 : k].sum())
        else:
            value = int(per_minute[:k].sum())
        samples.append((int(T0.timestamp()) + 60 * k, float(value)))
    return samples


def expected(ev: dict[str, np.ndarray]) -> dict[dt.datetime, tuple[int, int, int]]:
    """Minutes whose two boundaries both have samples: exactly the events of the minute."""
    out = {}
    for m in range(MINUTES):
        if m in OUTAGE or m + 1 in OUTAGE:
            continue
        out[T0 + dt.timedelta(minutes=m)] = (
            int(ev["in_a"][m] + ev["in_b"][m]), int(ev["out_a"][m] + ev["out_b"][m]),
            int(ev["req"][m]))
    return out


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    prometheus_bin, promtool = tools()
    ev = events(14)
    families = {
        "llm_tokens": [
            ({"direction": "input", "instance": "a"}, counter(ev["in_a"])),
            ({"direction": "input", "instance": "b"}, counter(ev["in_b"], RESET_AT)),
            ({"direction": "output", "instance": "a"}, counter(ev["out_a"])),
            ({"direction": "output", "instance": "b"}, counter(ev["out_b"], RESET_AT)),
        ],
        "llm_requests": [({"instance": "a"}, counter(ev["req"]))],
    }
    root = tmp_path_factory.mktemp("prometheus")
    tp.backfill(promtool, tp.openmetrics(families), root / "tsdb")
    proc = tp.start(prometheus_bin, root / "tsdb", tp.free_port(), log=root / "log")
    try:
        port = proc.args[3].rsplit(":", 1)[1]  # type: ignore[index]
        yield f"http://127.0.0.1:{port}", ev
    finally:
        proc.terminate()
        proc.wait(timeout=30)


SPEC = {"kind": "prometheus", "input_query": 'llm_tokens_total{direction="input"}',
        "output_query": 'llm_tokens_total{direction="output"}',
        "requests_query": "llm_requests_total"}


def test_ingested_minutes_equal_the_backfilled_counters(
    engine: sa.Engine, prometheus: tuple[str, Any]
) -> None:
    url, ev = prometheus
    deployment, spec = synced(engine, source_config({**SPEC, "url": url}))
    end = T0 + dt.timedelta(minutes=MINUTES)
    seen: list[tuple[int, int]] = []
    outcome = pull(engine, deployment, spec, now=end + dt.timedelta(seconds=30), since=T0,
                   progress=lambda done, total: seen.append((done, total)))
    want = expected(ev)
    assert stored(engine, "prometheus") == want  # exact, gaps stay gaps, the reset counted
    assert outcome.minutes == len(want) and outcome.chunks == 4
    assert seen[-1] == (MINUTES, MINUTES)
    with engine.connect() as conn:
        state = source_store.read_state(conn, 1, "prometheus")
    assert state is not None and state.high_water == end and not state.stale
    # A second pull (trailing window re-read) and a re-run of the backfill change nothing.
    pull(engine, deployment, spec, now=end + dt.timedelta(seconds=50))
    pull(engine, deployment, spec, now=end, since=T0 + dt.timedelta(minutes=1990))
    assert stored(engine, "prometheus") == want


def test_a_window_with_no_samples_marks_usage_stale(
    engine: sa.Engine, prometheus: tuple[str, Any]
) -> None:
    url, _ = prometheus
    deployment, spec = synced(engine, source_config({**SPEC, "url": url}))
    later = T0 + dt.timedelta(days=10)  # after the backfilled data: nothing there
    outcome = pull(engine, deployment, spec, now=later)
    assert outcome.stale and outcome.minutes == 0
    assert stored(engine) == {}  # no zeros for minutes nobody reported
    with engine.connect() as conn:
        assert source_store.stale_deployment_ids(conn) == {1}


def test_a_bad_query_fails_the_pull_and_names_the_error(
    engine: sa.Engine, prometheus: tuple[str, Any]
) -> None:
    url, _ = prometheus
    deployment, spec = synced(
        engine, source_config({**SPEC, "url": url, "input_query": "llm_tokens_total{"}))
    with pytest.raises(PullError, match="bad_data"):
        pull(engine, deployment, spec, now=T0 + dt.timedelta(minutes=30))
    with engine.connect() as conn:
        assert source_store.stale_deployment_ids(conn) == {1}


def test_throttling_is_retried_after_the_servers_delay(engine: sa.Engine, tmp_path: Path
                                                      ) -> None:
    """429 / 503 with Retry-After (httpx.MockTransport: no Prometheus sends these itself)."""
    answers = [httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(503)]

    def handler(request: httpx.Request) -> httpx.Response:
        if answers:
            return answers.pop(0)
        start = int(float(request.url.params["start"]))
        return httpx.Response(200, json={"status": "success", "data": {
            "resultType": "matrix",
            "result": [{"metric": {}, "values": [[start, "5"], [start + 60, "12"]]}]}})

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    deployment, spec = synced(engine, source_config(
        {**SPEC, "url": "http://prom.invalid", "bearer_token_file": str(token),
         "trailing_minutes": 1}))
    source = PrometheusSource(spec, transport=httpx.MockTransport(handler))
    assert source.client.headers["Authorization"] == "Bearer s3cret"
    waits: list[float] = []
    pull(engine, deployment, spec, now=T0 + dt.timedelta(minutes=1), source=source,
         sleep=waits.append)
    assert waits == [7.0, 2.0]  # the server's Retry-After, then 1 s x 2^1
    assert stored(engine) == {T0: (7, 7, 7)}


def test_a_malformed_answer_is_a_source_error(engine: sa.Engine) -> None:
    _, spec = synced(engine, source_config({**SPEC, "url": "http://prom.invalid"}))
    source = PrometheusSource(spec, transport=httpx.MockTransport(
        lambda _: httpx.Response(200, json={"status": "success", "data": {
            "resultType": "vector", "result": []}})))
    with pytest.raises(SourceError, match="expected a matrix"):
        source.read(T0, T0 + dt.timedelta(minutes=5))


def test_killing_the_daemon_during_a_pull_loses_and_duplicates_nothing(
    engine: sa.Engine, db_url: str, tmp_path: Path, prometheus: tuple[str, Any]
) -> None:
    """The daemon's pull job catches up on weeks of minutes from an old high-water mark;
    SIGKILL it once the first chunk is in, restart it, and the minutes are exactly the
    counters' increases: the killed chunk is read again and replaces, never adds."""
    url, ev = prometheus
    config = tmp_path / "capsched.toml"
    config.write_text(f"""
[daemon]
tick_seconds = 2

[providers.simulated]

[[deployment]]
name = "bot"
provider = "simulated"
unit_tpm = 2500
[deployment.pricing]
elastic_unit_hour = 38.0
[[deployment.source]]
kind = "prometheus"
url = "{url}"
input_query = '{SPEC["input_query"]}'
output_query = '{SPEC["output_query"]}'
requests_query = '{SPEC["requests_query"]}'
interval_seconds = 5
""")
    import tomllib

    from scheduler.config import parse_config

    parsed = parse_config(tomllib.loads(config.read_text()), path=config)
    _, spec = synced(engine, parsed)
    with engine.begin() as conn:  # as if the last pull had been long ago
        source_store.set_high_water(conn, 1, spec.name, spec.kind, T0 + dt.timedelta(minutes=15))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPSCHED_")}
    env.update(CAPSCHED_CONFIG=str(config), CAPSCHED_DATABASE_URL=db_url,
               CAPSCHED_LOG_FORMAT="json")

    def mark() -> dt.datetime | None:
        with engine.connect() as conn:
            state = source_store.read_state(conn, 1, spec.name)
        return None if state is None else state.high_water

    def daemon() -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "scheduler", "run"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    first = daemon()
    try:
        deadline = time.monotonic() + 120
        while mark() == T0 + dt.timedelta(minutes=15) and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)  # the first chunk is in, the rest is not
    finally:
        first.kill()
        first.wait(timeout=30)
    killed_at = mark()
    assert killed_at is not None
    assert T0 + dt.timedelta(minutes=15) < killed_at < dt.datetime.now(dt.UTC) - dt.timedelta(
        minutes=2), "the pull was not killed half-way"
    kill_advisory_lock_holders(str(sa.make_url(db_url).set(drivername="postgresql")))
    second = daemon()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            at = mark()
            if at is not None and at >= dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2):
                break
            time.sleep(0.2)
        else:
            pytest.fail("the restarted daemon did not catch up within 180 s")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    assert stored(engine) == expected(ev)


def test_capsched_pull_backfills_and_reports_each_source(
    engine: sa.Engine, db_url: str, tmp_path: Path, prometheus: tuple[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from scheduler.cli.main import main

    url, ev = prometheus
    config = tmp_path / "capsched.toml"
    config.write_text(f"""
[[deployment]]
name = "bot"
provider = "simulated"
unit_tpm = 2500
[deployment.pricing]
elastic_unit_hour = 38.0
[[deployment.source]]
kind = "prometheus"
name = "gateway-prom"
url = "{url}"
input_query = '{SPEC["input_query"]}'
output_query = '{SPEC["output_query"]}'
requests_query = '{SPEC["requests_query"]}'

[[deployment]]
name = "idle"
provider = "simulated"
unit_tpm = 2500
[deployment.pricing]
elastic_unit_hour = 38.0
""")
    args = ["--config", str(config), "--database-url", db_url]
    end = T0 + dt.timedelta(minutes=MINUTES)
    assert main([*args, "pull", "--since", T0.isoformat(), "--now", end.isoformat()]) == 0
    out = capsys.readouterr().out
    assert f"bot/gateway-prom: {len(expected(ev)):,} minutes from [" in out
    assert stored(engine, "gateway-prom") == expected(ev)
    assert main([*args, "pull", "--deployment", "idle"]) == 2  # no source configured
    # A source that cannot be reached fails the command (exit 1) and says why.
    config.write_text(config.read_text().replace(url, "http://127.0.0.1:9"))
    assert main([*args, "pull", "--now", end.isoformat()]) == 1
    assert "bot/gateway-prom: prometheus" in capsys.readouterr().err
