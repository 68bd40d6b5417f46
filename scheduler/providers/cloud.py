"""Settings parsing shared by the cloud adapters (:mod:`.azure_openai`, :mod:`.bedrock`).

Each adapter's ``[providers.<name>]`` table has provider-wide keys and a
``[providers.<name>.deployments.<deployment>]`` table per capsched deployment it serves.
Errors name the table and the key (``[providers.aws.deployments.chat]: key 'model_id' is
required``) and are :class:`~scheduler.providers.errors.ProviderConfigError`. No key holds a
secret: credentials come from each vendor's standard chain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scheduler.providers.base import ProviderLimits
from scheduler.providers.errors import ProviderConfigError


def check_keys(where: str, table: Mapping[str, Any], known: set[str],
               required: tuple[str, ...] = ()) -> None:
    unknown = set(table) - known
    if unknown:
        raise ProviderConfigError(
            f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(known))})")
    for key in required:
        if key not in table:
            raise ProviderConfigError(f"{where}: key {key!r} is required")


def get_str(where: str, table: Mapping[str, Any], key: str, default: str | None = None
            ) -> str | None:
    value = table.get(key, default)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ProviderConfigError(f"{where}: key {key!r} must be a non-empty string")
    return value


def get_int(where: str, table: Mapping[str, Any], key: str, default: int, *,
            minimum: int = 0) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProviderConfigError(f"{where}: key {key!r} must be an integer >= {minimum}, "
                                  f"got {value!r}")
    return value


def get_timeout(where: str, table: Mapping[str, Any], default: float) -> float:
    value = table.get("timeout_seconds", default)
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0):
        raise ProviderConfigError(f"{where}: key 'timeout_seconds' must be a positive number")
    return float(value)


def deployment_tables(where: str, settings: Mapping[str, Any]
                      ) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """``{deployment: (where, table)}`` of the ``deployments`` sub-tables."""
    raw = settings.get("deployments", {})
    if not isinstance(raw, Mapping) or not raw:
        raise ProviderConfigError(
            f"{where}: needs a [{where[1:-1]}.deployments.<name>] table per deployment it serves")
    found: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for name, table in raw.items():
        sub = f"{where[:-1]}.deployments.{name}]"
        if not isinstance(table, Mapping):
            raise ProviderConfigError(f"{sub} must be a table")
        found[str(name)] = (sub, table)
    return found


#: Keys every cloud deployment table accepts (the contract's limits).
LIMIT_KEYS = {"lead_time_minutes", "min_hold_minutes", "max_units", "max_step"}


@dataclass(frozen=True)
class CommonLimits:
    """The limits every cloud deployment table carries (see ``ProviderLimits``)."""

    lead_time_minutes: int
    min_hold_minutes: int
    max_units: int
    max_step: int

    @classmethod
    def parse(cls, where: str, table: Mapping[str, Any], *, lead: int, hold: int
              ) -> CommonLimits:
        return cls(
            lead_time_minutes=get_int(where, table, "lead_time_minutes", lead),
            min_hold_minutes=get_int(where, table, "min_hold_minutes", hold),
            max_units=get_int(where, table, "max_units", 100),
            max_step=get_int(where, table, "max_step", 100, minimum=1),
        )

    def provider_limits(self, terms: tuple[int, ...] = ()) -> ProviderLimits:
        return ProviderLimits(max_units=self.max_units, max_step=self.max_step,
                              supported_terms=terms, lead_time_minutes=self.lead_time_minutes,
                              min_hold_minutes=self.min_hold_minutes)
