from __future__ import annotations

import sqlalchemy as sa

from scheduler import database as db
from scheduler.store import locks
from tests.daemon_support import kill_advisory_lock_holders


def test_only_one_leader_and_takeover_when_its_connection_dies(db_url: str) -> None:
    first_engine, second_engine = db.make_engine(db_url), db.make_engine(db_url)
    first, second = locks.LeaderLock(first_engine), locks.LeaderLock(second_engine)
    try:
        assert first.try_acquire()
        assert not second.try_acquire()
        assert first.verify()
        # Kill the leader's session from outside, as a crash or a database restart would.
        kill_advisory_lock_holders(db.libpq_url(db_url))
        assert not first.verify()
        assert second.try_acquire()
        assert second.held
        assert not first.try_acquire()
        second.release()
        assert first.try_acquire()
    finally:
        first.release()
        second.release()
        first_engine.dispose()
        second_engine.dispose()


def test_try_lock_is_exclusive(engine: sa.Engine) -> None:
    with locks.try_lock(engine, locks.DRY_RUN_PLAN) as outer:
        assert outer
        with locks.try_lock(engine, locks.DRY_RUN_PLAN) as inner:
            assert not inner
    with locks.try_lock(engine, locks.DRY_RUN_PLAN) as again:
        assert again
