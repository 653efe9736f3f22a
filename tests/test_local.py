"""Worker processes on one machine: how -t is split, and the zygote that forks them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from crawler.local import split_downloads
from tests.conftest import finish, start_crawler
from tests.helpers import manifest_lines, slow_site, start_master, wait_until
from tests.site import Site


@pytest.mark.parametrize(
    ("downloads", "processes", "at_least", "expected"),
    [
        (32, None, 2, [16, 16]),  # run's default on 2 cores: as before, one process per core
        (128, None, 2, [32] * 4),
        (512, None, 2, [64] * 8),  # four processes per core at most
        (3, None, 2, [2, 1]),
        (1, None, 2, [1]),
        (16, None, 1, [16]),  # a worker alone stays one process up to 32
        (33, None, 1, [17, 16]),
        (8, 3, 2, [3, 3, 2]),  # run -w 3 -t 8
        (2, 4, 2, [1, 1, 1, 1]),  # every process downloads something
    ],
)
def test_downloads_are_split_over_processes_of_at_most_32(
    monkeypatch: pytest.MonkeyPatch, downloads: int, processes: int | None, at_least: int, expected: list[int]
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert split_downloads(downloads, processes, at_least) == expected


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_a_worker_past_32_downloads_runs_as_several_processes(tmp_path: Path, site: Site) -> None:
    urls = slow_site(site, 120, 0.05)
    master, address = start_master(tmp_path, urls)
    worker = start_crawler("worker", "--connect", address, "-o", str(tmp_path / "out"), "-t", "40", authkey="k")
    assert finish(worker)[0] == 0
    assert finish(master)[0] == 0
    lines = manifest_lines(tmp_path / "out")
    assert sorted(str(line["url"]) for line in lines) == sorted(urls)
    assert all(line["status"] == "ok" for line in lines)
    assert len({line["worker"] for line in lines}) == 2  # 40 downloads: two processes of 20


def test_sigterm_to_a_worker_of_several_processes_stops_them_all(tmp_path: Path, site: Site) -> None:
    urls = slow_site(site, 200, 0.2)
    master, address = start_master(tmp_path, urls)
    worker = start_crawler("worker", "--connect", address, "-o", str(tmp_path / "out"), "-t", "40", authkey="k")
    wait_until(lambda: len(manifest_lines(tmp_path / "out")) >= 10, "some results")
    (zygote,) = children_of(worker.pid)
    processes = children_of(zygote)
    assert len(processes) == 2
    worker.send_signal(signal.SIGTERM)
    status, _error = finish(worker)
    assert status == 130  # as a worker of one process: SIGTERM is a Ctrl-C
    wait_until(lambda: all(gone(pid) for pid in [zygote, *processes]), "the worker processes to end")
    # They handed back what they held: another worker finishes the crawl.
    helper = start_crawler("worker", "--connect", address, "-o", str(tmp_path / "out"), "-t", "30", authkey="k")
    assert finish(helper)[0] == 0
    assert finish(master)[0] == 0
    final = {str(line["url"]): line["status"] for line in manifest_lines(tmp_path / "out")}
    assert set(final) == set(urls) and set(final.values()) == {"ok"}


def test_run_stops_with_one_line_when_every_local_worker_died(tmp_path: Path, site: Site) -> None:
    urls = slow_site(site, 200, 0.2)
    seeds = tmp_path / "seeds.txt"
    seeds.write_text("\n".join(urls) + "\n")
    out = tmp_path / "out"
    crawl = start_crawler("run", str(seeds), "-o", str(out), "-w", "2", "-t", "4")
    wait_until(lambda: len(children_of(crawl.pid)) == 1 and len(children_of(children_of(crawl.pid)[0])) == 2, "workers")
    (zygote,) = children_of(crawl.pid)
    for pid in children_of(zygote):
        os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    status, error = finish(crawl)
    assert status == 2, error
    assert "all 2 workers exited before the crawl ended (status 137)" in error
    assert time.monotonic() - started < 30
    assert "Traceback" not in error
