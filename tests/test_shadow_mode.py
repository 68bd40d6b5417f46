"""Shadow mode and the spend guard as the daemon uses them (scheduler/daemon/spend_guard.py).

The field case of docs/economics.md runs through the daemon twice, on two databases cloned
from the same template: once live on the simulated provider, once in shadow mode on the
Bedrock adapter (its client behind botocore's Stubber, which only answers the reads that seed
the shadow book: a create or delete reaching it would fail the test). The journal and the
logged SDK calls of the shadow run must show the simulated provider's scale-ups and
scale-downs, call by call.
"""

from __future__ import annotations

import datetime as dt
import itertools
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from botocore.stub import Stubber
from structlog.testing import capture_logs

from scheduler import database as db
from scheduler.config import ConfigError, parse_config
from scheduler.daemon import journal
from scheduler.daemon.providers import ProviderSet
from scheduler.daemon.spend_guard import GuardedProvider, commitment_spend, hourly_spend
from scheduler.daemon.tick import Daemon, set_provider_clocks
from scheduler.ingest.write import ingest_files
from scheduler.providers.bedrock import BedrockProvider
from scheduler.providers.errors import SpendLimitExceededError
from scheduler.providers.retry import Disposition
from scheduler.providers.shadow import ShadowProvider
from tests.conftest import _with_database, create_database, drop_database
from tests.daemon_support import CONFIG, START, write_trace

DAY = START + dt.timedelta(days=14)  # Monday 2026-03-16
#: Around the start and the end of the 10-hour peak (as tests/test_daemon.py), plus the
#: first tick of the day, which also makes the daily commitment decision.
WINDOWS = ((DAY.replace(hour=7, minute=40), 25), (DAY.replace(hour=17, minute=50), 30))

BEDROCK = """
[providers.aws]
type = "bedrock"
region = "us-east-1"
[providers.aws.deployments.bot]
model_id = "anthropic.claude-3-5-sonnet-20240620-v1:0"
lead_time_minutes = 5
min_hold_minutes = 60
max_units = 20
commitment_terms = [30]
"""


class Clock:
    def __init__(self) -> None:
        self.now = DAY

    def __call__(self) -> dt.datetime:
        return self.now


def _config(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "capsched.toml"
    path.write_text(text)
    return parse_config(tomllib.loads(text), path=path)


@pytest.fixture
def second_engine(pg_admin_url: str, template_database: str) -> Iterator[sa.Engine]:
    name = create_database(pg_admin_url, template=template_database)
    engine = db.make_engine(_with_database(pg_admin_url, name))
    try:
        yield engine
    finally:
        engine.dispose()
        drop_database(pg_admin_url, name)


def _run(cfg: Any, engine: sa.Engine, tmp_path: Path,
         prepare: Any = None) -> tuple[list[tuple[dt.datetime, int, str]], ProviderSet]:
    providers = ProviderSet(cfg, engine)
    if prepare is not None:
        prepare(providers)
    daemon = Daemon(cfg, engine, providers, instance_id="shadow-test")  # syncs deployments
    trace = write_trace(tmp_path / "usage.csv", 0, until=DAY + dt.timedelta(days=1))
    ingest_files(engine, [str(trace)], deployment="bot", source="gw")
    clock = Clock()
    set_provider_clocks(providers, cfg, clock)
    try:
        for start, minutes in WINDOWS:
            for i in range(minutes):
                clock.now = start + dt.timedelta(minutes=i)
                assert daemon.tick(clock.now).leader
    finally:
        daemon.leader.release()
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT decided_at, coalesce(accepted_units, target_units, units), kind "
            "FROM action WHERE state = 'confirmed' ORDER BY id")).all()
    return [(r[0], int(r[1]), str(r[2])) for r in rows], providers


def test_shadow_mode_on_the_field_case_matches_the_simulated_provider_call_by_call(
        engine: sa.Engine, second_engine: sa.Engine, tmp_path: Path) -> None:
    live_dir, shadow_dir = tmp_path / "live", tmp_path / "shadow"
    live_dir.mkdir()
    shadow_dir.mkdir()
    live, _ = _run(_config(live_dir, CONFIG), engine, live_dir)
    targets = [0] + [units for _, units, kind in live if kind == "elastic_set_target"]
    steps = [b - a for a, b in itertools.pairwise(targets)]
    assert any(s > 0 for s in steps) and any(s < 0 for s in steps), (
        "the field case scales up before the peak and down after it", live)

    shadow_config = CONFIG.replace('provider = "simulated"', 'provider = "aws"\nmode = "shadow"')
    stub = boto3.client("bedrock", region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")
    stubber = Stubber(stub)
    for _ in range(2):  # the shadow book's seed: holdings, then the named tranches
        stubber.add_response("list_provisioned_model_throughputs",
                             {"provisionedModelSummaries": []}, {"nameContains": "capsched"})
    stubber.activate()

    def prepare(providers: ProviderSet) -> None:
        wrapped = providers.get("aws")
        assert isinstance(wrapped, ShadowProvider)
        assert isinstance(wrapped.inner, BedrockProvider)
        wrapped.inner.client = stub

    with capture_logs() as logs:
        shadowed, providers = _run(_config(shadow_dir, shadow_config + BEDROCK),
                                   second_engine, shadow_dir, prepare)
    stubber.assert_no_pending_responses()  # nothing but the seeding reads reached AWS
    shadow = providers.get("aws")
    assert isinstance(shadow, ShadowProvider)

    # 1. The journal: the same actions, at the same minutes, with the same targets.
    assert shadowed == live
    # The log carries exactly the calls shadow mode withheld, with their parameters.
    logged = [(e["method"], e["params"]) for e in logs if e["event"] == "provider.shadow_call"]
    assert logged == [(c.method, dict(c.params)) for _, _, c in shadow.calls]
    assert logged, "the shadow run logged its calls"
    # 2. The logged SDK calls: each elastic action is exactly the creates or deletes that
    #    move the throughputs by the simulated provider's change.
    previous = 0
    elastic = [r for r in shadow.records if r.operation == "set_elastic_target"]
    assert [(r.at, r.receipt.accepted_units) for r in elastic] == [  # type: ignore[union-attr]
        (at, units) for at, units, kind in live if kind == "elastic_set_target"]
    for record in elastic:
        target = record.receipt.accepted_units  # type: ignore[union-attr]
        created = sum(c.params["modelUnits"] for c in record.calls
                      if c.method == "bedrock.create_provisioned_model_throughput")
        deleted = sum(1 for c in record.calls
                      if c.method == "bedrock.delete_provisioned_model_throughput")
        assert created - deleted == target - previous, record
        assert all(c.params.get("clientRequestToken", "").startswith(
            record.idempotency_key.replace("_", "-")) for c in record.calls
            if "create" in c.method)
        previous = target
    commitments = [r for r in shadow.records if r.operation == "buy_commitment"]
    assert len(commitments) == sum(1 for *_, kind in live if kind == "buy_commitment")
    for record in commitments:
        (call,) = record.calls
        assert call.params["commitmentDuration"] == "OneMonth"


# -- the spend guard ------------------------------------------------------------------------

GUARDED = CONFIG.replace("max_spill_fraction = 0.0",
                         "max_spill_fraction = 0.0\nmax_hourly_spend = 100.0\n"
                         "max_commitment_spend = 20000.0")


def test_spend_guard_refuses_what_would_pass_the_limits_and_alerts(
        engine: sa.Engine, tmp_path: Path) -> None:
    cfg = _config(tmp_path, GUARDED)
    providers = ProviderSet(cfg, engine)
    guarded = providers.get("simulated")
    assert isinstance(guarded, GuardedProvider)
    clock = Clock()
    set_provider_clocks(providers, cfg, clock)
    daemon = Daemon(cfg, engine, providers, instance_id="guard")  # syncs the deployment
    ident = daemon._ids["bot"]
    names = {ident: "bot"}
    pricing = cfg.deployments[0].pricing
    # Two units cost $76.05 an hour: allowed. Three cost $114.08: refused, never sent.
    journal.plan_action(engine, journal.ActionRequest(
        deployment_id=ident, kind="elastic_set_target", target_units=2), DAY)
    assert [o.outcome for o in journal.send_due(engine, guarded, names, DAY).outcomes] == [
        "confirmed"]
    journal.plan_action(engine, journal.ActionRequest(
        deployment_id=ident, kind="elastic_set_target", target_units=3), DAY)
    report = journal.send_due(engine, guarded, names, DAY)
    (alert,) = report.alerts
    assert alert.error_class == "SpendLimitExceededError"
    assert alert.disposition is Disposition.STOP
    assert "max_hourly_spend" in (alert.error or "") and "'bot'" in (alert.error or "")
    assert guarded.holdings("bot").elastic_target == 2
    held = guarded.holdings("bot")
    assert hourly_spend(3, held, pricing) == pytest.approx(3 * 38.0264)
    # A 30-day unit owes 720 h x 38.0264 x 0.70 = $19,165.31: allowed once, not twice.
    assert commitment_spend(1, 30, held, pricing) == pytest.approx(19165.3056)
    guarded.buy_commitment("bot", 1, 30, idempotency_key="cs-bot-commit-1")
    with pytest.raises(SpendLimitExceededError, match="max_commitment_spend"):
        guarded.buy_commitment("bot", 1, 30, idempotency_key="cs-bot-commit-2")
    # Scale-downs always pass.
    guarded.set_elastic_target("bot", 0, idempotency_key="cs-bot-elastic-down")
    daemon.close()


def test_mode_and_spend_limits_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key 'mode' must be 'live' or 'shadow'"):
        _config(tmp_path, CONFIG.replace('provider = "simulated"',
                                         'provider = "simulated"\nmode = "dry"'))
    with pytest.raises(ConfigError, match="key 'max_hourly_spend' must be >= 0"):
        _config(tmp_path, CONFIG.replace('provider = "simulated"',
                                         'provider = "simulated"\nmax_hourly_spend = -1'))


@pytest.mark.parametrize(("table", "parse"), [
    ("aws", "scheduler.providers.bedrock"), ("azure", "scheduler.providers.azure_openai")])
def test_example_config_cloud_provider_blocks_are_accepted(repo_root: Path, table: str,
                                                           parse: str) -> None:
    import importlib

    lines = (repo_root / "systemd/capsched.toml.example").read_text().splitlines()
    start = lines.index(f"# [providers.{table}]")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    settings = tomllib.loads("\n".join(block))["providers"][table]
    _, deployments = importlib.import_module(parse).parse_settings(table, settings)
    assert list(deployments) == ["gpt-4o-prod"]
