"""Azure Monitor source (Azure OpenAI metrics) through azure-monitor-query's
MetricsQueryClient on a replayed azure.core transport (RequestsTransport over a requests
adapter that answers from a script and records what was asked).

Answers follow the documented shape of Metrics - List, api-version 2018-01-01
(https://learn.microsoft.com/rest/api/monitor/metrics/list): ``value[]`` per metric with
``timeseries[].data[] = {"timeStamp", "total"}``; a point without ``total`` had no data.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.monitor.query import MetricsQueryClient

from scheduler.ingest.sources.azure_monitor import AzureMonitorSource
from scheduler.ingest.sources.pull import PullError, pull
from scheduler.store import sources as source_store
from tests.sources_support import source_config, stored, synced, utc

RESOURCE = ("/subscriptions/0000/resourceGroups/rg/providers/"
            "Microsoft.CognitiveServices/accounts/contoso-openai")
SPEC = {"kind": "azure_monitor", "resource_id": RESOURCE, "deployment_name": "gpt-4o-ptu"}
T0 = utc(2026, 11, 2, 10, 0)
NAMES = {"input_tokens": "ProcessedPromptTokens", "output_tokens": "GeneratedTokens",
         "requests": "AzureOpenAIRequests"}


class Credential:
    """A token credential for the replay (the transport never checks the token)."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("replayed-token", int(time.time()) + 3600)


class Replay(requests.adapters.BaseAdapter):
    def __init__(self, answers: list[tuple[int, dict[str, Any], dict[str, str]]]) -> None:
        super().__init__()
        self.answers, self.sent = answers, []  # type: ignore[var-annotated]

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        status, body, headers = self.answers.pop(0)
        response = requests.Response()
        response.status_code, response.url, response.request = status, str(request.url), request
        content = json.dumps(body).encode()
        response._content = content
        response.raw = urllib3.HTTPResponse(body=io.BytesIO(content), status=status,
                                            preload_content=False)
        response.headers.update({"Content-Type": "application/json", **headers})
        response.encoding = "utf-8"
        return response

    def close(self) -> None:
        pass


def metrics_body(points: dict[str, dict[int, float | None]], start: dt.datetime,
                 end: dt.datetime) -> dict[str, Any]:
    """A Metrics - List answer: per metric, one time series of PT1M points from T0 + k."""
    value = []
    for metric, by_minute in points.items():
        data = []
        for k, total in sorted(by_minute.items()):
            point: dict[str, Any] = {"timeStamp": (T0 + dt.timedelta(minutes=k)).strftime(
                "%Y-%m-%dT%H:%M:%SZ")}
            if total is not None:
                point["total"] = total
            data.append(point)
        value.append({
            "id": f"{RESOURCE}/providers/Microsoft.Insights/metrics/{metric}",
            "type": "Microsoft.Insights/metrics",
            "name": {"value": metric, "localizedValue": metric}, "unit": "Count",
            "timeseries": [{"metadatavalues": [
                {"name": {"value": "modeldeploymentname", "localizedValue": "ModelDeploymentName"},
                 "value": "gpt-4o-ptu"}], "data": data}],
            "errorCode": "Success"})
    return {"cost": 0, "timespan": f"{start:%Y-%m-%dT%H:%M:%SZ}/{end:%Y-%m-%dT%H:%M:%SZ}",
            "interval": "PT1M", "namespace": "Microsoft.CognitiveServices/accounts",
            "resourceregion": "swedencentral", "value": value}


def source_on(spec: Any, replay: Replay, retries: int = 3) -> AzureMonitorSource:
    session = requests.Session()
    session.mount("https://", replay)
    client = MetricsQueryClient(Credential(), transport=RequestsTransport(
        session=session, session_owner=False), retry_total=retries, retry_backoff_factor=0)
    return AzureMonitorSource(spec, deployment_name="ignored", client=client)


def test_chunks_partial_minutes_and_gaps(engine: sa.Engine) -> None:
    deployment, spec = synced(engine, source_config(SPEC))
    minutes = 1000  # more than one query (720 minutes each)
    end = T0 + dt.timedelta(minutes=minutes)
    split = T0 + dt.timedelta(minutes=720)
    full = {k: float(100 + k) for k in range(minutes)}
    first = {NAMES["input_tokens"]: {k: full[k] for k in range(720)},
             NAMES["output_tokens"]: {k: full[k] / 4 for k in range(720)},
             NAMES["requests"]: {k: 2.0 for k in range(720)}}
    first[NAMES["output_tokens"]][5] = None  # minute 5: output not there: a partial minute
    second = {NAMES["input_tokens"]: {k: full[k] for k in range(720, minutes)},
              NAMES["output_tokens"]: {k: full[k] / 4 for k in range(720, minutes)},
              NAMES["requests"]: {k: (None if k == 900 else 2.0) for k in range(720, minutes)}}
    replay = Replay([(200, metrics_body(first, T0, split), {}),
                     (200, metrics_body(second, split, end), {})])
    source = source_on(spec, replay)
    outcome = pull(engine, deployment, spec, now=end, since=T0, source=source)
    assert len(replay.sent) == 2 and outcome.chunks == 2
    query = parse_qs(urlsplit(str(replay.sent[0].url)).query)
    assert query["metricnames"] == ["ProcessedPromptTokens,GeneratedTokens,AzureOpenAIRequests"]
    assert query["interval"] == ["PT1M"] and query["aggregation"] == ["Total"]
    assert query["$filter"] == ["ModelDeploymentName eq 'gpt-4o-ptu'"]
    assert query["timespan"][0].startswith("2026-11-02T10:00:00")
    assert str(replay.sent[0].url).startswith(f"https://management.azure.com{RESOURCE}/")
    want = {T0 + dt.timedelta(minutes=k): (100 + k, round((100 + k) / 4), 2)
            for k in range(minutes) if k not in (5, 900)}
    assert stored(engine, "azure_monitor") == want


def test_throttling_meets_azure_cores_retry_then_ours(engine: sa.Engine) -> None:
    deployment, spec = synced(engine, source_config(SPEC))
    end = T0 + dt.timedelta(minutes=2)
    ok = metrics_body({name: {0: 10.0, 1: 11.0} for name in NAMES.values()}, T0, end)
    throttled = (429, {"error": {"code": "TooManyRequests", "message": "slow down"}},
                 {"Retry-After": "0"})
    # azure-core's retry policy absorbs one 429 (Retry-After: 0) by itself.
    replay = Replay([throttled, (200, ok, {})])
    pull(engine, deployment, spec, now=end, since=T0, source=source_on(spec, replay))
    assert len(replay.sent) == 2
    assert stored(engine) == {T0: (10, 10, 10), T0 + dt.timedelta(minutes=1): (11, 11, 11)}
    # With the SDK's retries spent, the 429 reaches the source, which backs off and retries.
    replay = Replay([throttled, throttled, (200, ok, {})])
    waits: list[float] = []
    pull(engine, deployment, spec, now=end, since=T0, source=source_on(spec, replay, 0),
         sleep=waits.append)
    assert waits == [0.0, 0.0] and len(replay.sent) == 3


def test_an_error_answer_fails_the_pull_and_marks_usage_stale(engine: sa.Engine) -> None:
    deployment, spec = synced(engine, source_config(SPEC))
    replay = Replay([(403, {"error": {"code": "AuthorizationFailed", "message": "no"}}, {})])
    with pytest.raises(PullError, match="403"):
        pull(engine, deployment, spec, now=T0, source=source_on(spec, replay))
    with engine.connect() as conn:
        assert source_store.stale_deployment_ids(conn) == {1}
    assert stored(engine) == {}
