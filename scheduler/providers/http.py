"""The ``http`` provider: capsched's side of a small JSON-over-HTTP protocol.

Any platform can put a shim speaking this protocol in front of its capacity API; the
protocol is written down in ``docs/http-provider.md`` and implemented by
:mod:`reference_server`.

The adapter speaks HTTP through one ``httpx.Client`` per provider (a connection pool, a
timeout on every call by default, no redirects). Its transport is the seam: the real one is
:func:`default_transport`; tests pass ``httpx.MockTransport`` to answer from a function.
Whatever httpx raises (connection, TLS, timeout errors) and whatever the server sends back
(statuses, error codes, malformed JSON) is mapped here, at the edge, to
:mod:`scheduler.providers.errors`. A 2xx answer to a change (``set_elastic_target``,
``buy_commitment``) that cannot be read raises :class:`OutcomeUnknownError`, never a
permanent error: the change may be applied, and only ``lookup_request`` can tell.

Settings (``[providers.<name>]``)::

    url = "https://capacity-shim.internal/"   # required; http or https
    token_file = "/run/credentials/capsched.service/shim-token"   # one of token_file,
    # token_env = "CAPSCHED_SHIM_TOKEN"                            # token_env, token
    timeout_seconds = 10                        # optional, per call

Secrets never go in the database; ``token`` in the TOML file is accepted for development but
``token_file`` (systemd ``LoadCredential=``) or ``token_env`` (``EnvironmentFile=``) is
preferred.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import ipaddress
import json
import math
import os
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
import structlog

import scheduler
from scheduler.providers.base import (
    DEFAULT_TIMEOUT_SECONDS,
    OP_BUY_COMMITMENT,
    OP_HOLDINGS,
    OP_LIMITS,
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
)
from scheduler.providers.errors import (
    AuthenticationError,
    IdempotencyConflictError,
    InvalidRequestError,
    NotSupportedError,
    OutcomeUnknownError,
    OutOfCapacityError,
    PermanentProviderError,
    ProviderConfigError,
    ProviderError,
    ProviderProtocolError,
    ProviderTimeout,
    ProviderUnavailable,
    QuotaExceededError,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = structlog.get_logger()

_T = TypeVar("_T")
_U = TypeVar("_U")

PROTOCOL_PREFIX = "/v1"
#: Responses larger than this are refused: a capacity API never needs megabytes, and a
#: misconfigured URL pointing at a file server must not fill memory.
MAX_RESPONSE_BYTES = 1 << 20
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"

# Error codes of the protocol (the ``error.code`` field of an error body).
CODE_OUT_OF_CAPACITY = "out_of_capacity"
CODE_QUOTA_EXCEEDED = "quota_exceeded"
CODE_NOT_SUPPORTED = "not_supported"
CODE_IDEMPOTENCY_CONFLICT = "idempotency_conflict"
CODE_REQUEST_IN_PROGRESS = "request_in_progress"

_SETTINGS_KEYS = frozenset({"url", "token", "token_file", "token_env", "timeout_seconds"})


# -- transport --------------------------------------------------------------------------


def default_transport(ssl_context: ssl.SSLContext | None = None) -> httpx.BaseTransport:
    """The real transport: ``httpx.HTTPTransport`` (TLS verified, no retries of its own).

    Retries belong to the journal, which reuses the idempotency key; a transport that
    retried by itself would hide attempts from it.
    """
    return httpx.HTTPTransport(verify=ssl_context or ssl.create_default_context(), retries=0)


# -- settings --------------------------------------------------------------------------


def resolve_token(
    name: str, settings: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> str:
    """The bearer token from exactly one of ``token``, ``token_file`` or ``token_env``."""
    where = f"[providers.{name}]"
    given = [key for key in ("token", "token_file", "token_env") if settings.get(key)]
    if len(given) != 1:
        raise ProviderConfigError(
            f"{where}: set exactly one of token_file, token_env or token (got "
            f"{', '.join(given) or 'none'})"
        )
    key = given[0]
    value = settings[key]
    if not isinstance(value, str):
        raise ProviderConfigError(f"{where}: {key} must be a string")
    if key == "token_file":
        try:
            token = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise ProviderConfigError(
                f"{where}: cannot read token_file {value!r}: {exc.strerror or exc}"
            ) from None
    elif key == "token_env":
        env = os.environ if environ is None else environ
        if value not in env:
            raise ProviderConfigError(f"{where}: environment variable {value!r} is not set")
        token = env[value]
    else:
        token = value
    # Files written by editors and `echo` end with a newline; it is never part of a token.
    token = token.strip()
    if not token or any(ch in token for ch in "\r\n"):
        raise ProviderConfigError(f"{where}: the token from {key} is empty or spans lines")
    return token


def _check_url(name: str, url: Any) -> str:
    where = f"[providers.{name}]"
    if not isinstance(url, str) or not url:
        raise ProviderConfigError(f"{where}: url is required (http:// or https://)")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ProviderConfigError(f"{where}: url must be http:// or https://host..., got {url!r}")
    if parts.query or parts.fragment:
        raise ProviderConfigError(f"{where}: url must not carry a query or fragment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        # Allowed (a shim on a private network), but the token crosses it in clear text.
        log.warning("provider.http.plaintext", provider=name, url=url)
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- the adapter -----------------------------------------------------------------------


class HttpProvider(Provider):
    """A provider reached through the capsched HTTP protocol (``docs/http-provider.md``)."""

    def __init__(
        self,
        name: str,
        *,
        url: str,
        token: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(name, timeout=timeout)
        self.url = _check_url(name, url)
        self._token = token
        # One client per provider: its connection pool serves every call of every tick.
        # The timeout bounds connect, each read, each write and the pool wait; redirects are
        # not followed (a redirect usually means a wrong URL, and following it would send
        # the bearer token somewhere else).
        self._client = httpx.Client(
            transport=transport or default_transport(),
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/json",
                "User-Agent": f"capsched/{scheduler.__version__}",
            },
        )

    def close(self) -> None:
        """Close the provider's HTTP connection pool."""
        self._client.close()

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: Mapping[str, Any],
        *,
        engine: Engine | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> Self:
        unknown = set(settings) - _SETTINGS_KEYS
        if unknown:
            # Typos like `tokenfile` must not silently fall back to another token source.
            raise ProviderConfigError(
                f"[providers.{name}]: unknown key {sorted(unknown)[0]!r} "
                f"(known: {', '.join(sorted(_SETTINGS_KEYS))})"
            )
        raw_timeout = settings.get("timeout_seconds", timeout)
        if (
            isinstance(raw_timeout, bool)
            or not isinstance(raw_timeout, int | float)
            or not math.isfinite(raw_timeout)
            or raw_timeout <= 0
        ):
            raise ProviderConfigError(
                f"[providers.{name}]: timeout_seconds must be a positive number"
            )
        return cls(
            name,
            url=settings.get("url"),  # type: ignore[arg-type]  # checked by _check_url
            token=resolve_token(name, settings),
            timeout=float(raw_timeout),
        )

    # -- required ----------------------------------------------------------------------

    def holdings(self, deployment: str) -> Holdings:
        body = self._call(
            OP_HOLDINGS, "GET", self._deployment_path(deployment, "holdings"), deployment=deployment
        ).body
        reader = _Reader(self.name, OP_HOLDINGS, deployment)
        return Holdings(
            deployment=deployment,
            as_of=reader.time(body, "as_of"),
            elastic=tuple(
                reader.build(
                    lambda item: ElasticTranche(
                        units=reader.get_int(item, "units"),
                        active_from=reader.time(item, "active_from"),
                        hold_until=reader.time(item, "hold_until"),
                    ),
                    item,
                )
                for item in reader.get_list(body, "elastic")
            ),
            commitments=tuple(
                reader.build(lambda item: reader.commitment(item), item)
                for item in reader.get_list(body, "commitments")
            ),
        )

    def limits(self, deployment: str) -> ProviderLimits:
        body = self._call(
            OP_LIMITS, "GET", self._deployment_path(deployment, "limits"), deployment=deployment
        ).body
        reader = _Reader(self.name, OP_LIMITS, deployment)
        terms = reader.get_list(body, "supported_terms")
        if not all(isinstance(t, int) and not isinstance(t, bool) and t > 0 for t in terms):
            raise reader.error("supported_terms must be a list of positive integers")
        return reader.build(
            lambda b: ProviderLimits(
                max_units=reader.get_int(b, "max_units"),
                max_step=reader.get_int(b, "max_step"),
                supported_terms=tuple(terms),
                lead_time_minutes=reader.get_int(b, "lead_time_minutes"),
                min_hold_minutes=reader.get_int(b, "min_hold_minutes"),
            ),
            body,
        )

    def set_elastic_target(
        self, deployment: str, target_units: int, *, idempotency_key: str
    ) -> ElasticReceipt:
        op = OP_SET_ELASTIC_TARGET
        check_idempotency_key(idempotency_key, provider=self.name, operation=op)
        _check_count(target_units, "target_units", 0, self.name, op, deployment)
        reply = self._call(
            op,
            "POST",
            self._deployment_path(deployment, "elastic"),
            deployment=deployment,
            payload={"target_units": target_units},
            idempotency_key=idempotency_key,
        )
        reader = _Reader(self.name, op, deployment)
        body = reply.body
        return reader.receipt(
            lambda b: ElasticReceipt(
                provider=self.name,
                deployment=deployment,
                idempotency_key=idempotency_key,
                reference=reader.get_str(b, "reference"),
                requested_units=target_units,
                accepted_units=reader.get_int(b, "accepted_units"),
                effective_at=reader.time(b, "effective_at"),
                status=reader.status(b, allowed=(RequestStatus.DONE, RequestStatus.PENDING)),
                clamp_reason=reader.optional_str(b, "clamp_reason"),
                next_release_at=reader.optional_time(b, "next_release_at"),
                replayed=reply.replayed,
            ),
            body,
        )

    def lookup_request(self, idempotency_key: str) -> RequestLookup:
        op = OP_LOOKUP_REQUEST
        check_idempotency_key(idempotency_key, provider=self.name, operation=op)
        body = self._call(op, "GET", f"/requests/{_quote(idempotency_key)}").body
        reader = _Reader(self.name, op, None)
        error = body.get("error")
        if error is not None and not isinstance(error, dict):
            raise reader.error("error must be an object or null")
        details = body.get("result")
        if details is not None and not isinstance(details, dict):
            raise reader.error("result must be an object or null")
        return RequestLookup(
            idempotency_key=idempotency_key,
            status=reader.status(body, allowed=tuple(RequestStatus)),
            operation=reader.optional_str(body, "operation"),
            deployment=reader.optional_str(body, "deployment"),
            reference=reader.optional_str(body, "reference"),
            error_code=None if error is None else reader.optional_str(error, "code"),
            error_message=None if error is None else reader.optional_str(error, "message"),
            details=details or {},
        )

    # -- optional ----------------------------------------------------------------------

    def buy_commitment(
        self, deployment: str, units: int, term_days: int, *, idempotency_key: str
    ) -> CommitmentReceipt:
        op = OP_BUY_COMMITMENT
        check_idempotency_key(idempotency_key, provider=self.name, operation=op)
        _check_count(units, "units", 1, self.name, op, deployment)
        _check_count(term_days, "term_days", 1, self.name, op, deployment)
        reply = self._call(
            op,
            "POST",
            self._deployment_path(deployment, "commitments"),
            deployment=deployment,
            payload={"units": units, "term_days": term_days},
            idempotency_key=idempotency_key,
        )
        reader = _Reader(self.name, op, deployment)
        body = reply.body
        return reader.receipt(
            lambda b: CommitmentReceipt(
                provider=self.name,
                deployment=deployment,
                idempotency_key=idempotency_key,
                reference=reader.get_str(b, "reference"),
                commitment=reader.commitment(reader.get_dict(b, "commitment")),
                status=reader.status(b, allowed=(RequestStatus.DONE, RequestStatus.PENDING)),
                replayed=reply.replayed,
            ),
            body,
        )

    # -- plumbing ----------------------------------------------------------------------

    def _deployment_path(self, deployment: str, leaf: str) -> str:
        if not deployment:
            raise InvalidRequestError(
                "deployment name is empty", provider=self.name, operation=leaf
            )
        return f"/deployments/{_quote(deployment)}/{leaf}"

    def _call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        deployment: str | None = None,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> _Reply:
        headers: dict[str, str] = {}
        body = None
        if payload is not None:
            body = json.dumps(payload, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers[IDEMPOTENCY_HEADER] = idempotency_key
        context: dict[str, Any] = {
            "provider": self.name,
            "operation": operation,
            "deployment": deployment,
        }
        request = self._client.build_request(
            method, f"{self.url}{PROTOCOL_PREFIX}{path}", headers=headers, content=body
        )
        try:
            response = self._client.send(request, stream=True)
            try:
                raw = _read_capped(response)
            finally:
                response.close()
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(f"no answer within {self.timeout:g}s", **context) from exc
        except httpx.TransportError as exc:
            certificate = _certificate_error(exc)
            if certificate is not None:
                # A bad certificate does not heal by retrying. verify_message is only set
                # when OpenSSL raised it, not on every instance.
                reason = getattr(certificate, "verify_message", None) or certificate
                raise PermanentProviderError(
                    f"TLS certificate verification failed: {reason}", **context
                ) from exc
            raise ProviderUnavailable(
                f"transport error: {type(exc).__name__}: {exc}", **context
            ) from exc
        status = response.status_code
        if raw is None:
            message = f"response larger than {MAX_RESPONSE_BYTES} bytes"
            if idempotency_key is not None and 200 <= status < 300:
                raise OutcomeUnknownError(message, status=status, **context)
            raise ProviderProtocolError(message, status=status, **context)
        if not 200 <= status < 300:
            raise error_from_response(
                httpx.Response(status, headers=response.headers, content=raw), **context
            )
        try:
            parsed = _parse_object(raw, **context)
        except ProviderProtocolError as exc:
            if idempotency_key is not None:
                # The provider accepted the change (2xx) but we cannot read what it did:
                # it may well be applied. Only lookup_request can tell (item 11 of #10).
                raise _outcome_unknown(exc) from None
            raise
        return _Reply(
            body=parsed,
            replayed=(response.headers.get(REPLAYED_HEADER) or "").lower() == "true",
        )


def _read_capped(response: httpx.Response) -> bytes | None:
    """The body, or None when it is larger than ``MAX_RESPONSE_BYTES`` (not read further)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification failure under an httpx error, if that is what it is."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore wraps ssl; the chain is short
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _outcome_unknown(error: ProviderProtocolError) -> OutcomeUnknownError:
    return OutcomeUnknownError(
        f"2xx answer not understood, the change may be applied: {error.message}",
        provider=error.provider,
        operation=error.operation,
        deployment=error.deployment,
        status=error.status,
    )


@dataclass(frozen=True)
class _Reply:
    body: dict[str, Any]
    replayed: bool


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _check_count(
    value: object, what: str, minimum: int, provider: str, operation: str, deployment: str
) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidRequestError(
            f"{what} must be an integer >= {minimum}, got {value!r}",
            provider=provider,
            operation=operation,
            deployment=deployment,
        )


def _parse_object(
    raw: bytes, *, provider: str, operation: str, deployment: str | None
) -> dict[str, Any]:
    try:
        parsed = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProviderProtocolError(
            f"response is not JSON: {exc}",
            provider=provider,
            operation=operation,
            deployment=deployment,
        ) from None
    if not isinstance(parsed, dict):
        raise ProviderProtocolError(
            "response is not a JSON object",
            provider=provider,
            operation=operation,
            deployment=deployment,
        )
    return parsed


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    # An I/O edge may read the clock; an HTTP-date is meaningless without it.
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - now).total_seconds())


def error_from_response(
    response: httpx.Response, *, provider: str, operation: str, deployment: str | None
) -> ProviderError:
    """Map a non-2xx response (its body read) to the error hierarchy: error code first,
    then status. ``retry_after`` comes from the ``Retry-After`` header, else from the body's
    ``error.retry_after_seconds``."""
    status = response.status_code
    code: str | None = None
    message = f"HTTP {status}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    try:
        parsed = json.loads(response.content) if response.content else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        parsed = None  # proxies send HTML error pages; the status still tells us enough
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        if isinstance(error.get("code"), str):
            code = error["code"]
        if isinstance(error.get("message"), str) and error["message"]:
            message = error["message"]
        body_retry = error.get("retry_after_seconds")
        if (
            retry_after is None
            and isinstance(body_retry, int | float)
            and not isinstance(body_retry, bool)
            and math.isfinite(body_retry)
        ):
            retry_after = max(0.0, float(body_retry))
    common: dict[str, Any] = {
        "provider": provider,
        "operation": operation,
        "deployment": deployment,
        "code": code,
        "status": status,
    }
    # The error code decides first: it carries meaning the status cannot (out of capacity
    # and quota would otherwise look like any 503 or 422).
    if code == CODE_OUT_OF_CAPACITY:
        return OutOfCapacityError(message, retry_after=retry_after, **common)
    if code == CODE_QUOTA_EXCEEDED:
        return QuotaExceededError(message, retry_after=retry_after, **common)
    if code == CODE_NOT_SUPPORTED or status == 501:
        return NotSupportedError(
            message, provider=provider, operation=operation, deployment=deployment
        )
    if code == CODE_REQUEST_IN_PROGRESS:
        # The same key is being processed right now: ask again shortly, same key.
        return ProviderUnavailable(message, retry_after=retry_after, **common)
    if code == CODE_IDEMPOTENCY_CONFLICT or status == 409:
        return IdempotencyConflictError(message, **common)
    if status in (401, 403):
        return AuthenticationError(message, **common)
    if status in (400, 404, 422):
        return InvalidRequestError(message, **common)
    if status in (408, 429) or status >= 500:
        return ProviderUnavailable(message, retry_after=retry_after, **common)
    if 400 <= status < 500:
        return InvalidRequestError(message, **common)
    return ProviderProtocolError(f"unexpected HTTP status {status}: {message}", **common)


class _Reader:
    """Strict access to a response body: anything off-protocol is a ProviderProtocolError."""

    def __init__(self, provider: str, operation: str, deployment: str | None) -> None:
        self.provider = provider
        self.operation = operation
        self.deployment = deployment

    def error(self, message: str) -> ProviderProtocolError:
        return ProviderProtocolError(
            f"malformed response: {message}",
            provider=self.provider,
            operation=self.operation,
            deployment=self.deployment,
        )

    def build(self, make: Callable[[_U], _T], source: _U) -> _T:
        # Value objects validate themselves (ValueError); a provider breaking their rules
        # is off-protocol, not a caller bug.
        try:
            return make(source)
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def receipt(self, make: Callable[[_U], _T], source: _U) -> _T:
        """:meth:`build` for the answer to a change: off-protocol means outcome unknown."""
        try:
            return self.build(make, source)
        except ProviderProtocolError as exc:
            raise _outcome_unknown(exc) from None

    def get_dict(self, body: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = body.get(key)
        if not isinstance(value, dict):
            raise self.error(f"{key} must be an object")
        return value

    def get_list(self, body: Mapping[str, Any], key: str) -> list[Any]:
        value = body.get(key)
        if not isinstance(value, list):
            raise self.error(f"{key} must be a list")
        return value

    def get_int(self, body: Any, key: str) -> int:
        value = body.get(key) if isinstance(body, dict) else None
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{key} must be an integer")
        return value

    def get_str(self, body: Mapping[str, Any], key: str) -> str:
        value = body.get(key)
        if not isinstance(value, str) or not value:
            raise self.error(f"{key} must be a non-empty string")
        return value

    def optional_str(self, body: Mapping[str, Any], key: str) -> str | None:
        value = body.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(f"{key} must be a string or null")
        return value

    def time(self, body: Any, key: str) -> dt.datetime:
        value = body.get(key) if isinstance(body, dict) else None
        if not isinstance(value, str):
            raise self.error(f"{key} must be an RFC 3339 timestamp")
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise self.error(f"{key} is not an RFC 3339 timestamp: {value!r}") from None
        if parsed.tzinfo is None:
            raise self.error(f"{key} has no UTC offset: {value!r}")
        return parsed.astimezone(dt.UTC)

    def optional_time(self, body: Mapping[str, Any], key: str) -> dt.datetime | None:
        return None if body.get(key) is None else self.time(body, key)

    def status(
        self, body: Mapping[str, Any], *, allowed: tuple[RequestStatus, ...]
    ) -> RequestStatus:
        raw = body.get("status", RequestStatus.DONE.value)
        try:
            status = RequestStatus(raw)
        except ValueError:
            raise self.error(f"unknown status {raw!r}") from None
        if status not in allowed:
            raise self.error(f"status {raw!r} is not allowed here")
        return status

    def commitment(self, item: Any) -> Commitment:
        if not isinstance(item, dict):
            raise self.error("a commitment must be an object")
        return Commitment(
            commitment_id=self.get_str(item, "commitment_id"),
            units=self.get_int(item, "units"),
            term_days=self.get_int(item, "term_days"),
            start=self.time(item, "start"),
            end=self.time(item, "end"),
        )


__all__ = [
    "HttpProvider",
    "default_transport",
    "error_from_response",
    "parse_retry_after",
    "resolve_token",
]
