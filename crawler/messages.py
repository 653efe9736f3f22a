"""What crosses the wire between master and workers, and the crawl policy.

Tasks and results are small named tuples of builtins: they pickle cheaply
across machines and could travel as JSON through another broker. A task is a
description of work (an id and a URL), never file bytes; a result carries the
saved file's path relative to the output folder.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any, NamedTuple

from . import __version__

if TYPE_CHECKING:
    from .shaping import Cookie

__all__ = ["RESIZE_MODES", "Outcome", "Policy", "Result", "Status", "Task"]

RESIZE_MODES = ("keep_ratio", "keep_ratio_largest", "center_crop", "border", "no")
"""img2dataset's resize modes, same names and meaning (see crawler.images)."""


class Outcome(str, enum.Enum):
    """What one attempt at a URL came to, as a worker reports it.

    ``OK`` and ``FAILED`` are final; ``RETRY`` asks the master to try again
    later (429, 5xx, network errors, truncated bodies).
    """

    OK = "ok"
    FAILED = "failed"
    RETRY = "retry"


class Status(str, enum.Enum):
    """Where a URL stands in the crawl: the words of the state's SQL and the manifest's ``status``.

    A ``str`` enum: it is stored, compared and written to JSON as its plain value.
    """

    PENDING = "pending"
    OK = "ok"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Policy:
    """How every URL of a crawl is fetched; owned by the master, sent to workers."""

    timeout: float = 30.0
    """Seconds allowed for connecting and for each read of the body."""
    max_time: float = 600.0
    """Seconds one attempt may take in all, redirects and body included; 0: no limit."""
    min_speed: float = 0.0
    """Lowest speed in bytes per second, over ``min_speed_time``; 0: no limit."""
    min_speed_time: float = 30.0
    retries: int = 3
    """Further attempts after the first for transient errors."""
    max_bytes: int = 0
    """Largest body kept, in bytes; 0 means no limit."""
    max_redirects: int = 10
    user_agent: str = ""
    backoff_base: float = 1.0
    """First retry delay in seconds; doubled for each further attempt."""
    backoff_max: float = 60.0
    retry_after_max: float = 120.0
    """Cap on a server's Retry-After, so one header cannot stall a URL for days."""
    lease_seconds: float = 30.0
    """How long a worker may hold a URL without renewing its lease."""
    chunk_bytes: int = 256 * 1024
    depth: int = 0
    """Levels of links to follow from the seeds; 0 downloads the seeds only."""
    accept: tuple[str, ...] = ()
    """Keep only files matching these content-type globs or ``.ext`` extensions."""
    reject: tuple[str, ...] = ()
    """Never keep files matching these."""
    robots_max_bytes: int = 512 * 1024
    headers: tuple[tuple[str, str], ...] = ()
    """Sent with every request (``--header``); may hold secrets, so never logged."""
    cookies: tuple[Cookie, ...] = ()
    """(domain, path, name, value, secure, expires) from ``--cookies``, sent where their domain matches."""
    min_free: int = 1024**3
    """Bytes the output folder must keep free; below, a worker takes no new URL (0: no floor)."""
    resize: int = 0
    """With --resize: the target size of images (see crawler.images); 0 keeps files as they came."""
    resize_mode: str = "keep_ratio"
    resize_only_down: bool = False
    image_format: str = "jpg"
    quality: int = 95
    min_image_size: int = 0
    max_aspect_ratio: float = 0.0
    max_image_pixels: int = 90_000_000
    """Larger images fail their URL before a pixel is decoded (a decompression bomb)."""
    honor_x_robots: bool = True
    """Do not keep files whose X-Robots-Tag says noai or noimageai."""
    x_robots_strict: bool = False
    """Also honour noindex and noimageindex."""
    output_format: str = "files"
    """files: one file per URL; webdataset: tar shards of samples (see crawler.shards)."""
    shard_size: int = 10_000
    """Samples per shard; a shard also closes after shard_seconds, or when its worker runs out of work."""
    shard_seconds: float = 60.0

    @property
    def reencodes(self) -> bool:
        """Whether kept files are decoded and re-encoded as images (--resize, or --resize-mode no)."""
        return self.resize > 0 or self.resize_mode == "no"

    def to_wire(self) -> dict[str, Any]:
        """Return the policy as a dict of builtins for a worker."""
        return dataclasses.asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Policy:
        """Rebuild a policy sent by a master, ignoring fields this version lacks."""
        # Tolerant on purpose: a worker one version behind the master still runs the crawl.
        # Strict on types: a policy that came as JSON from a broker must not fail later, mid-download.
        defaults = cls()
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in data:
                values[field.name] = _as_type_of(getattr(defaults, field.name), data[field.name], field.name)
        return cls(**values)

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @property
    def agent(self) -> str:
        """The User-Agent header sent with every request, robots.txt's included."""
        return self.user_agent or f"crawler/{__version__}"


def _as_type_of(default: object, value: object, name: str) -> object:
    """``value`` in the type of ``default``; JSON's lists become tuples. TypeError if it cannot be."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"policy field {name}: {type(value).__name__}, expected a list")
        return tuple(tuple(item) if isinstance(item, list) else item for item in value)
    if isinstance(default, bool) or isinstance(value, bool):
        if type(value) is not type(default):
            raise TypeError(f"policy field {name}: {type(value).__name__}, expected {type(default).__name__}")
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if not isinstance(value, type(default)):
        raise TypeError(f"policy field {name}: {type(value).__name__}, expected {type(default).__name__}")
    return value


class Task(NamedTuple):
    """One URL to fetch; ``attempt`` counts from 1.

    ``depth`` is the number of links followed from a seed; a ``robots`` task
    fetches a host's robots.txt for the master instead of a file.
    """

    id: int
    url: str
    attempt: int
    depth: int = 0
    robots: bool = False
    parent: str | None = None
    """The page the URL was found on, for its manifest line (workers ignore it)."""
    auth: tuple[str, str] | None = None
    """Basic-auth (user, password) for the URL's host, from netrc or a seed URL; never recorded."""
    row: int | None = None
    """The seed's line or row (see crawler.tables); None for a link found in a page."""
    columns: str | None = None
    """The columns kept from the seed's row, a JSON object, for the sample's JSON."""

    @property
    def key(self) -> str:
        """The sample's key in a WebDataset shard: the row, zero-padded, so one input always gives one key."""
        return f"{self.row:09d}" if self.row is not None else f"id{self.id:09d}"


class Result(NamedTuple):
    """What a worker made of one task."""

    id: int
    url: str
    outcome: Outcome
    path: str | None = None
    bytes: int = 0
    sha256: str | None = None
    content_type: str | None = None
    http_status: int | None = None
    error: str | None = None
    retry_after: float | None = None
    attempt: int = 1
    worker: str = ""
    elapsed: float = 0.0
    kept: bool = True
    """False when the body was fetched (to find links, or before a filter applied) but not saved."""
    links: tuple[str, ...] = ()
    """Raw link targets found in an HTML page, for the master to resolve."""
    base: str | None = None
    page_url: str | None = None
    """The URL the page was finally served from, after redirects."""
    robots: str | None = None
    """For a robots task: the robots.txt text (empty when there is none)."""
    width: int | None = None
    height: int | None = None
    image_format: str | None = None
    """Of the saved file, read from its header, when it is an image."""
    original_width: int | None = None
    original_height: int | None = None
    """Before --resize."""
    shard: str | None = None
    """The WebDataset shard (``shards/NAME.tar``) that holds the sample, once renamed into place."""
    shard_samples: int = 0
    """How many samples that shard holds: the master accepts a shard only with all of them."""
