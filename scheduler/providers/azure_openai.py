"""The ``azure_openai`` provider: Azure OpenAI provisioned deployments (PTUs).

Install with ``pip install 'capsched[azure]'`` (azure-mgmt-cognitiveservices, azure-identity).
Credentials come from ``DefaultAzureCredential`` (environment, workload identity, managed
identity, Azure CLI); the config holds names only.

* **Elastic capacity** is the deployment's ``sku.capacity`` in PTUs (SKU
  ``ProvisionedManaged``, ``GlobalProvisionedManaged`` or ``DataZoneProvisionedManaged``),
  read with ``deployments.get`` and changed with ``deployments.begin_create_or_update``
  (the deployment as read, with the new capacity). One capsched unit is ``ptu_per_unit`` PTUs,
  a multiple of the model's PTU increment (``deployments.list_skus``); the capacity never goes
  below the model's minimum (a scale-down under it is clamped, ``clamp_reason``
  ``"model_minimum"``), because a provisioned deployment cannot hold zero PTUs.
* **Lead time**: the change is a long-running operation; capsched does not wait on it. While
  ``provisioningState`` is ``Updating`` or ``Creating`` the added units are pending in the
  holdings (``lead_time_minutes`` is the planner's estimate).
* **Commitments**: Azure reservations are bought outside this API, for a month or a year.
  The adapter sells no 7- or 30-day term (``ProviderLimits.supported_terms`` is empty,
  ``buy_commitment`` raises :class:`NotSupportedError`). ``reserved_ptu`` PTUs of the
  deployment are covered by a reservation: the holdings report them as one committed
  ``Commitment`` (30-day term, rolling unless ``reservation_end`` is given), so the planner
  plans elastic units only above them. Elastic units are the PTUs above ``reserved_ptu``,
  billed hourly.
* **Bookkeeping in tags**: capsched writes the deployment's ``capsched-key`` (the idempotency
  key of the last change, what :meth:`lookup_request` looks for) and ``capsched-book`` (its
  elastic tranches with start and minimum-hold end, so holds survive a restart). A capacity
  that no longer matches the book was changed by hand: it is read as one tranche without a
  hold, and the journal's reconcile reports the drift.

Configuration::

    [providers.azure]
    type = "azure_openai"
    subscription_id = "00000000-0000-0000-0000-000000000000"
    resource_group = "rg-llm"
    account = "aoai-prod"            # the Azure OpenAI (Cognitive Services) account
    timeout_seconds = 10
    [providers.azure.deployments.support-bot]
    azure_deployment = "gpt-4o-ptu"  # default: the capsched deployment's name
    ptu_per_unit = 50                # PTUs per capsched unit (unit_tpm is per unit)
    reserved_ptu = 100               # PTUs covered by an Azure reservation
    reservation_end = 2027-06-30T00:00:00Z   # optional
    lead_time_minutes = 15
    min_hold_minutes = 60
    max_units = 20

Errors at the edge: 429 and 5xx -> :class:`ProviderUnavailable` with the ``Retry-After`` hint;
quota codes -> :class:`QuotaExceededError`; capacity codes -> :class:`OutOfCapacityError`;
401 and missing credentials -> :class:`AuthenticationError`; 403 ->
:class:`PermissionDeniedError` naming the RBAC action; 404 and validation ->
:class:`InvalidRequestError`. The minimal custom role is ``docs/iam/azure-role.json``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import structlog

from scheduler.providers.base import (
    DEFAULT_TIMEOUT_SECONDS,
    OP_HOLDINGS,
    OP_LOOKUP_REQUEST,
    OP_SET_ELASTIC_TARGET,
    Commitment,
    CommitmentReceipt,
    ElasticReceipt,
    ElasticTranche,
    Holdings,
    Provider,
    ProviderLimits,
    RequestLookup,
    RequestStatus,
    check_idempotency_key,
    require_utc,
)
from scheduler.providers.cloud import (
    LIMIT_KEYS,
    CommonLimits,
    check_keys,
    deployment_tables,
    get_int,
    get_str,
    get_timeout,
)
from scheduler.providers.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotSupportedError,
    OutOfCapacityError,
    PermissionDeniedError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceededError,
)
from scheduler.providers.shadow import (
    ElasticChange,
    SdkCall,
    Tranche,
    apply_change,
    scale_down,
    utc_now,
)

log = structlog.get_logger()

Clock = Callable[[], dt.datetime]

PROVISIONED_SKUS = ("ProvisionedManaged", "GlobalProvisionedManaged",
                    "DataZoneProvisionedManaged")
TAG_KEY = "capsched-key"
TAG_BOOK = "capsched-book"
_BUSY_STATES = {"Creating", "Updating", "Accepted"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
#: Azure tag values hold at most 256 characters.
_TAG_LIMIT = 256

#: The RBAC action behind each SDK operation the adapter calls (docs/iam/azure-role.json
#: must grant exactly these; tests/test_provider_azure.py checks it).
RBAC_ACTIONS = {
    "deployments.get": "Microsoft.CognitiveServices/accounts/deployments/read",
    "deployments.list_skus": "Microsoft.CognitiveServices/accounts/deployments/read",
    "deployments.begin_create_or_update":
        "Microsoft.CognitiveServices/accounts/deployments/write",
    "permissions.list": "Microsoft.Authorization/permissions/read",
}
_QUOTA_CODES = {"InsufficientQuota", "QuotaExceeded", "SpecialFeatureOrQuotaIdRequired"}
_CAPACITY_CODES = {"InsufficientCapacity", "CapacityNotAvailable", "NoCapacity",
                   "ServiceCapacityUnavailable"}
_ACTION = re.compile(r"perform action '([^']+)'")
#: How providers word "no capacity to give" when their error code does not say it.
CAPACITY_TEXT = re.compile(
    r"(insufficient|not enough|no) (available )?capacity|capacity (is )?(not available|"
    r"unavailable)", re.IGNORECASE)


@dataclass(frozen=True)
class AzureDeployment:
    """One capsched deployment backed by one Azure OpenAI provisioned deployment."""

    azure_deployment: str
    limits: CommonLimits
    ptu_per_unit: int | None = None
    reserved_ptu: int = 0
    reservation_end: dt.datetime | None = None


_PROVIDER_KEYS = {"type", "subscription_id", "resource_group", "account", "timeout_seconds",
                  "deployments"}
_DEPLOYMENT_KEYS = LIMIT_KEYS | {"azure_deployment", "ptu_per_unit", "reserved_ptu",
                                 "reservation_end"}


def parse_settings(name: str, settings: Mapping[str, Any]
                   ) -> tuple[dict[str, str], dict[str, AzureDeployment]]:
    """Validate ``[providers.<name>]``; returns the account's coordinates and deployments."""
    where = f"[providers.{name}]"
    check_keys(where, settings, _PROVIDER_KEYS,
               required=("subscription_id", "resource_group", "account"))
    account = {key: str(get_str(where, settings, key))
               for key in ("subscription_id", "resource_group", "account")}
    deployments: dict[str, AzureDeployment] = {}
    for dep, (sub, table) in deployment_tables(where, settings).items():
        check_keys(sub, table, _DEPLOYMENT_KEYS)
        end = table.get("reservation_end")
        if isinstance(end, str):
            try:
                end = dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
            except ValueError:
                raise ProviderConfigError(
                    f"{sub}: key 'reservation_end' must be a date-time, got {end!r}") from None
        if end is not None and (not isinstance(end, dt.datetime) or end.tzinfo is None):
            raise ProviderConfigError(
                f"{sub}: key 'reservation_end' must be a date-time with a UTC offset")
        ppu = table.get("ptu_per_unit")
        deployments[dep] = AzureDeployment(
            azure_deployment=str(get_str(sub, table, "azure_deployment", dep)),
            limits=CommonLimits.parse(sub, table, lead=15, hold=60),
            ptu_per_unit=None if ppu is None else get_int(sub, table, "ptu_per_unit", 1,
                                                          minimum=1),
            reserved_ptu=get_int(sub, table, "reserved_ptu", 0),
            reservation_end=None if end is None else end.astimezone(dt.UTC))
    return account, deployments


def encode_book(tranches: Sequence[Tranche], now: dt.datetime) -> str:
    """``units:start:hold_end;...`` in epoch minutes; tranches past their hold are merged
    into one (their start no longer matters) so the tag stays under 256 characters."""
    free = sum(t.units for t in tranches if t.hold_until <= now)
    held = [t for t in tranches if t.hold_until > now]
    parts = [f"{free}:0:0"] if free else []
    parts += [f"{t.units}:{_minutes(t.active_from)}:{_minutes(t.hold_until)}" for t in held]
    text = ";".join(parts)
    while len(text) > _TAG_LIMIT and len(parts) > 1:  # release the oldest holds first
        first, second = parts[0].split(":"), parts[1].split(":")
        parts[:2] = [f"{int(first[0]) + int(second[0])}:0:0"]
        text = ";".join(parts)
    return text


def decode_book(text: str | None) -> list[Tranche] | None:
    if not text:
        return None
    tranches = []
    try:
        for i, part in enumerate(text.split(";")):
            units, start, hold = (int(v) for v in part.split(":"))
            tranches.append(Tranche(f"t{i}", units, _EPOCH + dt.timedelta(minutes=start),
                                    _EPOCH + dt.timedelta(minutes=hold)))
    except ValueError:
        return None  # edited by hand: read the capacity as one tranche
    return tranches


def _minutes(value: dt.datetime) -> int:
    return int((value - _EPOCH) // dt.timedelta(minutes=1))


@dataclass(frozen=True)
class _State:
    body: dict[str, Any]
    sku: str
    capacity: int
    busy: bool
    failed: bool
    tags: dict[str, str]


class AzureOpenAIProvider(Provider):
    """Azure OpenAI provisioned deployments; see the module docstring."""

    def __init__(self, name: str, *, client: Any, account: Mapping[str, str],
                 deployments: Mapping[str, AzureDeployment],
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, clock: Clock | None = None) -> None:
        super().__init__(name, timeout=timeout)
        #: A ``CognitiveServicesManagementClient`` (tests give it a replaying transport).
        self.client = client
        self.account = dict(account)
        self.deployments = dict(deployments)
        self._clock: Clock = clock or utc_now
        self._skus: dict[str, tuple[int, int]] = {}
        self._last: dict[str, _State] = {}

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], *, engine: Any = None,
                      timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Self:
        account, deployments = parse_settings(name, settings)
        own_timeout = get_timeout(f"[providers.{name}]", settings, timeout)
        try:
            from azure.identity import DefaultAzureCredential
            from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
        except ImportError as exc:
            raise ProviderConfigError(
                f"[providers.{name}]: the azure_openai provider needs azure-identity and "
                f"azure-mgmt-cognitiveservices: pip install 'capsched[azure]' ({exc})") from exc
        # azure-core logs every request and azure-identity every credential it tries at
        # INFO: a line per call per tick. Their warnings and errors still come through.
        for logger in ("azure.core.pipeline.policies.http_logging_policy", "azure.identity"):
            logging.getLogger(logger).setLevel(logging.WARNING)
        client = CognitiveServicesManagementClient(
            DefaultAzureCredential(), account["subscription_id"],
            # No retries inside the SDK: azure-core would sleep out a Retry-After of any
            # length inside a tick. The journal retries with the same key after the hint.
            connection_timeout=own_timeout, read_timeout=own_timeout, retry_total=0)
        return cls(name, client=client, account=account, deployments=deployments,
                   timeout=own_timeout)

    def set_clock(self, clock: Clock) -> None:
        self._clock = clock

    def _now(self) -> dt.datetime:
        return require_utc(self._clock(), "the azure_openai provider's clock")

    def _deployment(self, deployment: str, operation: str) -> AzureDeployment:
        found = self.deployments.get(deployment)
        if found is None:
            raise InvalidRequestError(
                f"deployment {deployment!r} has no [providers.{self.name}.deployments."
                f"{deployment}] table", provider=self.name, operation=operation,
                deployment=deployment)
        return found

    # -- the edge --------------------------------------------------------------------------

    @contextmanager
    def _edge(self, operation: str, deployment: str | None, sdk_call: str) -> Iterator[None]:
        try:
            yield
        except ProviderError:
            raise
        except Exception as exc:
            raise self._translate(exc, operation, deployment, sdk_call) from exc

    def _translate(self, exc: Exception, operation: str, deployment: str | None,
                   sdk_call: str) -> ProviderError:
        from azure.core import exceptions as ax

        kw: dict[str, Any] = {"provider": self.name, "operation": operation,
                              "deployment": deployment}
        where = (f"deployment {deployment!r} (Azure {self.account['account']}/"
                 f"{self.deployments[deployment].azure_deployment})"
                 if deployment in self.deployments else f"account {self.account['account']}")
        if isinstance(exc, ax.ClientAuthenticationError) and _status(exc) != 403:
            return AuthenticationError(
                f"{sdk_call}: {exc.message if hasattr(exc, 'message') else exc} (no usable "
                f"Azure credentials: DefaultAzureCredential tries AZURE_CLIENT_ID/"
                f"AZURE_TENANT_ID/AZURE_CLIENT_SECRET, workload identity, managed identity "
                f"and `az login`)", status=_status(exc), **kw)
        if isinstance(exc, ax.HttpResponseError):
            status = _status(exc)
            error = getattr(exc, "error", None)
            code = str(getattr(error, "code", None) or "") or None
            message = str(getattr(error, "message", None) or exc.message or exc)
            text = f"{sdk_call} on {where}: {code or status}: {message}"
            kw.update(code=code, status=status)
            if status == 403 or code in ("AuthorizationFailed", "LinkedAuthorizationFailed"):
                match = _ACTION.search(message)
                permission = match.group(1) if match else RBAC_ACTIONS.get(sdk_call)
                return PermissionDeniedError(
                    f"{text} (grant {permission} on {where}; see docs/iam/azure-role.json)",
                    permission=permission, **kw)
            if code in _QUOTA_CODES:
                return QuotaExceededError(text, **kw)
            if code in _CAPACITY_CODES or CAPACITY_TEXT.search(message):
                return OutOfCapacityError(text, **kw)
            if status == 429 or (status is not None and status >= 500):
                headers: Any = getattr(exc.response, "headers", None) or {}
                return ProviderUnavailable(text, retry_after=_seconds(
                    headers.get("Retry-After")), **kw)
            if status == 404:
                return InvalidRequestError(f"{text} (unknown deployment: check "
                                           f"azure_deployment, resource_group and account)",
                                           **kw)
            if status is not None and 400 <= status < 500:
                return InvalidRequestError(text, **kw)
            return ProviderProtocolError(text, **kw)
        if isinstance(exc, ax.ServiceResponseTimeoutError | ax.ServiceRequestTimeoutError):
            return ProviderTimeout(f"{sdk_call}: {exc}", **kw)
        if isinstance(exc, ax.ServiceRequestError | ax.ServiceResponseError):
            return ProviderUnavailable(f"{sdk_call}: {exc}", **kw)
        return ProviderProtocolError(f"{sdk_call}: {type(exc).__name__}: {exc}", **kw)

    # -- reading ---------------------------------------------------------------------------

    def _coordinates(self, dep: AzureDeployment) -> dict[str, str]:
        return {"resource_group_name": self.account["resource_group"],
                "account_name": self.account["account"],
                "deployment_name": dep.azure_deployment}

    def _read(self, deployment: str, operation: str) -> _State:
        dep = self._deployment(deployment, operation)
        with self._edge(operation, deployment, "deployments.get"):
            found = self.client.deployments.get(**self._coordinates(dep))
            body = found.serialize(keep_readonly=False)
        sku = found.sku.name if found.sku is not None else None
        if sku not in PROVISIONED_SKUS or found.sku.capacity is None:
            raise InvalidRequestError(
                f"Azure deployment {dep.azure_deployment!r} has SKU {sku!r}, not a provisioned "
                f"one ({', '.join(PROVISIONED_SKUS)})", provider=self.name,
                operation=operation, deployment=deployment)
        provisioning = str(getattr(found.properties, "provisioning_state", "") or "")
        state = _State(body=body, sku=sku, capacity=int(found.sku.capacity),
                       busy=provisioning in _BUSY_STATES, failed=provisioning == "Failed",
                       tags=dict(found.tags or {}))
        self._last[deployment] = state
        return state

    def _sku_limits(self, deployment: str, operation: str) -> tuple[int, int]:
        """(minimum PTUs, PTU increment) of the deployment's model and SKU."""
        if deployment not in self._skus:
            dep = self._deployment(deployment, operation)
            state = self._read(deployment, operation)
            minimum, step = 0, 1
            with self._edge(operation, deployment, "deployments.list_skus"):
                for item in self.client.deployments.list_skus(**self._coordinates(dep)):
                    if item.sku is not None and item.sku.name == state.sku and item.capacity:
                        minimum = int(item.capacity.minimum or 0)
                        step = int(item.capacity.step or 1)
            self._skus[deployment] = (minimum, step)
        return self._skus[deployment]

    def _ptu_per_unit(self, deployment: str, operation: str) -> int:
        dep = self._deployment(deployment, operation)
        _, step = self._sku_limits(deployment, operation)
        ppu = dep.ptu_per_unit or step
        if ppu % step:
            raise InvalidRequestError(
                f"ptu_per_unit {ppu} is not a multiple of the model's PTU increment {step}",
                provider=self.name, operation=operation, deployment=deployment)
        return ppu

    def _tranches(self, deployment: str, state: _State, now: dt.datetime) -> list[Tranche]:
        dep = self.deployments[deployment]
        ppu = self._ptu_per_unit(deployment, OP_HOLDINGS)
        elastic = max(0, state.capacity - dep.reserved_ptu) // ppu
        book = decode_book(state.tags.get(TAG_BOOK))
        if book is None or sum(t.units for t in book) != elastic:
            # Never managed by capsched, or changed by hand since: no hold is known.
            return [Tranche("manual", elastic, _EPOCH, _EPOCH)] if elastic else []
        if state.busy and book:
            # The long-running operation still runs: what the last change added is pending
            # even when the estimated lead time has passed.
            last = max(book, key=lambda t: t.active_from)
            if last.active_from <= now < last.hold_until:
                soon = now + dt.timedelta(minutes=1)
                book = [Tranche(t.ref, t.units, soon, soon + (t.hold_until - t.active_from))
                        if t is last else t for t in book]
        return book

    def _holdings(self, deployment: str, state: _State, now: dt.datetime) -> Holdings:
        dep = self.deployments[deployment]
        ppu = self._ptu_per_unit(deployment, OP_HOLDINGS)
        commitments: tuple[Commitment, ...] = ()
        reserved_units = dep.reserved_ptu // ppu
        if reserved_units and (dep.reservation_end is None or dep.reservation_end > now):
            # A reservation is no 7/30-day term; shown as a 30-day one so the planner
            # counts it, ending at reservation_end or rolling (renewed) without one.
            end = dep.reservation_end or now.replace(second=0, microsecond=0) + dt.timedelta(
                days=30)
            end = min(end, now + dt.timedelta(days=30))
            commitments = (Commitment(f"azure-reservation:{dep.azure_deployment}",
                                      reserved_units, 30, end - dt.timedelta(days=30), end,
                                      external=True),)
        elastic = tuple(ElasticTranche(t.units, t.active_from, t.hold_until)
                        for t in self._tranches(deployment, state, now) if t.units > 0)
        return Holdings(deployment=deployment, as_of=now, elastic=elastic,
                        commitments=commitments)

    def holdings(self, deployment: str) -> Holdings:
        state = self._read(deployment, OP_HOLDINGS)
        return self._holdings(deployment, state, self._now())

    def read_tranches(self, deployment: str) -> list[Tranche]:
        return self._tranches(deployment, self._read(deployment, OP_HOLDINGS), self._now())

    def limits(self, deployment: str) -> ProviderLimits:
        return self._deployment(deployment, "limits").limits.provider_limits(())

    # -- changes ---------------------------------------------------------------------------

    def _body(self, deployment: str, state: _State | None, ptus: int, key: str,
              book: str) -> dict[str, Any]:
        dep = self.deployments[deployment]
        state = state or self._last.get(deployment)  # shadow mode: the body last read
        body = dict(state.body) if state is not None else {"properties": {}}
        body["sku"] = {**body.get("sku", {}), "capacity": ptus}
        tags = dict(body.get("tags") or {})
        tags.update({TAG_KEY: key, TAG_BOOK: book})
        body["tags"] = tags
        del dep
        return body

    def plan_elastic(self, deployment: str, tranches: Sequence[Tranche], target: int, *,
                     idempotency_key: str, now: dt.datetime,
                     state: _State | None = None) -> ElasticChange:
        """The ``begin_create_or_update`` call that takes the deployment to ``target``
        elastic units at ``now`` and its effect. Pure apart from the cached SKU limits."""
        dep = self._deployment(deployment, OP_SET_ELASTIC_TARGET)
        ppu = self._ptu_per_unit(deployment, OP_SET_ELASTIC_TARGET)
        minimum, _ = self._sku_limits(deployment, OP_SET_ELASTIC_TARGET)
        floor = max(0, math.ceil((minimum - dep.reserved_ptu) / ppu))
        wanted = max(target, floor)
        current = sum(t.units for t in tranches)
        lead = dt.timedelta(minutes=dep.limits.lead_time_minutes)
        hold = dt.timedelta(minutes=dep.limits.min_hold_minutes)
        if wanted >= current:
            created = ((idempotency_key, wanted - current),) if wanted > current else ()
            change = ElasticChange((), wanted, now + lead if created else now,
                                   created=created)
        else:
            accepted, reason, next_release, released = scale_down(tranches, wanted, now,
                                                                  whole_only=False)
            change = ElasticChange((), accepted, now, reason, next_release, released)
        reason = change.clamp_reason or ("model_minimum" if wanted != target else None)
        book = encode_book(apply_change(tranches, change, lead=lead, hold=hold), now)
        call = SdkCall("cognitiveservices.deployments.begin_create_or_update", {
            **self._coordinates(dep),
            "deployment": self._body(deployment, state, dep.reserved_ptu
                                     + change.accepted * ppu, idempotency_key, book)})
        # Nothing to change (a scale-down clamped whole by a hold or the model's minimum):
        # no PUT, which would start a long-running operation for nothing.
        calls = (call,) if change.accepted != current else ()
        return ElasticChange(calls, change.accepted, change.effective_at, reason,
                             change.next_release_at, change.released, change.created)

    def plan_commitment(self, deployment: str, units: int, term_days: int, *,
                        idempotency_key: str) -> tuple[SdkCall, ...]:
        raise NotSupportedError(
            f"provider {self.name!r} sells no commitment terms: Azure reservations are "
            f"bought outside the API (configure reserved_ptu)", provider=self.name,
            operation="buy_commitment", capability="commitments", deployment=deployment)

    def buy_commitment(self, deployment: str, units: int, term_days: int, *,
                       idempotency_key: str) -> CommitmentReceipt:
        self.plan_commitment(deployment, units, term_days, idempotency_key=idempotency_key)
        raise AssertionError("unreachable")

    def set_elastic_target(self, deployment: str, target_units: int, *,
                           idempotency_key: str) -> ElasticReceipt:
        key = check_idempotency_key(idempotency_key, provider=self.name,
                                    operation=OP_SET_ELASTIC_TARGET)
        dep = self._deployment(deployment, OP_SET_ELASTIC_TARGET)
        if target_units < 0 or target_units > dep.limits.max_units:
            raise QuotaExceededError(
                f"target {target_units} outside 0..max_units ({dep.limits.max_units})",
                provider=self.name, operation=OP_SET_ELASTIC_TARGET, deployment=deployment)
        now = self._now()
        state = self._read(deployment, OP_SET_ELASTIC_TARGET)
        tranches = self._tranches(deployment, state, now)
        current = sum(t.units for t in tranches)
        if state.tags.get(TAG_KEY) == key:  # this request already arrived: replay it
            return ElasticReceipt(self.name, deployment, key, key, target_units, current,
                                  now, replayed=True)
        if abs(target_units - current) > dep.limits.max_step:
            raise InvalidRequestError(
                f"change {current} -> {target_units} exceeds max_step {dep.limits.max_step}",
                provider=self.name, operation=OP_SET_ELASTIC_TARGET, deployment=deployment)
        change = self.plan_elastic(deployment, tranches, target_units, idempotency_key=key,
                                   now=now, state=state)
        for call in change.calls:
            params = dict(call.params)
            body = params.pop("deployment")
            with self._edge(OP_SET_ELASTIC_TARGET, deployment,
                            "deployments.begin_create_or_update"):
                # polling=False: the PUT is accepted; the operation's progress is the lead
                # time (read back as provisioningState), not something to block a tick on.
                self.client.deployments.begin_create_or_update(
                    deployment=body, polling=False, **params)
            log.info("azure_openai.call", provider=self.name, deployment=deployment, key=key,
                     capacity=body["sku"]["capacity"])
        return ElasticReceipt(
            provider=self.name, deployment=deployment, idempotency_key=key, reference=key,
            requested_units=target_units, accepted_units=change.accepted,
            effective_at=change.effective_at, clamp_reason=change.clamp_reason,
            next_release_at=change.next_release_at)

    def lookup_request(self, idempotency_key: str) -> RequestLookup:
        """The deployment whose ``capsched-key`` tag holds the key (a later change replaces
        the tag; the journal never sends a newer target before an older one resolved)."""
        for deployment in self.deployments:
            state = self._read(deployment, OP_LOOKUP_REQUEST)
            if state.tags.get(TAG_KEY) != idempotency_key:
                continue
            if state.failed:
                return RequestLookup(idempotency_key, RequestStatus.FAILED,
                                     OP_SET_ELASTIC_TARGET, deployment, idempotency_key,
                                     error_code="failed",
                                     error_message="provisioningState Failed")
            units = sum(t.units for t in self._tranches(deployment, state, self._now()))
            return RequestLookup(idempotency_key, RequestStatus.DONE, OP_SET_ELASTIC_TARGET,
                                 deployment, idempotency_key,
                                 details={"accepted_units": units})
        return RequestLookup(idempotency_key, RequestStatus.UNKNOWN)

    def check(self, deployment: str) -> list[str]:
        """Read-only checks for ``capsched providers check``: credentials, the deployment
        and its SKU, and the caller's RBAC actions on the account (permissions API)."""
        dep = self._deployment(deployment, "check")
        state = self._read(deployment, "check")
        done = [f"deployment {dep.azure_deployment} exists: {state.sku}, "
                f"{state.capacity} PTU"]
        minimum, step = self._sku_limits(deployment, "check")
        done.append(f"model minimum {minimum} PTU, increment {step} PTU, "
                    f"{self._ptu_per_unit(deployment, 'check')} PTU per unit")
        scope = (f"/subscriptions/{self.account['subscription_id']}/resourceGroups/"
                 f"{self.account['resource_group']}/providers/Microsoft.CognitiveServices/"
                 f"accounts/{self.account['account']}")
        from azure.core.rest import HttpRequest

        with self._edge("check", deployment, "permissions.list"):
            # _send_request: the generated client's way to send a request it has no
            # operation for, through its own pipeline (credential, retries, transport).
            response = self.client._send_request(HttpRequest(
                "GET", f"{scope}/providers/Microsoft.Authorization/permissions",
                params={"api-version": "2022-04-01"}))
            response.raise_for_status()
            granted = response.json().get("value", [])
        needed = sorted({a for k, a in RBAC_ACTIONS.items() if k.startswith("deployments.")})
        missing = [a for a in needed if not _granted(a, granted)]
        if missing:
            raise PermissionDeniedError(
                f"the credentials lack {', '.join(missing)} on {scope} "
                f"(see docs/iam/azure-role.json)", permission=missing[0], provider=self.name,
                operation="check", deployment=deployment)
        done.append(f"permissions granted: {', '.join(needed)}")
        return done


def _granted(action: str, permissions: Sequence[Mapping[str, Any]]) -> bool:
    def matches(pattern: str) -> bool:
        regex = "^" + re.escape(pattern).replace(r"\*", ".*") + "$"
        return re.match(regex, action, re.IGNORECASE) is not None

    return any(any(matches(a) for a in p.get("actions", []))
               and not any(matches(a) for a in p.get("notActions", []))
               for p in permissions)


def _status(exc: Exception) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) else None


__all__ = ["PROVISIONED_SKUS", "RBAC_ACTIONS", "AzureDeployment", "AzureOpenAIProvider",
           "decode_book", "encode_book", "parse_settings"]
