"""Finding provider implementations by name, through Python entry points.

Providers register in the entry-point group ``capsched.providers``; capsched itself ships
``http`` and ``simulated`` (see ``pyproject.toml``). A third party ships its own as a
separate package::

    [project.entry-points."capsched.providers"]
    acme = "acme_capsched:AcmeProvider"

An entry point resolves to a :class:`~scheduler.providers.base.Provider` subclass (built with
``from_settings``) or, for adapters that prefer it, any callable with the
:class:`ProviderFactory` signature returning a ``Provider``.

The TOML table ``[providers.<name>]`` configures one provider instance. Its implementation is
the entry point named ``type`` in that table, or ``<name>`` itself when there is no ``type``,
so two HTTP shims can be configured side by side::

    [providers.azure-east]
    type = "http"
    url = "https://shim-east.internal/"
    token_file = "/run/credentials/capsched.service/azure-east"
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from scheduler.providers.base import DEFAULT_TIMEOUT_SECONDS, Provider
from scheduler.providers.errors import ProviderConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

ENTRY_POINT_GROUP = "capsched.providers"
#: The key of a ``[providers.<name>]`` table naming the implementation to use.
TYPE_KEY = "type"


class ProviderFactory(Protocol):
    """A callable that builds a provider; ``Provider.from_settings`` has this shape."""

    def __call__(
        self,
        name: str,
        settings: Mapping[str, Any],
        *,
        engine: Engine | None = ...,
        timeout: float = ...,
    ) -> Provider: ...


class EntryPointLike(Protocol):
    """The part of ``importlib.metadata.EntryPoint`` the registry uses (eases testing)."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


class UnknownProviderError(ProviderConfigError):
    """No entry point has the requested name; the message lists the known ones."""

    def __init__(self, kind: str, known: Iterable[str]) -> None:
        self.kind = kind
        self.known = tuple(sorted(known))
        listing = ", ".join(self.known) or "none installed"
        super().__init__(
            f"unknown provider type {kind!r} (known: {listing}; providers register in the "
            f"{ENTRY_POINT_GROUP!r} entry-point group)"
        )


def installed_entry_points() -> tuple[EntryPointLike, ...]:
    """The entry points of the ``capsched.providers`` group in the current environment."""
    return tuple(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _by_name(entry_points: Iterable[EntryPointLike]) -> dict[str, EntryPointLike]:
    found: dict[str, EntryPointLike] = {}
    for entry_point in entry_points:
        previous = found.get(entry_point.name)
        if previous is not None and previous.value != entry_point.value:
            # Two packages claim the same name: picking one silently would run the wrong
            # code against a real account.
            raise ProviderConfigError(
                f"provider type {entry_point.name!r} is registered twice "
                f"({previous.value} and {entry_point.value}); uninstall one"
            )
        found.setdefault(entry_point.name, entry_point)
    return found


def available_providers(
    entry_points: Iterable[EntryPointLike] | None = None,
) -> tuple[str, ...]:
    """Sorted names of the registered provider types (without importing them)."""
    points = installed_entry_points() if entry_points is None else entry_points
    return tuple(sorted(_by_name(points)))


def load_provider_factory(
    kind: str, *, entry_points: Iterable[EntryPointLike] | None = None
) -> ProviderFactory:
    """Import the implementation registered as ``kind`` and return its factory."""
    points = _by_name(installed_entry_points() if entry_points is None else entry_points)
    entry_point = points.get(kind)
    if entry_point is None:
        raise UnknownProviderError(kind, points)
    try:
        target = entry_point.load()
    except Exception as exc:  # an ImportError or whatever the plugin raises on import
        raise ProviderConfigError(
            f"provider type {kind!r} ({entry_point.value}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(target, type):
        if not issubclass(target, Provider):
            raise ProviderConfigError(
                f"provider type {kind!r} ({entry_point.value}) is not a subclass of "
                f"scheduler.providers.Provider"
            )
        factory: ProviderFactory = target.from_settings
        return factory
    if callable(target):
        callable_factory: ProviderFactory = target
        return callable_factory
    raise ProviderConfigError(
        f"provider type {kind!r} ({entry_point.value}) is neither a Provider class nor callable"
    )


def create_provider(
    name: str,
    settings: Mapping[str, Any] | None = None,
    *,
    engine: Engine | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    entry_points: Iterable[EntryPointLike] | None = None,
) -> Provider:
    """Create the provider configured as ``[providers.<name>]``.

    ``settings`` is that TOML table as loaded (``Config.providers[name]``); its ``type`` key,
    if present, picks the implementation, otherwise ``name`` does. ``timeout`` is the
    daemon-wide default (``[daemon] provider_timeout_seconds``); a provider's own
    ``timeout_seconds`` overrides it. ``entry_points`` replaces the installed ones (tests).

    Raises :class:`UnknownProviderError` (listing the known names) or
    :class:`ProviderConfigError`.
    """
    settings = dict(settings or {})
    kind = settings.pop(TYPE_KEY, name)
    if not isinstance(kind, str) or not kind:
        raise ProviderConfigError(f"[providers.{name}]: {TYPE_KEY!r} must be a non-empty string")
    factory = load_provider_factory(kind, entry_points=entry_points)
    provider = factory(name, settings, engine=engine, timeout=timeout)
    if not isinstance(provider, Provider):
        raise ProviderConfigError(
            f"provider type {kind!r} built {type(provider).__name__}, not a Provider"
        )
    return provider


__all__ = [
    "ENTRY_POINT_GROUP",
    "EntryPointLike",
    "ProviderFactory",
    "UnknownProviderError",
    "available_providers",
    "create_provider",
    "installed_entry_points",
    "load_provider_factory",
]
