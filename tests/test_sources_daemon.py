"""A pull source that fails or answers with nothing holds the deployment's capacity at
once (the stale-usage rule), even while older minutes of other sources still look fresh;
a successful pull lifts the hold. And the daemon's pull jobs follow the config."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.cli.pull import JOB_PREFIX, sync_pull_jobs
from scheduler.daemon.providers import ProviderSet
from scheduler.daemon.tick import Daemon, set_provider_clocks
from scheduler.ingest.write import ingest_files
from scheduler.store import sources as source_store
from tests.daemon_support import START, config, write_trace

DAY = START + dt.timedelta(days=14)
SOURCE = """
[[deployment.source]]
kind = "prometheus"
url = "http://127.0.0.1:1"
input_query = "a_total"
output_query = "b_total"
requests_query = "c_total"
"""


@pytest.fixture
def daemon(engine: sa.Engine, tmp_path: Path) -> Iterator[Daemon]:
    cfg, _ = config(tmp_path, SOURCE)
    providers = ProviderSet(cfg, engine)
    instance = Daemon(cfg, engine, providers, instance_id="test-pull")
    now = [DAY]
    set_provider_clocks(providers, cfg, lambda: now[0])
    instance.test_clock = now  # type: ignore[attr-defined]
    trace = write_trace(tmp_path / "usage.csv", 0, until=DAY + dt.timedelta(days=1))
    ingest_files(engine, [str(trace)], deployment="bot", source="gw")
    yield instance
    instance.close()


def tick(daemon: Daemon, at: dt.datetime) -> None:
    daemon.test_clock[0] = at  # type: ignore[attr-defined]
    assert daemon.tick(at).leader


def capacity(daemon: Daemon, at: dt.datetime) -> int:
    return int(daemon.providers.get("simulated").holdings("bot").capacity_at(at))


def test_a_failing_pull_source_holds_capacity_until_a_pull_succeeds(
    daemon: Daemon, engine: sa.Engine
) -> None:
    for minute in range(3):
        tick(daemon, DAY.replace(hour=17, minute=58) + dt.timedelta(minutes=minute))
    assert capacity(daemon, DAY.replace(hour=18, minute=5)) >= 3
    with engine.begin() as conn:
        source_store.record_failure(conn, 1, "prometheus", "prometheus",
                                    now=DAY.replace(hour=18), error="connection refused")
    for minute in range(10, 13):  # usage of 18:00.. is stored and says 1 unit: still held
        tick(daemon, DAY.replace(hour=18, minute=minute))
    assert capacity(daemon, DAY.replace(hour=18, minute=20)) >= 3
    with engine.connect() as conn:
        held = conn.execute(sa.text("SELECT held FROM plan ORDER BY id DESC LIMIT 1")).scalar()
    assert held is True
    with engine.begin() as conn:
        source_store.record_success(conn, 1, "prometheus", "prometheus",
                                    high_water=DAY.replace(hour=18, minute=13),
                                    now=DAY.replace(hour=18, minute=13), minutes=15,
                                    stale=False)
    for minute in range(13, 16):
        tick(daemon, DAY.replace(hour=18, minute=minute))
    with engine.connect() as conn:
        held = conn.execute(sa.text("SELECT held FROM plan ORDER BY id DESC LIMIT 1")).scalar()
    assert held is False


def test_pull_jobs_follow_the_config_and_a_removed_source_stops_holding(
    daemon: Daemon, engine: sa.Engine, tmp_path: Path
) -> None:
    scheduler = BackgroundScheduler(timezone=dt.UTC)  # not started: jobs are only listed
    defaults = {"coalesce": True, "max_instances": 1}
    sync_pull_jobs(scheduler, daemon, lambda: DAY, 1.0, defaults, {})
    assert [j.id for j in scheduler.get_jobs()] == [f"{JOB_PREFIX}bot/prometheus"]
    assert scheduler.get_jobs()[0].trigger.interval == dt.timedelta(seconds=5)
    with engine.begin() as conn:
        source_store.record_failure(conn, 1, "prometheus", "prometheus", now=DAY, error="x")
    sync_pull_jobs(scheduler, daemon, lambda: DAY, 1.0, defaults, {})
    with engine.connect() as conn:
        assert source_store.stale_deployment_ids(conn) == {1}  # still configured: kept
    daemon.config, _ = config(tmp_path)  # the source is removed (as by a reload)
    sync_pull_jobs(scheduler, daemon, lambda: DAY, 1.0, defaults, {})
    assert scheduler.get_jobs() == []
    with engine.connect() as conn:
        assert source_store.stale_deployment_ids(conn) == set()


def test_a_failing_pull_job_counts_marks_stale_and_backs_off(
    daemon: Daemon, engine: sa.Engine
) -> None:
    from prometheus_client import CollectorRegistry

    from scheduler.cli.pull import PullMetrics, run_pull_job

    tick(daemon, DAY.replace(hour=12))  # takes the leader lock
    registry = CollectorRegistry()
    metrics, next_at = PullMetrics(registry), {}  # type: ignore[var-annotated]
    now = [DAY.replace(hour=12, minute=1)]
    # Nothing listens on 127.0.0.1:1: the pull fails.
    assert run_pull_job(daemon, "bot", "prometheus", lambda: now[0], next_at, metrics) is None
    labels = {"deployment": "bot", "source": "prometheus"}
    assert registry.get_sample_value("capsched_pull_failures_total", labels) == 1
    assert registry.get_sample_value("capsched_pull_stale", labels) == 1
    with engine.connect() as conn:
        assert source_store.stale_deployment_ids(conn) == {1}
    # 60 s later the source is still backing off (2 x 60 s after one failure): no attempt.
    now[0] += dt.timedelta(seconds=60)
    run_pull_job(daemon, "bot", "prometheus", lambda: now[0], next_at, metrics)
    assert registry.get_sample_value("capsched_pull_failures_total", labels) == 1
    now[0] += dt.timedelta(seconds=61)
    run_pull_job(daemon, "bot", "prometheus", lambda: now[0], next_at, metrics)
    assert registry.get_sample_value("capsched_pull_failures_total", labels) == 2
