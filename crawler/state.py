"""The master's crawl state on disk, and the manifest built from it.

One SQLite database in WAL mode under ``DIR/.crawler/`` holds every URL of
the crawl with its status (``pending``, ``ok``, ``failed``), attempts and
what was saved. The master process is its only writer and writes in batched
transactions. Leases are not stored: they live in the master's memory, and a
restarted master treats every URL that was not final as pending.

``DIR/manifest.jsonl`` is the user-facing record, appended as URLs reach a
final state (the last line for a URL wins) and rebuildable from the database:
it is rebuilt when missing at the start, and when it is deleted or replaced
while the crawl runs. The crawl's own temporary files live in ``.crawler/``,
out of the way of the host folders.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import operator
import os
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from .errors import OutputError
from .messages import Status
from .mime import is_html

__all__ = ["CrawlState", "FinalRecord", "Manifest", "PendingRow", "Reopened"]

logger = logging.getLogger(__name__)

STATE_FOLDER = ".crawler"
MANIFEST_NAME = "manifest.jsonl"


def _column(sql: str, *, inserted: bool = False, manifest: bool = True) -> dict[str, Any]:
    """Describe a FinalRecord field as a column of the urls table.

    Args:
        sql: the column's type and constraints.
        inserted: set when the URL is added and never changed by a result.
        manifest: written to manifest.jsonl.
    """
    return {"sql": sql, "inserted": inserted, "manifest": manifest}


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which made a record
# three times dearer to build, on the master's path for every URL.
@dataclasses.dataclass(kw_only=True, slots=True)
class FinalRecord:
    """A URL's final state: one row of the urls table and one manifest line.

    The one schema of the crawl state: the table, the SQL and the manifest's
    keys are derived from these fields. A new field is a line here.
    """

    id: int = 0
    url: str = dataclasses.field(metadata=_column("TEXT NOT NULL UNIQUE", inserted=True))
    status: Status = dataclasses.field(metadata=_column(f"TEXT NOT NULL DEFAULT '{Status.PENDING.value}'"))
    path: str | None = dataclasses.field(default=None, metadata=_column("TEXT"))
    bytes: int | None = dataclasses.field(default=None, metadata=_column("INTEGER"))
    sha256: str | None = dataclasses.field(default=None, metadata=_column("TEXT"))
    content_type: str | None = dataclasses.field(default=None, metadata=_column("TEXT"))
    http_status: int | None = dataclasses.field(default=None, metadata=_column("INTEGER"))
    error: str | None = dataclasses.field(default=None, metadata=_column("TEXT"))
    attempts: int = dataclasses.field(default=0, metadata=_column("INTEGER NOT NULL DEFAULT 0"))
    worker: str | None = dataclasses.field(default=None, metadata=_column("TEXT"))
    depth: int = dataclasses.field(default=0, metadata=_column("INTEGER NOT NULL DEFAULT 0", inserted=True))
    parent: str | None = dataclasses.field(default=None, metadata=_column("TEXT", inserted=True))
    kept: bool = dataclasses.field(default=True, metadata=_column("INTEGER NOT NULL DEFAULT 1"))
    width: int | None = dataclasses.field(default=None, metadata=_column("INTEGER"))
    height: int | None = dataclasses.field(default=None, metadata=_column("INTEGER"))
    image_format: str | None = dataclasses.field(default=None, metadata=_column("TEXT"))
    original_width: int | None = dataclasses.field(default=None, metadata=_column("INTEGER"))
    original_height: int | None = dataclasses.field(default=None, metadata=_column("INTEGER"))
    links_followed: bool = dataclasses.field(
        default=False, metadata=_column("INTEGER NOT NULL DEFAULT 0", manifest=False)
    )
    """True for a page whose links were queued; a deeper crawl later reads the others again."""
    row: int | None = dataclasses.field(default=None, metadata=_column("INTEGER", inserted=True))
    """The seed's line in a text list, or its row in a table: its sample's key."""
    columns: str | None = dataclasses.field(default=None, metadata=_column("TEXT", inserted=True))
    """The columns kept from the seed's row (--save-cols), a JSON object; an object in the manifest."""

    @classmethod
    def failure(
        cls,
        url: str,
        error: str,
        attempts: int,
        *,
        row_id: int = 0,
        depth: int = 0,
        parent: str | None = None,
        row: int | None = None,
        columns: str | None = None,
    ) -> FinalRecord:
        """Return the record of a URL that failed without a response worth keeping."""
        return cls(
            id=row_id,
            url=url,
            status=Status.FAILED,
            error=error,
            attempts=attempts,
            depth=depth,
            parent=parent,
            kept=False,
            row=row,
            columns=columns,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> FinalRecord:
        """Rebuild a record from ``SELECT id, <COLUMNS>``."""
        values = dict(zip(("id", *COLUMNS), row, strict=True))
        values["status"] = Status(values["status"])
        values["kept"] = bool(values["kept"])
        values["links_followed"] = bool(values["links_followed"])
        return cls(**values)

    def to_manifest(self) -> dict[str, Any]:
        line = {key: getattr(self, key) for key in MANIFEST_KEYS}
        if self.columns is not None:
            line["columns"] = json.loads(self.columns)
        return line


_FIELDS = [field for field in dataclasses.fields(FinalRecord) if field.name != "id"]
COLUMNS = tuple(field.name for field in _FIELDS)
MANIFEST_KEYS = tuple(field.name for field in _FIELDS if field.metadata["manifest"])
SAVED_COLUMNS = tuple(field.name for field in _FIELDS if not field.metadata["inserted"])
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS urls (id INTEGER PRIMARY KEY, "
    + ", ".join(f"{field.name} {field.metadata['sql']}" for field in _FIELDS)
    + ");\nCREATE INDEX IF NOT EXISTS urls_status ON urls(status, id);"
    # The WebDataset shards the master accepted (see crawler.shards): only these hold samples.
    + "\nCREATE TABLE IF NOT EXISTS shards (name TEXT PRIMARY KEY, samples INTEGER NOT NULL, worker TEXT);"
)
SAVE_SQL = f"UPDATE urls SET {', '.join(f'{name}=?' for name in SAVED_COLUMNS)} WHERE id=?"
_saved_values = operator.attrgetter(*SAVED_COLUMNS, "id")


class PendingRow(NamedTuple):
    id: int
    url: str
    attempts: int
    depth: int
    parent: str | None
    row: int | None
    columns: str | None


class Reopened(NamedTuple):
    """What a resumed crawl does again."""

    failed: int
    """URLs that had failed: tried again."""
    missing: int
    """URLs whose file was deleted: fetched again."""
    pages: int
    """Pages whose links were not followed and now should be (a larger --depth): read again."""


class CrawlState:
    """Every URL of one crawl and what became of it, in ``DIR/.crawler/state.db``."""

    def __init__(self, root: Path) -> None:
        folder = root / STATE_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "state.db"
        try:
            # Autocommit, with explicit BEGIN/COMMIT around each batch (see _Transaction); the
            # master's loop is the only writer, but it may run on another thread than the one that opened it.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL: a power cut may lose the last transactions, never corrupt the file.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._add_later_columns()
        except sqlite3.Error as error:
            raise OutputError(f"cannot use the crawl state {self.path}: {error}") from None

    def _add_later_columns(self) -> None:
        """Give a state made by an earlier version the columns added since."""
        present = {row[1] for row in self._db.execute("PRAGMA table_info(urls)")}
        for field in _FIELDS:
            if field.name not in present:
                self._db.execute(f"ALTER TABLE urls ADD COLUMN {field.name} {field.metadata['sql']}")

    def close(self) -> None:
        self._db.close()

    def add_urls(self, urls: Iterable[str], depth: int = 0, parent: str | None = None) -> int:
        """Insert URLs not seen before as pending; return how many were new."""
        with self._transaction():
            before = self._db.total_changes
            self._db.executemany(
                # The UNIQUE url is the dedup: a URL seen again, by link or seed, keeps its first row.
                "INSERT OR IGNORE INTO urls(url, depth, parent) VALUES (?, ?, ?)",
                ((url, depth, parent) for url in urls),
            )
            return self._db.total_changes - before

    def add_seeds(self, seeds: Iterable[tuple[str, int, str | None]]) -> int:
        """Insert seeds (url, row, kept columns) not seen before as pending; return how many were new."""
        with self._transaction():
            before = self._db.total_changes
            # A URL on two rows is fetched once, under its first row.
            self._db.executemany("INSERT OR IGNORE INTO urls(url, row, columns) VALUES (?, ?, ?)", seeds)
            return self._db.total_changes - before

    def reopen_for_resume(self, root: Path, depth: int) -> Reopened:
        """Make pending again: failed URLs, ok URLs whose file is gone, and the HTML
        pages above ``depth`` whose links an earlier, shallower crawl did not follow."""
        with self._transaction():
            failed = self._db.execute(
                "UPDATE urls SET status=?, attempts=0, error=NULL WHERE status=?", (Status.PENDING, Status.FAILED)
            ).rowcount
            missing = [
                (Status.PENDING, row_id)
                for row_id, path in self._db.execute("SELECT id, path FROM urls WHERE status=? AND kept", (Status.OK,))
                if not path or not (root / path.partition("#")[0]).is_file()  # a sample: its shard
            ]
            self._db.executemany("UPDATE urls SET status=?, attempts=0 WHERE id=?", missing)
            pages = [
                (Status.PENDING, row_id)
                for row_id, content_type in self._db.execute(
                    "SELECT id, content_type FROM urls WHERE status=? AND NOT links_followed AND depth<?",
                    (Status.OK, depth),
                )
                if is_html(content_type)
            ]
            self._db.executemany("UPDATE urls SET status=?, attempts=0 WHERE id=?", pages)
        return Reopened(failed, len(missing), len(pages))

    def pending_after(self, last_id: int, limit: int) -> list[PendingRow]:
        """Return up to ``limit`` pending URLs with ids above ``last_id``, in id order."""
        rows = self._db.execute(
            "SELECT id, url, attempts, depth, parent, row, columns FROM urls "
            "WHERE status=? AND id>? ORDER BY id LIMIT ?",
            (Status.PENDING, last_id, limit),
        )
        return [PendingRow(*row) for row in rows]

    def save(
        self,
        finals: Iterable[FinalRecord],
        attempts: Iterable[tuple[int, int]] = (),
        shards: Iterable[tuple[str, int, str]] = (),
    ) -> None:
        """Store final states, the attempt counts of URLs that will be retried, and accepted shards
        (name, samples, worker): in one transaction, so a shard is accepted with its samples or not at all."""
        with self._transaction():
            self._db.executemany(SAVE_SQL, map(_saved_values, finals))
            self._db.executemany(
                "UPDATE urls SET attempts=? WHERE id=?", ((count, row_id) for row_id, count in attempts)
            )
            self._db.executemany("INSERT OR REPLACE INTO shards(name, samples, worker) VALUES (?, ?, ?)", shards)

    def accepted_shards(self) -> set[str]:
        """The names (``shards/NAME.tar``) of the shards the master accepted."""
        return {name for (name,) in self._db.execute("SELECT name FROM shards")}

    def final_ids(self, ids: list[int]) -> set[int]:
        """Those of ``ids`` that have a final state."""
        found: set[int] = set()
        for start in range(0, len(ids), 10_000):  # under SQLite's limit on parameters
            chunk = ids[start : start + 10_000]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"SELECT id FROM urls WHERE status!=? AND id IN ({marks})", (Status.PENDING, *chunk)
            )
            found.update(row[0] for row in rows)
        return found

    def saved_bytes(self) -> int:
        """Bytes of every file the crawl has saved so far, earlier runs included."""
        row = self._db.execute("SELECT coalesce(sum(bytes), 0) FROM urls WHERE status=?", (Status.OK,)).fetchone()
        return int(row[0])

    def counts(self) -> dict[Status, int]:
        """Return the number of URLs in each status."""
        rows = self._db.execute("SELECT status, count(*) FROM urls GROUP BY status")
        return {Status(status): count for status, count in rows}

    def final_records(self) -> Iterator[FinalRecord]:
        """Yield every URL that reached a final state, in id order."""
        rows = self._db.execute(
            f"SELECT id, {', '.join(COLUMNS)} FROM urls WHERE status IN (?, ?) ORDER BY id", (Status.OK, Status.FAILED)
        )
        yield from map(FinalRecord.from_row, rows)

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db, self.path)


class _Transaction:
    """BEGIN ... COMMIT around a block, ROLLBACK on error (autocommit mode otherwise).

    A failed write (a full disk, another process holding the database) leaves
    the state as it was and becomes a one-line :class:`OutputError`: what was
    not recorded is still pending, and the next run does it again.
    """

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self._path = path

    def __enter__(self) -> sqlite3.Connection:
        try:
            self._db.execute("BEGIN")
        except sqlite3.Error as error:
            raise self._failure(error) from None
        return self._db

    def __exit__(self, kind: object, error: BaseException | None, trace: object) -> None:
        if error is None:
            try:
                self._db.execute("COMMIT")
                return
            except sqlite3.Error as commit_error:
                error = commit_error
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
        if isinstance(error, sqlite3.Error):
            raise self._failure(error) from None

    def _failure(self, error: sqlite3.Error) -> OutputError:
        return OutputError(f"cannot write the crawl state {self._path}: {error}")


class Manifest:
    """``DIR/manifest.jsonl``: one JSON line per URL that reached a final state.

    Opening it rebuilds a missing manifest from ``state`` and cuts a torn
    last line. Each batch first checks that the file at ``path`` is still
    the one open here: a manifest deleted (or moved away) mid-crawl would
    otherwise take every later line with it and leave no manifest at all.
    """

    def __init__(self, root: Path, state: CrawlState) -> None:
        self.path = root / MANIFEST_NAME
        self._state = state
        with self._writing():
            if not self.path.exists():
                Manifest.rebuild(root, state)
            _drop_torn_last_line(self.path)
            self._open()

    def _open(self) -> None:
        self._file = open(self.path, "a", encoding="utf-8")
        self._identity = _file_identity(os.fstat(self._file.fileno()))

    def write(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records and flush them to the operating system."""
        with self._writing():
            self._reopen_if_gone()
            for record in records:
                self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._file.flush()

    def _reopen_if_gone(self) -> None:
        try:
            current = _file_identity(os.stat(self.path))
        except FileNotFoundError:
            current = None
        if current == self._identity:
            return
        # Every line written so far is also in the state (lines go first, the
        # state right after), so a rebuild loses nothing but invalid seed lines.
        logger.warning("master: %s was deleted or replaced; writing it again from the crawl state", self.path)
        self._file.close()
        Manifest.rebuild(self.path.parent, self._state)
        self._open()

    def close(self) -> None:
        with self._writing():
            self._reopen_if_gone()
            self._file.close()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write (a full disk) becomes a one-line :class:`OutputError`."""
        try:
            yield
        except OSError as error:
            raise OutputError(f"cannot write the manifest in {self.path.parent}: {error.strerror or error}") from None

    @staticmethod
    def rebuild(root: Path, state: CrawlState) -> Path:
        """Write a fresh manifest holding the state's final records; return its path."""
        path = root / MANIFEST_NAME
        # Inside .crawler/: at the top a temporary name could be a host's folder.
        temporary = root / STATE_FOLDER / f"{MANIFEST_NAME}.tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            for record in state.final_records():
                file.write(json.dumps(record.to_manifest(), ensure_ascii=False) + "\n")
        temporary.replace(path)
        return path


def _file_identity(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _drop_torn_last_line(path: Path) -> None:
    """Cut a last line that a crash left half-written, so every line stays valid JSON.

    Lines are written before the state records them, so the cut line's URL
    is still pending and will get a whole line when it is fetched again.
    """
    try:
        file = open(path, "rb+")
    except FileNotFoundError:
        return
    with file:
        end = file.seek(0, 2)
        if end == 0:
            return
        file.seek(end - 1)
        if file.read(1) == b"\n":
            return
        position = end
        while position > 0:
            step = min(64 * 1024, position)
            position -= step
            file.seek(position)
            newline = file.read(step).rfind(b"\n")
            if newline >= 0:
                file.truncate(position + newline + 1)
                return
        file.truncate(0)
