"""The exception tree of crawler.

A URL's failure is data (a result with status ``failed``); only a crawl that
cannot run raises. Every exception the CLI turns into exit status 2 derives
from :class:`CrawlerError`::

    CrawlerError
     ├── UsageError          bad option value, unreadable seeds, no valid URL
     ├── OutputError         output folder not usable
     └── MasterError         problems talking to or serving the master
          ├── AuthenticationFailed   the authkeys do not match
          ├── AddressInUse           the master's port is taken
          ├── MasterUnreachable      no master (or broker) answered in time
          ├── BrokerRefused          the broker's ACL forbids a command crawler needs
          └── ConnectionLost         the connection broke mid-crawl (a worker reconnects)
"""

from __future__ import annotations

__all__ = [
    "EXIT_CANNOT_RUN",
    "EXIT_FAILED_URLS",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "AddressInUse",
    "AuthenticationFailed",
    "BrokerRefused",
    "ConnectionLost",
    "CrawlerError",
    "MasterError",
    "MasterUnreachable",
    "OutputError",
    "UsageError",
    "first_line",
]

EXIT_OK, EXIT_FAILED_URLS, EXIT_CANNOT_RUN, EXIT_INTERRUPTED = 0, 1, 2, 130
"""The exit statuses of every command (see the README): 2 for any CrawlerError."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message as one line for a log or a result, or its type when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__


class CrawlerError(Exception):
    """Root of every error that stops a crawl (exit status 2)."""


class UsageError(CrawlerError):
    """The command line or the seed list cannot be used."""


class OutputError(CrawlerError):
    """The output folder cannot be created or written."""


class MasterError(CrawlerError):
    """Serving the queues or connecting to them failed."""


class AuthenticationFailed(MasterError):
    """The worker's authkey does not match the master's."""


class AddressInUse(MasterError):
    """The address the master should listen on is taken."""


class BrokerRefused(MasterError):
    """The broker does not let this user run a command crawler needs (a Redis ACL)."""


class MasterUnreachable(MasterError):
    """No master answered at the address within the allowed time."""


class ConnectionLost(MasterError):
    """The connection to the master broke; the worker tries to connect again."""
