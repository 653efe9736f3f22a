"""WebDataset shards: filled and closed by the workers, accepted whole (or not at all) by the master.

A sample is a URL's file with its key (the seed's row, see Task.key):
``KEY.EXT``, ``KEY.json`` (the URL, its kept columns, what was saved) and
``KEY.txt`` when a ``caption`` column is kept. A worker adds each sample to
the shard it is filling, ``DIR/shards/NAME.tar.part``, and holds (and
renews) the sample's lease. The shard closes at ``--shard-size`` samples,
``--shard-seconds`` after its first, or when the worker runs out of work;
it is then written out, renamed ``NAME.tar``, and only then are its
results sent, all in one delivery. A crash before the rename leaves a
``.part`` and no result: the leases expire and the samples are fetched
again.

A worker can die after the rename and before its results arrive; its URLs
are then fetched again into another shard. So the master accepts a shard
only when every one of its results came, and records it in the crawl state
in the same transaction as its samples (:class:`ShardGate`). A shard with
a sample the master already had from another shard is refused whole and
its other samples are fetched again: each key is in one accepted shard.
Shards never accepted are removed at the end of the crawl from the
master's folder (:func:`sweep_shards`), and by ``crawler manifest`` from a
folder gathered from other hosts; they are never listed in the manifest.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import secrets
import shutil
import socket
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from .broker import Delivery
from .errors import first_line
from .messages import Outcome, Policy, Result, Task
from .state import STATE_FOLDER
from .storage import UNSAFE_CHARS, modified_at

__all__ = [
    "SHARDS_FOLDER",
    "ShardBook",
    "ShardGate",
    "ShardVerdict",
    "is_sample",
    "staging_folder",
    "sweep_shards",
]

logger = logging.getLogger(__name__)

SHARDS_FOLDER = "shards"
PART_SUFFIX = ".part"
STAGING_FOLDER = f"{STATE_FOLDER}/staging"


def is_sample(result: Result) -> bool:
    """A result whose file goes into a shard: fetched, kept and saved."""
    return result.outcome == Outcome.OK and result.kept and result.path is not None and result.robots is None


def staging_folder(root: Path, name: str) -> Path:
    """Where one worker process saves files before they go into its shard.

    Named after the host and the process, so a worker can tell the folders
    of dead processes of its own host and remove them (see clear_stale_staging).
    """
    return root / STAGING_FOLDER / UNSAFE_CHARS.sub("_", name)


def clear_stale_staging(root: Path) -> int:
    """Remove the staging folders that processes of this host left when they died; return how many."""
    removed = 0
    host = UNSAFE_CHARS.sub("_", socket.gethostname())
    with contextlib.suppress(FileNotFoundError):
        for folder in (root / STAGING_FOLDER).iterdir():
            owner, _, pid = folder.name.rpartition("_")
            if owner == host and pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    return True


def sample_json(task: Task, result: Result) -> dict[str, Any]:
    """What ``KEY.json`` holds: the kept columns, then what the crawl knows (which wins a name both use)."""
    meta: dict[str, Any] = json.loads(task.columns) if task.columns else {}
    meta.update(
        key=task.key,
        url=task.url,
        status="ok",
        sha256=result.sha256,
        bytes=result.bytes,
        content_type=result.content_type,
        http_status=result.http_status,
        width=result.width,
        height=result.height,
        original_width=result.original_width,
        original_height=result.original_height,
        image_format=result.image_format,
    )
    return meta


class _Shard:
    """One tar being filled: ``NAME.tar.part`` until :meth:`close` renames it."""

    def __init__(self, root: Path) -> None:
        folder = root / SHARDS_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.tar"
        self.relative = f"{SHARDS_FOLDER}/{name}"
        self.final = folder / name
        self.part = folder / (name + PART_SUFFIX)
        self._file = open(self.part, "xb")  # closed by close() or discard()
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)
        self.opened = time.monotonic()
        self.samples: list[Result] = []

    def add(self, key: str, staged: Path, meta: dict[str, Any], caption: str | None) -> None:
        extension = staged.suffix.lstrip(".").lower() or "bin"
        with open(staged, "rb") as body:
            self._add_member(f"{key}.{extension}", body, os.fstat(body.fileno()).st_size)
        text = json.dumps(meta, ensure_ascii=False, default=str).encode()
        self._add_member(f"{key}.json", io.BytesIO(text), len(text))
        if caption is not None:
            encoded = caption.encode()
            self._add_member(f"{key}.txt", io.BytesIO(encoded), len(encoded))

    def _add_member(self, name: str, body: io.BufferedIOBase | io.BytesIO, size: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, int(time.time()), 0o644
        self._tar.addfile(info, body)

    def close(self) -> None:
        """Write the tar out, make it durable, and give it its final name."""
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.part, self.final)
        directory = os.open(self.final.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._tar.close()
        with contextlib.suppress(OSError):
            self._file.close()
        self.part.unlink(missing_ok=True)


class ShardBook:
    """A worker's open shard and the results it holds until the shard is closed and renamed."""

    def __init__(self, root: Path, policy: Policy, clock: Callable[[], float] = time.monotonic) -> None:
        self._root = root
        self._size = policy.shard_size
        self._seconds = policy.shard_seconds
        self._clock = clock
        self._shard: _Shard | None = None
        self._lock = threading.Lock()

    def add(self, task: Task, result: Result, staged: Path) -> list[Result] | None:
        """Put a fetched file into the open shard (the file is then removed).

        Returns results to send: the shard's, when this sample filled it; or
        this URL's alone, as a retry, when the shard could not be written.
        """
        with self._lock:
            try:
                if self._shard is None:
                    self._shard = _Shard(self._root)
                    self._shard.opened = self._clock()
                meta = sample_json(task, result)
                caption = None
                if "caption" in meta:  # a kept column: every sample then has its KEY.txt, empty for a null
                    caption = "" if meta["caption"] is None else str(meta["caption"])
                self._shard.add(task.key, staged, meta, caption)
            except OSError as error:
                return self._fail(f"cannot write the shard: {first_line(error)}", [result])
            finally:
                staged.unlink(missing_ok=True)
            self._shard.samples.append(
                result._replace(path=f"{self._shard.relative}#{task.key}", shard=self._shard.relative)
            )
            if len(self._shard.samples) >= self._size:
                return self._close()
            return None

    def close_if_due(self, idle: bool) -> list[Result] | None:
        """Close the open shard if it is old enough, or if the worker has nothing else to do."""
        with self._lock:
            if self._shard is None or not (idle or self._clock() - self._shard.opened >= self._seconds):
                return None
            return self._close()

    def close(self) -> list[Result] | None:
        with self._lock:
            return self._close() if self._shard is not None else None

    def held_ids(self) -> list[int]:
        """The tasks whose samples wait in the open shard: their leases must be renewed."""
        with self._lock:
            return [result.id for result in self._shard.samples] if self._shard is not None else []

    def abandon(self) -> int:
        """Drop the open shard (the worker is leaving without it); return how many samples it held."""
        with self._lock:
            if self._shard is None:
                return 0
            count = len(self._shard.samples)
            self._shard.discard()
            self._shard = None
            return count

    def _close(self) -> list[Result]:
        assert self._shard is not None
        shard, self._shard = self._shard, None
        try:
            shard.close()
        except OSError as error:
            shard.discard()
            return self._fail(f"cannot write the shard: {first_line(error)}", shard.samples)
        count = len(shard.samples)
        logger.info("worker: wrote %s (%d samples)", shard.final, count)
        return [result._replace(shard_samples=count) for result in shard.samples]

    def _fail(self, error: str, results: list[Result]) -> list[Result]:
        """A shard that cannot be written: its URLs are tried again (a full disk may have room later)."""
        if self._shard is not None and results is not self._shard.samples:
            # The open shard may be torn by a failed write: drop it and retry everything it held.
            results = [*self._shard.samples, *results]
            self._shard.discard()
            self._shard = None
        logger.warning("worker: %s; %d URLs to fetch again", error, len(results))
        return [
            result._replace(outcome=Outcome.RETRY, path=None, shard=None, error=error, kept=False) for result in results
        ]


class ShardVerdict(NamedTuple):
    """What the master decided about the shards whose results were all in."""

    accepted: list[tuple[str, int, str, list[Delivery]]]
    """(name, samples, worker, deliveries) of each shard accepted whole."""
    refused: list[Delivery]
    """Samples of refused shards: their URLs are fetched again."""


class ShardGate:
    """The master's side: a shard's results wait here until all have come; then it is accepted whole or refused.

    The broker drops a result for a URL no longer in play (another worker's
    shard had it first), so a shard whose results are fewer than its
    samples once the broker is drained holds a key that is elsewhere.
    """

    def __init__(self) -> None:
        self._waiting: dict[str, list[Delivery]] = {}

    @property
    def waiting(self) -> int:
        """Results held for shards not decided yet."""
        return sum(map(len, self._waiting.values()))

    def sort(self, deliveries: list[Delivery]) -> list[Delivery]:
        """Keep the results of shards; return the others."""
        plain = []
        for delivery in deliveries:
            shard = delivery.result.shard
            if shard is None:
                plain.append(delivery)
            else:
                self._waiting.setdefault(shard, []).append(delivery)
        return plain

    def decide(self) -> ShardVerdict:
        """Decide every waiting shard (call once the broker is drained: all their results are in)."""
        accepted, refused = [], []
        for name, deliveries in self._waiting.items():
            expected = deliveries[0].result.shard_samples
            keys = {delivery.task.key for delivery in deliveries}
            if len(deliveries) == expected and len(keys) == expected:
                accepted.append((name, expected, deliveries[0].result.worker, deliveries))
            else:
                logger.warning(
                    "master: refused shard %s: %d of its %d samples came (the others were had from another shard); "
                    "fetching them again",
                    name,
                    len(deliveries),
                    expected,
                )
                refused.extend(deliveries)
        self._waiting.clear()
        return ShardVerdict(accepted, refused)


def sweep_shards(root: Path, accepted: set[str], older_than: float = 0.0) -> int:
    """Remove from ``root/shards`` every shard the master did not accept, and leftover ``.part`` files.

    ``older_than`` spares files younger than that many seconds (a worker
    still writing). Returns how many were removed.
    """
    removed = 0
    deadline = time.time() - older_than
    with contextlib.suppress(FileNotFoundError):
        for path in (root / SHARDS_FOLDER).iterdir():
            relative = f"{SHARDS_FOLDER}/{path.name}"
            stray = path.name.endswith(".tar" + PART_SUFFIX) or (
                path.name.endswith(".tar") and relative not in accepted
            )
            if stray and modified_at(path) <= deadline:
                path.unlink(missing_ok=True)
                removed += 1
    return removed
