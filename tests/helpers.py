"""Helpers shared by the process tests: waiting, reading the manifest, starting a master."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import MANAGER, TestBroker, start_crawler
from tests.site import Site

WAIT_LIMIT = 30.0


class Clock:
    """A clock that moves only when a test moves it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def wait_until(condition: Callable[[], bool], what: str, limit: float = WAIT_LIMIT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def manifest_lines(out: Path) -> list[dict[str, object]]:
    path = out / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def final_states(out: Path) -> dict[str, dict[str, object]]:
    return {str(line["url"]): line for line in manifest_lines(out)}


def slow_site(site: Site, count: int, delay: float) -> list[str]:
    return [site.add(f"/f/{number}.png", body=os.urandom(3000), delay=delay) for number in range(count)]


def seeds_file(tmp_path: Path, urls: list[str]) -> Path:
    path = tmp_path / "seeds.txt"
    path.write_text("\n".join(urls) + "\n")
    return path


def start_master(
    tmp_path: Path,
    urls: list[str],
    *options: str,
    bind: str = "127.0.0.1:0",
    log_name: str = "master.log",
    broker: TestBroker = MANAGER,
) -> tuple[subprocess.Popen[str], str]:
    """Start a master with key ``k`` on a port of its choosing (or on ``broker``'s Redis);
    return it and the address it serves on."""
    seeds, log = seeds_file(tmp_path, urls), tmp_path / log_name
    master = start_crawler(
        "master", str(seeds), "-o", str(tmp_path / "out"), *broker.master_args(bind), *options, authkey="k", log=log
    )
    return master, served_address(log)


def served_address(log: Path) -> str:
    """The HOST:PORT a master logged it serves on, once it has."""
    wait_until(lambda: "serving on " in log.read_text(), "the master to serve")
    return log.read_text().split("serving on ", 1)[1].split()[0]


def wait_for_text(log: Path, text: str, count: int = 1) -> None:
    wait_until(lambda: log.read_text().count(text) >= count, f"{text!r} in {log.name}")


def assert_each_url_once_and_ok(out: Path, urls: list[str]) -> None:
    lines = manifest_lines(out)
    per_url = collections.Counter(str(line["url"]) for line in lines)
    assert set(per_url) == set(urls)
    assert all(count == 1 for count in per_url.values()), per_url.most_common(3)
    assert all(line["status"] == "ok" for line in lines)
    for line in lines:
        assert (out / str(line["path"])).stat().st_size == 3000
    assert not list(out.rglob("*.part"))
