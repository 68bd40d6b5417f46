"""Usage from Amazon CloudWatch: Bedrock's per-model metrics through ``GetMetricData``.

Amazon Bedrock publishes, in namespace ``AWS/Bedrock`` with dimension ``ModelId``,
``InputTokenCount``, ``OutputTokenCount`` and ``Invocations`` at one-minute resolution
(https://docs.aws.amazon.com/bedrock/latest/userguide/monitoring.html). The source asks
for the ``Sum`` of each over 60-second periods in one ``GetMetricData`` call
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricData.html),
following ``NextToken`` until the answer is complete. A datapoint's timestamp is the start
of its period, i.e. the minute.

Response shape (per query): ``MetricDataResults[i] = {"Id", "Label", "Timestamps": [...],
"Values": [...], "StatusCode": "Complete" | "PartialData" | "InternalError" | "Forbidden"}``;
``PartialData`` comes with a ``NextToken`` whose pages carry the rest. A minute without a
datapoint (no invocations, or not yet aggregated) is a gap, never zero.

Credentials: boto3's default chain (environment, ``profile``, instance or task role);
never the capsched database. Throttling (``Throttling``, ``ThrottlingException``,
``TooManyRequestsException``) first meets botocore's own retries (standard mode), then
:func:`scheduler.ingest.sources.base.with_backoff`.
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
    "input_tokens": "InputTokenCount",
    "output_tokens": "OutputTokenCount",
    "requests": "Invocations",
}
THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded"}
)
#: A day of three metrics is 4,320 datapoints, far under GetMetricData's 100,800 per call.
MAX_MINUTES = 1440


class CloudWatchSource:
    """A ``kind = "cloudwatch"`` source. ``client`` is a boto3 CloudWatch client (tests pass
    one wrapped in botocore's Stubber); by default one is made from the source's keys."""

    kind = "cloudwatch"
    max_minutes = MAX_MINUTES

    def __init__(self, spec: PullSource, *, client: Any = None) -> None:
        self.spec = spec
        self.namespace = str(spec.option("namespace", "AWS/Bedrock"))
        self.dimension = str(spec.option("dimension", "ModelId"))
        self.model_id = str(spec.option("model_id"))
        self.metrics = {
            name: str(spec.option(f"{name.split('_')[0]}_metric", default))
            for name, default in DEFAULT_METRICS.items()
        }
        self.client = client if client is not None else self._make_client(spec)

    @staticmethod
    def _make_client(spec: PullSource) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise SourceError("cloudwatch sources need boto3: pip install 'capsched[aws]'"
                              ) from None
        session = boto3.session.Session(profile_name=spec.option("profile"),
                                        region_name=spec.option("region"))
        return session.client(
            "cloudwatch", endpoint_url=spec.option("endpoint_url"),
            config=Config(retries={"mode": "standard", "max_attempts": 5},
                          connect_timeout=10, read_timeout=30))

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()

    def queries(self) -> list[dict[str, Any]]:
        return [
            {
                "Id": name,
                "MetricStat": {
                    "Metric": {
                        "Namespace": self.namespace,
                        "MetricName": metric,
                        "Dimensions": [{"Name": self.dimension, "Value": self.model_id}],
                    },
                    "Period": 60,
                    "Stat": "Sum",
                },
                "ReturnData": True,
            }
            for name, metric in self.metrics.items()
        ]

    def read(self, start: dt.datetime, end: dt.datetime) -> SourceMinutes:
        from botocore.exceptions import BotoCoreError, ClientError

        per_count: dict[str, dict[int, float]] = {name: {} for name in self.metrics}
        request: dict[str, Any] = {
            "MetricDataQueries": self.queries(),
            "StartTime": start,
            "EndTime": end,
            "ScanBy": "TimestampAscending",
        }
        while True:
            try:
                page = self.client.get_metric_data(**request)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                message = f"cloudwatch GetMetricData: {code}: {exc}"
                if code in THROTTLING_CODES:
                    raise SourceThrottled(message) from None
                raise SourceError(message) from None
            except BotoCoreError as exc:
                raise SourceError(f"cloudwatch GetMetricData: {exc}") from None
            for result in page.get("MetricDataResults", []):
                name = result.get("Id")
                if name not in per_count:
                    continue
                status = result.get("StatusCode", "Complete")
                if status not in ("Complete", "PartialData"):
                    raise SourceError(f"cloudwatch {self.metrics[name]}: status {status}: "
                                      f"{result.get('Messages', '')}")
                for stamp, value in zip(result.get("Timestamps", []), result.get("Values", []),
                                        strict=True):
                    per_count[name][minute_index(stamp)] = float(value)
            token = page.get("NextToken")
            if not token:
                break
            request["NextToken"] = token
        return combine(per_count, start, end)
