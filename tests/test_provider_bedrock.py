"""The bedrock provider against botocore's Stubber (every request is validated against the
real Bedrock service model), and the daemon's journal end to end on top of it."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from botocore.stub import Stubber

from scheduler.daemon import journal
from scheduler.daemon.journal import ActionRequest
from scheduler.providers.base import RequestStatus
from scheduler.providers.bedrock import (
    IAM_ACTIONS,
    TAG_DEPLOYMENT,
    TAG_KEY,
    BedrockProvider,
    client_token,
    parse_settings,
    throughput_name,
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
from scheduler.store import journal as jstore
from tests.test_journal import Crash, CrashingProvider, add_deployment

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
ACCOUNT_ARN = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/"
SETTINGS: dict[str, Any] = {
    "type": "bedrock", "region": "us-east-1",
    "deployments": {"chat": {"model_id": MODEL, "lead_time_minutes": 20,
                             "min_hold_minutes": 60, "max_units": 10,
                             "commitment_terms": [30]}},
}


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def bedrock(clock: Clock) -> tuple[BedrockProvider, Stubber]:
    client = boto3.client("bedrock", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    _, deployments = parse_settings("aws", SETTINGS)
    provider = BedrockProvider("aws", client=client, deployments=deployments, clock=clock)
    stubber = Stubber(client)
    stubber.activate()
    yield provider, stubber
    stubber.assert_no_pending_responses()
    stubber.deactivate()


def arn(n: int) -> str:
    return f"{ACCOUNT_ARN}{n:012d}"


def summary(name: str, n: int, units: int, *, status: str = "InService",
            created: dt.datetime = T0 - dt.timedelta(hours=3),
            commitment: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "provisionedModelName": name, "provisionedModelArn": arn(n),
        "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}",
        "desiredModelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}",
        "foundationModelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}",
        "modelUnits": units, "desiredModelUnits": units, "status": status,
        "creationTime": created, "lastModifiedTime": created}
    if commitment:
        found["commitmentDuration"] = commitment
        found["commitmentExpirationTime"] = created + dt.timedelta(days=30)
    return found


def stub_list(stubber: Stubber, summaries: list[dict[str, Any]]) -> None:
    stubber.add_response("list_provisioned_model_throughputs",
                         {"provisionedModelSummaries": summaries},
                         {"nameContains": "capsched"})


def stub_tags(stubber: Stubber, n: int, deployment: str, key: str) -> None:
    stubber.add_response("list_tags_for_resource",
                         {"tags": [{"key": TAG_DEPLOYMENT, "value": deployment},
                                   {"key": TAG_KEY, "value": key}]},
                         {"resourceARN": arn(n)})


def create_params(key: str, index: str, units: int, **extra: Any) -> dict[str, Any]:
    return {"clientRequestToken": client_token(key, index), "modelUnits": units,
            "provisionedModelName": throughput_name(key, index), "modelId": MODEL,
            "tags": [{"key": TAG_DEPLOYMENT, "value": "chat"}, {"key": TAG_KEY, "value": key}],
            **extra}


def test_settings_are_validated() -> None:
    with pytest.raises(ProviderConfigError, match=r"deployments.chat\]: key 'model_id'"):
        parse_settings("aws", {"deployments": {"chat": {}}})
    with pytest.raises(ProviderConfigError, match="commitment_terms"):
        parse_settings("aws", {"deployments": {"chat": {"model_id": MODEL,
                                                        "commitment_terms": [7]}}})
    with pytest.raises(ProviderConfigError, match="unknown key 'secret_key'"):
        parse_settings("aws", {"secret_key": "x", "deployments": {"chat": {"model_id": MODEL}}})


def test_scale_up_creates_tagged_throughputs_with_the_key_as_token(bedrock: Any) -> None:
    provider, stubber = bedrock
    key = "cs-chat-elastic-0001"
    stub_list(stubber, [])
    stubber.add_response("create_provisioned_model_throughput",
                         {"provisionedModelArn": arn(1)}, create_params(key, "0", 1))
    stubber.add_response("create_provisioned_model_throughput",
                         {"provisionedModelArn": arn(2)}, create_params(key, "1", 1))
    receipt = provider.set_elastic_target("chat", 2, idempotency_key=key)
    assert receipt.accepted_units == 2
    assert receipt.effective_at == T0 + dt.timedelta(minutes=20)
    # Creating until InService: pending units in the holdings (the lead time).
    stub_list(stubber, [summary(throughput_name(key, "0"), 1, 1, status="Creating", created=T0),
                        summary(throughput_name(key, "1"), 2, 1, status="Creating", created=T0),
                        summary("hand-made", 3, 4)])
    held = provider.holdings("chat")
    assert held.elastic_pending_units == 2 and held.elastic_active_units == 0
    assert held.elastic_target == 2  # the hand-made throughput is neither counted nor touched


def test_scale_down_deletes_only_capsched_throughputs_past_their_hold(
        bedrock: Any, clock: Clock) -> None:
    provider, stubber = bedrock
    old, new = throughput_name("k-old", "0"), throughput_name("k-new", "0")
    listing = [summary(old, 1, 1), summary(new, 2, 1, created=T0 - dt.timedelta(minutes=40)),
               summary("capsched-hand-made", 3, 1)]
    stub_list(stubber, listing)
    stub_tags(stubber, 1, "chat", "k-old")
    stub_tags(stubber, 2, "chat", "k-new")
    stubber.add_response("list_tags_for_resource", {"tags": []}, {"resourceARN": arn(3)})
    stubber.add_response("delete_provisioned_model_throughput", {},
                         {"provisionedModelId": old})
    receipt = provider.set_elastic_target("chat", 0, idempotency_key="cs-chat-elastic-0002")
    # The newer one became active 20 min ago (lead): it is held for 40 more minutes.
    assert receipt.accepted_units == 1 and receipt.clamp_reason == "min_hold"
    assert receipt.next_release_at == T0 + dt.timedelta(minutes=40)


def test_commitment_is_one_month_and_other_terms_are_not_sold(bedrock: Any) -> None:
    provider, stubber = bedrock
    key = "cs-chat-commit-0003"
    assert provider.limits("chat").supported_terms == (30,)
    stubber.add_response("create_provisioned_model_throughput",
                         {"provisionedModelArn": arn(9)},
                         create_params(key, "c", 2, commitmentDuration="OneMonth")
                         | {"clientRequestToken": client_token(key, "c")})
    receipt = provider.buy_commitment("chat", 2, 30, idempotency_key=key)
    assert receipt.commitment.units == 2 and receipt.commitment.term_days == 30
    with pytest.raises(NotSupportedError, match="7-day"):
        provider.buy_commitment("chat", 1, 7, idempotency_key="cs-chat-commit-0004")
    # Its tags are known from the purchase: no ListTagsForResource.
    stub_list(stubber, [summary(throughput_name(key, "c"), 9, 2, commitment="OneMonth")])
    held = provider.holdings("chat")
    assert held.committed_at(T0) == 2 and held.elastic_target == 0


@pytest.mark.parametrize(("code", "status", "message", "error", "extra"), [
    ("ThrottlingException", 429, "Rate exceeded", ProviderUnavailable, {"retry-after": "7"}),
    ("InternalServerException", 500, "boom", ProviderUnavailable, {}),
    ("ServiceQuotaExceededException", 400, "quota of model units reached",
     QuotaExceededError, {}),
    ("ValidationException", 400, "Insufficient capacity for the requested model units",
     OutOfCapacityError, {}),
    ("AccessDeniedException", 403,
     "User: arn:aws:iam::123456789012:user/x is not authorized to perform: "
     "bedrock:CreateProvisionedModelThroughput on resource: *", PermissionDeniedError, {}),
    ("ValidationException", 400, "1 validation error detected", InvalidRequestError, {}),
])
def test_errors_are_mapped_at_the_edge(bedrock: Any, code: str, status: int, message: str,
                                       error: type[Exception], extra: dict[str, str]) -> None:
    provider, stubber = bedrock
    stub_list(stubber, [])
    stubber.add_client_error("create_provisioned_model_throughput", service_error_code=code,
                             service_message=message, http_status_code=status,
                             response_meta={"HTTPHeaders": extra} if extra else None)
    with pytest.raises(error) as raised:
        provider.set_elastic_target("chat", 1, idempotency_key="cs-chat-elastic-0005")
    if extra:
        assert raised.value.retry_after == 7  # type: ignore[attr-defined]
    if error is PermissionDeniedError:
        assert raised.value.permission == "bedrock:CreateProvisionedModelThroughput"  # type: ignore[attr-defined]
        assert "'chat'" in str(raised.value)


def test_missing_credentials_are_an_authentication_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    provider = BedrockProvider.from_settings("aws", SETTINGS)
    with pytest.raises(AuthenticationError, match="AWS credentials"):
        provider.holdings("chat")


def test_failed_throughput_is_reported_and_cleaned_up(bedrock: Any) -> None:
    provider, stubber = bedrock
    key = "cs-chat-elastic-0006"
    name = throughput_name(key, "0")
    stubber.add_response("get_provisioned_model_throughput", {
        **{k: v for k, v in summary(name, 4, 1, status="Failed").items()
           if k not in ("commitmentDuration", "commitmentExpirationTime")},
        "failureMessage": "Insufficient capacity in us-east-1"},
        {"provisionedModelId": name})
    stub_tags(stubber, 4, "chat", key)
    found = provider.lookup_request(key)
    assert found.status is RequestStatus.FAILED and found.error_code == "out_of_capacity"
    stub_list(stubber, [summary(name, 4, 1, status="Failed")])
    assert provider.holdings("chat").elastic_target == 0
    stub_list(stubber, [summary(name, 4, 1, status="Failed")])
    stubber.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": name})
    provider.set_elastic_target("chat", 0, idempotency_key="cs-chat-elastic-0007")


def _elastic(engine: sa.Engine, ident: int, target: int) -> jstore.ActionRecord:
    return journal.plan_action(engine, ActionRequest(
        deployment_id=ident, kind="elastic_set_target", target_units=target), T0)


def test_journal_end_to_end_crash_retry_and_drift(bedrock: Any, engine: sa.Engine) -> None:
    provider, stubber = bedrock
    ident = add_deployment(engine, "chat", provider="aws")
    names = {ident: "chat"}
    action = _elastic(engine, ident, 1)
    key, name = action.idempotency_key, throughput_name(action.idempotency_key, "0")
    # 1. Crash between journal and send: the action is 'sent', nothing reached AWS.
    with pytest.raises(Crash):
        journal.send_due(engine, CrashingProvider(provider, before=True), names, T0)
    # 2. Restart: AWS never saw the key, so the journal resends with the same key.
    stubber.add_client_error("get_provisioned_model_throughput",
                             service_error_code="ResourceNotFoundException",
                             http_status_code=404, expected_params={"provisionedModelId": name})
    stubber.add_client_error("get_provisioned_model_throughput",
                             service_error_code="ResourceNotFoundException", http_status_code=404,
                             expected_params={"provisionedModelId": throughput_name(key, "c")})
    stub_list(stubber, [])
    stubber.add_response("create_provisioned_model_throughput",
                         {"provisionedModelArn": arn(1)}, create_params(key, "0", 1))
    report = journal.recover(engine, provider, T0, deployment_name_by_id=names)
    assert [o.outcome for o in report.outcomes] == ["confirmed"]
    # 3. Crash after AWS applied a scale-up: recovery finds it by name, sends nothing again.
    second = _elastic(engine, ident, 2)
    key2 = second.idempotency_key
    stub_list(stubber, [summary(name, 1, 1, created=T0)])  # its tags are cached
    stubber.add_response("create_provisioned_model_throughput",
                         {"provisionedModelArn": arn(2)}, create_params(key2, "0", 1))
    with pytest.raises(Crash):
        journal.send_due(engine, CrashingProvider(provider, after=True), names, T0)
    fresh = BedrockProvider("aws", client=provider.client, deployments=provider.deployments,
                            clock=provider._clock)
    found = summary(throughput_name(key2, "0"), 2, 1, status="Creating", created=T0)
    stubber.add_response("get_provisioned_model_throughput",
                         {k: v for k, v in found.items()},
                         {"provisionedModelId": throughput_name(key2, "0")})
    stub_tags(stubber, 2, "chat", key2)
    report = journal.recover(engine, fresh, T0, deployment_name_by_id=names)
    assert [o.outcome for o in report.outcomes] == ["confirmed"]
    # 4. Someone deleted a capsched throughput by hand: reconcile records the drift.
    stub_list(stubber, [found])
    drifts = journal.reconcile(engine, fresh, names, T0 + dt.timedelta(minutes=1))
    assert [(d.kind, d.expected, d.actual) for d in drifts] == [("elastic_target", 2, 1)]


def test_shadow_mode_logs_the_exact_calls_and_sends_nothing(bedrock: Any) -> None:
    provider, stubber = bedrock
    stub_list(stubber, [])  # real reads seed the shadow book: holdings and named tranches
    stub_list(stubber, [])
    shadow = ShadowProvider(provider, ["chat"], clock=provider._clock)
    assert shadow.holdings("chat").elastic_target == 0
    receipt = shadow.set_elastic_target("chat", 1, idempotency_key="cs-chat-elastic-0008")
    assert receipt.accepted_units == 1
    assert shadow.holdings("chat").elastic_pending_units == 1
    ((_deployment, key, call),) = shadow.calls
    assert call.method == "bedrock.create_provisioned_model_throughput"
    assert call.params == create_params(key, "0", 1)
    # The logged call is one the real client accepts (validated by the Stubber's model).
    stubber.add_response("create_provisioned_model_throughput",
                         {"provisionedModelArn": arn(1)}, dict(call.params))
    provider.client.create_provisioned_model_throughput(**call.params)


def test_iam_policy_grants_exactly_the_calls_the_adapter_makes(repo_root: Path) -> None:
    source = (repo_root / "scheduler/providers/bedrock.py").read_text()
    made = set(re.findall(r'SdkCall\(\s*"bedrock\.([a-z_]+)"', source))
    made |= set(re.findall(r'get_paginator\("([a-z_]+)"\)', source))
    assert made <= set(IAM_ACTIONS), made - set(IAM_ACTIONS)
    policy = json.loads((repo_root / "docs/iam/bedrock-policy.json").read_text())
    granted = {a for s in policy["Statement"] for a in (
        [s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert granted == set(IAM_ACTIONS.values())


# -- capsched providers check --------------------------------------------------------------

CHECK_CONFIG = """
[[deployment]]
name = "chat"
provider = "aws"
unit_tpm = 2500
[deployment.pricing]
elastic_unit_hour = 40.0

[[deployment]]
name = "other"
provider = "aws"
unit_tpm = 2500
[deployment.pricing]
elastic_unit_hour = 40.0

[providers.aws]
type = "bedrock"
region = "us-east-1"
[providers.aws.deployments.chat]
model_id = "anthropic.claude-3-5-sonnet-20240620-v1:0"
"""


def _check(tmp_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from scheduler.cli.main import main

    path = tmp_path / "capsched.toml"
    path.write_text(CHECK_CONFIG)
    code = main(["--config", str(path), "providers", "check", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return code, captured.out


def test_providers_check_says_what_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Missing credentials: no environment, no profile, no instance role.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    code, out = _check(tmp_path, capsys, "--deployment", "chat")
    assert code == 1
    assert "FAIL chat (provider aws, mode live): credentials missing or rejected" in out
    # An unknown deployment: the provider has no table for it.
    code, out = _check(tmp_path, capsys, "--deployment", "other")
    assert code == 1 and "has no [providers.aws.deployments.other] table" in out
    # A missing permission, and then everything in order (the client behind a Stubber).
    client = boto3.client("bedrock", region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    monkeypatch.setattr(boto3.Session, "client", lambda self, *a, **kw: client)
    with Stubber(client) as stubber:
        stubber.add_client_error(
            "list_provisioned_model_throughputs", service_error_code="AccessDeniedException",
            http_status_code=403, service_message="User: arn:aws:iam::123456789012:user/cs is "
            "not authorized to perform: bedrock:ListProvisionedModelThroughputs")
        code, out = _check(tmp_path, capsys, "--deployment", "chat")
        assert code == 1
        assert "missing permission bedrock:ListProvisionedModelThroughputs" in out
        stub_list(stubber, [])
        stubber.add_response("get_foundation_model", {"modelDetails": {
            "modelArn": f"arn:aws:bedrock:us-east-1::foundation-model/{MODEL}",
            "modelId": MODEL}}, {"modelIdentifier": MODEL})
        code, out = _check(tmp_path, capsys, "--deployment", "chat")
        assert code == 0 and out.startswith("ok   chat") and f"model {MODEL} exists" in out


def test_out_of_capacity_midway_takes_what_was_granted(bedrock: Any) -> None:
    provider, stubber = bedrock
    key = "cs-chat-elastic-0009"
    stub_list(stubber, [])
    stubber.add_response("create_provisioned_model_throughput",
                         {"provisionedModelArn": arn(1)}, create_params(key, "0", 1))
    stubber.add_client_error("create_provisioned_model_throughput",
                             service_error_code="ValidationException", http_status_code=400,
                             service_message="Insufficient capacity for model units")
    receipt = provider.set_elastic_target("chat", 3, idempotency_key=key)
    assert receipt.accepted_units == 1 and receipt.clamp_reason == "out_of_capacity"


def test_transport_failures_are_mapped(bedrock: Any) -> None:
    """Timeouts and dropped connections never reach the Stubber: botocore raises them from
    its HTTP layer, so they are given to the edge as botocore raises them."""
    from botocore import exceptions as bx

    provider, _ = bedrock
    cases = [
        (bx.ReadTimeoutError(endpoint_url="https://bedrock"), ProviderTimeout),
        (bx.ConnectTimeoutError(endpoint_url="https://bedrock"), ProviderTimeout),
        (bx.EndpointConnectionError(endpoint_url="https://bedrock"), ProviderUnavailable),
        (bx.ClientError({"Error": {"Code": "ExpiredTokenException", "Message": "expired"},
                         "ResponseMetadata": {"HTTPStatusCode": 400}}, "ListTagsForResource"),
         AuthenticationError),
    ]
    for raised, expected in cases:
        error = provider._translate(raised, "holdings", "chat", "list_tags_for_resource")
        assert type(error) is expected, (raised, error)
        assert error.deployment == "chat"


def test_a_malformed_answer_is_a_protocol_error_not_a_key_error() -> None:
    """botocore validates what the Stubber returns, so a proxy or a changed API is the only
    way a field goes missing: the adapter must name it, not leak a KeyError."""
    from scheduler.providers.bedrock import _field, _utc
    from scheduler.providers.errors import ProviderProtocolError

    with pytest.raises(ProviderProtocolError, match="creationTime") as info:
        _field({"provisionedModelArn": "arn:x"}, "creationTime", provider="bedrock-us",
               operation="holdings", deployment="bot")
    assert (info.value.provider, info.value.operation, info.value.deployment) == (
        "bedrock-us", "holdings", "bot")
    with pytest.raises(ProviderProtocolError, match="timestamp"):
        _utc("yesterday", provider="bedrock-us", operation="lookup_request")
    assert _field({"a": 1}, "a", provider="p", operation="o") == 1
