from __future__ import annotations

import datetime as dt
import gzip
import io
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from scheduler.config import parse_config
from scheduler.ingest.files import UsageFileError
from scheduler.ingest.write import IngestError, ingest_files
from scheduler.store import deployments as deployment_store
from scheduler.store import usage as usage_store

HEADER = "minute_utc,input_tokens,output_tokens,requests\n"


def config_with(*names: str):  # type: ignore[no-untyped-def]
    return parse_config(
        {
            "deployment": [
                {
                    "name": n,
                    "provider": "simulated",
                    "unit_tpm": 2500,
                    "pricing": {"elastic_unit_hour": 38.0},
                }
                for n in names
            ]
        }
    )


@pytest.fixture
def synced(engine: sa.Engine) -> sa.Engine:
    with engine.begin() as conn:
        deployment_store.sync_deployments(conn, config_with("m-small", "other").deployments)
    return engine


def usage_totals(engine: sa.Engine) -> tuple[int, int, int, int]:
    with engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
                " coalesce(sum(requests), 0) FROM usage"
            )
        ).one()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def test_ingest_twice_is_idempotent(synced: sa.Engine, traces_dir: Path) -> None:
    path = str(traces_dir / "servegen_m-small.csv")
    ingest_files(synced, [path], deployment="m-small", source="gw1")
    first = usage_totals(synced)
    ingest_files(synced, [path], deployment="m-small", source="gw1")
    assert usage_totals(synced) == first
    assert first[0] == 20160
    assert first[1] == 174000399050
    with synced.connect() as conn:
        batches = conn.execute(
            sa.text(
                "SELECT rows, checksum, first_minute, last_minute FROM ingest_batch ORDER BY id"
            )
        ).all()
    assert [b.rows for b in batches] == [20160, 20160]
    assert batches[0].checksum == batches[1].checksum
    assert batches[0].first_minute.isoformat() == "2025-01-06T00:00:00+00:00"


def test_bad_row_in_the_middle_writes_nothing(synced: sa.Engine, tmp_path: Path) -> None:
    good = [f"2026-03-02T{i // 60:02d}:{i % 60:02d}:00Z,10,1,1\n" for i in range(200)]
    good[100] = "2026-03-02T01:40:00Z,10,-1,1\n"
    path = tmp_path / "bad.csv"
    path.write_text(HEADER + "".join(good))
    with pytest.raises(UsageFileError, match=rf"^{path}:102:3: output_tokens: negative count"):
        ingest_files(synced, [str(path)], deployment="m-small", source="s")
    assert usage_totals(synced)[0] == 0
    with synced.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM ingest_batch")).scalar() == 0


def test_resend_replaces_and_sources_add_up(synced: sa.Engine, tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text(HEADER + "2026-03-02T00:00:00Z,100,10,1\n2026-03-02T00:01:00Z,100,10,1\n")
    b = tmp_path / "b.csv"
    b.write_text(HEADER + "2026-03-02T00:00:00Z,50,5,1\n")
    ingest_files(synced, [str(a)], deployment="m-small", source="gw-a")
    ingest_files(synced, [str(b)], deployment="m-small", source="gw-b")
    # gw-a re-sends minute 0 with a corrected count: it replaces, never adds.
    a.write_text(HEADER + "2026-03-02T00:00:00Z,120,10,1\n")
    ingest_files(synced, [str(a)], deployment="m-small", source="gw-a")
    with synced.connect() as conn:
        demand = conn.execute(
            sa.text("SELECT minute, input_tokens, sources FROM usage_minute ORDER BY minute")
        ).all()
        ids = deployment_store.deployment_ids(conn, ["m-small"])
        series = usage_store.load_demand(
            conn, [ids["m-small"]], demand[0].minute, demand[0].minute + dt.timedelta(minutes=3)
        )
    assert [(d.input_tokens, d.sources) for d in demand] == [(170, 2), (100, 1)]
    loaded = series[ids["m-small"]].input_tokens
    assert list(loaded[:2]) == [170, 100]
    assert np.isnan(loaded[2])  # an unreported minute is missing, not zero


def test_gzip_and_stdin(synced: sa.Engine, tmp_path: Path) -> None:
    body = HEADER + "".join(f"2026-03-02T00:{i:02d}:00Z,{i},0,1\n" for i in range(10))
    gz = tmp_path / "u.csv.gz"
    gz.write_bytes(gzip.compress(body.encode()))
    ingest_files(synced, [str(gz)], deployment="m-small", source="s")
    assert usage_totals(synced)[:2] == (10, 45)
    later = body.replace("T00:", "T01:")
    ingest_files(synced, ["-"], deployment="m-small", source="s", stdin=io.BytesIO(later.encode()))
    assert usage_totals(synced)[:2] == (20, 90)


def test_deployment_column_and_unknown_deployment(synced: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "multi.csv"
    path.write_text(
        "deployment," + HEADER + "m-small,2026-03-02T00:00:00Z,1,0,1\n"
        "other,2026-03-02T00:00:00Z,2,0,1\n"
    )
    ingest_files(synced, [str(path)], deployment=None, source="s")
    assert usage_totals(synced)[:2] == (2, 3)
    path.write_text(
        "deployment," + HEADER + "m-small,2026-03-03T00:00:00Z,1,0,1\n"
        "ghost,2026-03-03T00:01:00Z,2,0,1\n"
    )
    with pytest.raises(UsageFileError, match=r":3:1: deployment: unknown deployment 'ghost'"):
        ingest_files(synced, [str(path)], deployment=None, source="s")
    assert usage_totals(synced)[0] == 2
    with pytest.raises(UsageFileError, match=r":2:1: deployment: row names a deployment other"):
        ingest_files(synced, [str(path)], deployment="other", source="s")
    plain = tmp_path / "plain.csv"
    plain.write_text(HEADER + "2026-03-02T00:00:00Z,1,0,1\n")
    with pytest.raises(IngestError, match="unknown deployment 'ghost'"):
        ingest_files(synced, [str(plain)], deployment="ghost", source="s")
    with pytest.raises(UsageFileError, match="no deployment column"):
        ingest_files(synced, [str(plain)], deployment=None, source="s")


def test_partitions_span_months_and_retention_drops_whole_months(
    synced: sa.Engine, tmp_path: Path
) -> None:
    path = tmp_path / "months.csv"
    path.write_text(
        HEADER + "2026-01-31T23:59:00Z,1,0,1\n2026-02-01T00:00:00Z,1,0,1\n"
        "2026-03-15T12:00:00Z,1,0,1\n"
    )
    ingest_files(synced, [str(path)], deployment="m-small", source="s")
    with synced.begin() as conn:
        parts = (
            conn.execute(
                sa.text(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "JOIN pg_class p ON p.oid = i.inhparent "
                    "WHERE p.relname = 'usage_hour' ORDER BY 1"
                )
            )
            .scalars()
            .all()
        )
        assert parts == ["usage_hour_p202601", "usage_hour_p202602", "usage_hour_p202603"]
        dropped = usage_store.drop_partitions_before(conn, dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    assert dropped == ["usage_hour_p202601", "usage_hour_p202602"]
    assert usage_totals(synced)[0] == 1


def test_missing_minutes_stay_missing(synced: sa.Engine, tmp_path: Path) -> None:
    path = tmp_path / "gappy.csv"
    path.write_text(HEADER + "2026-03-02T00:00:00Z,5,0,1\n2026-03-02T00:10:00Z,5,0,1\n")
    ingest_files(synced, [str(path)], deployment="m-small", source="s")
    with synced.connect() as conn:
        status = usage_store.usage_status(conn)
    by_name = {s.name: s for s in status}
    assert by_name["m-small"].minutes_stored == 2
    assert by_name["other"].minutes_stored == 0


def test_deployment_sync_deactivates_removed(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        deployment_store.sync_deployments(conn, config_with("a", "b").deployments)
        deployment_store.sync_deployments(conn, config_with("b").deployments)
        active = [d.name for d in deployment_store.list_deployments(conn)]
        everything = [d.name for d in deployment_store.list_deployments(conn, active_only=False)]
    assert active == ["b"]
    assert everything == ["a", "b"]


@pytest.mark.parametrize("group_minutes", [usage_store._BIN_GROUP_MINUTES, 1])
def test_load_demand_matches_the_minute_view(
    synced: sa.Engine, monkeypatch: pytest.MonkeyPatch, group_minutes: int
) -> None:
    # Two sources with partly overlapping minutes, gaps, and a window that starts and ends
    # inside an hour row: load_demand must agree with the SQL view minute by minute.
    monkeypatch.setattr(usage_store, "_BIN_GROUP_MINUTES", group_minutes)
    rng = np.random.default_rng(5)
    start = np.datetime64("2026-03-02T00:00", "m")
    with synced.connect() as conn:
        ids = deployment_store.deployment_ids(conn, ["m-small", "other"])
    for source in ("gw1", "gw2"):
        with synced.begin() as conn:
            picks = [
                (ident, minute)
                for ident in ids.values()
                for minute in range(300)
                if rng.random() < 0.6
            ]
            owners = np.array([ident for ident, _ in picks], dtype=np.int32)
            minutes = start + np.array([m for _, m in picks]).astype("timedelta64[m]")
            tokens = rng.integers(0, 10**9, size=(3, len(picks)))
            batch = usage_store.UsageBatch(owners, minutes, tokens[0], tokens[1], tokens[2])
            usage_store.write_usage(
                conn,
                batch,
                source=source,
                file=source,
                deployment_names=list(ids),
                checksum=source,
            )
    since = dt.datetime(2026, 3, 2, 0, 17, tzinfo=dt.UTC)
    until = dt.datetime(2026, 3, 2, 4, 41, tzinfo=dt.UTC)
    with synced.connect() as conn:
        loaded = usage_store.load_demand(conn, list(ids.values()), since, until)
        expected = conn.execute(
            sa.text(
                "SELECT deployment_id, minute, input_tokens, output_tokens, requests "
                "FROM usage_minute WHERE minute >= :since AND minute < :until"
            ),
            {"since": since, "until": until},
        ).all()
    n = (until - since) // dt.timedelta(minutes=1)
    want = {ident: np.full((3, n), np.nan) for ident in ids.values()}
    for ident, minute, *counts in expected:
        want[ident][:, (minute - since) // dt.timedelta(minutes=1)] = counts
    assert set(loaded) == set(ids.values())
    for ident, series in loaded.items():
        got = np.vstack([series.input_tokens, series.output_tokens, series.requests])
        np.testing.assert_array_equal(got, want[ident])
