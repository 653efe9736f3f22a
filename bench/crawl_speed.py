#!/usr/bin/env python3
"""Crawl-mode speed: pages parsed per second and links per second through the frontier.

Makes a static site of PAGES HTML pages, each with LINKS links (to other pages, to
images, and repeats, as real sites have), serves it with nginx on 127.0.0.1, and crawls
it with `crawler run --depth D --ignore-robots --per-host 0`. Also times the link
extractor alone, in one thread, to show what parsing costs.

    python bench/crawl_speed.py --pages 2000 --links 50
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from run import NGINX_PORT, OUT, WORK, measure, start_nginx  # noqa: E402

from crawler.links import LinkExtractor  # noqa: E402

IMAGE = b"\xff\xd8\xff\xe0" + bytes(2000) + b"\xff\xd9"


def make_site(root: Path, pages: int, links: int, seed: int = 7) -> int:
    """Write the site; return the number of links in all pages."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "p").mkdir(parents=True)
    (root / "i").mkdir()
    rng = random.Random(seed)
    for number in range(pages):
        (root / "i" / f"{number}.jpg").write_bytes(IMAGE)
    for number in range(pages):
        targets = [f'<a href="/p/{(number + 1) % pages}.html">next</a>']
        for _ in range(links - 1):
            kind = rng.random()
            if kind < 0.6:
                targets.append(f'<a href="/p/{rng.randrange(pages)}.html">page</a>')
            else:
                targets.append(f'<img src="/i/{rng.randrange(pages)}.jpg" alt="">')
        text = " ".join(f"<p>Paragraph {word} of filler text to look like a page.</p>" for word in range(20))
        body = f"<!doctype html><html><head><title>{number}</title></head><body>{text}{''.join(targets)}</body></html>"
        (root / "p" / f"{number}.html").write_text(body)
    return pages * links


def parse_rate(root: Path, sample: int = 500) -> float:
    bodies = [path.read_bytes() for path in sorted((root / "p").iterdir())[:sample]]
    started = time.perf_counter()
    for body in bodies:
        extractor = LinkExtractor("text/html; charset=utf-8")
        extractor.feed(body)
        extractor.close()
    return len(bodies) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--links", type=int, default=50)
    parser.add_argument("--depth", type=int, default=2000, help="deep enough to reach every page")
    parser.add_argument("--c", type=int, default=32)
    args = parser.parse_args()
    www = WORK / "crawl-site"
    total_links = make_site(www, args.pages, args.links)
    print(f"link extractor alone: {parse_rate(www):,.0f} pages/s in one thread", flush=True)
    nginx = start_nginx(www)
    try:
        seeds = WORK / "crawl-seeds.txt"
        seeds.write_text(f"http://127.0.0.1:{NGINX_PORT}/p/0.html\n")
        shutil.rmtree(OUT, ignore_errors=True)
        command = (
            f"{sys.executable} -m crawler run {seeds} -o {OUT} -t {args.c} -q "
            f"--depth {args.depth} --ignore-robots --per-host 0"
        )
        result = measure(command, WORK / "log-crawl.txt")
        records = [json.loads(line) for line in (OUT / "manifest.jsonl").read_text().splitlines()]
    finally:
        nginx.terminate()
        nginx.wait(10)
    pages = sum(1 for record in records if str(record["url"]).endswith(".html") and record["status"] == "ok")
    images = sum(1 for record in records if str(record["url"]).endswith(".jpg") and record["status"] == "ok")
    wall = result["wall"]
    print(
        f"crawl: {pages} pages and {images} images in {wall:.2f} s (exit {result['status']}): "
        f"{pages / wall:,.0f} pages/s parsed, {total_links / wall:,.0f} links/s through the frontier, "
        f"{len(records) / wall:,.0f} URLs/s; CPU {1000 * result['cpu'] / len(records):.2f} ms/URL"
    )
    subprocess.run(["rm", "-rf", str(OUT)], check=False)


if __name__ == "__main__":
    main()
