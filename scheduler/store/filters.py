"""Query fragments shared by the store modules."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg


def one_of(column: sa.ColumnElement[Any], values: Iterable[Any]) -> sa.ColumnElement[bool]:
    """``column = ANY(:array)``: one bound array however many values there are.

    The daemon filters by every deployment each tick; ``IN (...)`` binds one parameter per
    value, and rendering a thousand of them cost more than running the query.
    """
    return column == sa.any_(sa.bindparam(None, list(values), type_=pg.ARRAY(column.type)))
