"""Test fixtures: a real PostgreSQL, a template database migrated once per session, and a
fresh database per test made from it (``CREATE DATABASE ... TEMPLATE``, a file copy).

The server: ``CAPSCHED_TEST_DATABASE_URL`` if set (its user needs CREATEDB), else
127.0.0.1:5432 as ``postgres`` if it answers, else an embedded pgserver in a temporary
directory.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import structlog

from scheduler import database as db

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _local_server_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
        with psycopg.connect(LOCAL_URL, connect_timeout=3):
            return True
    except (OSError, psycopg.Error):
        return False


def _with_database(url: str, name: str) -> str:
    # The embedded server's URL carries its socket directory in the query
    # (postgresql://postgres:@/postgres?host=/tmp/...): only the path names the database.
    location, sep, query = db.libpq_url(url).partition("?")
    head = location.rsplit("/", 1)[0]
    return f"{head}/{name}{sep}{query}"


@pytest.fixture(scope="session")
def pg_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A URL to a maintenance database on the test server, for CREATE/DROP DATABASE."""
    explicit = os.environ.get("CAPSCHED_TEST_DATABASE_URL")
    if explicit:
        yield db.libpq_url(explicit)
        return
    if _local_server_answers():
        yield LOCAL_URL
        return
    import pgserver

    server: Any = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()


def _admin(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def create_database(admin_url: str, template: str | None = None) -> str:
    name = f"capsched_test_{uuid.uuid4().hex[:12]}"
    suffix = f" TEMPLATE {template}" if template else ""
    _admin(admin_url, f"CREATE DATABASE {name}{suffix}")
    return name


def drop_database(admin_url: str, name: str) -> None:
    _admin(admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    name = create_database(pg_admin_url)
    try:
        db.upgrade(_with_database(pg_admin_url, name))
        yield name
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A database with no schema at all (for migration tests)."""
    name = create_database(pg_admin_url)
    try:
        yield _with_database(pg_admin_url, name)
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def db_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    """A fresh database at the head revision, private to this test."""
    name = create_database(pg_admin_url, template=template_database)
    try:
        yield _with_database(pg_admin_url, name)
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    eng = db.make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture
def traces_dir(repo_root: Path) -> Path:
    return repo_root / "examples" / "traces"


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    """The CLI configures structlog on a stream pytest closes after the test."""
    yield
    structlog.reset_defaults()
