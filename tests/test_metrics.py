"""Metrics: update through :class:`Metrics`, scrape over loopback HTTP, parse the text."""

from __future__ import annotations

import datetime as dt
import math
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from scheduler.observe.metrics import (
    AddressError,
    Metrics,
    MetricsServer,
    absolute_percentage_error,
    is_loopback,
    parse_address,
    start_metrics_server,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: MetricsServer) -> Samples:
    with urllib.request.urlopen(server.url, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(metrics: Metrics) -> Iterator[MetricsServer]:
    handle = start_metrics_server("127.0.0.1:0", metrics.registry)
    assert handle is not None
    try:
        yield handle
    finally:
        handle.stop()


def test_scrape_shows_every_update(metrics: Metrics, server: MetricsServer) -> None:
    metrics.set_demand("gpt-4o", 12.5)
    metrics.set_capacity("gpt-4o", committed=10, elastic=4)
    metrics.set_spill("gpt-4o", 0.5)
    assert metrics.observe_forecast("gpt-4o", forecast=11.0, actual=10.0) == pytest.approx(0.1)
    metrics.record_action("azure", "set_elastic", "applied")
    metrics.record_action("azure", "set_elastic", "applied")
    metrics.record_action("azure", "commit", "failed")
    metrics.record_provider_error("azure", "ProviderUnavailable")
    finished = dt.datetime(2026, 3, 2, 10, 0, 5, tzinfo=dt.UTC)
    metrics.observe_tick(0.3, finished)
    metrics.observe_tick(12.0, finished + dt.timedelta(minutes=1))
    metrics.set_paused(True)
    metrics.set_held("gpt-4o", True)

    s = scrape(server)
    assert s[key("capsched_demand_units", deployment="gpt-4o")] == 12.5
    assert s[key("capsched_capacity_units", deployment="gpt-4o", tier="committed")] == 10
    assert s[key("capsched_capacity_units", deployment="gpt-4o", tier="elastic")] == 4
    assert s[key("capsched_spill_units", deployment="gpt-4o")] == 0.5
    assert s[key("capsched_forecast_error", deployment="gpt-4o")] == pytest.approx(0.1)
    applied = key("capsched_actions_total", provider="azure", kind="set_elastic", outcome="applied")
    assert s[applied] == 2
    assert s[key("capsched_actions_total", provider="azure", kind="commit", outcome="failed")] == 1
    errors = key(
        "capsched_provider_errors_total", provider="azure", error_class="ProviderUnavailable"
    )
    assert s[errors] == 1
    assert s[key("capsched_tick_duration_seconds_count")] == 2
    assert s[key("capsched_tick_duration_seconds_sum")] == pytest.approx(12.3)
    assert s[key("capsched_tick_duration_seconds_bucket", le="0.5")] == 1
    assert s[key("capsched_tick_duration_seconds_bucket", le="20.0")] == 2
    last = (finished + dt.timedelta(minutes=1)).timestamp()
    assert s[key("capsched_last_tick_timestamp_seconds")] == last
    assert s[key("capsched_paused")] == 1
    assert s[key("capsched_held", deployment="gpt-4o")] == 1

    metrics.set_paused(False)
    metrics.set_held("gpt-4o", False)
    s = scrape(server)
    assert s[key("capsched_paused")] == 0
    assert s[key("capsched_held", deployment="gpt-4o")] == 0


def test_paused_is_exposed_before_any_update(server: MetricsServer) -> None:
    assert scrape(server)[key("capsched_paused")] == 0


def test_forget_deployment_drops_its_series(metrics: Metrics, server: MetricsServer) -> None:
    for name in ("a", "b"):
        metrics.set_demand(name, 1)
        metrics.set_capacity(name, committed=1, elastic=1)
        metrics.set_held(name, False)
    metrics.forget_deployment("a")
    metrics.forget_deployment("never-seen")  # no error for a deployment without series
    s = scrape(server)
    assert not [k for k in s if ("deployment", "a") in k[1]]
    assert s[key("capsched_demand_units", deployment="b")] == 1
    assert s[key("capsched_capacity_units", deployment="b", tier="elastic")] == 1


def test_registries_are_isolated() -> None:
    first, second = Metrics(), Metrics()  # same names twice: no "Duplicated timeseries"
    first.set_demand("x", 3)
    assert second.registry.get_sample_value("capsched_demand_units", {"deployment": "x"}) is None
    assert first.registry.get_sample_value("capsched_demand_units", {"deployment": "x"}) == 3
    assert REGISTRY.get_sample_value("capsched_demand_units", {"deployment": "x"}) is None


def test_observe_tick_needs_an_aware_time(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        metrics.observe_tick(1.0, dt.datetime(2026, 3, 2, 10, 0))


def test_absolute_percentage_error() -> None:
    assert absolute_percentage_error(90, 100) == pytest.approx(0.1)
    assert absolute_percentage_error(150, 100) == pytest.approx(0.5)
    assert absolute_percentage_error(0, 0) == 0
    assert math.isnan(absolute_percentage_error(5, 0))


def test_server_is_off_without_an_address() -> None:
    assert start_metrics_server("", Metrics().registry) is None
    assert start_metrics_server("  ", Metrics().registry) is None


def test_stop_frees_the_port(metrics: Metrics) -> None:
    handle = start_metrics_server("127.0.0.1:0", metrics.registry)
    assert handle is not None
    port = handle.port
    handle.stop()
    again = start_metrics_server(f"127.0.0.1:{port}", metrics.registry)
    assert again is not None
    again.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9108", ("127.0.0.1", 9108)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:9108", ("::1", 9108)),
        ("localhost:80", ("localhost", 80)),
        ("9108", ("127.0.0.1", 9108)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", [":9108", "host", "::1:9108", "[::1]9108", "h:99999", "h:x"])
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
