"""Alembic environment: migrations run against the URL the capsched CLI passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from scheduler.store.metadata import all_tables

config = context.config
target_metadata = all_tables()


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # Monthly usage partitions are created at ingest time, not by migrations.
    return not (
        type_ == "table"
        and reflected
        and compare_to is None
        and name is not None
        and name.startswith("usage_hour_p")
    )


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url, "capsched passes sqlalchemy.url"
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=include_object,
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("capsched runs migrations online only: use `capsched db upgrade`")
run_migrations_online()
