"""Read a table of URLs (CSV, TSV, JSON lines, Parquet; gzip-compressed too) as seed lines.

A dataset builder's list is a table: a URL column and columns to keep
beside each file (a caption, a license, an id). Each data row becomes one
:class:`~crawler.seeds.SeedLine` numbered by its row (the first data row is
1, blank lines do not count), so the same file always gives the same
numbers, which become the samples' keys. The kept columns travel as one
JSON object. Rows are read one at a time (Parquet a batch at a time), so a
table of any length costs the master no more memory than a text list.

A row without a usable URL (none, not a string, not http or https, broken
quoting) is a refused line with its row number, recorded ``failed`` like a
bad line of a text list. A table without the URL column, or without a
column asked for by ``--save-cols``, is refused before the crawl starts,
with the columns it has.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import itertools
import json
import sys
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, Any

from .errors import UsageError, first_line
from .seeds import SeedLine, bounded_lines, open_seeds, parse_seed, read_seeds

__all__ = ["INPUT_FORMATS", "InputSpec", "SeedSource", "import_parquet", "input_format", "open_input"]

INPUT_FORMATS = ("txt", "csv", "tsv", "jsonl", "parquet")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
}
PARQUET_BATCH = 10_000
SHOWN_COLUMNS = 20
"""Columns named in the message about a missing one; a table may have thousands."""


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How to read the seeds: the format, the URL column and the columns to keep."""

    format: str = "txt"
    url_col: str = "url"
    save_cols: tuple[str, ...] = ()


def input_format(path: str, explicit: str | None = None) -> str:
    """The format named by ``--input-format``, else the one the file's extension says (``.gz`` aside)."""
    if explicit:
        return explicit
    name = path.lower().removesuffix(".gz")
    return next((fmt for ext, fmt in _EXTENSIONS.items() if name.endswith(ext)), "txt")


class SeedSource(contextlib.AbstractContextManager["SeedSource"]):
    """An open seed file: iterate it for seed lines; closing it closes the file."""

    def __init__(self, path: str, lines: Iterable[SeedLine], closing: IO[Any] | None) -> None:
        self._path = path
        self._lines = lines
        self._closing = closing

    def __iter__(self) -> Iterator[SeedLine]:
        with _reading(self._path):
            yield from self._lines

    def __exit__(self, *exc_info: object) -> None:
        if self._closing is not None and self._closing is not sys.stdin:
            self._closing.close()


def open_input(path: str, spec: InputSpec) -> SeedSource:
    """Open the seeds as ``spec`` says; raise UsageError for a file that cannot be read or lacks a column.

    Reading it may raise UsageError too: a file cut short or corrupt (a
    gzip stream that ends early) is found only when reading gets there.
    """
    if spec.format == "txt":
        if spec.save_cols:
            raise UsageError("--save-cols needs a table: a .csv, .tsv, .jsonl or .parquet file, or --input-format")
        stream = open_seeds(path)
        return SeedSource(path, read_seeds(stream), stream)
    if spec.format == "parquet":
        return _open_parquet(path, spec)
    stream = open_seeds(path, newline="")
    try:
        with _reading(path):
            rows = _csv_rows(path, stream, spec) if spec.format in ("csv", "tsv") else _jsonl_rows(path, stream, spec)
    except BaseException:
        if stream is not sys.stdin:
            stream.close()
        raise
    return SeedSource(path, rows, stream)


@contextlib.contextmanager
def _reading(path: str) -> Iterator[None]:
    """A file that fails while it is read (corrupt, cut short, gone) is one line, not a traceback."""
    try:
        yield
    except (OSError, EOFError, zlib.error) as error:
        raise UsageError(f"cannot read seeds file {path}: {first_line(error)}") from None


def _missing_column(path: str, name: str, columns: list[str], option: str) -> UsageError:
    shown = ", ".join(columns[:SHOWN_COLUMNS]) + (", ..." if len(columns) > SHOWN_COLUMNS else "")
    return UsageError(f"{path} has no column {name!r} ({option}); its columns: {shown or '(none)'}")


def _check_columns(path: str, columns: list[str], spec: InputSpec) -> None:
    if spec.url_col not in columns:
        raise _missing_column(path, spec.url_col, columns, "--url-col")
    for name in spec.save_cols:
        if name not in columns:
            raise _missing_column(path, name, columns, "--save-cols")


def _seed(row: int, value: object, kept: dict[str, Any], spec: InputSpec) -> SeedLine:
    """The seed line of one row: its URL checked as a text list's line is, its kept columns as JSON."""
    columns = json.dumps(kept, ensure_ascii=False, default=str) if spec.save_cols else None
    if value is None or value == "":
        return SeedLine(row, "", None, f"row {row}: no URL in column {spec.url_col!r}", columns=columns)
    if not isinstance(value, str):
        reason = f"row {row}: the URL is a {type(value).__name__}, not text"
        return SeedLine(row, str(value)[:200], None, reason, columns=columns)
    return parse_seed(row, value.strip())._replace(columns=columns)


def _csv_rows(path: str, stream: IO[str], spec: InputSpec) -> Iterator[SeedLine]:
    reader = csv.reader(stream, delimiter="\t" if spec.format == "tsv" else ",", strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise UsageError(f"{path} is empty: expected a header line naming the columns") from None
    except csv.Error as error:
        raise UsageError(f"{path}: the header line is not {spec.format.upper()}: {error}") from None
    if header:
        header[0] = header[0].removeprefix("\ufeff")
    _check_columns(path, header, spec)
    return _csv_seeds(reader, header, spec)


def _csv_seeds(reader: Any, header: list[str], spec: InputSpec) -> Iterator[SeedLine]:
    url_at = header.index(spec.url_col)
    kept_at = [(name, header.index(name)) for name in spec.save_cols]
    row = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            # The reader goes on at the next line; the broken row keeps its number.
            row += 1
            yield SeedLine(row, f"(row {row})", None, f"row {row}: not {spec.format.upper()}: {error}")
            continue
        if not fields:
            continue
        row += 1
        kept = {name: fields[at] if at < len(fields) else None for name, at in kept_at}
        yield _seed(row, fields[url_at] if url_at < len(fields) else None, kept, spec)


def _jsonl_rows(path: str, stream: IO[str], spec: InputSpec) -> Iterator[SeedLine]:
    lines = bounded_lines(stream)
    first: tuple[str, bool] | None = next((line for line in lines if line[0].strip()), None)
    if first is None:
        raise UsageError(f"{path} is empty: expected one JSON object per line")
    try:
        record = json.loads(first[0]) if first[1] else None
    except ValueError:
        record = None
    if not isinstance(record, dict):
        raise UsageError(f"{path}: the first line is not a JSON object")
    _check_columns(path, list(record), spec)
    return _jsonl_seeds(itertools.chain([first], lines), spec)


def _jsonl_seeds(lines: Iterator[tuple[str, bool]], spec: InputSpec) -> Iterator[SeedLine]:
    row = 0
    for text, whole in lines:
        if not text.strip():
            continue
        row += 1
        try:
            record = json.loads(text) if whole else None
        except ValueError as error:
            yield SeedLine(row, f"(row {row})", None, f"row {row}: not JSON: {error}")
            continue
        if not isinstance(record, dict):
            reason = "not a JSON object" if whole else "line too long"
            yield SeedLine(row, f"(row {row})", None, f"row {row}: {reason}")
            continue
        yield _seed(row, record.get(spec.url_col), {name: record.get(name) for name in spec.save_cols}, spec)


def import_parquet(needed_by: str) -> Any:
    """``pyarrow.parquet``, or a UsageError saying what needs it and how to install it (an extra)."""
    try:
        import pyarrow.parquet as parquet
    except ImportError:
        raise UsageError(
            f"{needed_by} needs pyarrow: pip install pyarrow (or pip install '.[parquet]' from a checkout)"
        ) from None
    return parquet


def _open_parquet(path: str, spec: InputSpec) -> SeedSource:
    parquet = import_parquet("reading Parquet")
    try:
        table = parquet.ParquetFile(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise UsageError(f"cannot read seeds file {path}: {error}") from None
    _check_columns(path, list(table.schema_arrow.names), spec)
    return SeedSource(path, _parquet_seeds(path, table, spec), None)


def _parquet_seeds(path: str, table: Any, spec: InputSpec) -> Iterator[SeedLine]:
    row = 0
    try:
        for batch in table.iter_batches(batch_size=PARQUET_BATCH, columns=[spec.url_col, *spec.save_cols]):
            urls = batch.column(spec.url_col).to_pylist()
            kept = {name: batch.column(name).to_pylist() for name in spec.save_cols}
            for index, url in enumerate(urls):
                row += 1
                yield _seed(row, url, {name: values[index] for name, values in kept.items()}, spec)
    except ValueError as error:  # a corrupt page: pyarrow's ArrowInvalid is a ValueError
        raise UsageError(f"cannot read seeds file {path}: {first_line(error)}") from None
    finally:
        table.close()
