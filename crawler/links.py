"""Find the links in an HTML page, and resolve and scope them for the frontier.

Workers run :class:`LinkExtractor` over a page as it streams in and return
the raw links (never the page); the master resolves them against the page's
final URL and ``<base href>``, normalises them and decides which to follow.
Links come from ``<a href>``, ``<img src>`` and ``srcset``, ``<source src>``
and ``srcset``, ``<link rel=icon>`` and ``<meta http-equiv=refresh>``.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
from collections.abc import Iterable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from .mime import parameter
from .seeds import normalize_url

__all__ = ["LinkExtractor", "PageLinks", "host_of", "resolve_links"]

logger = logging.getLogger(__name__)

MAX_LINKS_PER_PAGE = 10_000


def host_of(url: str) -> str:
    """The host a politeness limit applies to: ``host[:port]`` as in the URL (urlsplit's netloc)."""
    # Called for every URL handed out, so by hand: urlsplit costs five times as much.
    colon = url.find(":")
    if colon < 1 or not url.startswith("//", colon + 1):
        return ""
    start, end = colon + 3, len(url)
    for separator in "/?#":
        found = url.find(separator, start, end)
        if found != -1:
            end = found
    return url[start:end].lower()


class PageLinks(HTMLParser):
    """Collect link targets and ``<base href>`` from HTML fed in pieces."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value for name, value in attrs if value is not None}
        if tag == "base" and self.base is None and "href" in values:
            self.base = values["href"].strip()
        elif tag == "a" and "href" in values:
            self._add(values["href"])
        elif tag in ("img", "source"):
            self._add(values.get("src"))
            self._add_srcset(values.get("srcset"))
        elif tag == "link" and "icon" in values.get("rel", "").lower().split():
            self._add(values.get("href"))
        elif tag == "meta" and values.get("http-equiv", "").lower() == "refresh":
            self._add(_refresh_target(values.get("content", "")))

    handle_startendtag = handle_starttag

    def _add(self, link: str | None) -> None:
        if link and link.strip() and len(self.links) < MAX_LINKS_PER_PAGE:
            self.links.append(link.strip())

    def _add_srcset(self, srcset: str | None) -> None:
        for candidate in (srcset or "").split(","):
            self._add(candidate.strip().split(" ", 1)[0])


def _refresh_target(content: str) -> str | None:
    _delay, separator, rest = content.partition(";")
    if not separator:
        return None
    name, equals, target = rest.strip().partition("=")
    if not equals or name.strip().lower() != "url":
        return None
    return target.strip().strip("'\"")


class LinkExtractor:
    """Decode a page's bytes as they arrive and feed them to :class:`PageLinks`.

    Whatever the page holds, extraction never raises: a page the parser
    chokes on keeps the links found before that point, and its file is
    saved as any other.
    """

    def __init__(self, content_type: str | None) -> None:
        self._decoder = codecs.getincrementaldecoder(_charset(content_type))(errors="replace")
        self.page = PageLinks()
        self._broken = False

    def feed(self, chunk: bytes) -> None:
        self._parse(chunk)

    def close(self) -> tuple[list[str], str | None]:
        self._parse(b"", final=True)
        if not self._broken:
            with contextlib.suppress(Exception):
                self.page.close()
        return self.page.links, self.page.base

    def _parse(self, chunk: bytes, final: bool = False) -> None:
        if self._broken:
            return
        try:
            self.page.feed(self._decoder.decode(chunk, final))
        except Exception as error:  # a parser bug met by a hostile page must not end the download
            logger.debug("links: stopped reading a page: %s: %s", type(error).__name__, error)
            self._broken = True


def _charset(content_type: str | None) -> str:
    """Return the page's declared text encoding, or UTF-8.

    Python's codec registry also holds bytes-to-bytes and str-to-str codecs
    (base64, zlib, rot13) that a server may name; they are not text
    encodings and would raise on the first chunk.
    """
    try:
        codec = codecs.lookup(parameter(content_type, "charset") or "utf-8")
    except LookupError:
        return "utf-8"
    # _is_text_encoding is how the codecs module itself tells them apart (see codecs.py).
    return codec.name if getattr(codec, "_is_text_encoding", True) else "utf-8"


def resolve_links(page_url: str, base: str | None, links: Iterable[str]) -> list[str]:
    """Return the http(s) links of a page, absolute and normalised, without duplicates.

    Never raises on what a page says: a ``<base href>`` that does not parse
    is ignored (as browsers do), and so is each link that does not.
    """
    base_url = _base_url(page_url, base)
    found: dict[str, None] = {}
    for link in links:
        try:
            # Browsers send a space in a link as %20; so do we.
            found[normalize_url(urljoin(base_url, link).replace(" ", "%20"))] = None
        except ValueError:
            continue  # mailto:, javascript:, data:, garbage
    return list(found)


def _base_url(page_url: str, base: str | None) -> str:
    if not base:
        return page_url
    try:
        joined = urljoin(page_url, base)
        urlsplit(joined).port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError:
        return page_url
    return joined
