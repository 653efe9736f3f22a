"""Read the seed list: one URL per line, streamed, validated and normalised.

Blank lines and ``#`` comments are skipped; every other line yields either a
normalised http(s) URL or the reason it was refused, with its line number, so
the master can record bad lines without ever fetching them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import NamedTuple, TextIO
from urllib.parse import urlsplit, urlunsplit

from .errors import UsageError

__all__ = ["SeedLine", "normalize_url", "open_seeds", "read_seeds"]

DEFAULT_PORTS = {"http": 80, "https": 443}


class SeedLine(NamedTuple):
    """One meaningful line: ``url`` is set when valid, ``error`` otherwise."""

    line_number: int
    text: str
    url: str | None
    error: str | None


def normalize_url(raw: str) -> str:
    """Return the canonical form of an http(s) URL or raise ValueError.

    Lower-cases scheme and host, drops the fragment and a default port, and
    gives an empty path as ``/``; the path and query are kept as written.
    """
    if any(ord(char) < 0x21 or char == "\x7f" for char in raw):
        raise ValueError("contains whitespace or control characters")
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"scheme {scheme + ':' if scheme else '(none)'} is not http or https")
    host = parts.hostname
    if not host:
        raise ValueError("no host")
    port = parts.port  # raises ValueError for a port out of range
    netloc = f"[{host}]" if ":" in host else host
    if parts.username or parts.password:
        raise ValueError("credentials in URLs are not supported")
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def read_seeds(lines: TextIO) -> Iterator[SeedLine]:
    """Yield every non-blank, non-comment line of a seed list."""
    for line_number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            yield SeedLine(line_number, text, normalize_url(text), None)
        except ValueError as error:
            yield SeedLine(line_number, text, None, f"invalid URL: {error}")


def open_seeds(path: str) -> TextIO:
    """Open the seed list for reading (``-`` is standard input)."""
    if path == "-":
        return sys.stdin
    try:
        return open(path, encoding="utf-8", errors="replace", newline=None)
    except OSError as error:
        raise UsageError(f"cannot read seeds file {path}: {error.strerror}") from None
