"""Link extraction, resolution, scope and filters."""

from __future__ import annotations

import pytest

from crawler.links import LinkExtractor, PageLinks, resolve_links
from crawler.mime import is_html
from crawler.rules import Keep, Scope, parse_patterns

PAGE = """<!doctype html><html><head>
<base href="/gallery/">
<link rel="shortcut icon" href="/favicon.ico"><link rel="stylesheet" href="/style.css">
<meta http-equiv="refresh" content="5; url=next.html">
</head><body>
<a href="page2.html#top">two</a> <a href="../up.html">up</a> <a href="mailto:me@example.com">mail</a>
<a href="javascript:void(0)">js</a> <a href="HTTP://Example.COM:80/abs.html">abs</a>
<img src="a.png" srcset="b.png 1x, c.png 2x">
<picture><source srcset="d.webp 480w, e.webp 800w"><source src="f.png"></picture>
<img src="a%20b.png"><img src="spaced name.png">
</body></html>"""


def extract(html: str, chunk: int = 7, content_type: str = "text/html") -> tuple[list[str], str | None]:
    extractor = LinkExtractor(content_type)
    data = html.encode()
    for start in range(0, len(data), chunk):  # pages arrive in pieces
        extractor.feed(data[start : start + chunk])
    return extractor.close()


def test_finds_every_kind_of_link_and_the_base() -> None:
    links, base = extract(PAGE)
    assert base == "/gallery/"
    assert links == [
        "/favicon.ico", "next.html", "page2.html#top", "../up.html", "mailto:me@example.com",
        "javascript:void(0)", "HTTP://Example.COM:80/abs.html", "a.png", "b.png", "c.png",
        "d.webp", "e.webp", "f.png", "a%20b.png", "spaced name.png",
    ]  # fmt: skip


def test_resolves_against_base_normalises_and_keeps_http_only() -> None:
    links, base = extract(PAGE)
    resolved = resolve_links("http://site.example/dir/index.html", base, links)
    assert resolved == [
        "http://site.example/favicon.ico", "http://site.example/gallery/next.html",
        "http://site.example/gallery/page2.html", "http://site.example/up.html", "http://example.com/abs.html",
        "http://site.example/gallery/a.png", "http://site.example/gallery/b.png",
        "http://site.example/gallery/c.png", "http://site.example/gallery/d.webp",
        "http://site.example/gallery/e.webp", "http://site.example/gallery/f.png",
        "http://site.example/gallery/a%20b.png", "http://site.example/gallery/spaced%20name.png",
    ]  # fmt: skip


def test_without_base_links_resolve_against_the_final_page_url() -> None:
    assert resolve_links("http://h.example/a/b.html", None, ["c.png", "/d.png", "#x", ""]) == [
        "http://h.example/a/c.png", "http://h.example/d.png", "http://h.example/a/b.html",
    ]  # fmt: skip


def test_charset_from_content_type() -> None:
    html = '<a href="caf\u00e9.html">x</a>'.encode("latin-1").decode("latin-1")
    extractor = LinkExtractor("text/html; charset=ISO-8859-1")
    extractor.feed(html.encode("latin-1"))
    assert extractor.close()[0] == ["caf\u00e9.html"]


def test_is_html() -> None:
    assert is_html("text/html; charset=utf-8") and is_html("application/xhtml+xml")
    assert not is_html("image/png") and not is_html(None)


def test_keep_by_content_type_and_extension() -> None:
    images = Keep(accept=parse_patterns("image/*"))
    assert images.keeps("http://h/a.png", "image/png")
    assert not images.keeps("http://h/index.html", "text/html")
    by_extension = Keep(accept=parse_patterns(".jpg, png"))
    assert by_extension.keeps("http://h/a.PNG", None) and by_extension.keeps("http://h/b.jpg", "image/jpeg")
    assert not by_extension.keeps("http://h/c.gif", "image/gif")
    no_gifs = Keep(reject=parse_patterns("image/gif"))
    assert no_gifs.keeps("http://h/a.png", "image/png") and not no_gifs.keeps("http://h/b", "image/gif")
    assert Keep().keeps("http://h/anything", None)


def test_scope_follows_seed_hosts_domains_or_everything() -> None:
    scope = Scope()
    scope.add_seed("http://photos.example:8080/")
    assert scope.allows("http://photos.example/x") and not scope.allows("http://other.example/x")
    assert Scope(span_hosts=True).allows("http://other.example/x")
    domains = Scope(domains=("example.org",))
    assert domains.allows("http://cdn.example.org/x") and domains.allows("http://example.org/")
    assert not domains.allows("http://badexample.org/") and not domains.allows("http://example.com/")


@pytest.mark.parametrize("charset", ["base64", "rot13", "zlib", "hex"])
def test_a_charset_that_is_not_a_text_encoding_falls_back_to_utf8(charset: str) -> None:
    extractor = LinkExtractor(f"text/html; charset={charset}")
    extractor.feed('<a href="/caf\u00e9.html">'.encode())
    assert extractor.close() == (["/caf\u00e9.html"], None)


@pytest.mark.parametrize("base", ["http://[::1", "http://host:99999/", "http://[not-ipv6]/"])
def test_a_base_that_does_not_parse_is_ignored(base: str) -> None:
    assert resolve_links("http://a.example/dir/page", base, ["x.png", "http://[::1"]) == ["http://a.example/dir/x.png"]


def test_a_parser_failure_keeps_the_links_found_before_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = PageLinks.handle_starttag

    def chokes_on_blink(self: PageLinks, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "blink":
            raise AssertionError("a parser bug")
        real(self, tag, attrs)

    monkeypatch.setattr(PageLinks, "handle_starttag", chokes_on_blink)
    extractor = LinkExtractor("text/html")
    extractor.feed(b'<a href="/one">1</a><blink>')
    extractor.feed(b'<a href="/two">2</a>')
    assert extractor.close() == (["/one"], None)


def test_x_robots_tag_directives_name_their_agent_until_the_next_name() -> None:
    from crawler.rules import opted_out

    assert opted_out("googlebot: noindex, crawler: noimageai", "crawler/0.1") == "noimageai"
    assert opted_out("googlebot: noai, noimageai", "crawler/0.1") is None  # both for googlebot
    assert opted_out("unavailable_after: 25 Jun 2010 15:00:00 PST, noai", "crawler/0.1") == "noai"
    assert opted_out("*: noai", "mybot/2") == "noai"
    assert opted_out(None, "crawler/0.1") is None
