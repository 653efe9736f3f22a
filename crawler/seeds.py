"""Read the seed list: one URL per line, streamed, validated and normalised.

Blank lines and ``#`` comments are skipped; every other line yields either a
normalised http(s) URL or the reason it was refused, with its line number, so
the master can record bad lines without ever fetching them. A line is read at
most ``MAX_LINE`` characters at a time, so a binary or hostile file with one
huge line cannot take the master's memory.
"""

from __future__ import annotations

import gzip
import re
import sys
from collections.abc import Iterator
from typing import IO, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from .errors import UsageError
from .shaping import credentials_in, mask_credentials

__all__ = ["SeedLine", "bounded_lines", "normalize_url", "open_seeds", "parse_seed", "read_seeds"]

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_LINE = 64 * 1024
"""Longest seed line taken as a URL; longer lines are refused (browsers stop near 64 KB too)."""
SHOWN_TEXT = 1000
"""How much of an over-long line is kept as its text, for the manifest and the log."""
BOM = "\ufeff"


class SeedLine(NamedTuple):
    """One meaningful line: ``url`` is set when valid, ``error`` otherwise.

    ``text`` is the line as written, with any password masked; ``auth`` the
    credentials the URL carried, which ``url`` no longer does. For a table
    (see crawler.tables), ``line_number`` is the row's number.
    """

    line_number: int
    text: str
    url: str | None
    error: str | None
    auth: tuple[str, str] | None = None
    columns: str | None = None
    """The columns kept from a table's row (``--save-cols``), as a JSON object."""


_SPACE_OR_CONTROL = re.compile("[\x00-\x20\x7f]")


def normalize_url(raw: str) -> str:
    """Return the canonical form of an http(s) URL or raise ValueError.

    Lower-cases scheme and host, writes an international host in its ASCII
    (IDNA) form, drops credentials, the fragment and a default port, and
    gives an empty path as ``/``; the path and query are kept as written.
    Two URLs that differ only in credentials are one URL.
    """
    if _SPACE_OR_CONTROL.search(raw):
        raise ValueError("contains whitespace or control characters")
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError(f"scheme {scheme + ':' if scheme else '(none)'} is not http or https")
    host = parts.hostname
    if not host:
        raise ValueError("no host")
    port = parts.port  # raises ValueError for a port out of range
    # IPv6 literals keep their brackets and are not IDNA names.
    netloc = f"[{host}]" if ":" in host else _ascii_host(host)
    if port is not None and port != DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _ascii_host(host: str) -> str:
    """Return ``host`` in the form DNS and requests use, or raise ValueError.

    ``bücher.example`` and ``xn--bcher-kva.example`` are one host, so they
    must be one URL. The standard library's IDNA 2003 codec maps symbols
    such as ``☃`` the way browsers do, where requests' IDNA 2008 refuses
    them; it also refuses empty and over-long labels, which no retry mends.
    """
    try:
        return host.encode("idna").decode("ascii").lower()
    except UnicodeError as error:
        reason = str(error.__cause__ or error).removeprefix("encoding with 'idna' codec failed ")
        raise ValueError(f"invalid host name: {reason.strip('()')}") from None


def read_seeds(lines: IO[str]) -> Iterator[SeedLine]:
    """Yield every non-blank, non-comment line of a seed list.

    A byte order mark before the first line is dropped (editors on Windows
    write one), and a line longer than ``MAX_LINE`` is refused whole.
    """
    for line_number, (line, whole) in enumerate(bounded_lines(lines), start=1):
        text = line.removeprefix(BOM).strip() if line_number == 1 else line.strip()
        if not whole:
            shown = mask_credentials(text[:SHOWN_TEXT])
            yield SeedLine(line_number, shown, None, f"line longer than {MAX_LINE} characters")
            continue
        if not text or text.startswith("#"):
            continue
        yield parse_seed(line_number, text)


def parse_seed(number: int, text: str) -> SeedLine:
    """The seed line of one URL as written: normalised, or refused with the reason."""
    try:
        url = normalize_url(text)
    except ValueError as error:
        return SeedLine(number, mask_credentials(text), None, f"invalid URL: {error}")
    if "@" not in text:  # no credentials to mask or take out: the common case, kept cheap
        return SeedLine(number, text, url, None)
    return SeedLine(number, mask_credentials(text), url, None, credentials_in(text))


def bounded_lines(stream: IO[str]) -> Iterator[tuple[str, bool]]:
    """Yield (line, whole) pairs, reading at most ``MAX_LINE`` characters of a line.

    The rest of an over-long line is read in pieces and dropped, so memory
    stays bounded whatever the file holds.
    """
    while line := stream.readline(MAX_LINE + 1):
        if len(line) <= MAX_LINE or line.endswith("\n"):
            yield line, True
            continue
        while (rest := stream.readline(MAX_LINE)) and not rest.endswith("\n"):
            pass
        yield line, False


def open_seeds(path: str, newline: str | None = None) -> IO[str]:
    """Open the seed list, or a table, for reading as text (``-`` is standard input; ``.gz`` is unzipped).

    ``newline=""`` is what the csv module wants: it reads quoted line breaks itself.
    """
    if path == "-":
        return sys.stdin
    try:
        if path.endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8", errors="replace", newline=newline)
        return open(path, encoding="utf-8", errors="replace", newline=newline)
    except OSError as error:
        raise UsageError(f"cannot read seeds file {path}: {error.strerror}") from None
