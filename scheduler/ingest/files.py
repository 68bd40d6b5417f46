"""Reading and validating per-minute usage files (CSV or JSON Lines, optionally gzipped).

Pure apart from reading the file: no database, no clock. Used by ``capsched ingest``, the
HTTP push endpoint and the backtest, so all three accept and reject exactly the same input.

A file is all-or-nothing: the first malformed row raises :class:`UsageFileError`, which
names the file, the line and the column (``path:line:column: name: why``).

Validation is vectorised with numpy (a million rows in about a second); only when the
fast path finds something wrong does a row-by-row pass run to name the first bad cell.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

COLUMNS = ("minute_utc", "input_tokens", "output_tokens", "requests")
COUNT_COLUMNS = COLUMNS[1:]
DEPLOYMENT_COLUMN = "deployment"
STDIN = "-"
_MINUTE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$")
#: A count is plain ASCII digits, at most 19 of them (int64 has 19): no sign, no blanks,
#: no ``1e3``, ``1_000``, ``5.0`` or non-ASCII digits, in CSV and JSON Lines alike.
_COUNT_RE = re.compile(r"[0-9]{1,19}")
_MAX_COUNT_DIGITS = 19
#: Counts at or above this are rejected: sums of them stay far from int64 overflow.
_MAX_COUNT = 2**62
_POWERS_OF_TEN = 10 ** np.arange(19, dtype=np.int64)


class UsageFileError(ValueError):
    """A usage file is malformed. ``str()`` is ``path:line:column: column-name: why``."""

    def __init__(self, path: str, line: int, column: int, name: str, why: str) -> None:
        self.path, self.line, self.column, self.name, self.why = path, line, column, name, why
        super().__init__(f"{path}:{line}:{column}: {name}: {why}")


@dataclass(frozen=True, eq=False)
class ParsedUsage:
    """A validated usage file: parallel numpy arrays, one element per row.

    Rows are sorted by (deployment, minute); within one deployment minutes are unique.
    ``deployments`` is None when the file has no deployment column.
    ``lines`` holds each row's line number in the file (for errors found later, such as
    an unknown deployment). ``checksum`` is the SHA-256 of the file's bytes as read.
    """

    path: str
    minutes: npt.NDArray[np.datetime64]
    input_tokens: npt.NDArray[np.int64]
    output_tokens: npt.NDArray[np.int64]
    requests: npt.NDArray[np.int64]
    deployments: npt.NDArray[np.str_] | None
    lines: npt.NDArray[np.int64]
    checksum: str
    #: The column order found in the file, for error messages about later checks.
    header: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.minutes.shape[0])

    def column_number(self, name: str) -> int:
        return self.header.index(name) + 1 if name in self.header else 0

    def load_series(self, output_weight: float) -> tuple[npt.NDArray[np.float64], dt.datetime]:
        """The file's load on a regular minute grid, and the UTC time of its first minute.

        Load is ``input_tokens + output_weight * output_tokens`` (tokens per minute); a
        minute without a row is missing (NaN), never zero. Shape ``(last - first + 1,)``.
        For a file of one deployment (the rows of several would collide)."""
        offsets = (self.minutes - self.minutes[0]).astype(np.int64)
        series = np.full(int(offsets[-1]) + 1, np.nan)
        series[offsets] = self.input_tokens + output_weight * self.output_tokens
        start = self.minutes[0].astype("datetime64[s]").item().replace(tzinfo=dt.UTC)
        return series, start

    def demand_units(self, unit_tpm: float, output_token_weight: float) -> npt.NDArray[np.float64]:
        weighted = self.input_tokens.astype(np.float64) + output_token_weight * self.output_tokens
        return weighted / unit_tpm


def read_usage_file(path: str | Path, *, stdin: IO[bytes] | None = None) -> ParsedUsage:
    """Read and validate one usage file; ``-`` reads standard input."""
    name = str(path)
    raw = _read_bytes(name, stdin)
    return parse_usage_bytes(raw, name)


def parse_usage_bytes(raw: bytes, name: str) -> ParsedUsage:
    checksum = hashlib.sha256(raw).hexdigest()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise UsageFileError(name, 1, 1, "file", f"not a valid gzip file: {exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise UsageFileError(name, line, 1, "file", "not valid UTF-8") from None
    stripped = text.lstrip()
    if _looks_like_jsonl(name, stripped):
        header, rows, lines = _jsonl_rows(text, name)
    else:
        fast = _fast_csv(text, raw.removeprefix(b"\xef\xbb\xbf"), name, checksum)
        if fast is not None:
            return fast
        header, rows, lines = _csv_rows(text, name)
    return _validate(name, header, rows, lines, checksum)


def _fast_csv(text: str, raw: bytes, name: str, checksum: str) -> ParsedUsage | None:
    """pandas' C reader for well-formed files; None sends the file down the exact path.

    Only files without quotes, carriage returns or blank lines qualify, so a row's line
    number is its index + 2. Anything pandas rejects (a non-integer count, a short row)
    falls back to the row-by-row path, which names the first bad cell.
    """
    if not text.strip() or '"' in text or "\r" in text or "\n\n" in text.rstrip("\n"):
        return None
    first_line = text.split("\n", 1)[0]
    header = tuple(cell.strip() for cell in first_line.split(","))
    _check_header(name, header)
    try:
        frame = pd.read_csv(
            io.StringIO(text),
            engine="c",
            header=0,
            names=list(header),
            dtype={c: np.int64 for c in COUNT_COLUMNS}
            | {"minute_utc": str, DEPLOYMENT_COLUMN: str},
            keep_default_na=False,
            na_filter=False,
        )
    except (ValueError, OverflowError, pd.errors.ParserError):
        return None
    n = len(frame)
    if n == 0:
        return None
    counts = {c: frame[c].to_numpy(dtype=np.int64) for c in COUNT_COLUMNS}
    if any(bool(((values < 0) | (values >= _MAX_COUNT)).any()) for values in counts.values()):
        return None
    if not _counts_are_plain_digits(raw, header, n, counts):
        return None  # "+5", " 5", "1e3", "5.0", "007": the exact path decides and names it
    minutes = _canonical_minutes(_field_bytes(raw, header.index("minute_utc"), n))
    if minutes is None:
        return None
    deployments: npt.NDArray[np.str_] | None = None
    if DEPLOYMENT_COLUMN in header:
        codes, uniques = pd.factorize(frame[DEPLOYMENT_COLUMN])
        names = np.asarray([str(u).strip() for u in uniques], dtype=np.str_)
        if "" in set(names.tolist()) or len(set(names.tolist())) != len(names):
            return None
        rank = names.argsort().argsort()[codes].astype(np.int64)
        # One int64 key (deployment rank, minute) sorts and finds repeats in one pass.
        key = rank << 40 | (minutes.astype(np.int64) - np.int64(-(2**39)))
    else:
        key = minutes.astype(np.int64)
    increasing = bool((key[1:] > key[:-1]).all())
    order = np.arange(n) if increasing else np.argsort(key, kind="stable")
    if not increasing and bool((key[order][1:] == key[order][:-1]).any()):
        return None  # a repeated minute: the exact path names both lines
    if DEPLOYMENT_COLUMN in header:
        deployments = names[codes][order]
    minutes = minutes[order]
    lines = (order + 2).astype(np.int64)
    return ParsedUsage(
        path=name,
        minutes=minutes,
        input_tokens=counts["input_tokens"][order],
        output_tokens=counts["output_tokens"][order],
        requests=counts["requests"][order],
        deployments=deployments,
        lines=lines,
        checksum=checksum,
        header=header,
    )


def _counts_are_plain_digits(
    raw: bytes, header: tuple[str, ...], rows: int, counts: dict[str, npt.NDArray[np.int64]]
) -> bool:
    """True when every count field is exactly the decimal digits of the value pandas read.

    pandas' C reader also accepts ``+5``, `` 5``, ``5.0``, ``1e3`` and ``007``. Every such
    spelling is longer or shorter than the value's own digits, except ``<digits>e2`` (``5e2``
    is as long as ``500``), which the byte two before the field's end rules out. Field
    bounds come from the comma positions: the caller guarantees no quotes and no blank lines,
    and each line must carry exactly ``len(header) - 1`` commas.
    """
    buf = np.frombuffer(raw, dtype=np.uint8)
    width = len(header)
    newlines = np.flatnonzero(buf == ord("\n"))
    if newlines.shape[0] < rows:
        return False
    line_starts = newlines[:rows] + 1
    line_ends = np.append(newlines[1:], buf.shape[0])[:rows]
    commas = np.flatnonzero(buf == ord(","))
    if commas.shape[0] != (rows + 1) * (width - 1):
        return False
    per_row = commas[width - 1 :].reshape(rows, width - 1)
    if not (bool((per_row[:, 0] > line_starts).all())
            and bool((per_row[:, -1] < line_ends).all())):
        return False
    starts = np.concatenate((line_starts[:, None], per_row + 1), axis=1)
    ends = np.concatenate((per_row, line_ends[:, None]), axis=1)
    for column in COUNT_COLUMNS:
        j = header.index(column)
        length = ends[:, j] - starts[:, j]
        digits = np.maximum(np.searchsorted(_POWERS_OF_TEN, counts[column], side="right"), 1)
        if not bool((length == digits).all()):
            return False
        long_enough = length >= 3
        marker = buf[np.where(long_enough, ends[:, j] - 2, 0)]
        if bool((long_enough & ((marker == ord("e")) | (marker == ord("E")))).any()):
            return False
    return True


def _read_bytes(name: str, stdin: IO[bytes] | None) -> bytes:
    if name == STDIN:
        return (stdin or sys.stdin.buffer).read()
    try:
        return Path(name).read_bytes()
    except FileNotFoundError:
        raise UsageFileError(name, 0, 0, "file", "no such file") from None
    except IsADirectoryError:
        raise UsageFileError(name, 0, 0, "file", "is a directory") from None
    except PermissionError:
        raise UsageFileError(name, 0, 0, "file", "permission denied") from None


def _looks_like_jsonl(name: str, stripped: str) -> bool:
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith((".jsonl", ".ndjson", ".json")):
        return True
    if base.endswith(".csv"):
        return False
    return stripped.startswith("{")


_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_SEPARATORS = {4: ord("-"), 7: ord("-"), 10: ord("T"), 13: ord(":"), 16: ord(":"), 19: ord("Z")}


def _field_bytes(raw: bytes, column: int, rows: int) -> npt.NDArray[np.uint8] | None:
    """The first 20 bytes of field ``column`` of each data line, as a (rows, 20) grid.

    Valid only for files without quotes or blank lines (checked by the caller); None when
    a field is not exactly 20 bytes long.
    """
    buf = np.frombuffer(raw, dtype=np.uint8)
    newlines = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate(([0], newlines + 1))[1 : rows + 1]
    if starts.shape[0] != rows:
        return None
    if column:
        commas = np.flatnonzero(buf == ord(","))
        index = np.searchsorted(commas, starts) + (column - 1)
        if bool((index >= commas.shape[0]).any()):
            return None
        starts = commas[index] + 1
    ends = starts + 20
    if bool((ends > buf.shape[0]).any()):
        return None
    after = np.where(ends < buf.shape[0], buf[np.minimum(ends, buf.shape[0] - 1)], ord("\n"))
    if not bool(np.isin(after, (ord(","), ord("\n"))).all()):
        return None
    grid: npt.NDArray[np.uint8] = buf[starts[:, None] + np.arange(20)[None, :]]
    return grid


def _canonical_minutes(grid: npt.NDArray[np.uint8] | None) -> npt.NDArray[np.datetime64] | None:
    """Parse ``YYYY-MM-DDTHH:MM:00Z`` with byte arithmetic (20x faster than strptime).

    None when any cell has another shape, an impossible date or non-zero seconds: the
    exact path then names the cell.
    """
    if grid is None:
        return None
    for position, byte in _SEPARATORS.items():
        if not bool((grid[:, position] == byte).all()):
            return None
    digits = grid[:, _DIGITS].astype(np.int64) - ord("0")
    if bool(((digits < 0) | (digits > 9)).any()):
        return None
    year = digits[:, 0] * 1000 + digits[:, 1] * 100 + digits[:, 2] * 10 + digits[:, 3]
    month, day = digits[:, 4] * 10 + digits[:, 5], digits[:, 6] * 10 + digits[:, 7]
    hour, minute = digits[:, 8] * 10 + digits[:, 9], digits[:, 10] * 10 + digits[:, 11]
    second = digits[:, 12] * 10 + digits[:, 13]
    if bool(
        ((month < 1) | (month > 12) | (day < 1) | (hour > 23) | (minute > 59) | (second != 0)).any()
    ):
        return None
    months = ((year - 1970) * 12 + month - 1).astype("datetime64[M]")
    days = months.astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")
    if not bool((days.astype("datetime64[M]") == months).all()):
        return None  # 31 April and the like
    offset = (hour * 60 + minute).astype("timedelta64[m]")
    result: npt.NDArray[np.datetime64] = days.astype("datetime64[m]") + offset
    return result


def _csv_rows(text: str, name: str) -> tuple[tuple[str, ...], list[list[str]], list[int]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header_row = next(reader)
    except StopIteration:
        raise UsageFileError(name, 1, 1, "header", "empty file: expected a header line") from None
    header = tuple(cell.strip() for cell in header_row)
    _check_header(name, header)
    width = len(header)
    rows: list[list[str]] = []
    lines: list[int] = []
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            missing = header[len(row)] if len(row) < width else "row"
            why = (
                f"missing column (expected {width} fields, found {len(row)})"
                if len(row) < width
                else f"too many fields (expected {width}, found {len(row)})"
            )
            raise UsageFileError(name, reader.line_num, min(len(row), width) + 1, missing, why)
        rows.append(row)
        lines.append(reader.line_num)
    return header, rows, lines


def _jsonl_rows(text: str, name: str) -> tuple[tuple[str, ...], list[list[str]], list[int]]:
    rows: list[list[str]] = []
    lines: list[int] = []
    header: tuple[str, ...] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            # Numbers stay their source text, so a count goes through the same validator as
            # a CSV cell (and a 100,000-digit number is not parsed at all).
            obj = json.loads(line, parse_int=_JsonNumber, parse_float=_JsonNumber,
                             parse_constant=_JsonNumber)
        except json.JSONDecodeError as exc:
            raise UsageFileError(
                name, number, exc.colno, "json", f"invalid JSON: {exc.msg}"
            ) from None
        if not isinstance(obj, dict):
            raise UsageFileError(name, number, 1, "json", "each line must be a JSON object")
        if header is None:
            header = COLUMNS + ((DEPLOYMENT_COLUMN,) if DEPLOYMENT_COLUMN in obj else ())
        unknown = sorted(set(obj) - set(header))
        if unknown:
            raise UsageFileError(name, number, 1, unknown[0], "unknown field")
        row: list[str] = []
        for index, column in enumerate(header, start=1):
            if column not in obj:
                raise UsageFileError(name, number, index, column, "missing field")
            row.append(_json_cell(obj[column], name, number, index, column))
        rows.append(row)
        lines.append(number)
    return header or COLUMNS, rows, lines


class _JsonNumber(str):
    """A JSON number (or NaN/Infinity) as written in the line."""


def _json_cell(value: Any, name: str, line: int, index: int, column: str) -> str:
    shown = _shorten(str(value) if isinstance(value, _JsonNumber) else json.dumps(value))
    if column in COUNT_COLUMNS:
        if not isinstance(value, _JsonNumber):
            raise UsageFileError(name, line, index, column,
                                 f"not a non-negative integer: {shown}")
        return str(value)
    if not isinstance(value, str) or isinstance(value, _JsonNumber):
        raise UsageFileError(name, line, index, column, f"expected a string, got {shown}")
    return value


def _shorten(text: str, limit: int = 40) -> str:
    """A cell as quoted in an error: a 100,000-digit count must not fill the terminal."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _check_header(name: str, header: Sequence[str]) -> None:
    for column in COLUMNS:
        if column not in header:
            raise UsageFileError(name, 1, len(header) + 1, column, "missing column in header")
    for index, column in enumerate(header, start=1):
        if column not in COLUMNS and column != DEPLOYMENT_COLUMN:
            raise UsageFileError(name, 1, index, column, "unknown column in header")
        if list(header).count(column) > 1:
            raise UsageFileError(name, 1, index, column, "column named twice in header")


def _validate(
    name: str,
    header: tuple[str, ...],
    rows: list[list[str]],
    lines: list[int],
    checksum: str,
) -> ParsedUsage:
    index = {column: header.index(column) for column in header}
    n = len(rows)
    if n == 0:
        raise UsageFileError(name, 2, 1, "file", "no usage rows after the header")
    columns = list(zip(*rows, strict=True))
    minutes = _parse_minutes(columns[index["minute_utc"]], name, lines, index["minute_utc"] + 1)
    counts: dict[str, npt.NDArray[np.int64]] = {}
    for column in COUNT_COLUMNS:
        counts[column] = _parse_counts(
            columns[index[column]], name, lines, index[column] + 1, column
        )
    deployments: npt.NDArray[np.str_] | None = None
    if DEPLOYMENT_COLUMN in index:
        deployments = np.array([cell.strip() for cell in columns[index[DEPLOYMENT_COLUMN]]])
        empty = np.flatnonzero(deployments == "")
        if empty.size:
            first = int(empty[0])
            raise UsageFileError(
                name,
                lines[first],
                index[DEPLOYMENT_COLUMN] + 1,
                DEPLOYMENT_COLUMN,
                "empty deployment name",
            )
    line_array = np.asarray(lines, dtype=np.int64)
    order = (
        np.lexsort((minutes, deployments))
        if deployments is not None
        else np.argsort(minutes, kind="stable")
    )
    minutes = minutes[order]
    line_array = line_array[order]
    same_key = minutes[1:] == minutes[:-1]
    if deployments is not None:
        deployments = deployments[order]
        same_key &= deployments[1:] == deployments[:-1]
    repeated = np.flatnonzero(same_key)
    if repeated.size:
        # Report the later of the two lines, the one that repeats the minute.
        pairs = [
            (max(line_array[i], line_array[i + 1]), min(line_array[i], line_array[i + 1]))
            for i in repeated
        ]
        line, first_line = min(pairs)
        raise UsageFileError(
            name,
            int(line),
            index["minute_utc"] + 1,
            "minute_utc",
            f"minute repeated (first seen on line {first_line})",
        )
    return ParsedUsage(
        path=name,
        minutes=minutes,
        input_tokens=counts["input_tokens"][order],
        output_tokens=counts["output_tokens"][order],
        requests=counts["requests"][order],
        deployments=deployments,
        lines=line_array,
        checksum=checksum,
        header=header,
    )


def _parse_minutes(
    cells: Sequence[str], name: str, lines: Sequence[int], column: int
) -> npt.NDArray[np.datetime64]:
    # The fast path covers the canonical form every trace uses: 2025-01-06T00:00:00Z.
    cell_array = np.asarray(cells, dtype=np.str_)
    canonical = (np.char.str_len(cell_array) == 20) & np.char.endswith(cell_array, ":00Z")
    if bool(canonical.all()):
        try:
            parsed = np.array([c[:-1] for c in cells], dtype="datetime64[s]")
        except ValueError:
            parsed = None
        if parsed is not None:
            minutes = parsed.astype("datetime64[m]")
            if bool((minutes.astype("datetime64[s]") == parsed).all()):
                return minutes
    return np.array(
        [_parse_minute_cell(c, name, line, column) for c, line in zip(cells, lines, strict=True)],
        dtype="datetime64[m]",
    )


def _parse_minute_cell(cell: str, name: str, line: int, column: int) -> np.datetime64:
    text = cell.strip()
    if not _MINUTE_RE.match(text):
        raise UsageFileError(
            name,
            line,
            column,
            "minute_utc",
            f"not an ISO-8601 timestamp with a time zone: {cell!r}",
        )
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageFileError(
            name, line, column, "minute_utc", f"invalid timestamp: {cell!r}"
        ) from None
    if stamp.second or stamp.microsecond:
        raise UsageFileError(
            name, line, column, "minute_utc", f"not aligned to a whole minute: {cell!r}"
        )
    utc = stamp.astimezone(dt.UTC).replace(tzinfo=None)
    return np.datetime64(utc, "m")


def _parse_counts(
    cells: Sequence[str], name: str, lines: Sequence[int], column: int, label: str
) -> npt.NDArray[np.int64]:
    """The one count validator of CSV and JSON Lines (#10 item 10); names the first bad cell."""
    values = np.empty(len(cells), dtype=np.int64)
    for i, (cell, line) in enumerate(zip(cells, lines, strict=True)):
        if _COUNT_RE.fullmatch(cell) is None:
            raise UsageFileError(name, line, column, label, _count_problem(cell))
        value = int(cell)
        if value >= _MAX_COUNT:
            raise UsageFileError(name, line, column, label,
                                 f"count too large: {cell} (limit 2**62 - 1)")
        values[i] = value
    return values


def _count_problem(cell: str) -> str:
    shown = _shorten(repr(cell))
    if not cell.strip():
        return "empty count"
    if cell.startswith("-") and cell[1:].isascii() and cell[1:].isdigit():
        return f"negative count: {shown}"
    if cell.isascii() and cell.isdigit():
        return (f"count too large: {len(cell):,} digits (at most {_MAX_COUNT_DIGITS}): "
                f"{shown}")
    return f"not a non-negative integer (plain digits 0-9 only): {shown}"


def write_usage_csv(rows: Iterable[tuple[dt.datetime, int, int, int]], out: IO[str]) -> None:
    """Write rows in the trace format (used by examples, tests and benchmarks)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for minute, input_tokens, output_tokens, requests in rows:
        writer.writerow(
            [minute.strftime("%Y-%m-%dT%H:%M:00Z"), input_tokens, output_tokens, requests]
        )
