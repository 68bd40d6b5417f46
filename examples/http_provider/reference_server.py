"""A reference server for the capsched HTTP provider protocol (``docs/http-provider.md``).

In-memory, single process, standard library only. It exists for two audiences:

* capsched's tests, which start it on ``127.0.0.1`` port 0 and drive the real
  :class:`~scheduler.providers.http.HttpProvider` against it over real sockets;
* integrators writing a shim for their platform, who can read it as a template (replace
  :class:`ReferenceState` by calls to the platform's capacity API) or run it to try the
  protocol with curl: ``python examples/http_provider/reference_server.py --help``.

It honours the rules of the protocol: bearer auth, idempotency keys (a replay returns the
stored answer, a different request under a used key is a 409), lead time (new units are
pending until ``now + lead_time``), min hold (a scale-down is clamped so no unit goes before
its hold ends, and the answer says so), quota, max step and a finite pool of units per
deployment (``out_of_capacity`` when exhausted). Its clock is injectable
(:class:`ManualClock`) so tests are deterministic, and :class:`Fault` injects the failures a
real platform produces: errors with Retry-After, persistent 5xx, slow answers, a change applied
but answered with an unreadable 2xx, a change answered "done" but never applied, and (for
crash tests) a hook run at the moment a request arrives. :attr:`ReferenceServer.requests`
records every request that reached the server.
"""

from __future__ import annotations

import argparse
import collections
import copy
import datetime as dt
import hmac
import json
import os
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import structlog

from scheduler.providers.base import (
    MAX_IDEMPOTENCY_KEY_LENGTH,
    OP_BUY_COMMITMENT,
    OP_SET_ELASTIC_TARGET,
    ProviderLimits,
    RequestStatus,
)
from scheduler.providers.holds import plan_scale_down
from scheduler.providers.http import (
    CODE_IDEMPOTENCY_CONFLICT,
    CODE_NOT_SUPPORTED,
    CODE_OUT_OF_CAPACITY,
    CODE_QUOTA_EXCEEDED,
    IDEMPOTENCY_HEADER,
    PROTOCOL_PREFIX,
    REPLAYED_HEADER,
)

log = structlog.get_logger()

Clock = Callable[[], dt.datetime]
#: Seconds the server suggests waiting after ``out_of_capacity``.
OUT_OF_CAPACITY_RETRY_AFTER = 60
MAX_REQUEST_BYTES = 64 * 1024


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ManualClock:
    """A clock that moves only when told to; call it to read the time."""

    def __init__(self, start: dt.datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._now = start.astimezone(dt.UTC)
        self._lock = threading.Lock()

    def __call__(self) -> dt.datetime:
        with self._lock:
            return self._now

    def advance(self, delta: dt.timedelta | None = None, *, minutes: float = 0) -> dt.datetime:
        with self._lock:
            self._now += (delta or dt.timedelta()) + dt.timedelta(minutes=minutes)
            return self._now


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: status, JSON body and extra headers."""

    status: int
    body: Mapping[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Sent as the body instead of ``body`` as JSON (a broken answer).
    raw: bytes | None = None


def error_answer(status: int, code: str, message: str, *, retry_after: int | None = None) -> Answer:
    body: dict[str, Any] = {"code": code, "message": message}
    headers: dict[str, str] = {}
    if retry_after is not None:
        body["retry_after_seconds"] = retry_after
        headers["Retry-After"] = str(retry_after)
    return Answer(status, {"error": body}, headers)


@dataclass(frozen=True)
class Fault:
    """A failure to inject before the next ``times`` matching requests reach the state.

    ``status`` 0 means "no error, only the delay" (a slow but correct answer).
    ``delay_seconds`` makes the server wait before answering (a client with a smaller
    timeout sees a timeout). ``path_contains`` restricts the fault to matching paths.
    Faulted requests never reach the state, so they are not recorded under their key.
    """

    status: int = 503
    code: str = "unavailable"
    message: str = "injected fault"
    retry_after: int | None = None
    delay_seconds: float = 0.0
    times: int = 1
    path_contains: str = ""
    #: Process the request first, then delay and answer (``status`` is then ignored unless
    #: ``raw_body`` is set): the change happens but a client with a small timeout never
    #: hears of it, the case ``lookup_request`` and idempotent resends exist for.
    apply_first: bool = False
    #: Answer ``status`` with these bytes as the body (e.g. ``b"<html>OK</html>"`` with 200).
    #: With ``apply_first`` the change is applied first: a 2xx nobody can read.
    raw_body: bytes | None = None
    #: Answer a change as the books would ("done", its reference, the units asked) and
    #: record its key as done, but leave the holdings as they were: a provider that says
    #: done and does nothing.
    pretend_done: bool = False
    #: Called when the fault fires, before the request reaches the books (after them with
    #: ``apply_first``): a crash test kills the client process here.
    on_fire: Callable[[], None] | None = field(default=None, compare=False)


@dataclass
class _Tranche:
    units: int
    active_from: dt.datetime
    hold_until: dt.datetime


@dataclass
class _Deployment:
    limits: ProviderLimits
    #: Units left in the provider's pool for this deployment; None = unlimited.
    available: int | None
    tranches: list[_Tranche] = field(default_factory=list)
    commitments: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class _Record:
    """What became of one idempotency key: the request's fingerprint and its answer."""

    fingerprint: str
    operation: str
    deployment: str
    answer: Answer
    status: RequestStatus
    reference: str | None


class ReferenceState:
    """The provider's books, in memory, behind one lock; speaks the protocol via :meth:`handle`.

    Everything the protocol defines happens here, independent of sockets, so an integrator
    can see the semantics in one place.
    """

    def __init__(self, *, token: str, clock: Clock = utc_now) -> None:
        if not token:
            raise ValueError("the reference server needs a token")
        self._token = token.encode()
        self._clock = clock
        self._lock = threading.Lock()
        self._deployments: dict[str, _Deployment] = {}
        self._records: dict[str, _Record] = {}
        self._counter = 0
        #: The key of every change that reached the books, in order (replays not repeated).
        self.applied_keys: list[str] = []

    # -- setup and inspection (tests, demos) -------------------------------------------

    def add_deployment(
        self, name: str, limits: ProviderLimits, *, available_units: int | None = None
    ) -> None:
        with self._lock:
            self._deployments[name] = _Deployment(limits=limits, available=available_units)

    def set_available_units(self, name: str, units: int | None) -> None:
        with self._lock:
            self._deployments[name].available = units

    def set_elastic_by_hand(self, name: str, units: int) -> None:
        """Replace the deployment's elastic units, active now and past their hold, as a
        human would in the platform's console (no key, no record)."""
        now = self._clock()
        with self._lock:
            state = self._deployments[name]
            state.tranches = [] if units == 0 else [_Tranche(units, now, now)]

    def applied_changes(self) -> int:
        """How many mutating requests succeeded (replays and rejections do not count)."""
        with self._lock:
            return self._counter

    # -- the protocol ------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        keep_change: bool = True,
    ) -> Answer:
        """Answer one request. ``headers`` keys are matched case-insensitively.

        ``keep_change=False`` answers a change as usual but restores the deployment's books
        afterwards (the ``pretend_done`` fault); the key is still recorded as done.
        """
        lower = {k.lower(): v for k, v in headers.items()}
        if not self._authorised(lower.get("authorization", "")):
            return error_answer(401, "unauthorized", "missing or invalid bearer token")
        parts = [urllib.parse.unquote(p) for p in urllib.parse.urlsplit(path).path.split("/")]
        prefix = PROTOCOL_PREFIX.strip("/")
        if len(parts) < 3 or parts[0] != "" or parts[1] != prefix:
            return error_answer(404, "not_found", f"no such endpoint: {path}")
        route = parts[2:]
        if route[0] == "requests" and len(route) == 2 and method == "GET":
            return self._lookup(route[1])
        if route[0] != "deployments" or len(route) != 3 or not route[1]:
            return error_answer(404, "not_found", f"no such endpoint: {path}")
        deployment, leaf = route[1], route[2]
        if (method, leaf) == ("GET", "holdings"):
            return self._read(deployment, self._holdings)
        if (method, leaf) == ("GET", "limits"):
            return self._read(deployment, self._limits)
        if (method, leaf) == ("POST", "elastic"):
            return self._mutate(
                OP_SET_ELASTIC_TARGET,
                deployment,
                lower,
                body,
                ("target_units",),
                self._set_elastic,
                keep_change=keep_change,
            )
        if (method, leaf) == ("POST", "commitments"):
            return self._mutate(
                OP_BUY_COMMITMENT,
                deployment,
                lower,
                body,
                ("units", "term_days"),
                self._buy_commitment,
                keep_change=keep_change,
            )
        if leaf in ("holdings", "limits", "elastic", "commitments"):
            return error_answer(405, "method_not_allowed", f"{method} not allowed on {leaf}")
        return error_answer(404, "not_found", f"no such endpoint: {path}")

    def _authorised(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        # Constant-time comparison: the token is the only secret of the protocol.
        return scheme.lower() == "bearer" and hmac.compare_digest(token.encode(), self._token)

    def _read(
        self, deployment: str, view: Callable[[str, _Deployment, dt.datetime], Answer]
    ) -> Answer:
        with self._lock:
            state = self._deployments.get(deployment)
            if state is None:
                return _unknown_deployment(deployment)
            return view(deployment, state, self._clock())

    def _holdings(self, deployment: str, state: _Deployment, now: dt.datetime) -> Answer:
        return Answer(
            200,
            {
                "deployment": deployment,
                "as_of": _iso(now),
                "elastic": [
                    {
                        "units": t.units,
                        "active_from": _iso(t.active_from),
                        "hold_until": _iso(t.hold_until),
                    }
                    for t in sorted(state.tranches, key=lambda t: t.active_from)
                ],
                "commitments": [
                    c for c in state.commitments if dt.datetime.fromisoformat(c["end"]) > now
                ],
            },
        )

    def _limits(self, deployment: str, state: _Deployment, now: dt.datetime) -> Answer:
        limits = state.limits
        return Answer(
            200,
            {
                "deployment": deployment,
                "max_units": limits.max_units,
                "max_step": limits.max_step,
                "supported_terms": list(limits.supported_terms),
                "lead_time_minutes": limits.lead_time_minutes,
                "min_hold_minutes": limits.min_hold_minutes,
            },
        )

    def _lookup(self, key: str) -> Answer:
        with self._lock:
            record = self._records.get(key)
        if record is None:
            return Answer(200, {"idempotency_key": key, "status": RequestStatus.UNKNOWN.value})
        failed = record.status is RequestStatus.FAILED
        return Answer(
            200,
            {
                "idempotency_key": key,
                "status": record.status.value,
                "operation": record.operation,
                "deployment": record.deployment,
                "reference": record.reference,
                "result": None if failed else dict(record.answer.body),
                "error": record.answer.body.get("error") if failed else None,
            },
        )

    def _mutate(
        self,
        operation: str,
        deployment: str,
        headers: Mapping[str, str],
        body: bytes,
        fields: Sequence[str],
        apply: Callable[[str, _Deployment, Mapping[str, int], dt.datetime], Answer],
        *,
        keep_change: bool = True,
    ) -> Answer:
        key = headers.get(IDEMPOTENCY_HEADER.lower(), "")
        if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            return error_answer(400, "invalid_request", f"{IDEMPOTENCY_HEADER} header required")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return error_answer(400, "invalid_request", "body must be a JSON object")
        if not isinstance(payload, dict) or set(payload) != set(fields):
            return error_answer(
                400, "invalid_request", f"body must be an object with exactly {list(fields)}"
            )
        values = {}
        for name in fields:
            value = payload[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                return error_answer(422, "invalid_request", f"{name} must be an integer >= 0")
            values[name] = value
        # The fingerprint covers what the request asks, not how it was spelled.
        fingerprint = json.dumps([operation, deployment, values], sort_keys=True)
        with self._lock:
            record = self._records.get(key)
            if record is not None:
                if record.fingerprint != fingerprint:
                    return error_answer(
                        409,
                        CODE_IDEMPOTENCY_CONFLICT,
                        f"idempotency key {key!r} was used for a different request",
                    )
                # The same request again: answer as the first time, change nothing.
                replay = dict(record.answer.headers)
                replay[REPLAYED_HEADER] = "true"
                return Answer(record.answer.status, record.answer.body, replay)
            state = self._deployments.get(deployment)
            if state is None:
                answer = _unknown_deployment(deployment)
            elif keep_change:
                answer = apply(key, state, values, self._clock())
            else:
                books = copy.deepcopy(state)
                answer = apply(key, state, values, self._clock())
                self._deployments[deployment] = books
            ok = 200 <= answer.status < 300
            if ok:
                self.applied_keys.append(key)
            # Every request that reached the books has a final outcome under its key, failed
            # ones too: retrying a rejected key replays the rejection; the daemon uses a new
            # key for a new attempt.
            self._records[key] = _Record(
                fingerprint=fingerprint,
                operation=operation,
                deployment=deployment,
                answer=answer,
                status=RequestStatus.DONE if ok else RequestStatus.FAILED,
                reference=answer.body.get("reference") if ok else None,
            )
            return answer

    def _next_reference(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}-{self._counter:06d}"

    def _set_elastic(
        self, key: str, state: _Deployment, values: Mapping[str, int], now: dt.datetime
    ) -> Answer:
        limits = state.limits
        target = values["target_units"]
        current = sum(t.units for t in state.tranches)
        if abs(target - current) > limits.max_step:
            return error_answer(
                422,
                "step_too_large",
                f"change of {abs(target - current)} units exceeds max_step {limits.max_step}",
            )
        clamp_reason: str | None = None
        next_release: dt.datetime | None = None
        if target > current:
            delta = target - current
            committed = sum(
                int(c["units"])
                for c in state.commitments
                if dt.datetime.fromisoformat(c["end"]) > now
            )
            if committed + target > limits.max_units:
                return error_answer(
                    422,
                    CODE_QUOTA_EXCEEDED,
                    f"{committed} committed + {target} elastic exceeds quota {limits.max_units}",
                )
            if state.available is not None and delta > state.available:
                return error_answer(
                    503,
                    CODE_OUT_OF_CAPACITY,
                    f"{delta} units requested, {state.available} available",
                    retry_after=OUT_OF_CAPACITY_RETRY_AFTER,
                )
            if state.available is not None:
                state.available -= delta
            active_from = now + limits.lead_time
            state.tranches.append(_Tranche(delta, active_from, active_from + limits.min_hold))
            accepted = target
        elif target < current:
            down = plan_scale_down(state.tranches, current, target, now)
            accepted, clamp_reason = down.accepted, down.clamp_reason
            next_release = down.next_release
            for index, take in down.releases:
                state.tranches[index].units -= take
            released = current - accepted
            state.tranches = [t for t in state.tranches if t.units > 0]
            if state.available is not None:
                state.available += released
        else:
            accepted = target
        reference = self._next_reference("el")
        # The target is in place once the last remaining tranche has activated.
        effective_at = max([now, *(t.active_from for t in state.tranches)])
        return Answer(
            200,
            {
                "reference": reference,
                "idempotency_key": key,
                "status": RequestStatus.DONE.value,
                "requested_units": target,
                "accepted_units": accepted,
                "effective_at": _iso(effective_at),
                "clamp_reason": clamp_reason,
                "next_release_at": None if next_release is None else _iso(next_release),
            },
        )

    def _buy_commitment(
        self, key: str, state: _Deployment, values: Mapping[str, int], now: dt.datetime
    ) -> Answer:
        limits = state.limits
        units, term = values["units"], values["term_days"]
        if not limits.supported_terms:
            return error_answer(501, CODE_NOT_SUPPORTED, "commitments are not sold here")
        if term not in limits.supported_terms:
            return error_answer(
                422,
                "unsupported_term",
                f"term {term} days not offered (terms: {list(limits.supported_terms)})",
            )
        if units < 1:
            return error_answer(422, "invalid_request", "units must be >= 1")
        committed = sum(
            int(c["units"]) for c in state.commitments if dt.datetime.fromisoformat(c["end"]) > now
        )
        elastic = sum(t.units for t in state.tranches)
        if committed + elastic + units > limits.max_units:
            return error_answer(
                422,
                CODE_QUOTA_EXCEEDED,
                f"{committed + elastic} held + {units} exceeds quota {limits.max_units}",
            )
        reference = self._next_reference("cm")
        commitment = {
            "commitment_id": reference,
            "units": units,
            "term_days": term,
            "start": _iso(now),
            "end": _iso(now + dt.timedelta(days=term)),
        }
        state.commitments.append(commitment)
        return Answer(
            201,
            {
                "reference": reference,
                "idempotency_key": key,
                "status": RequestStatus.DONE.value,
                "commitment": commitment,
            },
        )


def _unknown_deployment(deployment: str) -> Answer:
    return error_answer(404, "unknown_deployment", f"unknown deployment {deployment!r}")


class ReferenceServer:
    """:class:`ReferenceState` served over HTTP by a ``ThreadingHTTPServer`` in a thread.

    ``port=0`` lets the OS pick a free port; read :attr:`url` after :meth:`start`.
    """

    def __init__(self, state: ReferenceState, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = state
        self._faults: collections.deque[list[Any]] = collections.deque()
        self._faults_lock = threading.Lock()
        #: ``(method, path, idempotency key or None)`` of every request received, in order.
        self.requests: list[tuple[str, str, str | None]] = []
        self._stopping = threading.Event()
        self._httpd = _Server((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def inject(self, fault: Fault) -> None:
        """Queue ``fault`` for the next matching request(s)."""
        with self._faults_lock:
            self._faults.append([fault, fault.times])

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._faults_lock:
            self._faults.clear()

    def posts(self, path_contains: str = "") -> list[tuple[str, str, str | None]]:
        """The POST requests received so far whose path contains ``path_contains``."""
        with self._faults_lock:
            return [r for r in self.requests if r[0] == "POST" and path_contains in r[1]]

    def _take_fault(self, path: str) -> Fault | None:
        with self._faults_lock:
            for entry in self._faults:
                fault, left = entry
                if fault.path_contains in path:
                    if left <= 1:
                        self._faults.remove(entry)
                    else:
                        entry[1] = left - 1
                    return fault  # type: ignore[no-any-return]
        return None

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="capsched-reference-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def close(self) -> None:
        # Wake handlers sleeping in an injected delay so shutdown does not wait for them.
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Server(ThreadingHTTPServer):
    # Handler threads must not keep the process (or a test run) alive.
    daemon_threads = True


def _handler_for(server: ReferenceServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "capsched-reference/1"

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            try:
                answer = self._answer(method)
                payload = answer.raw if answer.raw is not None else json.dumps(
                    answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (e.g. its timeout expired): nothing to tell it

        def _answer(self, method: str) -> Answer:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                return error_answer(413, "invalid_request", "request body too large")
            body = self.rfile.read(length) if length else b""
            headers = dict(self.headers.items())
            with server._faults_lock:
                server.requests.append(
                    (method, self.path, self.headers.get(IDEMPOTENCY_HEADER)))
            fault = server._take_fault(self.path)
            if fault is not None and fault.pretend_done:
                return server.state.handle(method, self.path, headers, body, keep_change=False)
            if fault is not None and fault.apply_first:
                answer = server.state.handle(method, self.path, headers, body)
                if fault.on_fire is not None:
                    fault.on_fire()
                server._stopping.wait(fault.delay_seconds)
                if fault.raw_body is not None:
                    return Answer(fault.status, {}, raw=fault.raw_body)
                return answer
            if fault is not None:
                if fault.on_fire is not None:
                    fault.on_fire()
                if fault.delay_seconds > 0:
                    server._stopping.wait(fault.delay_seconds)
                if fault.raw_body is not None:
                    return Answer(fault.status, {}, raw=fault.raw_body)
                if fault.status:
                    return error_answer(
                        fault.status, fault.code, fault.message, retry_after=fault.retry_after
                    )
            return server.state.handle(method, self.path, headers, body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("provider.reference.request", line=format % args)

    return Handler


def main(argv: Sequence[str] | None = None) -> None:
    """Run the reference server (for trying the protocol by hand)."""
    parser = argparse.ArgumentParser(
        prog="python examples/http_provider/reference_server.py",
        description="In-memory reference server for the capsched HTTP provider protocol.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--token-env",
        default="CAPSCHED_REFERENCE_TOKEN",
        help="environment variable holding the bearer token (default: %(default)s)",
    )
    parser.add_argument("--deployment", action="append", default=[], required=True)
    parser.add_argument("--max-units", type=int, default=20)
    parser.add_argument("--max-step", type=int, default=10)
    parser.add_argument("--terms", default="7,30", help="commitment terms, '' for none")
    parser.add_argument("--lead-minutes", type=int, default=5)
    parser.add_argument("--min-hold-minutes", type=int, default=60)
    parser.add_argument("--available-units", type=int, default=None)
    args = parser.parse_args(argv)
    token = os.environ.get(args.token_env, "")
    if not token:
        parser.error(f"set the bearer token in ${args.token_env}")
    state = ReferenceState(token=token)
    limits = ProviderLimits(
        max_units=args.max_units,
        max_step=args.max_step,
        supported_terms=tuple(int(t) for t in args.terms.split(",") if t.strip()),
        lead_time_minutes=args.lead_minutes,
        min_hold_minutes=args.min_hold_minutes,
    )
    for name in args.deployment:
        state.add_deployment(name, limits, available_units=args.available_units)
    server = ReferenceServer(state, host=args.host, port=args.port)
    print(f"capsched reference provider on {server.url}{PROTOCOL_PREFIX}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    main()


__all__ = [
    "Answer",
    "Fault",
    "ManualClock",
    "ReferenceServer",
    "ReferenceState",
    "main",
    "utc_now",
]
