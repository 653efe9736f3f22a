"""The manifest as one Parquet file with typed columns (``crawler manifest --format parquet``).

For the tools dataset builders filter with (pandas, DuckDB, Spark): one row
per URL that reached a final state, the columns of the manifest with their
types, plus ``shard`` and ``key`` split out of a sample's ``path``. Written a
batch at a time to a temporary name, then renamed: a crawl of any size
takes little memory, and a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .state import MANIFEST_KEYS, STATE_FOLDER, CrawlState, FinalRecord
from .tables import import_parquet

__all__ = ["PARQUET_NAME", "write_parquet"]

PARQUET_NAME = "manifest.parquet"
BATCH = 50_000
_TYPES = {"int": "int64", "str": "string", "bool": "bool_", "Status": "string", "float": "float64"}


def _schema(pyarrow: Any) -> Any:
    types = {field.name: field.type for field in dataclasses.fields(FinalRecord)}
    columns = []
    for name in MANIFEST_KEYS:
        # "int | None" and the like: the first name is the type, None makes it nullable (every column is).
        base = str(types[name]).split("|")[0].strip()
        columns.append((name, getattr(pyarrow, _TYPES[base])()))
    columns += [("shard", pyarrow.string()), ("key", pyarrow.string())]
    return pyarrow.schema(columns)


def _rows(records: Iterator[FinalRecord]) -> Iterator[dict[str, Any]]:
    for record in records:
        row = {name: getattr(record, name) for name in MANIFEST_KEYS}
        row["status"] = record.status.value
        shard, hash_mark, key = (record.path or "").partition("#")
        row["shard"], row["key"] = (shard, key) if hash_mark else (None, None)
        yield row


def write_parquet(root: Path, state: CrawlState) -> Path:
    """Write ``root/manifest.parquet`` from the state; return its path."""
    parquet = import_parquet("--format parquet")
    import pyarrow  # there, since pyarrow.parquet is

    schema = _schema(pyarrow)
    path = root / PARQUET_NAME
    temporary = root / STATE_FOLDER / f"{PARQUET_NAME}.tmp"
    rows = _rows(state.final_records())
    with parquet.ParquetWriter(temporary, schema) as writer:
        while batch := list(itertools.islice(rows, BATCH)):
            writer.write_table(pyarrow.Table.from_pylist(batch, schema=schema))
    temporary.replace(path)
    return path
