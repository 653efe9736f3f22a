"""Watching a crawl from outside: crawler status, /metrics and the page in headless Chromium.

Real processes, a real loopback server, Debian's chromium (the README's test
command installs it). Two slow URLs hold their leases while the others finish,
so the figures stand still long enough to compare the three views.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import finish, run_crawler, start_crawler
from tests.helpers import manifest_lines, seeds_file, wait_for_text, wait_until
from tests.site import Site

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def status_json(out: Path) -> dict[str, Any]:
    done = run_crawler("status", "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    snapshot: dict[str, Any] = json.loads(done.stdout)
    return snapshot


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # loopback only
        return str(response.read().decode())


def page_in_chromium(url: str, profile: Path) -> str:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (apt-get install chromium; the README's test command does it)"
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def figure(dom: str, name: str) -> str:
    match = re.search(rf'<td id="{name}">([^<]*)</td>', dom)
    assert match, f"no {name} in the page"
    return match.group(1)


def test_a_running_crawl_seen_from_a_second_shell_prometheus_and_a_browser(tmp_path: Path, site: Site) -> None:
    slow = [site.add(f"/slow/{number}.png", body=os.urandom(800), delay=10.0) for number in range(2)]
    fast = [site.add(f"/fast/{number}.png", body=os.urandom(800)) for number in range(6)]
    out, log = tmp_path / "out", tmp_path / "run.log"
    seeds = seeds_file(tmp_path, [*slow, *fast])
    # 8 downloads (2 x 4) for 8 URLs: no fast URL waits behind a slow one, so a moment comes when only the slow
    # are left.
    crawl = start_crawler("run", str(seeds), "-o", str(out), "-w", "2", "-t", "8", "--metrics", "127.0.0.1:0", log=log)
    wait_for_text(log, "status page on http://")
    base = re.findall(r"status page on (http://\S+/)", log.read_text())[0]

    def only_the_slow_are_left() -> bool:
        # Not just "everything left is leased": at the start every URL is, the fast ones still in flight,
        # and the figures would move between the views compared below.
        urls = status_json(out)["urls"]
        return bool(urls["ok"] == len(fast) and urls["leased"] == len(slow) and urls["pending"] == 0)

    wait_until(only_the_slow_are_left, "the slow URLs to be all that is left")
    snapshot = status_json(out)
    assert snapshot["running"] and len(snapshot["workers"]) == 2
    assert all(worker["live"] for worker in snapshot["workers"])
    served_ok = sum(1 for line in manifest_lines(out) if line["status"] == "ok")
    metrics = {family.name: family for family in text_string_to_metric_families(fetch(base + "metrics"))}
    outcomes = {sample.labels["outcome"]: sample.value for sample in metrics["crawler_urls"].samples}
    assert outcomes["ok"] == served_ok == snapshot["urls"]["ok"]
    assert [sample.value for sample in metrics["crawler_urls_leased"].samples] == [snapshot["urls"]["leased"]]
    live = json.loads(fetch(base + "status.json"))
    assert live["urls"] == snapshot["urls"]
    dom = page_in_chromium(base, tmp_path / "chromium")
    assert figure(dom, "ok") == str(snapshot["urls"]["ok"])
    assert figure(dom, "leased") == str(snapshot["urls"]["leased"])
    assert figure(dom, "total") == str(len(slow) + len(fast))
    assert all(worker["name"] in dom for worker in snapshot["workers"])

    status, stderr = finish(crawl)
    assert status == 0, stderr
    after = status_json(out)
    assert not after["running"] and after["urls"]["ok"] == len(slow) + len(fast) == sum(site.hits.values())
    text = run_crawler("status", "-o", str(out))
    assert "crawl not running" in text.stdout and f"{len(slow) + len(fast)} ok" in text.stdout


def test_a_bad_metrics_address_is_one_line_and_exit_2(tmp_path: Path) -> None:
    seeds = seeds_file(tmp_path, ["http://127.0.0.1:9/a.png"])
    done = run_crawler("run", str(seeds), "-o", str(tmp_path / "out"), "--metrics", "10.255.255.1:9100")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line == "crawler: error: cannot serve metrics on 10.255.255.1:9100: Cannot assign requested address"


def test_status_of_a_folder_without_a_crawl_is_exit_2(tmp_path: Path) -> None:
    done = run_crawler("status", "-o", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr == f"crawler: error: no crawl in {tmp_path} (expected {tmp_path}/.crawler/state.db)\n"
