"""What a crawl follows and what it keeps: host scope and accept/reject filters.

Both are plain values built by the CLI: :class:`Scope` lives on the master
(which links enter the frontier), :class:`Keep` travels to workers inside the
policy (which downloaded files are kept).
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from .mime import media_type

__all__ = ["Keep", "Scope", "opted_out", "parse_patterns"]

AI_OPT_OUTS = ("noai", "noimageai")
INDEX_OPT_OUTS = ("noindex", "noimageindex")
# Directives whose value follows a colon: not the name of a user agent.
DIRECTIVES_WITH_VALUES = {"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"}


def opted_out(header: str | None, agent: str, strict: bool = False) -> str | None:
    """Return the X-Robots-Tag directive that asks us not to keep a file, or None.

    ``noai`` and ``noimageai`` always count (img2dataset's default);
    ``noindex`` and ``noimageindex`` only when ``strict``. A directive may
    name a user agent (``otherbot: noai``); it counts for us when the name
    is ``*`` or our User-Agent's product token.
    """
    if not header:
        return None
    ours = agent.split("/", 1)[0].strip().lower()
    refused = AI_OPT_OUTS + (INDEX_OPT_OUTS if strict else ())
    scope = "*"  # a directive without a name is for every agent; a name holds until the next one
    for item in header.lower().split(","):
        name, colon, rest = item.partition(":")
        if colon and name.strip() not in DIRECTIVES_WITH_VALUES and " " not in name.strip():
            scope, item = name.strip(), rest
        for directive in item.split():
            if directive in refused and scope in ("*", ours):
                return directive
    return None


def parse_patterns(text: str) -> tuple[str, ...]:
    """Split ``image/*,.jpg, png`` into normalised patterns: content types or ``.ext``."""
    patterns = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        patterns.append(item if "/" in item or item.startswith(".") else "." + item)
    return tuple(patterns)


@dataclass(frozen=True)
class Keep:
    """``--accept`` / ``--reject``: content-type globs (``image/*``) and extensions (``.jpg``)."""

    accept: tuple[str, ...] = ()
    reject: tuple[str, ...] = ()

    def keeps(self, url: str, content_type: str | None) -> bool:
        """Tell whether a downloaded body is kept as a file."""
        mime = media_type(content_type)
        extension = posixpath.splitext(unquote(urlsplit(url).path))[1].lower()
        if self.accept and not _matches(self.accept, mime, extension):
            return False
        return not (self.reject and _matches(self.reject, mime, extension))


def _matches(patterns: Iterable[str], mime: str, extension: str) -> bool:
    for pattern in patterns:
        if pattern.startswith("."):
            if extension == pattern:
                return True
        elif mime and fnmatch.fnmatchcase(mime, pattern):
            return True
    return False


@dataclass
class Scope:
    """Which hosts a crawl follows links to: the seeds' hosts unless told otherwise."""

    span_hosts: bool = False
    domains: tuple[str, ...] = ()
    seed_hosts: set[str] = field(default_factory=set)

    def add_seed(self, url: str) -> None:
        self.seed_hosts.add(_hostname(url))

    def allows(self, url: str) -> bool:
        host = _hostname(url)
        if self.domains:
            return any(host == domain or host.endswith("." + domain) for domain in self.domains)
        # wget's default: without --span-hosts a crawl stays on the hosts it was given.
        return self.span_hosts or host in self.seed_hosts


def _hostname(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
