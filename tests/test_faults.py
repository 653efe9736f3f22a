"""Fault injection: killed, frozen and interrupted processes, restarts, hostile clients.

Real processes, real sockets on 127.0.0.1 and a loopback HTTP server whose
responses are slowed down so that faults land mid-crawl. Leases are short
(``--lease-seconds``) so that expiries happen within the tests' time.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from crawler.broker.transport import parse_address
from tests.conftest import TestBroker, finish, run_crawler, start_crawler
from tests.helpers import (
    assert_each_url_once_and_ok,
    final_states,
    manifest_lines,
    seeds_file,
    slow_site,
    start_master,
    wait_for_text,
    wait_until,
)
from tests.site import Site


def test_a_worker_killed_mid_download_loses_nothing(tmp_path: Path, site: Site, broker: TestBroker) -> None:
    urls = slow_site(site, 30, delay=0.3)
    out = tmp_path / "out"
    master, address = start_master(tmp_path, urls, "--lease-seconds", "2", broker=broker)
    doomed = start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "4", authkey="k")
    wait_until(lambda: sum(site.hits.values()) >= 4, "the first worker to start downloading")
    doomed.send_signal(signal.SIGKILL)
    finish(doomed)
    survivor = start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "8", authkey="k")
    assert finish(survivor)[0] == 0
    status, error = finish(master)
    assert status == 0 and "expired" in error
    assert_each_url_once_and_ok(out, urls)
    assert any(int(str(line["attempts"])) >= 2 for line in manifest_lines(out))  # the dead worker's leases


def test_a_frozen_worker_comes_back_late_and_changes_nothing(tmp_path: Path, site: Site, broker: TestBroker) -> None:
    urls = slow_site(site, 40, delay=0.3)
    out = tmp_path / "out"
    master, address = start_master(tmp_path, urls, "--lease-seconds", "1.5", broker=broker)
    frozen = start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "3", authkey="k")
    wait_until(lambda: sum(site.hits.values()) >= 3, "the first worker to start downloading")
    frozen.send_signal(signal.SIGSTOP)
    other = start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "2", authkey="k")
    wait_for_text(tmp_path / "master.log", "expired")  # its URLs go to the other worker
    frozen.send_signal(signal.SIGCONT)
    assert finish(other)[0] == 0
    assert finish(frozen)[0] == 0
    status, error = finish(master)
    assert status == 0 and "expired" in error
    assert_each_url_once_and_ok(out, urls)


def test_a_killed_master_resumes_without_refetching_and_workers_reconnect(
    tmp_path: Path, site: Site, broker: TestBroker
) -> None:
    urls = slow_site(site, 40, delay=0.1)
    out = tmp_path / "out"
    master, address = start_master(tmp_path, urls, broker=broker)
    worker = start_crawler(
        "worker", *broker.worker_args(address), "-o", str(out), "-t", "2", "--connect-timeout", "30", authkey="k"
    )
    wait_until(lambda: len(manifest_lines(out)) >= 10, "ten URLs to be done")
    master.send_signal(signal.SIGKILL)
    finish(master)
    done_before = {str(line["url"]) for line in manifest_lines(out) if line["status"] == "ok"}
    # Where the workers look for it: the port the first master got.
    restarted, _address = start_master(tmp_path, urls, bind=address, log_name="restarted.log", broker=broker)
    status, error = finish(restarted)
    assert status == 0, error
    assert finish(worker)[0] == 0
    for url in done_before:
        assert site.hits[url.split(str(site.port), 1)[1]] == 1, url
    states = final_states(out)
    assert set(states) == set(urls) and all(state["status"] == "ok" for state in states.values())
    assert not list(out.rglob("*.part"))


def test_idle_and_garbage_connections_do_not_stop_the_crawl(tmp_path: Path, site: Site) -> None:
    urls = slow_site(site, 10, delay=0.0)
    out = tmp_path / "out"
    master, address = start_master(tmp_path, urls)
    hostile: list[socket.socket] = []
    try:
        for number in range(150):
            sock = socket.create_connection(parse_address(address), timeout=5)
            if number % 10 == 0:
                sock.sendall(os.urandom(64))
            hostile.append(sock)
        started = time.monotonic()
        worker = start_crawler("worker", "--connect", address, "-o", str(out), authkey="k")
        assert finish(worker)[0] == 0
        status, error = finish(master)
        assert status == 0, error
        assert time.monotonic() - started < 30
    finally:
        for sock in hostile:
            sock.close()
    assert all(state["status"] == "ok" for state in final_states(out).values())


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_master_exits_130_and_the_crawl_resumes(tmp_path: Path, site: Site, stop: int) -> None:
    urls = slow_site(site, 60, delay=0.1)
    seeds, out = seeds_file(tmp_path, urls), tmp_path / "out"
    first = start_crawler("run", str(seeds), "-o", str(out), "-w", "1", "-t", "2")
    wait_until(lambda: len(manifest_lines(out)) >= 5, "five URLs to be done")
    first.send_signal(stop)
    status, error = finish(first)
    assert status == 130, error
    assert "interrupted" in error
    done_before = {str(line["url"]) for line in manifest_lines(out)}
    assert 5 <= len(done_before) < len(urls)
    second = run_crawler("run", str(seeds), "-o", str(out), "-w", "2", "-t", "8")
    assert second.returncode == 0, second.stderr
    assert all(site.hits[url.split(str(site.port), 1)[1]] == 1 for url in done_before)
    assert set(final_states(out)) == set(urls)


def test_ctrl_c_on_a_worker_gives_its_urls_back_at_once(tmp_path: Path, site: Site, broker: TestBroker) -> None:
    urls = slow_site(site, 20, delay=0.3)
    out = tmp_path / "out"
    # A lease far longer than the test: only an explicit release can bring the URLs back in time.
    master, address = start_master(tmp_path, urls, "--lease-seconds", "600", broker=broker)
    quitter = start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "4", authkey="k")
    wait_until(lambda: sum(site.hits.values()) >= 4, "the worker to start downloading")
    quitter.send_signal(signal.SIGINT)
    status, error = finish(quitter)
    assert status == 130 and "gave" in error
    other = start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "4", authkey="k")
    assert finish(other)[0] == 0
    assert finish(master)[0] == 0
    assert_each_url_once_and_ok(out, urls)


def test_urls_that_failed_are_tried_again_on_the_next_run(tmp_path: Path, site: Site) -> None:
    url = site.add("/heals.png", body=b"x" * 3000, fail_first=1000)
    seeds, out = seeds_file(tmp_path, [url]), tmp_path / "out"
    first = run_crawler("run", str(seeds), "-o", str(out), "-w", "1", "--retries", "1", "--retry-wait", "0.05")
    assert first.returncode == 1 and final_states(out)[url]["status"] == "failed"
    site.routes["/heals.png"].fail_first = 0
    second = run_crawler("run", str(seeds), "-o", str(out), "-w", "1")
    assert second.returncode == 0, second.stderr
    assert final_states(out)[url]["status"] == "ok"
    assert site.hits["/heals.png"] == 3


def test_a_worker_losing_its_master_for_good_exits_2(tmp_path: Path, site: Site) -> None:
    urls = slow_site(site, 50, delay=0.2)
    out = tmp_path / "out"
    master, address = start_master(tmp_path, urls)
    worker = start_crawler(
        "worker", "--connect", address, "-o", str(out), "-t", "2", "--connect-timeout", "1", authkey="k"
    )
    wait_until(lambda: len(manifest_lines(out)) >= 2, "two URLs to be done")
    master.send_signal(signal.SIGKILL)
    finish(master)
    status, error = finish(worker)
    assert status == 2
    assert "lost the master" in error and f"no master at {address}" in error


def test_a_download_longer_than_its_lease_is_kept_alive_by_the_heartbeat(
    tmp_path: Path, site: Site, broker: TestBroker
) -> None:
    # Each response takes four lease periods; only the worker's renewals keep the URLs its own.
    urls = slow_site(site, 4, delay=4.0)
    out = tmp_path / "out"
    master, address = start_master(tmp_path, urls, "--lease-seconds", "1", "--timeout", "10", broker=broker)
    workers = [
        start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "4", authkey="k") for _ in range(2)
    ]
    for worker in workers:
        assert finish(worker)[0] == 0
    status, error = finish(master)
    assert status == 0, error
    assert "expired" not in error
    assert all(count == 1 for count in site.hits.values()), site.hits
    assert all(line["attempts"] == 1 for line in manifest_lines(out))
    assert_each_url_once_and_ok(out, urls)


def test_a_busy_worker_whose_leases_expired_still_hears_the_end(tmp_path: Path, site: Site, broker: TestBroker) -> None:
    # The first request for /stuck stalls 10 s; the re-issued one is quick.
    stuck = site.add("/stuck.png", body=os.urandom(3000), delay=10.0, delay_hits=1)
    quick = site.add("/quick.png", body=os.urandom(3000))
    out = tmp_path / "out"
    master, address = start_master(tmp_path, [stuck, quick], "--lease-seconds", "1", broker=broker)
    # One thread, stalled on /stuck: the worker has no idle thread to ask for work with.
    busy = start_crawler(
        "worker", *broker.worker_args(address), "-o", str(out), "-t", "1", "--connect-timeout", "2", authkey="k"
    )
    wait_until(lambda: site.hits["/stuck.png"] == 1, "the stalled request")
    busy.send_signal(signal.SIGSTOP)
    wait_for_text(tmp_path / "master.log", "expired")  # awake again, it heartbeats but holds nothing
    busy.send_signal(signal.SIGCONT)
    helper = start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "2", authkey="k")
    assert finish(helper)[0] == 0
    status, error = finish(master)
    assert status == 0, error
    # It is still inside the 10 s download when the crawl ends, and must hear so, not lose the master.
    status, error = finish(busy)
    assert status == 0, error
    assert site.hits["/stuck.png"] == 2
    assert_each_url_once_and_ok(out, [stuck, quick])


def test_a_full_disk_on_the_master_exits_2_and_the_next_run_loses_nothing(tmp_path: Path, site: Site) -> None:
    urls = slow_site(site, 10, delay=0.0)
    seeds, out = seeds_file(tmp_path, urls), tmp_path / "out"
    out.mkdir()
    # Every write to the manifest fails as on a full disk (ENOSPC, from the kernel).
    (out / "manifest.jsonl").symlink_to("/dev/full")
    full = run_crawler("run", str(seeds), "-o", str(out), "-w", "1", timeout=30)
    assert full.returncode == 2
    assert full.stderr.strip().splitlines()[-1] == (
        f"crawler: error: cannot write the manifest in {out}: No space left on device"
    )
    assert "Traceback" not in full.stderr
    (out / "manifest.jsonl").unlink()
    again = run_crawler("run", str(seeds), "-o", str(out), "-w", "1")
    assert again.returncode == 0, again.stderr
    assert_each_url_once_and_ok(out, urls)
