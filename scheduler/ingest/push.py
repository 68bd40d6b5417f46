"""The usage push endpoint: gateways POST per-minute usage instead of dropping files.

``POST /v1/usage?deployment=NAME&source=S`` with a body in the usage file format (JSON
Lines, ``Content-Type: application/x-ndjson``, or CSV, ``text/csv``), optionally gzipped
(``Content-Encoding: gzip``), runs the very path of ``capsched ingest``: the body is
validated all-or-nothing by :func:`scheduler.ingest.files.parse_usage_bytes`, then written by
:func:`scheduler.ingest.write.ingest_parsed` (COPY + upsert in one transaction). Re-pushing the
same rows is harmless: minutes are upserted, not added.

``deployment`` may be omitted when the body has a ``deployment`` column; ``source`` defaults
to ``[ingest] default_source``.

Answers (JSON bodies, ``{"error": ...}`` on failure):

* 200 ``{"rows", "batch_id", "first_minute", "last_minute", "deployments"}``
* 400 bad query string; 401 missing or wrong bearer token; 403 the token's scope does
  not cover the deployment or source; 404/405 other paths or methods
* 411 no ``Content-Length`` (chunked bodies are not accepted: the size limit is enforced
  before reading)
* 413 body above ``max_body_bytes`` on the wire or ``max_decoded_bytes`` once gunzipped
* 415 unsupported ``Content-Type`` or ``Content-Encoding``
* 422 invalid usage (the message names line and column) or unknown deployment; nothing is
  written
* 503 the database is unavailable or too many pushes are in flight (``Retry-After``)

``GET /healthz`` answers 200 without authentication (a liveness probe for the listener; it
does not touch the database).

Authentication: a bearer token is always required, even on loopback (any local user could
otherwise write usage that drives capacity, i.e. spending). :class:`PushServer` refuses to
be created without one. Tokens are compared in constant time. The ``[daemon] ingest_token``
may write every deployment; each ``[[push_token]]`` only the deployments (and sources) its
scope lists: a push naming another one, in the query or in a ``deployment`` column, gets 403
and writes nothing (#10 item 16). Scopes live in the config, secrets in credentials.
"""

from __future__ import annotations

import hmac
import json
import re
import socket
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import sqlalchemy as sa
import structlog

from scheduler.config import Config, IngestSettings
from scheduler.credentials import resolve_secret
from scheduler.ingest.files import UsageFileError, parse_usage_bytes
from scheduler.ingest.write import IngestError, ingest_parsed
from scheduler.observe.metrics import is_loopback, parse_address

DEFAULT_ADDRESS = "127.0.0.1:8787"
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Usage CSV compresses about 10x; the decoded limit stops a small gzip bomb from
#: exhausting memory while leaving room for a month of minutes of many deployments.
MAX_DECODED_BYTES = 256 * 1024 * 1024
#: Concurrent pushes being read and ingested; each holds its body in memory.
MAX_CONCURRENT = 4
#: How long a push waits for a free slot before a 503.
SLOT_WAIT_SECONDS = 30.0
#: A client that sends nothing for this long is disconnected (frees its thread).
SOCKET_TIMEOUT_SECONDS = 60.0
#: Bodies of refused requests up to this size are read and discarded before answering, so
#: the client reads the answer instead of a connection reset.
DRAIN_LIMIT = 1024 * 1024
RETRY_AFTER_SECONDS = 30
MAX_SOURCE_LENGTH = 200

_JSONL_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/json-lines",
        "application/json",
    }
)
_CSV_TYPES = frozenset({"text/csv", "application/csv"})

log = structlog.get_logger()


class PushConfigError(ValueError):
    """The push endpoint cannot start as configured (no token, bad address)."""


class _Reject(Exception):
    """Answer the request with ``status`` and ``message`` (internal control flow)."""

    def __init__(self, status: HTTPStatus, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


@dataclass(frozen=True)
class PushResult:
    rows: int
    batch_id: int
    first_minute: str
    last_minute: str
    deployments: tuple[str, ...]


def _database_unavailable(exc: BaseException) -> bool:
    """Errors a client should retry later: no connection, a dropped one, a full pool."""
    if isinstance(exc, sa.exc.TimeoutError | sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    # The COPY runs on the raw psycopg connection, whose errors SQLAlchemy does not wrap;
    # psycopg's OperationalError also covers deadlocks and serialization failures.
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress gzip (also concatenated members) without ever exceeding ``limit`` bytes."""
    out = bytearray()
    data = body
    while data:
        decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += decoder.decompress(data, limit + 1 - len(out))
        except zlib.error as exc:
            raise _Reject(
                HTTPStatus.UNPROCESSABLE_ENTITY, f"body is not valid gzip: {exc}"
            ) from None
        if len(out) > limit:
            raise _Reject(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"decompressed body exceeds {limit} bytes; split the push",
            )
        if not decoder.eof:
            raise _Reject(HTTPStatus.UNPROCESSABLE_ENTITY, "body is not valid gzip: truncated")
        data = decoder.unused_data
    return bytes(out)


@dataclass(frozen=True)
class PushToken:
    """A bearer token and what it may write; ``None`` = no restriction."""

    name: str
    secret: bytes
    deployments: frozenset[str] | None = None
    sources: frozenset[str] | None = None

    def refusal(self, deployments: Sequence[str], source: str) -> str | None:
        """Why this token may not write ``deployments`` as ``source`` (None: it may)."""
        if self.sources is not None and source not in self.sources:
            return f"token {self.name!r} may not report as source {source!r}"
        if self.deployments is not None:
            outside = sorted(set(deployments) - self.deployments)
            if outside:
                return f"token {self.name!r} may not write deployment {outside[0]!r}"
        return None


class PushScopeError(PermissionError):
    """The token's scope does not cover what the push writes (HTTP 403)."""


def scoped_tokens(config: Config, env: Mapping[str, str] | None = None) -> list[PushToken]:
    """The ``[[push_token]]`` tokens with their secrets: the credential
    ``push-token-<name>``, else ``token_file``, else ``CAPSCHED_PUSH_TOKEN_<NAME>``.
    Raises :class:`PushConfigError` naming where to put a missing secret."""
    tokens = []
    for scope in config.push_tokens:
        variable = "CAPSCHED_PUSH_TOKEN_" + re.sub(r"[^A-Z0-9]", "_", scope.name.upper())
        secret = resolve_secret("", scope.token_file, f"push-token-{scope.name}", variable, env)
        if not secret:
            raise PushConfigError(
                f"push_token {scope.name!r}: no secret (systemd credential "
                f"'push-token-{scope.name}', token_file, or {variable})")
        tokens.append(PushToken(
            scope.name, secret.encode("utf-8"),
            None if "*" in scope.deployments else frozenset(scope.deployments),
            frozenset(scope.sources) if scope.sources else None,
        ))
    return tokens


class PushServer:
    """The push endpoint on its own daemon thread. ``start()`` binds, ``stop()`` frees it.

    ``address`` is ``host:port``; port 0 binds a free port (see :attr:`port`). A non-loopback
    host is allowed (gateways on other machines) but logged: put TLS in front of it (a
    reverse proxy), since the token and usage otherwise travel in clear.
    """

    def __init__(
        self,
        engine: sa.Engine,
        token: str,
        *,
        address: str = DEFAULT_ADDRESS,
        default_source: str = "default",
        max_body_bytes: int = MAX_BODY_BYTES,
        max_decoded_bytes: int = MAX_DECODED_BYTES,
        max_concurrent: int = MAX_CONCURRENT,
        limits: IngestSettings | None = None,
        scoped: Sequence[PushToken] = (),
    ) -> None:
        if (not token or not token.strip()) and not scoped:
            raise PushConfigError(
                "[daemon] ingest_address is set but no ingest token is configured: set the "
                "systemd credential 'ingest-token', [daemon] ingest_token_file, or "
                "CAPSCHED_DAEMON_INGEST_TOKEN"
            )
        try:
            self.host, self._requested_port = parse_address(
                address, setting="[daemon] ingest_address"
            )
        except ValueError as exc:
            raise PushConfigError(str(exc)) from None
        self.engine = engine
        #: The [ingest] window and plausibility ceiling, the same as file ingest applies.
        self.limits = limits or IngestSettings()
        self.default_source = default_source
        self.max_body_bytes = max_body_bytes
        self.max_decoded_bytes = max_decoded_bytes
        self._tokens = list(scoped)
        if token and token.strip():
            self._tokens.insert(0, PushToken("ingest_token", token.strip().encode("utf-8")))
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("push server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("push server already started")
        server_class = _IPv6Server if ":" in self.host else _Server
        try:
            httpd = server_class((self.host, self._requested_port), _Handler)
        except OSError as exc:
            raise PushConfigError(
                f"[daemon] ingest_address: cannot listen on {self.host}:{self._requested_port}: "
                f"{exc.strerror or exc}"
            ) from None
        httpd.push = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, name="capsched-push", daemon=True
        )
        self._thread.start()
        if not is_loopback(self.host):
            log.warning(
                "push_endpoint_not_loopback",
                address=f"{self.host}:{self.port}",
                hint="serve it behind a TLS reverse proxy: the token travels in clear",
            )
        log.info("push_endpoint_started", address=f"{self.host}:{self.port}")

    def stop(self) -> None:
        """Stop accepting; requests in flight finish on their (daemon) threads."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None
        log.info("push_endpoint_stopped")

    def __enter__(self) -> PushServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def authorised(self, header: str | None) -> PushToken | None:
        """The token the ``Authorization`` header carries, None when it matches none."""
        scheme, _, credentials = (header or "").partition(" ")
        presented = credentials.strip().encode("utf-8")
        found = None
        # compare_digest on bytes: constant time in the token's content (not its length);
        # every token is compared, so the time does not tell which one matched.
        for token in self._tokens:
            if hmac.compare_digest(presented, token.secret) and found is None:
                found = token
        return found if scheme.lower() == "bearer" else None

    def ingest(self, body: bytes, *, name: str, deployment: str | None, source: str,
               token: PushToken | None = None) -> PushResult:
        parsed = parse_usage_bytes(body, name)
        if token is not None:
            named = ([deployment] if deployment is not None else []) + (
                sorted(set(parsed.deployments.tolist())) if parsed.deployments is not None
                else [])
            refusal = token.refusal(named, source)
            if refusal:
                raise PushScopeError(refusal)
        result = ingest_parsed(self.engine, parsed, deployment=deployment, source=source,
                               limits=self.limits)
        return PushResult(
            result.rows,
            result.batch_id,
            result.first_minute,
            result.last_minute,
            result.deployments,
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # A restarted daemon must rebind at once, not wait out TIME_WAIT.
    allow_reuse_address = True
    push: PushServer


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 so clients may send "Expect: 100-continue" and learn of a 401/413 before
    # uploading the body; every answer therefore carries a Content-Length.
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_SECONDS
    server: _Server
    server_version = "capsched-push"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: one structlog line per request is written by :meth:`_log_request`."""

    # -- dispatch ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _begin(self) -> None:
        # One handler object serves every request of a keep-alive connection: reset state.
        if not getattr(self, "_begun", False):
            self._begun = True
            self._started = time.monotonic()
            self._fields: dict[str, Any] = {}
            self._body_read = False

    def handle_expect_100(self) -> bool:
        """Refuse before the body is sent when the token or the announced size is wrong."""
        self._begin()
        try:
            if self.command == "POST" and urlsplit(self.path).path == "/v1/usage":
                self._check_auth()
                self._content_length()
        except _Reject as reject:
            # The client may send the body anyway; closing is simpler than draining it.
            self.close_connection = True
            self._respond(reject.status, {"error": reject.message}, reject.headers, reject.message)
            return False
        return super().handle_expect_100()

    def _dispatch(self, method: str) -> None:
        self._begin()
        path = urlsplit(self.path).path
        try:
            if path == "/healthz":
                if method != "GET":
                    raise _Reject(HTTPStatus.METHOD_NOT_ALLOWED, "use GET", Allow="GET")
                self._respond(HTTPStatus.OK, {"status": "ok"})
                return
            if path == "/v1/usage":
                if method != "POST":
                    raise _Reject(HTTPStatus.METHOD_NOT_ALLOWED, "use POST", Allow="POST")
                self._push()
                return
            raise _Reject(HTTPStatus.NOT_FOUND, f"no such path: {path}")
        except _Reject as reject:
            self._discard_body()
            self._respond(reject.status, {"error": reject.message}, reject.headers, reject.message)
        except Exception as exc:
            # Never a traceback to the client; the log has it.
            self.close_connection = True
            self._respond(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                {"error": "internal error"},
                error=f"{type(exc).__name__}: {exc}",
                exc=exc,
            )

    # -- POST /v1/usage ---------------------------------------------------------------------

    def _push(self) -> None:
        push = self.server.push
        token = self._check_auth()
        deployment, source = self._query()
        self._fields.update(deployment=deployment, source=source, token=token.name)
        # Refuse what the query already shows is out of scope before reading the body.
        refusal = token.refusal([deployment] if deployment else [], source)
        if refusal:
            raise _Reject(HTTPStatus.FORBIDDEN, refusal)
        length = self._content_length()
        name = self._file_name()
        encoding = self.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip", "x-gzip"):
            raise _Reject(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                f"unsupported Content-Encoding {encoding!r} (use gzip or none)",
            )
        if not push._slots.acquire(timeout=SLOT_WAIT_SECONDS):
            raise _Reject(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "too many pushes in flight; retry later",
                **{"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        try:
            body = self._read_body(length)
            self._fields["bytes"] = len(body)
            # Gunzip here, bounded, also without the header: parse_usage_bytes would
            # otherwise decompress a gzip-magic body with no size limit.
            if encoding != "identity" or body[:2] == b"\x1f\x8b":
                body = _gunzip(body, push.max_decoded_bytes)
            elif len(body) > push.max_decoded_bytes:
                raise _Reject(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
            try:
                result = push.ingest(body, name=name, deployment=deployment, source=source,
                                     token=token)
            except PushScopeError as exc:
                raise _Reject(HTTPStatus.FORBIDDEN, str(exc)) from None
            except (UsageFileError, IngestError) as exc:
                raise _Reject(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
            except Exception as exc:
                if not _database_unavailable(exc):
                    raise
                self._fields["db_error"] = str(exc).splitlines()[0] if str(exc) else ""
                raise _Reject(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "database unavailable; nothing was written, retry later",
                    **{"Retry-After": str(RETRY_AFTER_SECONDS)},
                ) from None
        finally:
            push._slots.release()
        answer = asdict(result)
        answer["deployments"] = list(result.deployments)
        self._fields.update(rows=result.rows, batch_id=result.batch_id)
        self._respond(HTTPStatus.OK, answer)

    def _check_auth(self) -> PushToken:
        token = self.server.push.authorised(self.headers.get("Authorization"))
        if token is None:
            raise _Reject(
                HTTPStatus.UNAUTHORIZED,
                "missing or wrong bearer token",
                **{"WWW-Authenticate": 'Bearer realm="capsched"'},
            )
        return token

    def _query(self) -> tuple[str | None, str]:
        try:
            query = parse_qs(urlsplit(self.path).query, strict_parsing=False, errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise _Reject(HTTPStatus.BAD_REQUEST, "query string is not valid UTF-8") from None
        unknown = sorted(set(query) - {"deployment", "source"})
        if unknown:
            raise _Reject(
                HTTPStatus.BAD_REQUEST,
                f"unknown query parameter {unknown[0]!r} (known: deployment, source)",
            )
        for key, values in query.items():
            if len(values) > 1:
                raise _Reject(HTTPStatus.BAD_REQUEST, f"query parameter {key!r} given twice")
        deployment = query.get("deployment", [""])[0].strip() or None
        source = query.get("source", [""])[0].strip() or self.server.push.default_source
        if len(source) > MAX_SOURCE_LENGTH or not source.isprintable():
            raise _Reject(HTTPStatus.BAD_REQUEST, "source must be printable, at most 200 chars")
        return deployment, source

    def _content_length(self) -> int:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise _Reject(
                HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted; send Content-Length"
            )
        text = self.headers.get("Content-Length")
        if text is None:
            raise _Reject(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if not text.strip().isdigit():
            raise _Reject(HTTPStatus.BAD_REQUEST, f"bad Content-Length {text!r}")
        length = int(text)
        limit = self.server.push.max_body_bytes
        if length > limit:
            raise _Reject(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"body of {length} bytes exceeds the limit of {limit} bytes; split the push",
            )
        return length

    def _file_name(self) -> str:
        """The name errors are reported under; its suffix tells the parser the format."""
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type in _JSONL_TYPES:
            return "push.jsonl"
        if content_type in _CSV_TYPES:
            return "push.csv"
        if content_type in ("", "application/octet-stream", "text/plain"):
            return "push"  # sniffed: a body starting with '{' is JSON Lines
        raise _Reject(
            HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
            f"unsupported Content-Type {content_type!r} (use application/x-ndjson or text/csv)",
        )

    def _read_body(self, length: int) -> bytes:
        chunks: list[bytes] = []
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(remaining, 1024 * 1024))
            if not chunk:
                self.close_connection = True
                raise _Reject(HTTPStatus.BAD_REQUEST, "body shorter than Content-Length")
            chunks.append(chunk)
            remaining -= len(chunk)
        self._body_read = True
        return b"".join(chunks)

    def _discard_body(self) -> None:
        """Read a refused request's small body so the client gets the answer, not a reset."""
        if self._body_read or self.command in ("GET", "HEAD"):
            return
        text = self.headers.get("Content-Length", "")
        length = int(text) if text.strip().isdigit() else -1
        if (
            length < 0
            or length > DRAIN_LIMIT
            or "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        ):
            self.close_connection = True
            return
        try:
            self.rfile.read(length)
        except OSError:
            self.close_connection = True
            return
        self._body_read = True

    # -- answers ----------------------------------------------------------------------------

    def _respond(
        self,
        status: HTTPStatus,
        body: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        error: str | None = None,
        exc: BaseException | None = None,
    ) -> None:
        payload = json.dumps(body).encode("utf-8") + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        # Logged before the body goes out: a client that has read its whole answer can rely
        # on the request's log line already being written (tests capture it that way).
        self._log_request(status, error, exc)
        self.wfile.write(payload)

    def _log_request(
        self, status: HTTPStatus, error: str | None = None, exc: BaseException | None = None
    ) -> None:
        fields = dict(self._fields)
        fields.update(
            method=self.command,
            path=urlsplit(self.path).path,
            status=int(status),
            client=self.client_address[0],
            duration_ms=round((time.monotonic() - self._started) * 1000, 1),
        )
        if error is not None:
            fields["error"] = error
        if exc is not None:
            log.error("push_request", exc_info=exc, **fields)
        elif status >= 500:
            log.warning("push_request", **fields)
        else:
            log.info("push_request", **fields)
        self._begun = False
