"""The azure_openai provider through the real azure-mgmt-cognitiveservices client, whose
azure.core transport (RequestsTransport) replays the REST responses documented for
Deployments - Get / Create Or Update / List Skus, and the daemon's journal on top of it."""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
import urllib3
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import RequestsTransport
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from requests.structures import CaseInsensitiveDict

from scheduler.daemon import journal
from scheduler.daemon.journal import ActionRequest
from scheduler.providers.azure_openai import (
    RBAC_ACTIONS,
    TAG_KEY,
    AzureOpenAIProvider,
    parse_settings,
)
from scheduler.providers.errors import (
    AuthenticationError,
    InvalidRequestError,
    NotSupportedError,
    OutOfCapacityError,
    PermissionDeniedError,
    ProviderConfigError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceededError,
)
from scheduler.providers.shadow import ShadowProvider
from tests.test_journal import Crash, CrashingProvider, add_deployment

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
SCOPE = ("/subscriptions/sub-1/resourceGroups/rg-llm/providers/Microsoft.CognitiveServices/"
         "accounts/aoai-prod")
SETTINGS: dict[str, Any] = {
    "type": "azure_openai", "subscription_id": "sub-1", "resource_group": "rg-llm",
    "account": "aoai-prod",
    "deployments": {"chat": {"azure_deployment": "gpt-4o-ptu", "ptu_per_unit": 5,
                             "reserved_ptu": 15, "lead_time_minutes": 15,
                             "min_hold_minutes": 60}},
}
# The documented shape of a provisioned deployment (Deployments - Get, api-version 2025-09-01).
DEPLOYMENT = {
    "id": f"{SCOPE}/deployments/gpt-4o-ptu", "name": "gpt-4o-ptu",
    "type": "Microsoft.CognitiveServices/accounts/deployments",
    "sku": {"name": "GlobalProvisionedManaged", "capacity": 15},
    "properties": {"model": {"format": "OpenAI", "name": "gpt-4o", "version": "2024-08-06"},
                   "provisioningState": "Succeeded", "raiPolicyName": "Microsoft.Default",
                   "versionUpgradeOption": "NoAutoUpgrade"},
}
SKUS = {"value": [{"resourceType": "Microsoft.CognitiveServices/accounts/deployments",
                   "sku": {"name": "GlobalProvisionedManaged"},
                   "capacity": {"minimum": 15, "maximum": 1000, "step": 5, "default": 15}}]}


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Token:
    """The TokenCredential protocol (what DefaultAzureCredential provides)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        if self.fail:
            from azure.identity import CredentialUnavailableError

            raise CredentialUnavailableError("DefaultAzureCredential failed to retrieve a token")
        return AccessToken("token", int(time.time()) + 3600)


class AzureReplay(requests.adapters.BaseAdapter):
    """ARM as documented: one deployment's state, PUT replaces it (Updating until told)."""

    def __init__(self) -> None:
        super().__init__()
        self.deployment: dict[str, Any] = copy.deepcopy(DEPLOYMENT)
        self.requests: list[tuple[str, str, Any]] = []
        self.errors: list[tuple[str, int, dict[str, Any], dict[str, str]]] = []
        self.permissions: list[dict[str, Any]] = [{"actions": ["*"], "notActions": []}]
        self.exists = True
        #: Raised by the next request instead of answering (a timeout, a dropped connection).
        self.raise_next: Exception | None = None

    def fail_next(self, method: str, status: int, code: str, message: str,
                  headers: dict[str, str] | None = None) -> None:
        self.errors.append((method, status, {"error": {"code": code, "message": message}},
                            headers or {}))

    def finish(self) -> None:
        self.deployment["properties"]["provisioningState"] = "Succeeded"

    def by_hand(self, capacity: int) -> None:
        self.deployment["sku"]["capacity"] = capacity

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        body = json.loads(request.body) if request.body else None
        path = str(request.path_url).split("?")[0]
        method = str(request.method)
        self.requests.append((method, path, body))
        if self.raise_next is not None:
            error, self.raise_next = self.raise_next, None
            raise error
        for i, (m, status, payload, headers) in enumerate(self.errors):
            if m == method:
                del self.errors[i]
                return _response(request, status, payload, headers)
        if path.endswith("/providers/Microsoft.Authorization/permissions"):
            return _response(request, 200, {"value": self.permissions})
        if path.endswith("/skus"):
            return _response(request, 200, SKUS)
        if not self.exists:
            return _response(request, 404, {"error": {"code": "DeploymentNotFound",
                                                      "message": "not found"}})
        if method == "PUT":
            assert body is not None
            self.deployment["sku"] = body["sku"]
            self.deployment["tags"] = body.get("tags")
            self.deployment["properties"] = {**body["properties"],
                                             "provisioningState": "Updating"}
            return _response(request, 201, self.deployment, {
                "Azure-AsyncOperation": "https://management.azure.com/op/1"})
        return _response(request, 200, self.deployment)

    def close(self) -> None:
        pass


def _response(request: requests.PreparedRequest, status: int, payload: Any,
              headers: dict[str, str] | None = None) -> requests.Response:
    content = json.dumps(payload).encode()
    response = requests.Response()
    response.status_code = status
    response.raw = urllib3.HTTPResponse(body=io.BytesIO(content), status=status,
                                        preload_content=False)
    response._content = content
    response.headers = CaseInsensitiveDict({"Content-Type": "application/json",
                                            **(headers or {})})
    response.url = str(request.url)
    response.request = request
    response.reason = "OK" if status < 400 else "Error"
    response.encoding = "utf-8"
    return response


def make_provider(replay: AzureReplay, clock: Clock, *, token: Token | None = None
                  ) -> AzureOpenAIProvider:
    session = requests.Session()
    session.mount("https://", replay)
    client = CognitiveServicesManagementClient(
        token or Token(), "sub-1", transport=RequestsTransport(session=session),
        retry_total=0)
    account, deployments = parse_settings("azure", SETTINGS)
    return AzureOpenAIProvider("azure", client=client, account=account,
                               deployments=deployments, clock=clock)


@pytest.fixture
def replay() -> AzureReplay:
    return AzureReplay()


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def azure(replay: AzureReplay, clock: Clock) -> Iterator[AzureOpenAIProvider]:
    yield make_provider(replay, clock)


def puts(replay: AzureReplay) -> list[dict[str, Any]]:
    return [body for method, _, body in replay.requests if method == "PUT"]


def test_settings_are_validated() -> None:
    with pytest.raises(ProviderConfigError, match="key 'account' is required"):
        parse_settings("azure", {"subscription_id": "s", "resource_group": "r",
                                 "deployments": {"chat": {}}})
    with pytest.raises(ProviderConfigError, match="unknown key 'api_key'"):
        parse_settings("azure", {**SETTINGS, "api_key": "secret"})


def test_reserved_ptus_are_held_commitment_and_no_terms_are_sold(
        azure: AzureOpenAIProvider) -> None:
    held = azure.holdings("chat")
    assert held.committed_at(T0) == 3  # 15 reserved PTU / 5 PTU per unit
    assert held.elastic_target == 0
    assert azure.limits("chat").supported_terms == ()
    with pytest.raises(NotSupportedError, match="reservations are bought outside"):
        azure.buy_commitment("chat", 1, 30, idempotency_key="cs-chat-commit-1")


def test_scale_up_puts_the_capacity_and_the_lro_is_the_lead_time(
        azure: AzureOpenAIProvider, replay: AzureReplay, clock: Clock) -> None:
    receipt = azure.set_elastic_target("chat", 2, idempotency_key="cs-chat-elastic-1")
    assert receipt.accepted_units == 2
    (body,) = puts(replay)
    assert body["sku"] == {"name": "GlobalProvisionedManaged", "capacity": 25}
    assert body["properties"]["model"]["name"] == "gpt-4o"  # the deployment as read
    assert body["tags"][TAG_KEY] == "cs-chat-elastic-1"
    held = azure.holdings("chat")
    assert held.elastic_pending_units == 2
    clock.now = T0 + dt.timedelta(minutes=20)  # past the estimate, the LRO still runs
    assert azure.holdings("chat").elastic_pending_units == 2
    replay.finish()
    assert azure.holdings("chat").elastic_active_units == 2


def test_scale_down_keeps_the_hold_and_the_model_minimum(
        azure: AzureOpenAIProvider, replay: AzureReplay, clock: Clock) -> None:
    azure.set_elastic_target("chat", 2, idempotency_key="cs-chat-elastic-2")
    replay.finish()
    clock.now = T0 + dt.timedelta(minutes=30)
    held = azure.set_elastic_target("chat", 0, idempotency_key="cs-chat-elastic-3")
    assert held.accepted_units == 2 and held.clamp_reason == "min_hold"
    clock.now = T0 + dt.timedelta(minutes=80)
    done = azure.set_elastic_target("chat", 0, idempotency_key="cs-chat-elastic-4")
    assert done.accepted_units == 0 and puts(replay)[-1]["sku"]["capacity"] == 15
    # Without a reservation the model's 15-PTU minimum stays: clamped, never zero.
    azure.deployments["chat"] = type(azure.deployments["chat"])(
        "gpt-4o-ptu", azure.deployments["chat"].limits, 5, 0)
    floor = azure.set_elastic_target("chat", 0, idempotency_key="cs-chat-elastic-5")
    assert floor.accepted_units == 3 and floor.clamp_reason == "model_minimum"
    sent = len(puts(replay))
    again = azure.set_elastic_target("chat", 0, idempotency_key="cs-chat-elastic-5b")
    assert again.accepted_units == 3 and len(puts(replay)) == sent  # nothing to change: no PUT


@pytest.mark.parametrize(("status", "code", "message", "error", "headers"), [
    (429, "TooManyRequests", "Rate limit", ProviderUnavailable, {"Retry-After": "12"}),
    (503, "ServiceUnavailable", "try later", ProviderUnavailable, {}),
    (409, "InsufficientQuota", "quota of 100 PTU exceeded", QuotaExceededError, {}),
    (400, "InsufficientCapacity", "no capacity in region", OutOfCapacityError, {}),
    (403, "AuthorizationFailed",
     "The client 'x' does not have authorization to perform action "
     "'Microsoft.CognitiveServices/accounts/deployments/write' over scope '/s'",
     PermissionDeniedError, {}),
    (400, "InvalidCapacity", "capacity must be a multiple of 5", InvalidRequestError, {}),
])
def test_errors_are_mapped_at_the_edge(azure: AzureOpenAIProvider, replay: AzureReplay,
                                       status: int, code: str, message: str,
                                       error: type[Exception], headers: dict[str, str]) -> None:
    replay.fail_next("PUT", status, code, message, headers)
    with pytest.raises(error) as raised:
        azure.set_elastic_target("chat", 1, idempotency_key="cs-chat-elastic-6")
    if headers:
        assert raised.value.retry_after == 12  # type: ignore[attr-defined]
    if error is PermissionDeniedError:
        assert raised.value.permission == (  # type: ignore[attr-defined]
            "Microsoft.CognitiveServices/accounts/deployments/write")
        assert "deployment 'chat'" in str(raised.value)


def test_unknown_deployment_and_missing_credentials(replay: AzureReplay, clock: Clock) -> None:
    replay.exists = False
    with pytest.raises(InvalidRequestError, match="unknown deployment"):
        make_provider(replay, clock).holdings("chat")
    with pytest.raises(AuthenticationError, match="az login"):
        make_provider(AzureReplay(), clock, token=Token(fail=True)).holdings("chat")


def test_check_names_a_missing_permission(azure: AzureOpenAIProvider,
                                          replay: AzureReplay) -> None:
    assert any("permissions granted" in line for line in azure.check("chat"))
    replay.permissions = [{"actions": ["Microsoft.CognitiveServices/accounts/*/read"],
                           "notActions": []}]
    with pytest.raises(PermissionDeniedError, match="deployments/write"):
        azure.check("chat")
    assert not puts(replay)  # a check never changes anything


def test_journal_end_to_end_crash_retry_and_drift(
        azure: AzureOpenAIProvider, replay: AzureReplay, engine: sa.Engine) -> None:
    ident = add_deployment(engine, "chat", provider="azure")
    names = {ident: "chat"}
    first = journal.plan_action(engine, ActionRequest(
        deployment_id=ident, kind="elastic_set_target", target_units=2), T0)
    with pytest.raises(Crash):  # between journal and send: Azure saw nothing
        journal.send_due(engine, CrashingProvider(azure, before=True), names, T0)
    report = journal.recover(engine, azure, T0, deployment_name_by_id=names)
    assert [o.outcome for o in report.outcomes] == ["confirmed"]
    assert [b["tags"][TAG_KEY] for b in puts(replay)] == [first.idempotency_key]
    replay.finish()
    journal.plan_action(engine, ActionRequest(
        deployment_id=ident, kind="elastic_set_target", target_units=3), T0)
    with pytest.raises(Crash):  # after Azure applied it: found by its tag, not re-sent
        journal.send_due(engine, CrashingProvider(azure, after=True), names, T0)
    report = journal.recover(engine, azure, T0, deployment_name_by_id=names)
    assert [o.outcome for o in report.outcomes] == ["confirmed"]
    assert len(puts(replay)) == 2
    replay.finish()
    replay.by_hand(15 + 5 * 5)  # someone set 40 PTU in the portal
    drifts = journal.reconcile(engine, azure, names, T0 + dt.timedelta(minutes=1))
    assert [(d.kind, d.expected, d.actual) for d in drifts if d.kind == "elastic_target"] == [
        ("elastic_target", 3, 5)]
    # The 15 reserved PTU (3 units) were bought outside capsched: held, never drift.
    assert azure.holdings("chat").committed_at(T0 + dt.timedelta(minutes=1)) == 3
    assert not [d for d in drifts if d.kind == "committed_units"], drifts


def test_shadow_mode_logs_the_put_and_sends_nothing(azure: AzureOpenAIProvider,
                                                    replay: AzureReplay) -> None:
    shadow = ShadowProvider(azure, ["chat"], clock=azure._clock)
    shadow.set_elastic_target("chat", 2, idempotency_key="cs-chat-elastic-7")
    assert not puts(replay)
    ((_, _, call),) = shadow.calls
    assert call.method == "cognitiveservices.deployments.begin_create_or_update"
    assert call.params["deployment"]["sku"]["capacity"] == 25
    assert shadow.holdings("chat").elastic_target == 2


def test_custom_role_grants_exactly_the_calls_the_adapter_makes(repo_root: Path) -> None:
    source = (repo_root / "scheduler/providers/azure_openai.py").read_text()
    made = set(re.findall(r"self\.client\.(deployments\.[a-z_]+)\(", source))
    made |= set(re.findall(r'_edge\([^)]*"(deployments\.[a-z_]+|permissions\.list)"', source))
    assert made <= set(RBAC_ACTIONS), made - set(RBAC_ACTIONS)
    role = json.loads((repo_root / "docs/iam/azure-role.json").read_text())
    assert set(role["Actions"]) == set(RBAC_ACTIONS.values())


@pytest.mark.parametrize(("raised", "error"), [
    (requests.exceptions.ReadTimeout("read timed out"), ProviderTimeout),
    (requests.exceptions.ConnectTimeout("connect timed out"), ProviderTimeout),
    (requests.exceptions.ConnectionError("connection refused"), ProviderUnavailable),
])
def test_transport_failures_are_mapped(azure: AzureOpenAIProvider, replay: AzureReplay,
                                       raised: Exception, error: type[Exception]) -> None:
    replay.raise_next = raised
    with pytest.raises(error):
        azure.holdings("chat")
