"""Providers as the running program uses them: one instance per configured name."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from scheduler.config import Config
from scheduler.daemon.spend_guard import wrap_provider
from scheduler.providers.base import Provider
from scheduler.providers.registry import create_provider


class ProviderSet:
    """Lazily created providers by name, closed together."""

    def __init__(self, config: Config, engine: sa.Engine) -> None:
        self._config = config
        self._engine = engine
        self._providers: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        if name not in self._providers:
            provider = create_provider(
                name, self._config.providers.get(name, {}), engine=self._engine,
                timeout=self._config.daemon.provider_timeout_seconds)
            # Shadow mode and the spend guard, for the deployments that ask for them.
            self._providers[name] = wrap_provider(
                provider, [d for d in self._config.deployments if d.provider == name])
        return self._providers[name]

    def close(self) -> None:
        for provider in self._providers.values():
            provider.close()
        self._providers.clear()


@contextmanager
def provider_set(config: Config, engine: sa.Engine) -> Iterator[ProviderSet]:
    providers = ProviderSet(config, engine)
    try:
        yield providers
    finally:
        providers.close()
