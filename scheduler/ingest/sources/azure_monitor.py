"""Usage from Azure Monitor: Azure OpenAI's per-deployment metrics through
azure-monitor-query's ``MetricsQueryClient`` (1.x).

An Azure OpenAI (Cognitive Services) account publishes ``ProcessedPromptTokens`` (input
tokens), ``GeneratedTokens`` (output tokens) and ``AzureOpenAIRequests`` with the dimension
``ModelDeploymentName`` at ``PT1M`` grain
(https://learn.microsoft.com/azure/ai-services/openai/monitor-openai-reference). The source
asks for the ``Total`` aggregation of the three, filtered to one deployment
(``ModelDeploymentName eq 'name'``), one minute per point.

Response shape (``GET {resource}/providers/Microsoft.Insights/metrics``, api-version
2018-01-01): ``{"timespan", "interval": "PT1M", "value": [{"name": {"value": metric},
"timeseries": [{"metadatavalues": [...], "data": [{"timeStamp": ..., "total": 123.0},
{"timeStamp": ...}]}], "errorCode": "Success"}]}``. A point without ``total`` is a minute
with no data: a gap, never zero. The Metrics API does not page by link; a long window is read
in chunks of :data:`MAX_MINUTES` (each written and its high-water mark committed in turn).

Credentials: azure-identity's ``DefaultAzureCredential`` (environment, managed identity,
Azure CLI); never the capsched database. Throttling (HTTP 429) first meets azure-core's
retry policy, which honours ``Retry-After``; a 429 that outlasts it is
:class:`SourceThrottled` for :func:`scheduler.ingest.sources.base.with_backoff`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from scheduler.config import PullSource
from scheduler.ingest.sources.base import (
    SourceError,
    SourceMinutes,
    SourceThrottled,
    combine,
    minute_index,
)

DEFAULT_METRICS = {
    "input_tokens": "ProcessedPromptTokens",
    "output_tokens": "GeneratedTokens",
    "requests": "AzureOpenAIRequests",
}
#: Minutes asked for in one query (12 hours of PT1M points per metric).
MAX_MINUTES = 720


class AzureMonitorSource:
    """A ``kind = "azure_monitor"`` source. ``client`` is a ``MetricsQueryClient`` (tests
    build one on a replaying azure.core transport); by default one is made with
    ``DefaultAzureCredential``."""

    kind = "azure_monitor"
    max_minutes = MAX_MINUTES

    def __init__(self, spec: PullSource, *, deployment_name: str, client: Any = None) -> None:
        self.spec = spec
        self.resource_id = str(spec.option("resource_id"))
        self.dimension = str(spec.option("dimension", "ModelDeploymentName"))
        self.deployment_name = str(spec.option("deployment_name", deployment_name))
        self.metrics = {
            name: str(spec.option(f"{name.split('_')[0]}_metric", default))
            for name, default in DEFAULT_METRICS.items()
        }
        if client is None:
            try:
                from azure.identity import DefaultAzureCredential
                from azure.monitor.query import MetricsQueryClient
            except ImportError:
                raise SourceError("azure_monitor sources need azure-monitor-query and "
                                  "azure-identity: pip install 'capsched[azure]'") from None
            client = MetricsQueryClient(DefaultAzureCredential(), connection_timeout=10,
                                        read_timeout=30)
        self.client = client

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    def read(self, start: dt.datetime, end: dt.datetime) -> SourceMinutes:
        from azure.core.exceptions import AzureError, HttpResponseError

        value = self.deployment_name.replace("'", "''")
        try:
            result = self.client.query_resource(
                self.resource_id,
                metric_names=list(self.metrics.values()),
                timespan=(start, end),
                granularity=dt.timedelta(minutes=1),
                aggregations=["Total"],
                filter=f"{self.dimension} eq '{value}'",
            )
        except HttpResponseError as exc:
            message = f"azure_monitor {self.resource_id}: HTTP {exc.status_code}: {exc.message}"
            if exc.status_code == 429:
                headers: Any = getattr(exc.response, "headers", None) or {}
                try:
                    retry_after: float | None = float(headers.get("Retry-After", ""))
                except ValueError:
                    retry_after = None
                raise SourceThrottled(message, retry_after) from None
            raise SourceError(message) from None
        except AzureError as exc:
            raise SourceError(f"azure_monitor {self.resource_id}: {exc}") from None
        by_metric = {metric: name for name, metric in self.metrics.items()}
        per_count: dict[str, dict[int, float]] = {name: {} for name in self.metrics}
        for metric in result.metrics:
            name = by_metric.get(metric.name)
            if name is None:
                continue
            for series in metric.timeseries:
                for point in series.data:
                    if point.total is None or point.timestamp is None:
                        continue  # no data that minute: a gap
                    minute = minute_index(point.timestamp)
                    per_count[name][minute] = per_count[name].get(minute, 0.0) + point.total
        missing = [m for m, name in by_metric.items() if name not in
                   {by_metric.get(x.name) for x in result.metrics}]
        if missing:
            raise SourceError(f"azure_monitor {self.resource_id}: no metric {missing[0]!r} in "
                              "the answer")
        return combine(per_count, start, end)
