from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from scheduler import database as db
from scheduler.store.metadata import all_tables


def _partition(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    return not (type_ == "table" and name is not None and name.startswith("usage_hour_p"))


def test_upgrade_to_head_matches_the_models(empty_db_url: str) -> None:
    db.upgrade(empty_db_url)
    engine = db.make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": _partition}
            )
            assert compare_metadata(context, all_tables()) == []
        db.require_current_schema(engine)
    finally:
        engine.dispose()


def test_every_revision_downgrades_and_upgrades_again(empty_db_url: str) -> None:
    script = ScriptDirectory.from_config(db.alembic_config(empty_db_url))
    revisions = [r.revision for r in script.walk_revisions()]  # head first
    db.upgrade(empty_db_url)
    for revision in revisions:
        down_to = script.get_revision(revision).down_revision or "base"
        db.downgrade(empty_db_url, str(down_to))
    engine = db.make_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
        assert tables == ["alembic_version"] or tables == []
    finally:
        engine.dispose()
    db.upgrade(empty_db_url)


def test_outdated_schema_is_refused_with_the_upgrade_command(empty_db_url: str) -> None:
    engine = db.make_engine(empty_db_url)
    try:
        with pytest.raises(db.SchemaError, match="Run `capsched db upgrade`"):
            db.require_current_schema(engine)
        script = ScriptDirectory.from_config(db.alembic_config(empty_db_url))
        base = list(script.walk_revisions())[-1].revision
        db.upgrade(empty_db_url, base)
        if base != db.head_revision():
            with pytest.raises(db.SchemaError, match=f"revision {base}"):
                db.require_current_schema(engine)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u@h:5432/d", "postgresql+psycopg://u@h:5432/d"),
        ("postgres://u@h/d", "postgresql+psycopg://u@h/d"),
        ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
    ],
)
def test_urls_users_write_are_accepted(given: str, expected: str) -> None:
    assert db.sqlalchemy_url(given) == expected
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        db.sqlalchemy_url("mysql://u@h/d")


def test_a_schema_from_a_newer_capsched_is_named_and_left_alone(
    empty_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from scheduler.cli.main import EXIT_SCHEMA, main

    db.upgrade(empty_db_url)
    engine = db.make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        with pytest.raises(db.SchemaError, match="9999, which this capsched does not know"):
            db.require_current_schema(engine)
    finally:
        engine.dispose()
    capsys.readouterr()
    assert main(["--database-url", empty_db_url, "db", "status"]) == EXIT_SCHEMA
    assert "unknown to this capsched" in capsys.readouterr().out
    # Upgrading refuses with the same sentence instead of alembic's traceback, and writes
    # nothing: the revision is still the unknown one.
    assert main(["--database-url", empty_db_url, "db", "upgrade"]) == EXIT_SCHEMA
    assert "does not know" in capsys.readouterr().err
    engine = db.make_engine(empty_db_url)
    try:
        assert db.current_revision(engine) == "9999"
    finally:
        engine.dispose()
