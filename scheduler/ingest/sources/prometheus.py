"""Usage from Prometheus through its HTTP API (``/api/v1/query_range``), with httpx.

Each count (input tokens, output tokens, requests) is one PromQL expression that yields
**cumulative counters** (one or more series). The source asks for their values at every
minute boundary of the window (``step=60``, start and end on minute boundaries) and takes
differences itself, series by series:

    minute [T, T+60) = sum over series of ( value(T+60) - value(T) )

with a counter reset (a value lower than the one before) counted from zero, as PromQL's
``increase()`` does, but without ``increase()``'s extrapolation: the minutes add up to the
counters' own increase, exactly. A series without a sample in the minute before either
boundary of a minute (not yet born, gone, a scrape missed) contributes nothing to it; a
minute no series covers is a gap, never zero. The scrape interval must therefore be at
most 60 s. With scrapes at phase p within the minute, minute T
carries the events between the scrapes that precede T and T+60.

Expressions (``input_query``, ``output_query``, ``requests_query``):

* OpenTelemetry ``gen_ai.client.token.usage`` (a histogram; the Prometheus exporter names
  it ``gen_ai_client_token_usage``, unit suffix ``_tokens`` with newer exporters)::

      input_query    = 'gen_ai_client_token_usage_sum{gen_ai_token_type="input", job="gateway"}'
      output_query   = 'gen_ai_client_token_usage_sum{gen_ai_token_type="output", job="gateway"}'
      requests_query = 'gen_ai_client_token_usage_count{gen_ai_token_type="input", job="gateway"}'

  (each request records one input-token observation, so the input histogram's count is
  the number of requests).
* A plain counter of tokens with a label for the direction::

      input_query    = 'llm_tokens_total{direction="input", deployment="support-bot"}'
      output_query   = 'llm_tokens_total{direction="output", deployment="support-bot"}'
      requests_query = 'llm_requests_total{deployment="support-bot"}'

Do not wrap the expressions in ``rate()``/``increase()``/``sum()``: the source needs the raw
counters to take exact differences and to handle resets per series.

Errors: HTTP 429 and 503 are :class:`SourceThrottled` (``Retry-After`` honoured); other
HTTP errors, ``"status": "error"`` answers, transport errors and malformed JSON are
:class:`SourceError`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from scheduler.config import PullSource
from scheduler.ingest.sources.base import (
    SourceError,
    SourceMinutes,
    SourceThrottled,
    combine,
)

# httpx logs every request at INFO: three lines per source per minute in the daemon's log.
# Failures reach the log through the pull's own error line.
logging.getLogger("httpx").setLevel(logging.WARNING)

#: Prometheus refuses a query_range of more than 11,000 points per series; a day is 1,441.
MAX_MINUTES = 1440


class PrometheusSource:
    """A ``kind = "prometheus"`` source. ``transport`` is for tests (httpx's own seam)."""

    kind = "prometheus"
    max_minutes = MAX_MINUTES

    def __init__(self, spec: PullSource, *, transport: httpx.BaseTransport | None = None) -> None:
        self.spec = spec
        self.queries = {
            "input_tokens": str(spec.option("input_query")),
            "output_tokens": str(spec.option("output_query")),
            "requests": str(spec.option("requests_query")),
        }
        headers = {"Accept": "application/json"}
        token_file = spec.option("bearer_token_file")
        if token_file:
            try:
                token = Path(str(token_file)).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SourceError(f"prometheus: cannot read bearer_token_file: {exc}") from None
            headers["Authorization"] = f"Bearer {token}"
        self.client = httpx.Client(
            base_url=str(spec.option("url")).rstrip("/"),
            headers=headers,
            timeout=float(spec.option("timeout_seconds", 30.0)),
            transport=transport,
        )

    def close(self) -> None:
        self.client.close()

    def read(self, start: dt.datetime, end: dt.datetime) -> SourceMinutes:
        per_count = {name: self._minutes(query, start, end) for name, query in
                     self.queries.items()}
        return combine(per_count, start, end)

    def _minutes(self, query: str, start: dt.datetime, end: dt.datetime) -> dict[int, float]:
        series = self._query_range(query, start, end)
        totals: dict[int, float] = {}
        for values in series:
            for second, value in values.items():
                before = values.get(second - 60)
                if before is None:
                    continue
                increase = value - before if value >= before else value  # a reset
                minute = (second - 60) // 60
                totals[minute] = totals.get(minute, 0.0) + increase
        return totals

    def _query_range(self, query: str, start: dt.datetime, end: dt.datetime
                     ) -> list[dict[int, float]]:
        # Only values from a sample of the minute before each boundary: without this a
        # series that stopped would repeat its last value for Prometheus' 5-minute lookback
        # and read as minutes of zero. (timestamp() of a plain selector is the sample's own
        # time; of any other expression the evaluation time, i.e. always fresh.)
        fresh = f"({query}) unless ((time() - timestamp({query})) >= 60)"
        params = {"query": fresh, "start": f"{start.timestamp():.0f}",
                  "end": f"{end.timestamp():.0f}", "step": "60"}
        try:
            response = self.client.get("/api/v1/query_range", params=params)
        except httpx.HTTPError as exc:
            raise SourceError(f"prometheus {self.client.base_url}: {exc}") from None
        if response.status_code in (429, 503):
            raise SourceThrottled(f"prometheus: HTTP {response.status_code}",
                                  _retry_after(response.headers))
        try:
            body = response.json()
        except ValueError:
            raise SourceError(f"prometheus: HTTP {response.status_code}, not JSON") from None
        if response.status_code != 200 or body.get("status") != "success":
            raise SourceError(f"prometheus: HTTP {response.status_code}: "
                              f"{body.get('errorType', '')}: {body.get('error', body)} "
                              f"(query {query!r})")
        data: Any = body.get("data", {})
        if data.get("resultType") != "matrix":
            raise SourceError(f"prometheus: expected a matrix for {query!r}, "
                              f"got {data.get('resultType')!r}")
        out = []
        try:
            for result in data["result"]:
                out.append({int(float(ts)): float(value) for ts, value in result["values"]})
        except (KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"prometheus: malformed matrix for {query!r}: {exc}") from None
        return out


def _retry_after(headers: Mapping[str, str]) -> float | None:
    try:
        return float(headers["Retry-After"])
    except (KeyError, ValueError):
        return None

