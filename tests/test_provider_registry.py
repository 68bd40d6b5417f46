"""The provider registry: entry points in, configured providers out."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self, cast

import pytest
from sqlalchemy import Engine

from scheduler.providers import (
    ENTRY_POINT_GROUP,
    Holdings,
    NotSupportedError,
    Provider,
    ProviderConfigError,
    ProviderLimits,
    RequestLookup,
    RequestStatus,
    UnknownProviderError,
    available_providers,
    create_provider,
)
from scheduler.providers.base import ElasticReceipt
from scheduler.providers.http import HttpProvider


class FakeProvider(Provider):
    """The smallest complete provider: required methods only."""

    def __init__(self, name: str, settings: Mapping[str, Any], engine: Any, timeout: float):
        super().__init__(name, timeout=timeout)
        self.settings = dict(settings)
        self.engine = engine

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: Mapping[str, Any],
        *,
        engine: Engine | None = None,
        timeout: float = 10.0,
    ) -> Self:
        return cls(name, settings, engine, timeout)

    def holdings(self, deployment: str) -> Holdings:
        raise AssertionError("not called")

    def limits(self, deployment: str) -> ProviderLimits:
        return ProviderLimits(max_units=1, max_step=1)

    def set_elastic_target(
        self, deployment: str, target_units: int, *, idempotency_key: str
    ) -> ElasticReceipt:
        raise AssertionError("not called")

    def lookup_request(self, idempotency_key: str) -> RequestLookup:
        return RequestLookup(idempotency_key, RequestStatus.UNKNOWN)


@dataclass
class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint, as a third-party package would declare."""

    name: str
    value: str
    target: Any = None
    error: Exception | None = None
    loads: list[str] = field(default_factory=list)

    def load(self) -> Any:
        self.loads.append(self.name)
        if self.error is not None:
            raise self.error
        return self.target


ACME = FakeEntryPoint("acme", "acme_capsched:AcmeProvider", FakeProvider)
OTHER = FakeEntryPoint("other", "other_pkg:Other", FakeProvider)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownProviderError) as caught:
        create_provider("acne", {}, entry_points=[ACME, OTHER])

    assert caught.value.known == ("acme", "other")
    assert "'acne'" in str(caught.value) and "acme, other" in str(caught.value)
    assert isinstance(caught.value, ProviderConfigError)


def test_a_third_party_entry_point_is_built_from_its_settings() -> None:
    engine = cast(Engine, object())  # identity is all the registry may rely on
    provider = create_provider(
        "acme",
        {"region": "eu"},
        engine=engine,
        timeout=3.5,
        entry_points=[ACME],
    )

    assert isinstance(provider, FakeProvider)
    assert (provider.name, provider.settings, provider.timeout) == ("acme", {"region": "eu"}, 3.5)
    assert provider.engine is engine


def test_the_timeout_is_on_by_default() -> None:
    provider = create_provider("acme", {}, entry_points=[ACME])
    assert provider.timeout == 10.0


def test_type_key_picks_the_implementation_and_name_stays_the_instance() -> None:
    provider = create_provider(
        "acme-eu", {"type": "acme", "region": "eu"}, entry_points=[ACME, OTHER]
    )

    assert isinstance(provider, FakeProvider)
    assert provider.name == "acme-eu"
    assert provider.settings == {"region": "eu"}  # `type` is the registry's, not the adapter's


def test_a_plain_factory_function_is_accepted() -> None:
    def factory(
        name: str, settings: Mapping[str, Any], *, engine: Any = None, timeout: float = 10.0
    ) -> Provider:
        return FakeProvider(f"built-{name}", settings, engine, timeout)

    point = FakeEntryPoint("fn", "pkg:factory", factory)
    assert create_provider("fn", {}, entry_points=[point]).name == "built-fn"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (dict, "not a subclass"),
        (42, "neither a Provider class nor callable"),
        (lambda *args, **kwargs: object(), "not a Provider"),
    ],
)
def test_entry_points_that_are_not_providers_are_refused(
    target: Callable[..., Any] | int, message: str
) -> None:
    point = FakeEntryPoint("bad", "pkg:bad", target)
    with pytest.raises(ProviderConfigError, match=message):
        create_provider("bad", {}, entry_points=[point])


def test_a_plugin_that_fails_to_import_is_a_config_error_naming_it() -> None:
    point = FakeEntryPoint("broken", "broken_pkg:P", error=ImportError("No module 'boto9'"))
    with pytest.raises(ProviderConfigError, match=r"broken_pkg:P.*ImportError.*boto9"):
        create_provider("broken", {}, entry_points=[point])


def test_only_the_requested_entry_point_is_imported() -> None:
    acme = FakeEntryPoint("acme", "acme:P", FakeProvider)
    broken = FakeEntryPoint("broken", "broken:P", error=ImportError("boom"))

    create_provider("acme", {}, entry_points=[acme, broken])
    assert available_providers([acme, broken]) == ("acme", "broken")
    assert broken.loads == []


def test_two_packages_claiming_one_name_are_refused() -> None:
    twin = FakeEntryPoint("acme", "evil_pkg:AcmeProvider", FakeProvider)
    with pytest.raises(ProviderConfigError, match="registered twice"):
        create_provider("acme", {}, entry_points=[ACME, twin])


def test_lookup_goes_through_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    groups: list[str] = []

    def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
        groups.append(group)
        return [ACME]

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)

    assert isinstance(create_provider("acme", {}), FakeProvider)
    assert groups == [ENTRY_POINT_GROUP] == ["capsched.providers"]


def test_the_installed_package_declares_http_and_simulated() -> None:
    assert {"http", "simulated"} <= set(available_providers())


def test_http_is_created_through_the_real_entry_point() -> None:
    provider = create_provider(
        "shim", {"type": "http", "url": "http://127.0.0.1:1", "token": "t"}, timeout=4
    )
    assert isinstance(provider, HttpProvider)
    assert (provider.name, provider.timeout) == ("shim", 4.0)


# -- the contract itself ------------------------------------------------------------------


def test_buying_commitments_is_optional_and_says_who_lacks_it() -> None:
    provider = FakeProvider("acme", {}, None, 1.0)

    with pytest.raises(NotSupportedError) as caught:
        provider.buy_commitment("gpt-4o", 1, 30, idempotency_key="k")

    error = caught.value
    assert (error.provider, error.operation, error.capability) == (
        "acme",
        "buy_commitment",
        "commitments",
    )
    assert "acme" in str(error) and "commitments" in str(error)


def test_a_provider_missing_a_required_method_cannot_be_built() -> None:
    class Incomplete(Provider):
        @classmethod
        def from_settings(
            cls,
            name: str,
            settings: Mapping[str, Any],
            *,
            engine: Engine | None = None,
            timeout: float = 10.0,
        ) -> Self:
            return cls(name)

        def holdings(self, deployment: str) -> Holdings:
            raise AssertionError

    point = FakeEntryPoint("incomplete", "pkg:Incomplete", Incomplete)
    with pytest.raises(TypeError, match="abstract"):
        create_provider("incomplete", {}, entry_points=[point])


def test_timeouts_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout"):
        FakeProvider("acme", {}, None, 0.0)
