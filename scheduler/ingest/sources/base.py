"""What every pull source shares: the minutes it returns, its errors, throttling backoff.

A source answers one question, :meth:`Source.read`: the complete minutes in ``[start, end)``
(both minute boundaries, UTC). It never invents a minute: a minute the monitoring system
has no point for, or has only some of the three counts for (a *partial minute*, e.g. the
input tokens already aggregated and the output tokens not yet), is left out and stays a gap
until a later pull's trailing window reads it complete. Zero is written only where the
source itself says zero.

Errors (SDK exceptions never leave an adapter):

* :class:`SourceThrottled` - the service asked us to slow down (HTTP 429, CloudWatch
  ``ThrottlingException``, Azure Monitor 429). :func:`with_backoff` retries it with capped
  exponential backoff, honouring ``retry_after`` when the service gave one.
* :class:`SourceError` - anything else (bad credentials, unknown metric, a server error,
  a malformed answer). The pull fails, the deployment's usage is marked stale, nothing of
  the failing window is written.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import numpy.typing as npt

T = TypeVar("T")

#: The three counts a minute of usage carries, in the ingest file's column order.
COUNTS = ("input_tokens", "output_tokens", "requests")


class SourceError(RuntimeError):
    """A pull source failed; the message names the source and why."""


class SourceThrottled(SourceError):
    """The service throttled the request; ``retry_after`` seconds if it said how long."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SourceMinutes:
    """Complete minutes read from a source, ascending: (n,) minute starts (datetime64[m],
    UTC) and (n,) int64 counts."""

    minutes: npt.NDArray[np.datetime64]
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    requests: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.minutes.shape[0])


class Source(Protocol):
    """One configured pull source of one deployment."""

    kind: str
    #: The longest window one :meth:`read` should cover (a backfill is read in such chunks;
    #: each chunk is written and its high-water mark committed before the next).
    max_minutes: int

    def read(self, start: dt.datetime, end: dt.datetime) -> SourceMinutes:
        """Complete minutes in [start, end); raises SourceError / SourceThrottled."""
        ...

    def close(self) -> None: ...


def minute_index(value: dt.datetime) -> int:
    """Minutes since the Unix epoch of an aware datetime (floored)."""
    return int(value.astimezone(dt.UTC).timestamp() // 60)


def combine(
    per_count: Mapping[str, Mapping[int, float]], start: dt.datetime, end: dt.datetime
) -> SourceMinutes:
    """Minutes (epoch-minute index -> value, one mapping per count) into SourceMinutes.

    Keeps only minutes in [start, end) that all three counts report (a partial minute is
    left for a later read). Values are rounded to integers: token and request counters
    are integral, monitoring systems hand them back as floats. A negative value is an
    error of the source, not a count.
    """
    lo, hi = minute_index(start), minute_index(end)
    common = set.intersection(*(set(per_count[name]) for name in COUNTS))
    keep = sorted(m for m in common if lo <= m < hi)
    arrays = []
    for name in COUNTS:
        values = np.array([per_count[name][m] for m in keep], dtype=np.float64)
        if values.size and (not np.isfinite(values).all() or (values < 0).any()):
            raise SourceError(f"{name}: the source returned a negative or non-finite count")
        arrays.append(np.rint(values).astype(np.int64))
    minutes = np.array(keep, dtype=np.int64).astype("datetime64[m]")
    return SourceMinutes(minutes, arrays[0], arrays[1], arrays[2])


def with_backoff(
    call: Callable[[], T],
    *,
    attempts: int = 5,
    base_seconds: float = 1.0,
    cap_seconds: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()``, retried on :class:`SourceThrottled` with capped exponential backoff.

    Waits ``retry_after`` when the service gave one (capped), else base x 2^k. After
    ``attempts`` throttled answers the last SourceThrottled propagates.
    """
    for attempt in range(attempts):
        try:
            return call()
        except SourceThrottled as exc:
            if attempt == attempts - 1:
                raise
            wait = exc.retry_after if exc.retry_after is not None else base_seconds * 2**attempt
            sleep(min(max(wait, 0.0), cap_seconds))
    raise AssertionError("unreachable")
