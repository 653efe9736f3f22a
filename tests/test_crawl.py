"""Crawl mode end to end: a linked loopback site, real processes.

Two "hosts": 127.0.0.1 and 127.0.0.2 (both loopback), each a real HTTP server.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MANAGER, TestBroker, run_crawler
from tests.site import Site

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


@pytest.fixture
def other_host() -> Iterator[Site]:
    server = Site("127.0.0.2").start()
    yield server
    server.stop()


def build_site(site: Site, other: Site) -> str:
    """index (depth 0) -> page2 (1) -> sub/page3 (2) -> img/deep.png (3); images at every level."""
    for path in ("/img/a.png", "/img/b.png", "/img/c.png", "/gallery/d.png", "/img/deep.png", "/favicon.ico"):
        site.add(path, body=PNG + path.encode(), content_type="image/png")
    other.add("/off.png", body=PNG, content_type="image/png")
    other.page("/off.html", '<img src="/off.png">')
    site.add("/robots.txt", body=b"User-agent: *\nDisallow: /private/\n", content_type="text/plain")
    site.page("/private/secret.html", '<img src="/img/a.png">')
    site.page(
        "/index.html",
        f"""<link rel="icon" href="/favicon.ico">
        <img src="img/a.png" srcset="img/b.png 1x, /img/c.png 2x">
        <a href="page2.html">next</a> <a href="index.html#top">me again</a> <a href="/private/secret.html">no</a>
        <a href="{other.url("/off.html")}">elsewhere</a> <a href="mailto:x@example.com">mail</a>""",
    )
    site.page("/page2.html", '<base href="/gallery/"><img src="d.png"><a href="/index.html">home</a>'
                             '<a href="/sub/page3.html">deeper</a>')  # fmt: skip
    site.page("/sub/page3.html", '<img src="/img/deep.png"><a href="/page2.html">back</a>')
    return site.url("/index.html")


def crawl(
    tmp_path: Path, seed: str, *options: str, broker: TestBroker = MANAGER
) -> tuple[int, dict[str, dict[str, object]], str]:
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(seed + "\n")
    out = tmp_path / "out"
    done = run_crawler("run", str(seeds), "-o", str(out), "-w", "2", "-t", "4", *options, *broker.run_args())
    records = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["url"]] = record
    return done.returncode, records, done.stderr


def fetched(site: Site) -> set[str]:
    return {path for path, count in site.hits.items() if count}


@pytest.mark.parametrize(
    ("depth", "expected"),
    [
        (0, {"/index.html"}),
        (1, {"/robots.txt", "/index.html", "/favicon.ico", "/img/a.png", "/img/b.png", "/img/c.png",
             "/page2.html"}),
        (2, {"/robots.txt", "/index.html", "/favicon.ico", "/img/a.png", "/img/b.png", "/img/c.png",
             "/page2.html", "/gallery/d.png", "/sub/page3.html"}),
    ],
)  # fmt: skip
def test_depth_fetches_exactly_the_expected_set(
    tmp_path: Path, site: Site, other_host: Site, depth: int, expected: set[str], broker: TestBroker
) -> None:
    index = build_site(site, other_host)
    status, records, stderr = crawl(tmp_path, index, "--depth", str(depth), broker=broker)
    assert fetched(site) == expected, stderr
    assert all(count == 1 for count in site.hits.values())  # cycles end; every URL fetched once
    assert fetched(other_host) == set()  # off-host links are not followed
    assert "/private/secret.html" not in site.hits
    if depth:
        secret = records[site.url("/private/secret.html")]
        assert secret["status"] == "failed" and secret["error"] == "disallowed by robots.txt"
        assert secret["attempts"] == 0 and secret["depth"] == 1 and secret["parent"] == index
        assert status == 1
    else:
        assert status == 0 and list(records) == [index]
    assert records[index]["depth"] == 0 and records[index]["parent"] is None
    if depth >= 2:
        d_png = records[site.url("/gallery/d.png")]
        assert d_png["depth"] == 2 and d_png["parent"] == site.url("/page2.html") and d_png["status"] == "ok"


def test_a_deeper_run_on_the_same_output_reads_the_edge_pages_again(
    tmp_path: Path, site: Site, other_host: Site
) -> None:
    index = build_site(site, other_host)
    crawl(tmp_path, index, "--depth", "1")
    _status, records, stderr = crawl(tmp_path, index, "--depth", "2")
    assert fetched(site) == {"/robots.txt", "/index.html", "/favicon.ico", "/img/a.png", "/img/b.png",
                             "/img/c.png", "/page2.html", "/gallery/d.png", "/sub/page3.html"}, stderr  # fmt: skip
    # page2.html was the first run's edge: read again for its links; nothing else twice.
    assert site.hits["/page2.html"] == 2
    assert all(count == 1 for path, count in site.hits.items() if path not in ("/page2.html", "/robots.txt"))
    assert records[site.url("/gallery/d.png")]["depth"] == 2 and "1 pages to read for deeper links" in stderr


def test_accept_keeps_images_and_only_parses_pages(tmp_path: Path, site: Site, other_host: Site) -> None:
    index = build_site(site, other_host)
    _status, records, _stderr = crawl(tmp_path, index, "--depth", "2", "--accept", "image/*")
    out = tmp_path / "out"
    page = records[index]
    assert page["status"] == "ok" and page["kept"] is False and page["path"] is None
    image = records[site.url("/gallery/d.png")]
    assert image["kept"] is True and (out / str(image["path"])).read_bytes() == PNG + b"/gallery/d.png"
    saved = {path.suffix for path in out.rglob("*") if path.is_file() and ".crawler" not in path.parts}
    assert saved == {".png", ".ico", ".jsonl"}


def test_span_hosts_follows_off_host_links(tmp_path: Path, site: Site, other_host: Site) -> None:
    index = build_site(site, other_host)
    crawl(tmp_path, index, "--depth", "2", "--span-hosts")
    assert fetched(other_host) == {"/robots.txt", "/off.html", "/off.png"}


def test_ignore_robots_fetches_disallowed_pages(tmp_path: Path, site: Site, other_host: Site) -> None:
    index = build_site(site, other_host)
    status, records, _stderr = crawl(tmp_path, index, "--depth", "1", "--ignore-robots")
    assert status == 0 and site.hits["/private/secret.html"] == 1 and "/robots.txt" not in site.hits
    assert records[site.url("/private/secret.html")]["status"] == "ok"


def test_max_urls_caps_the_crawl(tmp_path: Path, site: Site, other_host: Site) -> None:
    index = build_site(site, other_host)
    _status, records, _stderr = crawl(tmp_path, index, "--depth", "3", "--max-urls", "4")
    assert len(records) == 4


def test_per_host_cap_holds_across_workers(tmp_path: Path, site: Site, broker: TestBroker) -> None:
    images = "".join(f'<img src="/i/{number}.png">' for number in range(16))
    for number in range(16):
        site.add(f"/i/{number}.png", body=PNG, content_type="image/png", delay=0.15)
    index = site.page("/index.html", images)
    status, records, _stderr = crawl(
        tmp_path, index, "--depth", "1", "--ignore-robots", "--per-host", "2", broker=broker
    )
    assert status == 0 and len(records) == 17
    assert site.peak_in_flight == 2  # 2 workers x 4 threads would allow 8


def test_crawl_delay_paces_requests_to_a_host(tmp_path: Path, site: Site, broker: TestBroker) -> None:
    site.add("/robots.txt", body=b"User-agent: *\nCrawl-delay: 0.3\n", content_type="text/plain")
    for number in range(4):
        site.add(f"/i/{number}.png", body=PNG, content_type="image/png")
    index = site.page("/index.html", "".join(f'<img src="/i/{number}.png">' for number in range(4)))
    status, _records, stderr = crawl(tmp_path, index, "--depth", "1", broker=broker)
    assert status == 0, stderr
    starts = sorted(site.started_at)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # robots.txt itself comes first, unpaced; every later request waits for the delay
    assert all(gap >= 0.25 for gap in gaps[1:]), gaps
    assert time.monotonic() - starts[0] >= 0.25 * (len(starts) - 2)
