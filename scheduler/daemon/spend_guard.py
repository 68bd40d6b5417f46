"""The spend guard and the per-deployment mode: how the daemon wraps a configured provider.

:func:`wrap_provider` is what :class:`scheduler.daemon.providers.ProviderSet` applies to each
provider it creates:

* deployments with ``mode = "shadow"`` go through
  :class:`scheduler.providers.shadow.ShadowProvider` (computed, journalled, logged, not sent);
* deployments with ``max_hourly_spend`` or ``max_commitment_spend`` go through
  :class:`GuardedProvider`, outside the shadow wrapper, so a rehearsal shows the refusals a
  live run would get.

The guard prices actions with the deployment's own ``[deployment.pricing]``, by the rules of
docs/economics.md:

* **hourly spend** after an elastic change to ``target`` units at time ``t``:
  ``target * elastic_unit_hour + sum_c units_c * elastic_unit_hour * (1 - discount_c)`` over
  the commitments active at ``t``. Only a scale-up can pass the limit: scale-downs always go.
* **commitment spend** of a purchase of ``k`` units for ``T`` days:
  ``k * elastic_unit_hour * (1 - discount_T) * 24 * T`` plus what the active commitments
  still owe until they end (``units * hourly rate * hours left``).

A refused action raises :class:`SpendLimitExceededError` (permanent): nothing reaches the
provider, the journal fails the action and reports an alert naming the deployment, the
price and the limit, and ``spend_guard.refused`` is logged at error level.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

import structlog

from scheduler.config import Deployment, Pricing
from scheduler.providers.base import (
    DEFAULT_TIMEOUT_SECONDS,
    OP_BUY_COMMITMENT,
    OP_SET_ELASTIC_TARGET,
    Commitment,
    CommitmentReceipt,
    ElasticReceipt,
    Holdings,
    Provider,
    ProviderLimits,
    RequestLookup,
)
from scheduler.providers.errors import ProviderConfigError, SpendLimitExceededError
from scheduler.providers.shadow import MODE_SHADOW, ShadowProvider

log = structlog.get_logger()


def _discount(pricing: Pricing, term_days: int) -> float:
    try:
        return pricing.commit_discount(term_days)
    except ValueError:  # a term the planner does not buy (an Azure reservation, SixMonths)
        return pricing.commit_30d_discount


def committed_hourly(commitments: Sequence[Commitment], pricing: Pricing,
                     at: dt.datetime) -> float:
    """Dollars per hour of the commitments active at ``at``."""
    return sum(c.units * pricing.elastic_unit_hour * (1 - _discount(pricing, c.term_days))
               for c in commitments if c.is_active(at))


def hourly_spend(target: int, holdings: Holdings, pricing: Pricing) -> float:
    """Dollars per hour once the elastic target is ``target`` (economics.md rates)."""
    return (target * pricing.elastic_unit_hour
            + committed_hourly(holdings.commitments, pricing, holdings.as_of))


def commitment_spend(units: int, term_days: int, holdings: Holdings, pricing: Pricing
                     ) -> float:
    """Dollars a new commitment costs over its term plus what active ones still owe."""
    rate = pricing.elastic_unit_hour
    owed = sum(
        c.units * rate * (1 - _discount(pricing, c.term_days))
        * max(0.0, (c.end - holdings.as_of) / dt.timedelta(hours=1))
        for c in holdings.commitments if c.end > holdings.as_of)
    return owed + units * rate * (1 - _discount(pricing, term_days)) * 24 * term_days


class GuardedProvider(Provider):
    """Refuses actions that would pass a deployment's spend limits; passes the rest on."""

    def __init__(self, inner: Provider, deployments: Mapping[str, Deployment]) -> None:
        super().__init__(inner.name, timeout=inner.timeout)
        self.inner = inner
        self.deployments = dict(deployments)

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], *, engine: Any = None,
                      timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Self:
        raise ProviderConfigError("the spend guard is built by the daemon, not configured")

    def set_clock(self, clock: Callable[[], dt.datetime]) -> None:
        setter = getattr(self.inner, "set_clock", None)
        if callable(setter):
            setter(clock)

    def holdings(self, deployment: str) -> Holdings:
        return self.inner.holdings(deployment)

    def holdings_many(self, deployments: Sequence[str]) -> dict[str, Holdings]:
        return self.inner.holdings_many(deployments)

    def limits(self, deployment: str) -> ProviderLimits:
        return self.inner.limits(deployment)

    def lookup_request(self, idempotency_key: str) -> RequestLookup:
        return self.inner.lookup_request(idempotency_key)

    def _refuse(self, deployment: str, operation: str, what: str, price: float,
                key: str, limit: float) -> SpendLimitExceededError:
        log.error("spend_guard.refused", provider=self.name, deployment=deployment,
                  operation=operation, spend=round(price, 2), limit=limit)
        return SpendLimitExceededError(
            f"spend guard: {what} would cost ${price:,.2f}, over deployment "
            f"{deployment!r}'s {key} of ${limit:,.2f}; not sent (raise {key} in the config "
            f"to allow it)", provider=self.name, operation=operation, deployment=deployment,
            code="spend_limit")

    def set_elastic_target(self, deployment: str, target_units: int, *,
                           idempotency_key: str) -> ElasticReceipt:
        config = self.deployments.get(deployment)
        if config is not None and config.max_hourly_spend > 0:
            held = self.inner.holdings(deployment)
            if target_units > held.elastic_target:
                price = hourly_spend(target_units, held, config.pricing)
                if price > config.max_hourly_spend:
                    raise self._refuse(
                        deployment, OP_SET_ELASTIC_TARGET,
                        f"{target_units} elastic unit(s) per hour", price,
                        "max_hourly_spend", config.max_hourly_spend)
        return self.inner.set_elastic_target(deployment, target_units,
                                             idempotency_key=idempotency_key)

    def buy_commitment(self, deployment: str, units: int, term_days: int, *,
                       idempotency_key: str) -> CommitmentReceipt:
        config = self.deployments.get(deployment)
        if config is not None and config.max_commitment_spend > 0:
            held = self.inner.holdings(deployment)
            price = commitment_spend(units, term_days, held, config.pricing)
            if price > config.max_commitment_spend:
                raise self._refuse(
                    deployment, OP_BUY_COMMITMENT,
                    f"{units} unit(s) for {term_days} days (with what active commitments "
                    f"still owe)", price, "max_commitment_spend", config.max_commitment_spend)
        return self.inner.buy_commitment(deployment, units, term_days,
                                         idempotency_key=idempotency_key)

    def close(self) -> None:
        self.inner.close()


def wrap_provider(provider: Provider, deployments: Sequence[Deployment]) -> Provider:
    """``provider`` as the daemon uses it for ``deployments`` (those configured on it):
    shadowed where ``mode = "shadow"``, guarded where a spend limit is set; unchanged when
    neither applies."""
    shadow = [d.name for d in deployments if d.mode == MODE_SHADOW]
    if shadow:
        provider = ShadowProvider(provider, shadow)
    guarded = {d.name: d for d in deployments
               if d.max_hourly_spend > 0 or d.max_commitment_spend > 0}
    if guarded:
        provider = GuardedProvider(provider, guarded)
    return provider


__all__ = ["GuardedProvider", "commitment_spend", "committed_hourly", "hourly_spend",
           "wrap_provider"]
