"""Find the links in an HTML page, and resolve and scope them for the frontier.

Workers run :class:`LinkExtractor` over a page as it streams in and return
the raw links (never the page); the master resolves them against the page's
final URL and ``<base href>``, normalises them and decides which to follow.
Links come from ``<a href>``, ``<img src>`` and ``srcset``, ``<source src>``
and ``srcset``, ``<link rel=icon>`` and ``<meta http-equiv=refresh>``.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from .seeds import normalize_url

__all__ = ["LinkExtractor", "PageLinks", "host_of", "is_html", "resolve_links"]

MAX_LINKS_PER_PAGE = 10_000
HTML_TYPES = ("text/html", "application/xhtml+xml")


def is_html(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";", 1)[0].strip().lower() in HTML_TYPES  # type: ignore[union-attr]


def host_of(url: str) -> str:
    """The host a politeness limit applies to: ``host[:port]`` as in the URL."""
    return urlsplit(url).netloc.lower()


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
    """Decode a page's bytes as they arrive and feed them to :class:`PageLinks`."""

    def __init__(self, content_type: str | None) -> None:
        self._decoder = codecs.getincrementaldecoder(_charset(content_type))(errors="replace")
        self.page = PageLinks()

    def feed(self, chunk: bytes) -> None:
        self.page.feed(self._decoder.decode(chunk))

    def close(self) -> tuple[list[str], str | None]:
        self.page.feed(self._decoder.decode(b"", final=True))
        self.page.close()
        return self.page.links, self.page.base


def _charset(content_type: str | None) -> str:
    for parameter in (content_type or "").split(";")[1:]:
        name, _, value = parameter.strip().partition("=")
        if name.lower() == "charset":
            try:
                return codecs.lookup(value.strip().strip("'\"")).name
            except LookupError:
                break
    return "utf-8"


def resolve_links(page_url: str, base: str | None, links: Iterable[str]) -> list[str]:
    """Return the http(s) links of a page, absolute and normalised, without duplicates."""
    base_url = urljoin(page_url, base) if base else page_url
    found: dict[str, None] = {}
    for link in links:
        try:
            # Browsers send a space in a link as %20; so do we.
            found[normalize_url(urljoin(base_url, link).replace(" ", "%20"))] = None
        except ValueError:
            continue  # mailto:, javascript:, data:, garbage
    return list(found)
