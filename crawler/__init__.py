"""crawler: a distributed web and image downloader.

The data flow, one module per stage::

    seeds ─► backlog ─► master ─► broker ══ task queue ══► worker ─► fetch ─► storage ─► output/
               ▲          │  ▲                                  │
               └ state ◄──┘  ╚══════ result queue ◄═════════════╛  Result(path, sha256, ...)
                 (SQLite) ─► manifest.jsonl

The master streams the seed list into its crawl state, leases URLs to
workers through a broker (``crawler.broker``: today the standard library's
``multiprocessing.managers``), and records every result; workers download
with ``requests`` and report paths, never bytes.
"""

# Set before the imports below: messages reads it for the default User-Agent.
__version__ = "0.1.0"

from .errors import (
    AddressInUse,
    AuthenticationFailed,
    CrawlerError,
    MasterError,
    MasterUnreachable,
    OutputError,
    UsageError,
)
from .messages import Outcome, Policy, Result, Task

__all__ = [
    "AddressInUse",
    "AuthenticationFailed",
    "CrawlerError",
    "MasterError",
    "MasterUnreachable",
    "Outcome",
    "OutputError",
    "Policy",
    "Result",
    "Task",
    "UsageError",
    "__version__",
]
