"""CloudWatch source (Bedrock metrics) replayed through botocore's Stubber.

Response shapes are GetMetricData's documented ones
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html):
``MetricDataResults[{Id, Label, Timestamps, Values, StatusCode}]`` plus ``NextToken`` while
a result is ``PartialData``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from botocore.stub import Stubber

from scheduler.ingest.sources.cloudwatch import CloudWatchSource
from scheduler.ingest.sources.pull import PullError, pull
from scheduler.store import sources as source_store
from tests.sources_support import source_config, stored, synced, utc

SPEC = {"kind": "cloudwatch", "model_id": "anthropic.claude-3-5-sonnet", "region": "us-east-1",
        "trailing_minutes": 15}
T0 = utc(2026, 11, 2, 10, 0)
METRICS = {"input_tokens": "InputTokenCount", "output_tokens": "OutputTokenCount",
           "requests": "Invocations"}


def client() -> Any:
    return boto3.client("cloudwatch", region_name="us-east-1", aws_access_key_id="test",
                        aws_secret_access_key="test")


def result(ident: str, points: dict[int, float], status: str = "Complete") -> dict[str, Any]:
    """One MetricDataResult with datapoints at T0 + k minutes."""
    minutes = sorted(points)
    return {"Id": ident, "Label": METRICS[ident],
            "Timestamps": [T0 + dt.timedelta(minutes=k) for k in minutes],
            "Values": [points[k] for k in minutes], "StatusCode": status}


def expected_request(source: CloudWatchSource, start: dt.datetime, end: dt.datetime,
                     token: str | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"MetricDataQueries": source.queries(), "StartTime": start,
                               "EndTime": end, "ScanBy": "TimestampAscending"}
    if token:
        request["NextToken"] = token
    return request


@pytest.fixture
def setup(engine: sa.Engine) -> tuple[Any, Any, CloudWatchSource, Stubber]:
    deployment, spec = synced(engine, source_config(SPEC))
    cw = client()
    source = CloudWatchSource(spec, client=cw)
    return deployment, spec, source, Stubber(cw)


def test_pages_are_followed_and_partial_minutes_wait_for_the_next_pull(
    engine: sa.Engine, setup: Any
) -> None:
    deployment, spec, source, stub = setup
    now = T0 + dt.timedelta(minutes=15, seconds=40)  # minute 15 is under way: not read
    start, end = T0, T0 + dt.timedelta(minutes=15)
    first = {k: 1000.0 + k for k in range(0, 8)}
    rest = {k: 1000.0 + k for k in range(8, 13) if k != 10}  # minute 10: no datapoint at all
    stub.add_response("get_metric_data", {
        "MetricDataResults": [result("input_tokens", first, "PartialData"),
                              result("output_tokens", {k: v / 10 for k, v in first.items()},
                                     "PartialData"),
                              result("requests", {k: 3.0 for k in first}, "PartialData")],
        "NextToken": "page-2"}, expected_request(source, start, end))
    # Minute 13: input already aggregated, output and invocations not yet (a partial minute).
    stub.add_response("get_metric_data", {
        "MetricDataResults": [result("input_tokens", {**rest, 13: 50.0}),
                              result("output_tokens", {k: v / 10 for k, v in rest.items()}),
                              result("requests", {k: 3.0 for k in rest})]},
        expected_request(source, start, end, "page-2"))
    with stub:
        outcome = pull(engine, deployment, spec, now=now, since=start, source=source)
        stub.assert_no_pending_responses()
    got = stored(engine, "cloudwatch")
    want = {T0 + dt.timedelta(minutes=k): (int(1000 + k), round((1000 + k) / 10), 3)
            for k in [*range(0, 10), 11, 12]}
    assert got == want  # minute 10 is a gap (not zero), minute 13 not yet written
    assert outcome.minutes == 12 and not outcome.stale
    # The next pull re-reads the trailing window; minute 13 is now complete, 10 still absent.
    later = T0 + dt.timedelta(minutes=16, seconds=5)
    with engine.connect() as conn:
        state = source_store.read_state(conn, 1, "cloudwatch")
    assert state is not None and state.high_water == end
    again = {**{k: 1000.0 + k for k in [*range(0, 10), 11, 12]}, 13: 1013.0}
    stub.add_response("get_metric_data", {"MetricDataResults": [
        result("input_tokens", again),
        result("output_tokens", {k: v / 10 for k, v in again.items()}),
        result("requests", {k: 3.0 for k in again})]},
        # From the mark (minute 15) less the 15 trailing minutes, to the last whole minute.
        expected_request(source, T0, T0 + dt.timedelta(minutes=16)))
    with stub:
        pull(engine, deployment, spec, now=later, source=source)
    got = stored(engine, "cloudwatch")
    assert got == {**want, T0 + dt.timedelta(minutes=13): (1013, 101, 3)}
    with engine.connect() as conn:
        total = conn.execute(sa.text("SELECT sum(input_tokens) FROM usage")).scalar_one()
    assert total == sum(a for a, _, _ in got.values())  # re-read minutes replaced, not added


def test_throttling_backs_off_then_succeeds(engine: sa.Engine, setup: Any) -> None:
    deployment, spec, source, stub = setup
    start, end = T0, T0 + dt.timedelta(minutes=2)
    for _ in range(2):
        stub.add_client_error("get_metric_data", "ThrottlingException", "Rate exceeded",
                              http_status_code=400)
    stub.add_response("get_metric_data", {"MetricDataResults": [
        result(name, {0: 10.0, 1: 20.0}) for name in METRICS]},
        expected_request(source, start, end))
    waits: list[float] = []
    with stub:
        pull(engine, deployment, spec, now=end, since=start, source=source, sleep=waits.append)
    assert waits == [1.0, 2.0]
    assert stored(engine) == {T0: (10, 10, 10), T0 + dt.timedelta(minutes=1): (20, 20, 20)}


def test_a_failing_source_marks_usage_stale_and_writes_nothing(
    engine: sa.Engine, setup: Any
) -> None:
    deployment, spec, source, stub = setup
    stub.add_client_error("get_metric_data", "AccessDenied", "not authorised",
                          http_status_code=403)
    with stub, pytest.raises(PullError, match="AccessDenied"):
        pull(engine, deployment, spec, now=T0, source=source)
    # And an empty answer (no datapoints at all) also marks it stale, writing no zeros.
    stub.add_response("get_metric_data", {"MetricDataResults": [
        result(name, {}) for name in METRICS]})
    with stub:
        outcome = pull(engine, deployment, spec, now=T0, source=source)
    assert outcome.stale and outcome.minutes == 0
    assert stored(engine) == {}
    with engine.connect() as conn:
        assert source_store.stale_deployment_ids(conn) == {1}
        state = source_store.read_state(conn, 1, "cloudwatch")
    assert state is not None and state.failures == 0 and state.stale


def test_failures_are_counted_until_a_pull_succeeds(engine: sa.Engine, setup: Any) -> None:
    deployment, spec, source, stub = setup
    for _ in range(2):
        stub.add_client_error("get_metric_data", "InternalFailure", "boom", http_status_code=500)
    with stub:
        for _ in range(2):
            with pytest.raises(PullError):
                pull(engine, deployment, spec, now=T0, source=source)
    with engine.connect() as conn:
        state = source_store.read_state(conn, 1, "cloudwatch")
    assert state is not None and state.failures == 2 and state.stale
    assert state.high_water is None and "InternalFailure" in (state.last_error or "")
    stub.add_response("get_metric_data", {"MetricDataResults": [
        result(name, {-1: 5.0}) for name in METRICS]})
    with stub:
        pull(engine, deployment, spec, now=T0, source=source)
    with engine.connect() as conn:
        state = source_store.read_state(conn, 1, "cloudwatch")
        assert source_store.stale_deployment_ids(conn) == set()
    assert state is not None and state.failures == 0 and state.high_water == T0
    assert stored(engine) == {T0 - dt.timedelta(minutes=1): (5, 5, 5)}


def test_pulled_minutes_add_up_with_a_file_of_another_source(
    engine: sa.Engine, setup: Any, tmp_path: Any
) -> None:
    from scheduler.ingest.write import ingest_files

    deployment, spec, source, stub = setup
    stub.add_response("get_metric_data", {"MetricDataResults": [
        result(name, {0: 100.0, 1: 200.0}) for name in METRICS]})
    with stub:
        pull(engine, deployment, spec, now=T0 + dt.timedelta(minutes=2), since=T0, source=source)
    path = tmp_path / "gw.csv"
    path.write_text("minute_utc,input_tokens,output_tokens,requests\n"
                    f"{T0:%Y-%m-%dT%H:%MZ},1,2,3\n")
    ingest_files(engine, [str(path)], deployment="bot", source="gateway")
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT minute, input_tokens, output_tokens, requests FROM usage_minute "
            "ORDER BY minute")).all()
    assert [tuple(r) for r in rows] == [(T0, 101, 102, 103),
                                         (T0 + dt.timedelta(minutes=1), 200, 200, 200)]


def test_an_adapter_crash_is_a_failed_pull_that_marks_usage_stale(
    engine: sa.Engine, setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not a SourceError: a bug or an SDK error the adapter did not translate. The daemon
    # must still hold (stale) and back off (failure count), as for any failed pull.
    deployment, spec, source, _ = setup

    def crash(start: dt.datetime, end: dt.datetime) -> Any:
        raise KeyError("Timestamps")

    monkeypatch.setattr(source, "read", crash)
    with pytest.raises(PullError, match="unexpected KeyError"):
        pull(engine, deployment, spec, now=T0, source=source)
    assert stored(engine) == {}
    with engine.connect() as conn:
        assert source_store.stale_deployment_ids(conn) == {1}
        state = source_store.read_state(conn, 1, "cloudwatch")
    assert state is not None and state.failures == 1 and state.stale
