"""Shared bench plumbing: which PostgreSQL to use and scratch databases on it."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def admin_url(workdir: Path) -> Iterator[str]:
    """CAPSCHED_BENCH_DATABASE_URL, else the local server, else an embedded one."""
    explicit = os.environ.get("CAPSCHED_BENCH_DATABASE_URL")
    if explicit:
        yield explicit
        return
    try:
        with psycopg.connect(LOCAL_URL, connect_timeout=3):
            pass
        yield LOCAL_URL
        return
    except psycopg.Error:
        pass
    import pgserver

    server: Any = pgserver.get_server(workdir / "pgdata", cleanup_mode="stop")
    try:
        yield server.get_uri("postgres")
    finally:
        server.cleanup()


@contextmanager
def scratch_database(admin: str) -> Iterator[str]:
    name = f"capsched_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    # The embedded server's URL keeps its socket directory in the query: keep the query.
    location, sep, query = admin.partition("?")
    head = location.rsplit("/", 1)[0]
    try:
        yield f"{head}/{name}{sep}{query}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]


def psql_binary() -> str:
    found = shutil.which("psql")
    if found:
        return found
    import pgserver

    candidate = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    return str(candidate)
