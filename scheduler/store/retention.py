"""Retention of everything the store keeps by time: one routine for the daemon's hourly
pass and for ``capsched db prune``."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from scheduler.store import ledger, usage


def prune(conn: sa.Connection, now: dt.datetime, retention_days: int) -> list[str]:
    """Drop usage older than ``retention_days`` and the capacity ledger (with its daily
    roll-ups) before the previous UTC month; return the partitions dropped."""
    dropped = usage.drop_partitions_before(conn, now - dt.timedelta(days=retention_days))
    return dropped + ledger.prune(conn, now)
