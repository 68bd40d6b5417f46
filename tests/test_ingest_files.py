from __future__ import annotations

import gzip
import io

import numpy as np
import pytest

from scheduler.ingest.files import UsageFileError, parse_usage_bytes, read_usage_file

HEADER = "minute_utc,input_tokens,output_tokens,requests\n"


def rows(n: int, start_hour: int = 0) -> str:
    return "".join(
        f"2026-03-02T{start_hour + i // 60:02d}:{i % 60:02d}:00Z,{100 + i},{10 + i},{i}\n"
        for i in range(n)
    )


def test_reads_the_trace_format(traces_dir) -> None:  # type: ignore[no-untyped-def]
    parsed = read_usage_file(traces_dir / "servegen_m-small.csv")
    assert len(parsed) == 20160
    assert parsed.minutes[0] == np.datetime64("2025-01-06T00:00")
    assert parsed.deployments is None
    assert int(parsed.input_tokens[0]) == 6701011


@pytest.mark.parametrize(
    ("bad_line", "column", "fragment"),
    [
        ("2026-03-02T05:00:30Z,1,1,1", "1: minute_utc: not aligned to a whole minute", None),
        ("2026-03-02 05:00,1,1,1", "1: minute_utc: not an ISO-8601 timestamp", None),
        ("2026-13-02T05:00:00Z,1,1,1", "1: minute_utc: invalid timestamp", None),
        ("2026-03-02T05:00:00Z,-5,1,1", "2: input_tokens: negative count", None),
        ("2026-03-02T05:00:00Z,1,2.5,1", "3: output_tokens: not a non-negative integer", None),
        ("2026-03-02T05:00:00Z,1,1,", "4: requests: empty count", None),
        ("2026-03-02T05:00:00Z,1,1", "4: requests: missing column", None),
        (
            "2026-03-02T00:03:00Z,1,1,1",
            "1: minute_utc: minute repeated (first seen on line 5)",
            None,
        ),
    ],
)
def test_bad_row_names_file_line_and_column(bad_line: str, column: str, fragment: None) -> None:
    text = HEADER + rows(10) + bad_line + "\n" + rows(5, start_hour=6)
    with pytest.raises(UsageFileError) as info:
        parse_usage_bytes(text.encode(), "usage.csv")
    assert str(info.value).startswith(f"usage.csv:12:{column}")


def test_header_problems() -> None:
    with pytest.raises(UsageFileError, match=r"^u.csv:1:4: requests: missing column in header"):
        parse_usage_bytes(b"minute_utc,input_tokens,output_tokens\n", "u.csv")
    with pytest.raises(UsageFileError, match=r"^u.csv:1:5: colour: unknown column"):
        parse_usage_bytes((HEADER.strip() + ",colour\n").encode(), "u.csv")
    with pytest.raises(UsageFileError, match="empty file"):
        parse_usage_bytes(b"", "u.csv")
    with pytest.raises(UsageFileError, match="no usage rows"):
        parse_usage_bytes(HEADER.encode(), "u.csv")


def test_gzip_jsonl_and_stdin_give_the_same_rows() -> None:
    csv_rows = parse_usage_bytes((HEADER + rows(30)).encode(), "a.csv")
    jsonl = "".join(
        f'{{"minute_utc": "2026-03-02T{i // 60:02d}:{i % 60:02d}:00Z", "input_tokens": {100 + i},'
        f' "output_tokens": {10 + i}, "requests": {i}}}\n'
        for i in range(30)
    )
    from_jsonl = parse_usage_bytes(gzip.compress(jsonl.encode()), "b.jsonl.gz")
    from_stdin = read_usage_file("-", stdin=io.BytesIO(gzip.compress((HEADER + rows(30)).encode())))
    for other in (from_jsonl, from_stdin):
        assert np.array_equal(other.minutes, csv_rows.minutes)
        assert np.array_equal(other.input_tokens, csv_rows.input_tokens)
        assert np.array_equal(other.requests, csv_rows.requests)
    assert from_stdin.path == "-"


def test_jsonl_errors_name_line_and_field() -> None:
    good = (
        '{"minute_utc": "2026-03-02T00:00:00Z", "input_tokens": 1, "output_tokens": 1,'
        ' "requests": 1}\n'
    )
    with pytest.raises(UsageFileError, match=r"^u.jsonl:2:4: requests: missing field"):
        parse_usage_bytes(
            (
                good + '{"minute_utc": "2026-03-02T00:01:00Z", "input_tokens": 1,'
                ' "output_tokens": 1}\n'
            ).encode(),
            "u.jsonl",
        )
    with pytest.raises(UsageFileError, match=r"^u.jsonl:2:\d+: json: invalid JSON"):
        parse_usage_bytes((good + "{oops\n").encode(), "u.jsonl")


def test_offsets_are_converted_to_utc() -> None:
    text = HEADER + "2026-03-02T09:00:00+09:00,1,1,1\n"
    parsed = parse_usage_bytes(text.encode(), "u.csv")
    assert parsed.minutes[0] == np.datetime64("2026-03-02T00:00")


def test_deployment_column_allows_same_minute_for_different_deployments() -> None:
    text = "deployment," + HEADER + "a,2026-03-02T00:00:00Z,1,1,1\nb,2026-03-02T00:00:00Z,2,2,2\n"
    parsed = parse_usage_bytes(text.encode(), "u.csv")
    assert parsed.deployments is not None
    assert list(parsed.deployments) == ["a", "b"]
    with pytest.raises(
        UsageFileError, match=r"^u.csv:4:2: minute_utc: minute repeated \(first seen on line 2\)"
    ):
        parse_usage_bytes(
            (text + "a,2026-03-02T00:00:00Z,1,1,1\n").replace("b,2026", "a,2027").encode(), "u.csv"
        )
