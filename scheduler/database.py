"""Connecting to PostgreSQL: a configured URL, or an embedded server run by capsched itself.

Also the schema gate: every command that needs the schema calls :func:`require_current_schema`,
which refuses an outdated database and names the command that upgrades it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from scheduler.config import DatabaseSettings

UPGRADE_COMMAND = "capsched db upgrade"


class SchemaError(RuntimeError):
    """The database schema is not the one this version of capsched needs."""


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or started."""


def sqlalchemy_url(url: str) -> str:
    """Accept the URL a user writes (``postgresql://``, ``postgres://``) as well as
    SQLAlchemy's ``postgresql+psycopg://``; always drive it with psycopg 3."""
    for prefix in (
        "postgresql+psycopg2://",
        "postgresql+psycopg://",
        "postgresql://",
        "postgres://",
    ):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError(f"not a PostgreSQL URL: {url!r} (expected postgresql://user@host:port/db)")


def libpq_url(url: str) -> str:
    """The same URL in the form psql and psycopg.connect() take."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://") :]


def default_data_dir(env: dict[str, str] | os._Environ[str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "capsched" / "pgdata"


@dataclass(frozen=True)
class Database:
    """A reachable database: its URL, and the embedded server when capsched started one."""

    url: str
    embedded_dir: Path | None = None


def make_engine(
    url: str, *, pool_size: int = 5, connect_timeout: int = 10, application_name: str = "capsched"
) -> sa.Engine:
    return sa.create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        pool_pre_ping=True,  # survive a database restart between ticks
        connect_args={"connect_timeout": connect_timeout, "application_name": application_name},
    )


@contextmanager
def open_database(settings: DatabaseSettings) -> Iterator[Database]:
    """Yield the configured database, or start (and afterwards stop) the embedded one."""
    if settings.url:
        yield Database(url=settings.url)
        return
    data_dir = Path(settings.data_dir) if settings.data_dir else default_data_dir()
    with embedded_postgres(data_dir) as url:
        yield Database(url=url, embedded_dir=data_dir)


@contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[str]:
    """Run PostgreSQL from the ``pgserver`` wheel in ``data_dir``; the data survives restarts."""
    try:
        import pgserver
    except ImportError as exc:  # pragma: no cover - pgserver is a hard dependency
        raise DatabaseUnavailable(
            "no database.url configured and pgserver is not installed"
        ) from exc
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # cleanup_mode="stop" stops the server when the last capsched process using it ends
        # but keeps the data directory: the embedded database is the user's data.
        server: Any = pgserver.get_server(data_dir, cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as exc:
        raise DatabaseUnavailable(
            f"could not start the embedded PostgreSQL in {data_dir}: {exc}"
        ) from exc
    try:
        server.psql("SELECT 1")
        if "capsched" not in server.psql("SELECT datname FROM pg_database"):
            server.psql("CREATE DATABASE capsched")
        uri: str = server.get_uri("capsched")
        yield uri
    finally:
        server.cleanup()


def migrations_dir() -> Path:
    """The Alembic script directory: ``$CAPSCHED_MIGRATIONS_DIR``, else the source tree's
    ``migrations/`` (a clone or an editable install), else the copy a wheel installs under
    ``<prefix>/share/capsched/migrations`` (pyproject's data-files)."""
    override = os.environ.get("CAPSCHED_MIGRATIONS_DIR")
    if override:
        return Path(override)
    source = Path(__file__).resolve().parent.parent / "migrations"
    if (source / "env.py").is_file():
        return source
    return Path(sys.prefix) / "share" / "capsched" / "migrations"


def alembic_config(url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation would choke on a '%' in a password.
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(
        alembic_config("postgresql://unused/unused")
    ).get_current_head()
    assert head is not None, "the migrations directory has no revisions"
    return head


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def known_revision(revision: str) -> bool:
    """Whether ``revision`` is one of this capsched's migrations."""
    script = ScriptDirectory.from_config(alembic_config("postgresql://unused/unused"))
    return any(r.revision == revision for r in script.walk_revisions())


def _newer_schema(current: str) -> SchemaError:
    return SchemaError(
        f"the database is at schema revision {current}, which this capsched does not know: "
        f"it was migrated by another (newer) capsched. Run that version, or restore a backup; "
        f"this one will not touch it."
    )


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to ``revision``. Raises :class:`SchemaError` when the database is
    at a revision this capsched does not know (a newer capsched migrated it)."""
    engine = make_engine(url)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    if current is not None and not known_revision(current):
        raise _newer_schema(current)
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def require_current_schema(engine: sa.Engine) -> None:
    try:
        current = current_revision(engine)
    except sa.exc.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc.orig}") from exc
    head = head_revision()
    if current is not None and current != head and not known_revision(current):
        raise _newer_schema(current)
    if current != head:
        state = "has no capsched schema" if current is None else f"is at schema revision {current}"
        raise SchemaError(
            f"the database {state}; this capsched needs revision {head}. "
            f"Run `{UPGRADE_COMMAND}` to upgrade it."
        )
