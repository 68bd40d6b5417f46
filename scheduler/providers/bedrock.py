"""The ``bedrock`` provider: Amazon Bedrock Provisioned Throughput through boto3.

Install with ``pip install 'capsched[aws]'``. Credentials come from the standard AWS chain
(environment, shared config and ``profile``, SSO, container or instance role); nothing secret
is configured here.

* **Elastic units** are *no-commitment* Provisioned Throughputs (billed by the hour while they
  exist). A scale-up of ``d`` model units creates ``ceil(d / units_per_throughput)``
  throughputs with ``create_provisioned_model_throughput``; the ``clientRequestToken`` is the
  journal's idempotency key (made to fit the token's alphabet, one suffix per throughput), so
  a resend after a crash never creates twice. A scale-down deletes whole throughputs with
  ``delete_provisioned_model_throughput`` (a throughput's model units cannot be changed), never
  one inside its minimum hold, never one capsched did not create. What cannot go whole is
  clamped (``clamp_reason`` ``"throughput_granularity"``); with the default
  ``units_per_throughput = 1`` every scale-down is exact.
* **Lead time**: a throughput is ``Creating`` until ``InService``; until then its units are
  pending in the holdings (``lead_time_minutes`` is the estimate the planner uses). A
  ``Failed`` throughput is logged with its ``failureMessage``, left out of the holdings (so the
  journal's reconcile reports the missing units as drift) and deleted by the next change.
* **Commitments**: ``commitmentDuration = "OneMonth"`` is the planner's 30-day term (AWS bills
  it for one month from purchase; the holdings carry AWS's own ``commitmentExpirationTime``).
  ``SixMonths`` has no planner term and 7-day terms are not sold, so ``commitment_terms`` may
  only be ``[30]`` (where the model offers a commitment) or ``[]`` (the default).
* **Ownership**: every throughput capsched creates is named ``capsched-<hash>-<n>`` and tagged
  ``capsched:deployment`` / ``capsched:idempotency-key``; holdings list only throughputs with
  that tag for the deployment, so throughputs made by hand are never counted or touched.
  Inference must be routed to the tagged throughputs' ARNs (a Bedrock throughput is its own
  endpoint).

Configuration::

    [providers.aws]
    type = "bedrock"
    region = "us-east-1"            # optional: else the AWS chain's default region
    profile = "capsched"            # optional named profile
    timeout_seconds = 10
    [providers.aws.deployments.support-bot]
    model_id = "anthropic.claude-3-5-sonnet-20240620-v1:0"   # or its ARN
    lead_time_minutes = 20          # Creating -> InService, as observed
    min_hold_minutes = 60
    max_units = 10
    commitment_terms = [30]         # only where the model offers OneMonth
    units_per_throughput = 1

Errors at the edge: throttling and 5xx -> :class:`ProviderUnavailable` (botocore's standard
retry mode already backs off inline; its ``Retry-After`` is passed on); quota ->
:class:`QuotaExceededError`; insufficient capacity -> :class:`OutOfCapacityError`; access
denied -> :class:`PermissionDeniedError` naming the IAM action; validation and unknown
resources -> :class:`InvalidRequestError`; missing credentials -> :class:`AuthenticationError`.
The minimal IAM policy is ``docs/iam/bedrock-policy.json``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Self

import structlog

from scheduler.providers.base import (
    DEFAULT_TIMEOUT_SECONDS,
    OP_BUY_COMMITMENT,
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
    scale_down,
    utc_now,
)

log = structlog.get_logger()

Clock = Callable[[], dt.datetime]

TAG_DEPLOYMENT = "capsched:deployment"
TAG_KEY = "capsched:idempotency-key"
NAME_PREFIX = "capsched-"
#: Planner term (days) -> Bedrock commitmentDuration. SixMonths has no planner term.
COMMITMENT_DURATIONS = {30: "OneMonth"}
DURATION_DAYS = {"OneMonth": 30, "SixMonths": 180}

#: The IAM action behind each SDK operation the adapter calls (docs/iam/bedrock-policy.json
#: must grant exactly these; tests/test_provider_bedrock.py checks it).
IAM_ACTIONS = {
    "list_provisioned_model_throughputs": "bedrock:ListProvisionedModelThroughputs",
    "get_provisioned_model_throughput": "bedrock:GetProvisionedModelThroughput",
    "create_provisioned_model_throughput": "bedrock:CreateProvisionedModelThroughput",
    "delete_provisioned_model_throughput": "bedrock:DeleteProvisionedModelThroughput",
    "list_tags_for_resource": "bedrock:ListTagsForResource",
    "tag_resource": "bedrock:TagResource",
    "get_foundation_model": "bedrock:GetFoundationModel",
}

_TEMPORARY_CODES = {"ThrottlingException", "TooManyRequestsException", "InternalServerException",
                    "ServiceUnavailableException", "ServiceUnavailable", "RequestTimeout",
                    "ConflictException"}
_AUTH_CODES = {"UnrecognizedClientException", "InvalidSignatureException",
               "ExpiredTokenException", "InvalidClientTokenId", "IncompleteSignature"}
_PERMISSION = re.compile(r"perform:\s*([A-Za-z0-9-]+:[A-Za-z0-9*]+)")
_TOKEN_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
#: How Bedrock words "no capacity" (a ValidationException or a failureMessage).
CAPACITY_TEXT = re.compile(
    r"(insufficient|not enough|no) (available )?capacity|capacity (is )?(not available|"
    r"unavailable)", re.IGNORECASE)


@dataclass(frozen=True)
class BedrockDeployment:
    """One capsched deployment served by Provisioned Throughputs of ``model_id``."""

    model_id: str
    limits: CommonLimits
    commitment_terms: tuple[int, ...] = ()
    units_per_throughput: int = 1


_PROVIDER_KEYS = {"type", "region", "profile", "endpoint_url", "timeout_seconds", "deployments"}
_DEPLOYMENT_KEYS = LIMIT_KEYS | {"model_id", "commitment_terms", "units_per_throughput"}


def parse_settings(name: str, settings: Mapping[str, Any]
                   ) -> tuple[dict[str, Any], dict[str, BedrockDeployment]]:
    """Validate ``[providers.<name>]``; returns the session options and the deployments."""
    where = f"[providers.{name}]"
    check_keys(where, settings, _PROVIDER_KEYS)
    session = {key: get_str(where, settings, key) for key in ("region", "profile",
                                                              "endpoint_url")}
    deployments: dict[str, BedrockDeployment] = {}
    for dep, (sub, table) in deployment_tables(where, settings).items():
        check_keys(sub, table, _DEPLOYMENT_KEYS, required=("model_id",))
        terms = table.get("commitment_terms", [])
        if not isinstance(terms, list) or any(t not in COMMITMENT_DURATIONS for t in terms):
            raise ProviderConfigError(
                f"{sub}: key 'commitment_terms' must be [] or [30] (Bedrock sells OneMonth = "
                f"the 30-day term; SixMonths has no planner term), got {terms!r}")
        model_id = get_str(sub, table, "model_id")
        assert model_id is not None
        deployments[dep] = BedrockDeployment(
            model_id=model_id,
            limits=CommonLimits.parse(sub, table, lead=30, hold=60),
            commitment_terms=tuple(sorted(set(terms))),
            units_per_throughput=get_int(sub, table, "units_per_throughput", 1, minimum=1))
    return session, deployments


def client_token(key: str, suffix: str = "") -> str:
    """The ``clientRequestToken`` for ``key``: ``[A-Za-z0-9-]``, unique per key and suffix."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe = _TOKEN_UNSAFE.sub("-", key).strip("-")[:200]
    return f"{safe}-{digest}{'-' + suffix if suffix else ''}".strip("-")


def throughput_name(key: str, suffix: str) -> str:
    """``capsched-<24 hex of the key>-<suffix>`` (fits the 63-character name pattern)."""
    return f"{NAME_PREFIX}{hashlib.sha256(key.encode()).hexdigest()[:24]}-{suffix}"


@dataclass(frozen=True)
class _Throughput:
    name: str
    arn: str
    units: int
    status: str
    created: dt.datetime
    commitment: str | None
    expires: dt.datetime | None
    failure: str | None = None


def _utc(value: Any, *, provider: str = "bedrock", operation: str = OP_HOLDINGS
         ) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    raise ProviderProtocolError(f"expected a timestamp, got {value!r}", provider=provider,
                                operation=operation)


def _field(answer: Any, key: str, *, provider: str, operation: str,
           deployment: str | None = None) -> Any:
    """``answer[key]``, or a ProviderProtocolError naming the field: a malformed answer must
    not leak a KeyError (or TypeError) past the adapter."""
    if isinstance(answer, Mapping) and key in answer:
        return answer[key]
    raise ProviderProtocolError(f"the answer has no {key!r}: {answer!r:.200}",
                                provider=provider, operation=operation, deployment=deployment)


class BedrockProvider(Provider):
    """Amazon Bedrock Provisioned Throughput; see the module docstring."""

    def __init__(self, name: str, *, client: Any, deployments: Mapping[str, BedrockDeployment],
                 timeout: float = DEFAULT_TIMEOUT_SECONDS, clock: Clock | None = None) -> None:
        super().__init__(name, timeout=timeout)
        #: A boto3 ``bedrock`` client (tests pass one wrapped in botocore's Stubber).
        self.client = client
        self.deployments = dict(deployments)
        self._clock: Clock = clock or utc_now
        self._tags: dict[str, dict[str, str]] = {}
        self._outcomes: dict[str, ElasticReceipt] = {}

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], *, engine: Any = None,
                      timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Self:
        session, deployments = parse_settings(name, settings)
        own_timeout = get_timeout(f"[providers.{name}]", settings, timeout)
        try:
            import boto3
            from botocore.config import Config as BotoConfig
        except ImportError as exc:
            raise ProviderConfigError(
                f"[providers.{name}]: the bedrock provider needs boto3: "
                f"pip install 'capsched[aws]' ({exc})") from exc
        boto_session = boto3.Session(profile_name=session["profile"],
                                     region_name=session["region"])
        # Two attempts of half the timeout each keep a call near its bound (the contract's
        # timeout); botocore's standard mode backs the second off by under a second. The
        # journal retries anything longer with the same key, honouring the service's hint.
        config = BotoConfig(connect_timeout=own_timeout / 2, read_timeout=own_timeout / 2,
                            retries={"mode": "standard", "total_max_attempts": 2})
        client = boto_session.client("bedrock", config=config,
                                     endpoint_url=session["endpoint_url"])
        return cls(name, client=client, deployments=deployments, timeout=own_timeout)

    def set_clock(self, clock: Clock) -> None:
        self._clock = clock

    def _now(self) -> dt.datetime:
        return require_utc(self._clock(), "the bedrock provider's clock")

    def _deployment(self, deployment: str, operation: str) -> BedrockDeployment:
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
        """Translate every botocore error into the project's hierarchy."""
        try:
            yield
        except ProviderError:
            raise
        except Exception as exc:
            raise self._translate(exc, operation, deployment, sdk_call) from exc

    def _translate(self, exc: Exception, operation: str, deployment: str | None,
                   sdk_call: str) -> ProviderError:
        from botocore import exceptions as bx

        kw: dict[str, Any] = {"provider": self.name, "operation": operation,
                              "deployment": deployment}
        if isinstance(exc, bx.ClientError):
            error = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            code, message = str(error.get("Code", "")), str(error.get("Message", ""))
            status = meta.get("HTTPStatusCode")
            kw.update(code=code or None, status=status)
            text = f"{sdk_call}: {code}: {message}"
            lowered = message.lower()
            if code == "AccessDeniedException" or (status == 403 and code not in _AUTH_CODES):
                match = _PERMISSION.search(message)
                permission = match.group(1) if match else IAM_ACTIONS.get(sdk_call)
                return PermissionDeniedError(
                    f"{text} (grant {permission} on deployment {deployment!r}'s resources; "
                    f"see docs/iam/bedrock-policy.json)", permission=permission, **kw)
            if code in _AUTH_CODES:
                return AuthenticationError(f"{text} (check the AWS credentials)", **kw)
            if CAPACITY_TEXT.search(message) and code != "ServiceQuotaExceededException":
                return OutOfCapacityError(text, **kw)
            if code == "ServiceQuotaExceededException" or "quota" in lowered:
                return QuotaExceededError(text, **kw)
            if code in _TEMPORARY_CODES or (isinstance(status, int) and status >= 500) \
                    or status == 429:
                headers = meta.get("HTTPHeaders", {}) or {}
                retry_after = _seconds(headers.get("retry-after"))
                return ProviderUnavailable(text, retry_after=retry_after, **kw)
            return InvalidRequestError(text, **kw)
        if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError
                      | bx.CredentialRetrievalError | bx.NoRegionError
                      | bx.ProfileNotFound):
            return AuthenticationError(
                f"{sdk_call}: {exc} (set up AWS credentials: AWS_PROFILE / environment / "
                f"instance or container role; and a region)", **kw)
        if isinstance(exc, bx.ReadTimeoutError | bx.ConnectTimeoutError):
            return ProviderTimeout(f"{sdk_call}: {exc}", **kw)
        if isinstance(exc, bx.EndpointConnectionError | bx.ConnectionClosedError
                      | bx.HTTPClientError):
            return ProviderUnavailable(f"{sdk_call}: {exc}", **kw)
        if isinstance(exc, bx.ParamValidationError):
            return InvalidRequestError(f"{sdk_call}: {exc}", **kw)
        return ProviderProtocolError(f"{sdk_call}: {type(exc).__name__}: {exc}", **kw)

    def _call(self, operation: str, deployment: str | None, call: SdkCall) -> Any:
        sdk_call = call.method.split(".", 1)[1]
        with self._edge(operation, deployment, sdk_call):
            return getattr(self.client, sdk_call)(**call.params)

    # -- reading ---------------------------------------------------------------------------

    def _list(self, operation: str) -> list[dict[str, Any]]:
        summaries: list[dict[str, Any]] = []
        with self._edge(operation, None, "list_provisioned_model_throughputs"):
            pages = self.client.get_paginator("list_provisioned_model_throughputs").paginate(
                nameContains=NAME_PREFIX.rstrip("-"))
            for page in pages:
                summaries.extend(page.get("provisionedModelSummaries", []))
        return summaries

    def _tags_of(self, arn: str, operation: str) -> dict[str, str]:
        tags = self._tags.get(arn)
        if tags is None:
            answer = self._call(operation, None, SdkCall(
                "bedrock.list_tags_for_resource", {"resourceARN": arn}))
            tags = {t["key"]: t["value"] for t in answer.get("tags", [])}
            self._tags[arn] = tags
        return tags

    def _throughputs(self, deployments: Sequence[str], operation: str
                     ) -> dict[str, list[_Throughput]]:
        """The capsched-tagged throughputs of each deployment (one listing for all)."""
        wanted = set(deployments)
        found: dict[str, list[_Throughput]] = {d: [] for d in deployments}
        for summary in self._list(operation):
            name = str(summary.get("provisionedModelName", ""))
            if not name.startswith(NAME_PREFIX):
                continue
            where = {"provider": self.name, "operation": operation}
            arn = str(_field(summary, "provisionedModelArn", **where))
            owner = self._tags_of(arn, operation).get(TAG_DEPLOYMENT)
            if owner not in wanted:
                continue  # another deployment's, or made by hand with a look-alike name
            expires = summary.get("commitmentExpirationTime")
            found[owner].append(_Throughput(
                name=name, arn=arn, units=int(summary.get("modelUnits", 0)),
                status=str(summary.get("status", "")),
                created=_utc(_field(summary, "creationTime", **where), **where),
                commitment=summary.get("commitmentDuration"),
                expires=None if expires is None else _utc(expires, **where)))
        return found

    def _tranches(self, deployment: str, throughputs: Sequence[_Throughput], now: dt.datetime
                  ) -> list[Tranche]:
        limits = self.deployments[deployment].limits
        lead = dt.timedelta(minutes=limits.lead_time_minutes)
        hold = dt.timedelta(minutes=limits.min_hold_minutes)
        tranches = []
        for t in sorted(throughputs, key=lambda t: (t.created, t.name)):
            if t.commitment or t.status == "Failed" or t.units <= 0:
                continue
            estimate = t.created + lead
            if t.status == "Creating":
                # Pending until InService: serve from the estimate, or "soon" once overdue.
                start = max(estimate, now + dt.timedelta(minutes=1))
            else:
                start = min(estimate, now)
            tranches.append(Tranche(t.name, t.units, start, start + hold))
        return tranches

    def _holdings(self, deployment: str, throughputs: Sequence[_Throughput], now: dt.datetime
                  ) -> Holdings:
        for t in throughputs:
            if t.status == "Failed":
                log.warning("bedrock.throughput_failed", provider=self.name,
                            deployment=deployment, throughput=t.name, units=t.units)
        commitments = tuple(
            Commitment(t.arn, t.units, DURATION_DAYS.get(t.commitment, 30), t.created,
                       t.expires or t.created + dt.timedelta(
                           days=DURATION_DAYS.get(t.commitment, 30)))
            for t in throughputs
            if t.commitment and t.status != "Failed"
            and (t.expires is None or t.expires > now))
        elastic = tuple(ElasticTranche(t.units, t.active_from, t.hold_until)
                        for t in self._tranches(deployment, throughputs, now))
        return Holdings(deployment=deployment, as_of=now, elastic=elastic,
                        commitments=commitments)

    def holdings(self, deployment: str) -> Holdings:
        return self.holdings_many([deployment])[deployment]

    def holdings_many(self, deployments: Sequence[str]) -> dict[str, Holdings]:
        for deployment in deployments:
            self._deployment(deployment, OP_HOLDINGS)
        now = self._now()
        found = self._throughputs(deployments, OP_HOLDINGS)
        return {d: self._holdings(d, found[d], now) for d in deployments}

    def read_tranches(self, deployment: str) -> list[Tranche]:
        """The elastic throughputs as named tranches (shadow mode seeds its book from them)."""
        self._deployment(deployment, OP_HOLDINGS)
        now = self._now()
        return self._tranches(deployment, self._throughputs([deployment], OP_HOLDINGS)
                              [deployment], now)

    def limits(self, deployment: str) -> ProviderLimits:
        dep = self._deployment(deployment, "limits")
        return dep.limits.provider_limits(dep.commitment_terms)

    # -- changes ---------------------------------------------------------------------------

    def _tags_for(self, deployment: str, key: str) -> list[dict[str, str]]:
        return [{"key": TAG_DEPLOYMENT, "value": deployment}, {"key": TAG_KEY, "value": key}]

    def plan_elastic(self, deployment: str, tranches: Sequence[Tranche], target: int, *,
                     idempotency_key: str, now: dt.datetime) -> ElasticChange:
        """The SDK calls that take ``tranches`` (this deployment's elastic throughputs) to
        ``target`` model units at ``now``, and their effect. Pure: sends nothing."""
        dep = self._deployment(deployment, OP_SET_ELASTIC_TARGET)
        current = sum(t.units for t in tranches)
        if target > current:
            existing = {t.ref for t in tranches}
            calls: list[SdkCall] = []
            created: list[tuple[str, int]] = []
            left, index = target - current, 0
            while left > 0:
                name = throughput_name(idempotency_key, str(index))
                index += 1
                if name in existing:  # made by an earlier attempt with this key
                    continue
                units = min(left, dep.units_per_throughput)
                left -= units
                calls.append(SdkCall("bedrock.create_provisioned_model_throughput", {
                    "clientRequestToken": client_token(idempotency_key, str(index - 1)),
                    "modelUnits": units, "provisionedModelName": name,
                    "modelId": dep.model_id, "tags": self._tags_for(deployment,
                                                                    idempotency_key)}))
                created.append((name, units))
            effective = now + dt.timedelta(minutes=dep.limits.lead_time_minutes)
            return ElasticChange(tuple(calls), target, effective, created=tuple(created))
        if target == current:
            return ElasticChange((), target, now)
        accepted, reason, next_release, released = scale_down(tranches, target, now,
                                                              whole_only=True)
        deletes = tuple(SdkCall("bedrock.delete_provisioned_model_throughput",
                                {"provisionedModelId": ref}) for ref, _ in released)
        return ElasticChange(deletes, accepted, now, reason, next_release, released)

    def plan_commitment(self, deployment: str, units: int, term_days: int, *,
                        idempotency_key: str) -> tuple[SdkCall, ...]:
        dep = self._deployment(deployment, OP_BUY_COMMITMENT)
        if term_days not in dep.commitment_terms:
            raise NotSupportedError(
                f"provider {self.name!r} sells no {term_days}-day commitment for "
                f"{deployment!r} (commitment_terms = {list(dep.commitment_terms)}; Bedrock "
                f"sells OneMonth = 30 days where the model offers it)",
                provider=self.name, operation=OP_BUY_COMMITMENT,
                capability=f"commitments of {term_days} days", deployment=deployment)
        return (SdkCall("bedrock.create_provisioned_model_throughput", {
            "clientRequestToken": client_token(idempotency_key, "c"),
            "modelUnits": units, "provisionedModelName": throughput_name(idempotency_key, "c"),
            "modelId": dep.model_id, "commitmentDuration": COMMITMENT_DURATIONS[term_days],
            "tags": self._tags_for(deployment, idempotency_key)}),)

    def _clean_up_failed(self, deployment: str, throughputs: Sequence[_Throughput]) -> None:
        for t in throughputs:
            if t.status == "Failed" and not t.commitment:
                self._call(OP_SET_ELASTIC_TARGET, deployment, SdkCall(
                    "bedrock.delete_provisioned_model_throughput",
                    {"provisionedModelId": t.name}))
                log.warning("bedrock.failed_throughput_deleted", provider=self.name,
                            deployment=deployment, throughput=t.name)

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
        throughputs = self._throughputs([deployment], OP_SET_ELASTIC_TARGET)[deployment]
        self._clean_up_failed(deployment, throughputs)
        tranches = self._tranches(deployment, throughputs, now)
        current = sum(t.units for t in tranches)
        if abs(target_units - current) > dep.limits.max_step:
            raise InvalidRequestError(
                f"change {current} -> {target_units} exceeds max_step {dep.limits.max_step}",
                provider=self.name, operation=OP_SET_ELASTIC_TARGET, deployment=deployment)
        change = self.plan_elastic(deployment, tranches, target_units, idempotency_key=key,
                                   now=now)
        granted: list[str] = []
        accepted, clamp = change.accepted, change.clamp_reason
        for call in change.calls:
            try:
                answer = self._call(OP_SET_ELASTIC_TARGET, deployment, call)
            except InvalidRequestError as error:
                if (call.method.endswith("delete_provisioned_model_throughput")
                        and error.code == "ResourceNotFoundException"):
                    continue  # already gone: the release is done
                raise
            except (OutOfCapacityError, QuotaExceededError) as error:
                if not granted:
                    raise
                # Take what was granted: the receipt says how far the scale-up got, and
                # the daemon asks for the rest again once its backoff allows.
                accepted = current + sum(units for name, units in change.created
                                         if name in granted)
                clamp = "out_of_capacity"
                log.warning("bedrock.partly_granted", provider=self.name,
                            deployment=deployment, key=key, accepted=accepted,
                            requested=target_units, error=str(error))
                break
            arn = answer.get("provisionedModelArn") if isinstance(answer, Mapping) else None
            if arn:
                self._tags[str(arn)] = {TAG_DEPLOYMENT: deployment, TAG_KEY: key}
            if "provisionedModelName" in call.params:
                granted.append(str(call.params["provisionedModelName"]))
            log.info("bedrock.call", provider=self.name, deployment=deployment, key=key,
                     call=call.render())
        receipt = ElasticReceipt(
            provider=self.name, deployment=deployment, idempotency_key=key,
            reference=",".join(ref for ref, _ in change.created or change.released) or key,
            requested_units=target_units, accepted_units=accepted,
            effective_at=change.effective_at, clamp_reason=clamp,
            next_release_at=change.next_release_at)
        self._outcomes[key] = receipt
        return receipt

    def buy_commitment(self, deployment: str, units: int, term_days: int, *,
                       idempotency_key: str) -> CommitmentReceipt:
        key = check_idempotency_key(idempotency_key, provider=self.name,
                                    operation=OP_BUY_COMMITMENT)
        (call,) = self.plan_commitment(deployment, units, term_days, idempotency_key=key)
        now = self._now()
        answer = self._call(OP_BUY_COMMITMENT, deployment, call)
        arn = str(_field(answer, "provisionedModelArn", provider=self.name,
                         operation=OP_BUY_COMMITMENT, deployment=deployment))
        self._tags[arn] = {TAG_DEPLOYMENT: deployment, TAG_KEY: key}
        log.info("bedrock.call", provider=self.name, deployment=deployment, key=key,
                 call=call.render())
        commitment = Commitment(arn, units, term_days, now, now + dt.timedelta(days=term_days))
        return CommitmentReceipt(self.name, deployment, key, arn, commitment)

    def lookup_request(self, idempotency_key: str) -> RequestLookup:
        """Throughputs are found by the name derived from the key; a scale-down (deletes
        only) is known to the process that made it, and otherwise UNKNOWN: resending a
        target is harmless (it recomputes the change from what is held)."""
        key = idempotency_key
        known = self._outcomes.get(key)
        if known is not None:
            return RequestLookup(key, RequestStatus.DONE, OP_SET_ELASTIC_TARGET,
                                 known.deployment, known.reference,
                                 details={"accepted_units": known.accepted_units,
                                          "effective_at": known.effective_at.isoformat()})
        for suffix, operation in (("0", OP_SET_ELASTIC_TARGET), ("c", OP_BUY_COMMITMENT)):
            name = throughput_name(key, suffix)
            try:
                found = self._call(OP_LOOKUP_REQUEST, None, SdkCall(
                    "bedrock.get_provisioned_model_throughput", {"provisionedModelId": name}))
            except InvalidRequestError as error:
                if error.code == "ResourceNotFoundException":
                    continue
                raise
            arn = str(found.get("provisionedModelArn", name))
            deployment = self._tags_of(arn, OP_LOOKUP_REQUEST).get(TAG_DEPLOYMENT)
            if found.get("status") == "Failed":
                message = str(found.get("failureMessage") or "the throughput failed")
                code = "out_of_capacity" if CAPACITY_TEXT.search(message) else "failed"
                return RequestLookup(key, RequestStatus.FAILED, operation, deployment, arn,
                                     error_code=code, error_message=message)
            details: dict[str, Any] = {"status": found.get("status")}
            if operation == OP_BUY_COMMITMENT:
                details["commitment"] = {"commitment_id": arn,
                                         "units": found.get("modelUnits"),
                                         "start": _utc(_field(
                                             found, "creationTime", provider=self.name,
                                             operation=OP_LOOKUP_REQUEST),
                                             provider=self.name,
                                             operation=OP_LOOKUP_REQUEST).isoformat()}
            return RequestLookup(key, RequestStatus.DONE, operation, deployment, arn,
                                 details=details)
        return RequestLookup(key, RequestStatus.UNKNOWN)

    def check(self, deployment: str) -> list[str]:
        """Read-only checks for ``capsched providers check``: credentials, list and read
        permissions, the model's existence. Returns what was verified; raises the mapped
        error otherwise. Write permissions cannot be tried without a change: they are
        listed in docs/iam/bedrock-policy.json."""
        dep = self._deployment(deployment, "check")
        done = []
        held = self.holdings(deployment)
        done.append(f"listed throughputs ({held.elastic_target} elastic unit(s) and "
                    f"{held.committed_at(held.as_of)} committed held by capsched)")
        model = dep.model_id.rsplit("foundation-model/", 1)[-1]
        if dep.model_id.startswith("arn:") and ":custom-model/" in dep.model_id:
            return done
        self._call("check", deployment, SdkCall("bedrock.get_foundation_model",
                                                {"modelIdentifier": model}))
        done.append(f"model {model} exists")
        return done


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) else None


__all__ = ["BedrockDeployment", "BedrockProvider", "client_token", "parse_settings",
           "throughput_name"]
