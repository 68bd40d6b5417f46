"""PostgreSQL advisory locks: one dry-run planner at a time, one active daemon."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
import structlog

log = structlog.get_logger()

#: Lock keys (pg_advisory_lock's bigint space); stable across versions.
DRY_RUN_PLAN = 0x63617073_0001  # "caps" + 1
DAEMON_LEADER = 0x63617073_0002


@contextmanager
def try_lock(engine: sa.Engine, key: int) -> Iterator[bool]:
    """Hold a session-level advisory lock for the block if it is free; yield whether it was.

    Session-level so it lives exactly as long as this connection: if the process dies, the
    server drops the connection and the lock with it.
    """
    with engine.connect() as conn:
        acquired = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
                        .scalar())
        conn.commit()
        try:
            yield acquired
        finally:
            if acquired:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()


class LeaderLock:
    """The daemon's leadership: a session advisory lock on a connection of its own.

    The lock lives exactly as long as that connection. A second daemon polls
    :meth:`try_acquire` as a standby; when the leader dies (or its database connection does)
    the server releases the lock and the standby takes over on its next poll.
    """

    def __init__(self, engine: sa.Engine, key: int = DAEMON_LEADER) -> None:
        self._engine = engine
        self._key = key
        self._conn: sa.Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None

    def try_acquire(self) -> bool:
        if self._conn is not None:
            return self.verify()
        conn = self._engine.connect()
        try:
            acquired = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                         {"k": self._key}).scalar())
            conn.commit()
        except sa.exc.DBAPIError:
            conn.close()
            raise
        if acquired:
            self._conn = conn
        else:
            conn.close()
        return acquired

    def verify(self) -> bool:
        """True while this process still holds the lock (its connection is alive)."""
        if self._conn is None:
            return False
        try:
            held = bool(self._conn.execute(sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
                "AND pid = pg_backend_pid() AND granted "
                "AND ((classid::bigint << 32) | objid::bigint) = :k)"), {"k": self._key}).scalar())
            self._conn.commit()
        except sa.exc.DBAPIError as exc:
            log.warning("leader_lock_lost", reason=f"lock connection failed: {exc.orig}")
            held = False
        else:
            if not held:
                log.warning("leader_lock_lost", reason="the lock is no longer held by us")
        if not held:
            self._drop()
        return held

    def release(self) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            self._conn.commit()
        except sa.exc.DBAPIError:
            pass  # the connection is gone, and the lock with it
        self._drop()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except sa.exc.DBAPIError:
                pass
            self._conn = None
