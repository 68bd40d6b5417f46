"""The SQLAlchemy metadata every table of the schema is declared on.

Table declarations live beside the queries that use them (one module per concept);
``all_tables()`` imports them all so Alembic can compare the migrations with the models.
"""

from __future__ import annotations

import importlib

from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

#: Store modules that declare tables; extended as the schema grows.
TABLE_MODULES = (
    "scheduler.store.deployments",
    "scheduler.store.usage",
    "scheduler.store.forecasts",
    "scheduler.store.plans",
    "scheduler.store.journal",
    "scheduler.store.simulated",
    "scheduler.store.decisions",
    "scheduler.store.ledger",
    "scheduler.store.sources",
    "scheduler.store.costs",
)


def all_tables() -> MetaData:
    for module in TABLE_MODULES:
        importlib.import_module(module)
    return metadata
