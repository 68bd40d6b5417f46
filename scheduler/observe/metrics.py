"""Prometheus metrics of the daemon, on a registry of their own.

Each :class:`Metrics` owns a dedicated ``CollectorRegistry`` rather than the process-wide
default one: tests (and two daemons in one process) stay isolated, and the endpoint
exposes only capsched's series (no accidental duplicates from imported libraries).

Exposed series (all prefixed ``capsched_``):

=========================================  =========  ====================================
``demand_units{deployment}``               gauge      demand of the last complete minute
``capacity_units{deployment,tier}``        gauge      held units, tier=committed|elastic
``spill_units{deployment}``                gauge      demand above capacity, last minute
``forecast_error{deployment}``             gauge      absolute percentage error (0.1 =
                                                      10 %) of the last minute's forecast
``actions_total{provider,kind,outcome}``   counter    provider actions by result
``provider_errors_total{provider,          counter    provider errors by class name
error_class}``
``tick_duration_seconds``                  histogram  wall time of one tick
``last_tick_timestamp_seconds``            gauge      Unix time the last tick finished
``paused``                                 gauge      1 while ``capsched pause`` is on
``held{deployment}``                       gauge      1 while capacity is held (stale usage)
``sending_stopped{deployment}``            gauge      1 while no action is sent to it: the
                                                      provider said "done" without a change
``cost_month_to_date_dollars{deployment,   gauge      realised cost this UTC month (set at
tier}``                                               each refit): committed, elastic, spill,
                                                      and the baselines dedicated and payg
``spill_fraction_month_to_date             gauge      spilled / demand unit-minutes this
{deployment}``                                        UTC month
=========================================  =========  ====================================

The endpoint is off unless ``[daemon] metrics_address`` is set (:func:`start_metrics_server`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import math
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

NAMESPACE = "capsched"
TIERS = ("committed", "elastic")
COST_TIERS = ("committed", "elastic", "spill", "dedicated", "payg")
#: Ticks run each minute and normally take well under a second; the top buckets show a
#: tick nearing the minute (the next one would be skipped as a misfire).
TICK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, math.inf)


class AddressError(ValueError):
    """A bind address is not ``host:port``; the message shows the expected forms."""


def parse_address(text: str, *, setting: str = "address") -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) or a bare ``port`` meaning 127.0.0.1:port.

    ``:port`` is refused rather than guessed: some tools read it as "all interfaces",
    others as loopback, and an endpoint exposed by mistake is the costly guess.
    """
    value = text.strip()
    if value.isdigit():
        host, port_text = "127.0.0.1", value
    elif value.startswith("["):
        host, sep, port_text = value[1:].partition("]:")
        if not sep:
            raise AddressError(f"{setting}: expected [IPv6]:port, got {text!r}")
    else:
        host, sep, port_text = value.rpartition(":")
        if not sep or ":" in host:
            raise AddressError(
                f"{setting}: expected host:port (127.0.0.1:9108, 0.0.0.0:9108, [::1]:9108), "
                f"got {text!r}"
            )
    if not host:
        raise AddressError(
            f"{setting}: {text!r} has no host; write 127.0.0.1{value} for loopback only "
            f"or 0.0.0.0{value} for every interface"
        )
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise AddressError(f"{setting}: port must be 0-65535, got {text!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def absolute_percentage_error(forecast: float, actual: float) -> float:
    """``|forecast - actual| / actual``; 0 when both are 0, NaN when only ``actual`` is.

    NaN (not +Inf) because a forecast of demand in an idle minute has no relative error;
    Prometheus stores NaN and alert rules comparing it are simply false.
    """
    if actual == 0:
        return 0.0 if forecast == 0 else math.nan
    return abs(forecast - actual) / abs(actual)


class Metrics:
    """The daemon's metrics; every method is thread-safe (prometheus_client locks)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        self._demand = Gauge(
            "demand_units",
            "Demand of the last complete minute, in units.",
            ["deployment"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._capacity = Gauge(
            "capacity_units",
            "Capacity held, in units, by tier (committed or elastic).",
            ["deployment", "tier"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._spill = Gauge(
            "spill_units",
            "Demand above held capacity in the last complete minute, in units.",
            ["deployment"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._forecast_error = Gauge(
            "forecast_error",
            "Absolute percentage error of the last minute's forecast (0.1 = 10%).",
            ["deployment"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._actions = Counter(
            "actions",
            "Provider actions by kind and outcome.",
            ["provider", "kind", "outcome"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._provider_errors = Counter(
            "provider_errors",
            "Provider errors by error class.",
            ["provider", "error_class"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._tick_duration = Histogram(
            "tick_duration_seconds",
            "Wall time of one scheduler tick.",
            namespace=NAMESPACE,
            registry=r,
            buckets=TICK_BUCKETS,
        )
        self._last_tick = Gauge(
            "last_tick_timestamp_seconds",
            "Unix time at which the last tick finished.",
            namespace=NAMESPACE,
            registry=r,
        )
        self._paused = Gauge(
            "paused",
            "1 while the scheduler is paused (no provider actions), else 0.",
            namespace=NAMESPACE,
            registry=r,
        )
        self._held = Gauge(
            "held",
            "1 while a deployment's capacity is held because its usage is stale, else 0.",
            ["deployment"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._sending_stopped = Gauge(
            "sending_stopped",
            "1 while sending to a deployment is stopped after repeated drift, else 0.",
            ["deployment"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._cost_mtd = Gauge(
            "cost_month_to_date_dollars",
            "Realised cost this UTC month by tier (and the dedicated/payg baselines).",
            ["deployment", "tier"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._spill_mtd = Gauge(
            "spill_fraction_month_to_date",
            "Spilled over demanded unit-minutes this UTC month.",
            ["deployment"],
            namespace=NAMESPACE,
            registry=r,
        )
        self._paused.set(0)
        # Labelled children by (metric, labels): labels() validates and locks on every call,
        # which at five gauges per deployment per tick was a measurable slice of a tick.
        self._children: dict[tuple[Gauge, tuple[str, ...]], Gauge] = {}

    def _series(self, gauge: Gauge, *labels: str) -> Gauge:
        key = (gauge, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = gauge.labels(*labels)
        return child

    def set_demand(self, deployment: str, units: float) -> None:
        self._series(self._demand, deployment).set(units)

    def set_capacity(self, deployment: str, *, committed: float, elastic: float) -> None:
        self._series(self._capacity, deployment, "committed").set(committed)
        self._series(self._capacity, deployment, "elastic").set(elastic)

    def set_spill(self, deployment: str, units: float) -> None:
        self._series(self._spill, deployment).set(units)

    def set_forecast_error(self, deployment: str, error: float) -> None:
        self._series(self._forecast_error, deployment).set(error)

    def observe_forecast(self, deployment: str, *, forecast: float, actual: float) -> float:
        """Set ``forecast_error`` from a forecast and the demand that happened; return it."""
        error = absolute_percentage_error(forecast, actual)
        self.set_forecast_error(deployment, error)
        return error

    def record_action(self, provider: str, kind: str, outcome: str) -> None:
        self._actions.labels(provider=provider, kind=kind, outcome=outcome).inc()

    def record_provider_error(self, provider: str, error_class: str) -> None:
        self._provider_errors.labels(provider=provider, error_class=error_class).inc()

    def observe_tick(self, duration_seconds: float, finished_at: dt.datetime) -> None:
        """One tick done: its duration, and when it finished (an aware datetime)."""
        if finished_at.tzinfo is None:
            raise ValueError("finished_at must be timezone-aware")
        self._tick_duration.observe(duration_seconds)
        self._last_tick.set(finished_at.timestamp())

    def set_paused(self, paused: bool) -> None:
        self._paused.set(1 if paused else 0)

    def set_held(self, deployment: str, held: bool) -> None:
        self._series(self._held, deployment).set(1 if held else 0)

    def set_sending_stopped(self, deployment: str, stopped: bool) -> None:
        self._series(self._sending_stopped, deployment).set(1 if stopped else 0)

    def set_cost_month_to_date(self, deployment: str, dollars: dict[str, float],
                               spill_fraction: float | None) -> None:
        """Month-to-date dollars by tier (``committed``, ``elastic``, ``spill``, and the
        baselines ``dedicated``, ``payg``) and the spill fraction (NaN before any demand)."""
        for tier, value in dollars.items():
            self._series(self._cost_mtd, deployment, tier).set(value)
        self._series(self._spill_mtd, deployment).set(
            math.nan if spill_fraction is None else spill_fraction)

    def forget_deployment(self, deployment: str) -> None:
        """Drop a deployment's gauges (it left the config on reload) so none stay frozen."""
        for gauge in (self._demand, self._spill, self._forecast_error, self._held,
                      self._sending_stopped, self._spill_mtd):
            self._children.pop((gauge, (deployment,)), None)
            _remove(gauge, deployment)
        for tier in TIERS:
            self._children.pop((self._capacity, (deployment, tier)), None)
            _remove(self._capacity, deployment, tier)
        for tier in COST_TIERS:
            self._children.pop((self._cost_mtd, (deployment, tier)), None)
            _remove(self._cost_mtd, deployment, tier)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # the series was never set
        gauge.remove(*labels)


@dataclass
class MetricsServer:
    """A running metrics endpoint; :meth:`stop` shuts it down and frees the port."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(address: str, registry: CollectorRegistry) -> MetricsServer | None:
    """Serve ``registry`` at ``http://address/metrics``; None when ``address`` is empty (off).

    Port 0 picks a free port (tests); :attr:`MetricsServer.port` is the one bound. The
    endpoint has no authentication: keep it on loopback or a private network.
    """
    if not address.strip():
        return None
    host, port = parse_address(address, setting="[daemon] metrics_address")
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(host, int(server.server_port), server, thread)
