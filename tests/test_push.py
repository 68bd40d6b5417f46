"""The push endpoint over real HTTP (127.0.0.1, a free port) against a real database."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from scheduler import database as db
from scheduler.config import parse_config
from scheduler.ingest.push import PushConfigError, PushServer
from scheduler.store import deployments as deployment_store

TOKEN = "s3cret-push-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NDJSON = {"Content-Type": "application/x-ndjson", **AUTH}


def jsonl(rows: list[tuple[str, int, int, int]]) -> bytes:
    return "".join(
        json.dumps({"minute_utc": m, "input_tokens": i, "output_tokens": o, "requests": r}) + "\n"
        for m, i, o, r in rows
    ).encode()


ROWS = [
    ("2026-03-02T10:00:00Z", 1000, 100, 3),
    ("2026-03-02T10:01:00Z", 2000, 200, 4),
    ("2026-03-02T10:02:00Z", 3000, 300, 5),
]


@pytest.fixture
def synced(engine: sa.Engine) -> sa.Engine:
    config = parse_config(
        {
            "deployment": [
                {
                    "name": name,
                    "provider": "simulated",
                    "unit_tpm": 2500,
                    "pricing": {"elastic_unit_hour": 38.0},
                }
                for name in ("m-small", "other")
            ]
        }
    )
    with engine.begin() as conn:
        deployment_store.sync_deployments(conn, config.deployments)
    return engine


@pytest.fixture
def server(synced: sa.Engine) -> Iterator[PushServer]:
    with PushServer(synced, TOKEN, address="127.0.0.1:0", default_source="gw") as push:
        yield push


def request(
    push: PushServer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, dict[str, Any], http.client.HTTPResponse]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", push.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=dict(headers or {}))
        response = conn.getresponse()
        payload = json.loads(response.read())
        return response.status, payload, response
    finally:
        if own:
            conn.close()


def totals(engine: sa.Engine) -> tuple[int, int, int, int, int]:
    """(minutes, input, output, requests, batches) stored."""
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT count(*), coalesce(sum(input_tokens), 0), "
                "coalesce(sum(output_tokens), 0), coalesce(sum(requests), 0), "
                "(SELECT count(*) FROM ingest_batch) FROM usage"
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3]), int(row[4])


def test_jsonl_push_is_ingested(server: PushServer, synced: sa.Engine) -> None:
    status, answer, _ = request(
        server, "POST", "/v1/usage?deployment=m-small&source=gw1", jsonl(ROWS), NDJSON
    )
    assert status == 200, answer
    assert answer["rows"] == 3
    assert answer["first_minute"] == "2026-03-02T10:00:00+00:00"
    assert answer["last_minute"] == "2026-03-02T10:02:00+00:00"
    assert answer["deployments"] == ["m-small"]
    assert totals(synced) == (3, 6000, 600, 12, 1)
    with synced.connect() as conn:
        source, file = conn.execute(
            sa.text("SELECT source, file FROM ingest_batch WHERE id = :id"),
            {"id": answer["batch_id"]},
        ).one()
    assert (source, file) == ("gw1", "push.jsonl")


def test_gzip_push(server: PushServer, synced: sa.Engine) -> None:
    headers = {**NDJSON, "Content-Encoding": "gzip"}
    status, answer, _ = request(
        server, "POST", "/v1/usage?deployment=m-small", gzip.compress(jsonl(ROWS)), headers
    )
    assert status == 200, answer
    assert totals(synced) == (3, 6000, 600, 12, 1)
    with synced.connect() as conn:
        source = conn.execute(sa.text("SELECT source FROM ingest_batch")).scalar_one()
    assert source == "gw"  # the server's default source


def test_csv_push_with_deployment_column(server: PushServer, synced: sa.Engine) -> None:
    body = (
        b"minute_utc,input_tokens,output_tokens,requests,deployment\n"
        b"2026-03-02T10:00:00Z,10,1,1,m-small\n"
        b"2026-03-02T10:00:00Z,20,2,1,other\n"
    )
    headers = {"Content-Type": "text/csv; charset=utf-8", **AUTH}
    status, answer, _ = request(server, "POST", "/v1/usage", body, headers)
    assert status == 200, answer
    assert answer["deployments"] == ["m-small", "other"]
    assert totals(synced) == (2, 30, 3, 2, 1)


def test_repush_is_idempotent(server: PushServer, synced: sa.Engine) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        path = "/v1/usage?deployment=m-small"
        first = request(server, "POST", path, jsonl(ROWS), NDJSON, conn)
        after_first = totals(synced)
        # Same keep-alive connection: the handler's per-request state must reset.
        second = request(server, "POST", path, jsonl(ROWS), NDJSON, conn)
    finally:
        conn.close()
    assert first[0] == second[0] == 200
    assert first[1]["batch_id"] != second[1]["batch_id"]
    assert after_first[:4] == totals(synced)[:4] == (3, 6000, 600, 12)


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer "],
)
def test_auth_failures(server: PushServer, synced: sa.Engine, authorization: str | None) -> None:
    headers = {"Content-Type": "application/x-ndjson"}
    if authorization is not None:
        headers["Authorization"] = authorization
    status, answer, response = request(
        server, "POST", "/v1/usage?deployment=m-small", jsonl(ROWS), headers
    )
    assert status == 401
    assert "token" in answer["error"]
    assert response.getheader("WWW-Authenticate", "").startswith("Bearer")
    assert totals(synced) == (0, 0, 0, 0, 0)


def test_invalid_row_is_422_with_line_and_column_and_writes_nothing(
    server: PushServer, synced: sa.Engine
) -> None:
    body = jsonl(ROWS[:2]) + b'{"minute_utc": "2026-03-02T10:02:00Z", "input_tokens": 5, '
    body += b'"output_tokens": -1, "requests": 1}\n'
    status, answer, _ = request(server, "POST", "/v1/usage?deployment=m-small", body, NDJSON)
    assert status == 422
    assert answer["error"].startswith("push.jsonl:3:3: output_tokens: ")
    assert totals(synced) == (0, 0, 0, 0, 0)


def test_invalid_csv_names_line_and_column(server: PushServer, synced: sa.Engine) -> None:
    body = b"minute_utc,input_tokens,output_tokens,requests\n2026-03-02T10:00:00Z,1,1,1\n"
    body += b"2026-03-02T10:01:00Z,x,1,1\n"
    headers = {"Content-Type": "text/csv", **AUTH}
    status, answer, _ = request(server, "POST", "/v1/usage?deployment=m-small", body, headers)
    assert status == 422
    assert answer["error"].startswith("push.csv:3:2: input_tokens: ")
    assert totals(synced) == (0, 0, 0, 0, 0)


def test_unknown_deployment_is_422(server: PushServer, synced: sa.Engine) -> None:
    status, answer, _ = request(server, "POST", "/v1/usage?deployment=nope", jsonl(ROWS), NDJSON)
    assert status == 422
    assert "unknown deployment 'nope'" in answer["error"]
    body = b'{"minute_utc": "2026-03-02T10:00:00Z", "input_tokens": 1, "output_tokens": 1, '
    body += b'"requests": 1, "deployment": "ghost"}\n'
    status, answer, _ = request(server, "POST", "/v1/usage", body, NDJSON)
    assert status == 422
    assert answer["error"].startswith("push.jsonl:1:5: deployment: unknown deployment 'ghost'")
    assert totals(synced) == (0, 0, 0, 0, 0)


def test_body_over_the_limit_is_413(synced: sa.Engine) -> None:
    with PushServer(synced, TOKEN, address="127.0.0.1:0", max_body_bytes=1024) as push:
        body = jsonl(ROWS * 40)  # minutes repeat, but the size check comes first
        assert len(body) > 1024
        status, answer, _ = request(push, "POST", "/v1/usage?deployment=m-small", body, NDJSON)
    assert status == 413
    assert "1024" in answer["error"]
    assert totals(synced) == (0, 0, 0, 0, 0)


def test_gzip_bomb_is_413(synced: sa.Engine) -> None:
    with PushServer(synced, TOKEN, address="127.0.0.1:0", max_decoded_bytes=4096) as push:
        body = gzip.compress(b" " * 100_000 + jsonl(ROWS))
        assert len(body) < 4096
        headers = {**NDJSON, "Content-Encoding": "gzip"}
        status, answer, _ = request(push, "POST", "/v1/usage?deployment=m-small", body, headers)
    assert status == 413
    assert "decompressed" in answer["error"]
    assert totals(synced) == (0, 0, 0, 0, 0)


def test_gzip_without_header_is_still_bounded(synced: sa.Engine) -> None:
    with PushServer(synced, TOKEN, address="127.0.0.1:0", max_decoded_bytes=4096) as push:
        body = gzip.compress(b" " * 100_000 + jsonl(ROWS))
        status, _, _ = request(push, "POST", "/v1/usage?deployment=m-small", body, NDJSON)
    assert status == 413


def test_other_refusals(server: PushServer) -> None:
    path = "/v1/usage?deployment=m-small"
    xml = {"Content-Type": "application/xml", **AUTH}
    assert request(server, "POST", path, jsonl(ROWS), xml)[0] == 415
    brotli = {**NDJSON, "Content-Encoding": "br"}
    assert request(server, "POST", path, jsonl(ROWS), brotli)[0] == 415
    assert request(server, "POST", path + "&deployment=other", jsonl(ROWS), NDJSON)[0] == 400
    assert request(server, "POST", "/v1/usage?deploymnet=x", jsonl(ROWS), NDJSON)[0] == 400
    assert request(server, "GET", path, None, AUTH)[0] == 405
    assert request(server, "POST", "/v2/usage", jsonl(ROWS), NDJSON)[0] == 404
    bad_gzip = {**NDJSON, "Content-Encoding": "gzip"}
    status, answer, _ = request(server, "POST", path, b"not gzip at all", bad_gzip)
    assert (status, answer["error"][:24]) == (422, "body is not valid gzip: ")


def test_healthz_needs_no_token(server: PushServer) -> None:
    status, answer, _ = request(server, "GET", "/healthz")
    assert (status, answer) == (200, {"status": "ok"})


def raw_exchange(push: PushServer, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", push.port), timeout=30) as sock:
        sock.sendall(head)
        first = sock.recv(65536)
        if body and first.startswith(b"HTTP/1.1 100"):
            sock.sendall(body)
            rest = b""
            while b"}\n" not in rest:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                rest += chunk
            return first + rest
        return first


def test_expect_100_continue_refuses_before_the_body(server: PushServer) -> None:
    head = (
        b"POST /v1/usage?deployment=m-small HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/x-ndjson\r\nAuthorization: Bearer nope\r\n"
        b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n"
    )
    assert raw_exchange(server, head).startswith(b"HTTP/1.1 401 ")
    body = jsonl(ROWS)
    head = (
        "POST /v1/usage?deployment=m-small HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/x-ndjson\r\nAuthorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n"
    ).encode()
    answer = raw_exchange(server, head, body)
    assert answer.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 ")


def test_missing_content_length_is_411(server: PushServer) -> None:
    head = (
        "POST /v1/usage?deployment=m-small HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: application/x-ndjson\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    assert raw_exchange(server, head).startswith(b"HTTP/1.1 411 ")


def test_database_unavailable_is_503() -> None:
    # Port 1 on loopback refuses connections: the database "is down".
    engine = db.make_engine("postgresql://postgres@127.0.0.1:1/capsched", connect_timeout=2)
    try:
        with PushServer(engine, TOKEN, address="127.0.0.1:0") as push:
            status, answer, response = request(
                push, "POST", "/v1/usage?deployment=m-small", jsonl(ROWS), NDJSON
            )
    finally:
        engine.dispose()
    assert status == 503
    assert "database unavailable" in answer["error"]
    assert response.getheader("Retry-After") == "30"


def test_one_log_line_per_request(server: PushServer) -> None:
    with capture_logs() as logs:
        request(server, "POST", "/v1/usage?deployment=m-small", jsonl(ROWS), NDJSON)
        request(server, "POST", "/v1/usage?deployment=m-small", jsonl(ROWS), {})
        request(server, "GET", "/healthz")
    lines = [entry for entry in logs if entry["event"] == "push_request"]
    assert [(e["status"], e["path"]) for e in lines] == [
        (200, "/v1/usage"),
        (401, "/v1/usage"),
        (200, "/healthz"),
    ]
    assert lines[0]["rows"] == 3
    assert lines[0]["deployment"] == "m-small"
    assert TOKEN not in repr(logs)


def test_refuses_to_start_without_a_token(synced: sa.Engine) -> None:
    with pytest.raises(PushConfigError, match="no ingest token"):
        PushServer(synced, "", address="127.0.0.1:0")
    with pytest.raises(PushConfigError, match="no ingest token"):
        PushServer(synced, "  \n", address="127.0.0.1:0")


def test_ambiguous_or_bad_address_is_refused(synced: sa.Engine) -> None:
    with pytest.raises(PushConfigError, match="no host"):
        PushServer(synced, TOKEN, address=":8787")
    with pytest.raises(PushConfigError, match="port"):
        PushServer(synced, TOKEN, address="127.0.0.1:http")


def test_port_in_use_is_a_clear_error(server: PushServer, synced: sa.Engine) -> None:
    other = PushServer(synced, TOKEN, address=f"127.0.0.1:{server.port}")
    # allow_reuse_address does not allow two listeners on one port.
    with pytest.raises(PushConfigError, match="cannot listen"):
        other.start()
