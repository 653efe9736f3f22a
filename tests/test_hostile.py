"""Hostile servers, pages, seed files and peers: every URL still ends in a result.

End to end, with real processes: each test here hung, crashed or lied before
the fix it guards (see the issue "Every hostile input ends in a result").
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crawler.broker.transport import parse_address
from tests.conftest import finish, run_crawler, start_crawler
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

# Long enough for a slow CI machine, short enough that a hang fails the test rather than CI.
HANG_LIMIT = 40


def run_to_end(tmp_path: Path, urls: list[str], *options: str) -> tuple[int, str, dict[str, dict[str, object]]]:
    seeds, out = seeds_file(tmp_path, urls), tmp_path / "out"
    done = run_crawler("run", str(seeds), "-o", str(out), "-w", "1", "-t", "2", *options, timeout=HANG_LIMIT)
    return done.returncode, done.stderr, final_states(out)


def test_a_redirect_to_an_unparseable_url_fails_that_url_and_the_crawl_ends(tmp_path: Path, site: Site) -> None:
    bad = site.add("/bad-redirect", status=302, headers={"Location": "http://[::1"})
    good = site.add("/good.png", body=b"png")
    status, stderr, states = run_to_end(tmp_path, [bad, good])
    assert status == 1, stderr
    assert states[bad]["status"] == "failed"
    assert str(states[bad]["error"]).startswith("bad redirect target: "), states[bad]
    assert states[good]["status"] == "ok"
    assert "Traceback" not in stderr and "Exception in thread" not in stderr


def test_a_page_in_a_bytes_codec_is_crawled_as_utf8(tmp_path: Path, site: Site) -> None:
    image = site.add("/a.png", body=b"png", content_type="image/png")
    page = site.add("/index.html", body=b'<a href="/a.png">a</a>', content_type="text/html; charset=base64")
    status, stderr, states = run_to_end(tmp_path, [page], "--depth", "1", "--ignore-robots")
    assert status == 0, stderr
    assert states[image]["status"] == "ok" and states[image]["parent"] == page


def test_a_base_that_does_not_parse_is_ignored_and_the_master_carries_on(tmp_path: Path, site: Site) -> None:
    image = site.add("/a.png", body=b"png", content_type="image/png")
    page = site.page("/index.html", '<base href="http://[::1"><img src="a.png">')
    status, stderr, states = run_to_end(tmp_path, [page], "--depth", "1", "--ignore-robots")
    assert status == 0, stderr
    assert set(states) == {page, image}
    assert "Traceback" not in stderr
    again = run_to_end(tmp_path, [page], "--depth", "1", "--ignore-robots")  # and a rerun does not crash either
    assert again[0] == 0, again[1]


def test_a_server_trickling_inside_the_timeout_is_stopped_at_max_time(tmp_path: Path, site: Site) -> None:
    trickle = site.add("/trickle.bin", body=b"x" * 1000, trickle=0.3)  # 300 s in all, a byte every 0.3 s
    started = time.monotonic()
    status, stderr, states = run_to_end(tmp_path, [trickle], "--timeout", "3", "--retries", "0", "--max-time", "2")
    assert status == 1, stderr
    assert states[trickle]["error"] == "took longer than --max-time 2 s (gave up after 1 attempts)"
    assert time.monotonic() - started < 20
    assert not list((tmp_path / "out").rglob("*.part"))


def test_a_seeds_file_with_a_byte_order_mark_keeps_its_first_line(tmp_path: Path, site: Site) -> None:
    urls = [site.add(f"/{number}.png", body=b"png") for number in range(2)]
    seeds, out = tmp_path / "seeds.txt", tmp_path / "out"
    seeds.write_bytes(b"\xef\xbb\xbf" + "\n".join(urls).encode() + b"\n")
    done = run_crawler("run", str(seeds), "-o", str(out), "-w", "1")
    assert done.returncode == 0, done.stderr
    assert set(final_states(out)) == set(urls)


def test_a_binary_seeds_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    seeds, out = tmp_path / "seeds.bin", tmp_path / "out"
    seeds.write_bytes(os.urandom(1024 * 1024))
    done = run_crawler("run", str(seeds), "-o", str(out), "-w", "1")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("crawler: error: no valid URL in the seeds file (") and len(line) < 400
    assert manifest_lines(out) == []


def test_a_manifest_deleted_mid_crawl_is_whole_at_the_end(tmp_path: Path, site: Site) -> None:
    urls = slow_site(site, 30, delay=0.1)
    seeds, out = seeds_file(tmp_path, urls), tmp_path / "out"
    crawl = start_crawler("run", str(seeds), "-o", str(out), "-w", "1", "-t", "2")
    wait_until(lambda: len(manifest_lines(out)) >= 5, "five URLs to be done")
    (out / "manifest.jsonl").unlink()
    status, stderr = finish(crawl)
    assert status == 0, stderr
    assert "writing it again from the crawl state" in stderr
    assert_each_url_once_and_ok(out, urls)


def test_ctrl_c_on_a_worker_waiting_for_work_exits_130_cleanly(tmp_path: Path, site: Site) -> None:
    urls = slow_site(site, 2, delay=3.0)
    out = tmp_path / "out"
    master, address = start_master(tmp_path, urls)
    busy = start_crawler("worker", "--connect", address, "-o", str(out), "-t", "2", authkey="k")
    wait_until(lambda: sum(site.hits.values()) == 2, "the first worker to take both URLs")
    log = tmp_path / "waiting.log"
    waiting = start_crawler("worker", "--connect", address, "-o", str(out), "-t", "2", authkey="k", log=log)
    wait_for_text(log, "connected to")
    time.sleep(0.3)  # inside its blocking get, where the interrupted reply used to stay on the connection
    waiting.send_signal(signal.SIGINT)
    assert waiting.wait(HANG_LIMIT) == 130
    stderr = log.read_text()
    assert "gave 0 URLs back" in stderr, stderr
    assert "Traceback" not in stderr and "Empty" not in stderr
    assert finish(busy)[0] == 0
    assert finish(master)[0] == 0
    assert_each_url_once_and_ok(out, urls)


def test_ctrl_c_on_crawler_run_stops_master_and_workers_without_a_traceback(tmp_path: Path, site: Site) -> None:
    # Two slow URLs, both taken by one worker's two threads: the other worker waits in get.
    urls = slow_site(site, 2, delay=3.0)
    seeds, out = seeds_file(tmp_path, urls), tmp_path / "out"
    log = tmp_path / "run.log"
    crawl = start_crawler("run", str(seeds), "-o", str(out), "-w", "2", "-t", "2", "-v", log=log, new_session=True)
    wait_for_text(log, "connected to", count=2)  # both workers
    wait_until(lambda: sum(site.hits.values()) == 2, "both URLs to be taken")
    time.sleep(0.3)  # the idle thread's worker is back inside its blocking get
    os.killpg(crawl.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    status = crawl.wait(HANG_LIMIT)
    stderr = log.read_text()
    assert status == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr and "Empty" not in stderr
    again = run_crawler("run", str(seeds), "-o", str(out), "-w", "2", "-t", "8")
    assert again.returncode == 0, again.stderr
    assert_each_url_once_and_ok(out, urls)


@contextmanager
def idle_connections(address: str, count: int = 200) -> Iterator[list[int]]:
    """Keep ``count`` connections to ``address`` open, never speaking, reopening each one the master sheds.

    Yields a list that holds, once the flood is up, how many connections it opened.
    """
    stop, opened, full = threading.Event(), [0], threading.Event()

    def hold() -> None:
        sockets: list[socket.socket] = []
        while not stop.is_set():
            shed = [sock for sock in sockets if not _still_open(sock)]
            for sock in shed:
                sock.close()
            sockets = [sock for sock in sockets if sock not in shed]
            while len(sockets) < count and not stop.is_set():
                try:
                    sockets.append(socket.create_connection(parse_address(address), timeout=1))
                    opened[0] += 1
                except OSError:
                    break
            full.set()
            stop.wait(0.05)
        for sock in sockets:
            sock.close()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        assert full.wait(HANG_LIMIT), "the flood did not start"
        yield opened
    finally:
        stop.set()
        thread.join(10)


def _still_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        # Read all that waits (the master's handshake challenge comes first), then the end if it came.
        return sock.recv(65536) != b"" and sock.recv(65536) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_idle_connections_renewed_without_end_do_not_keep_workers_out(tmp_path: Path, site: Site) -> None:
    urls = slow_site(site, 10, delay=0.0)
    out = tmp_path / "out"
    master, address = start_master(tmp_path, urls)
    with idle_connections(address) as opened:
        started = time.monotonic()
        worker = start_crawler("worker", "--connect", address, "-o", str(out), "--connect-timeout", "15", authkey="k")
        assert finish(worker, timeout=HANG_LIMIT)[0] == 0
        status, log = finish(master, timeout=HANG_LIMIT)
        assert status == 0, log
        assert time.monotonic() - started < 10  # not the flood's 20 s, nor the handshake limit's 5 s each
        assert opened[0] > 200  # the master shed some, and the flood opened them again
    assert all(state["status"] == "ok" for state in final_states(out).values())
    warnings = [line for line in log.splitlines() if "refused a connection" in line]
    assert 1 <= len(warnings) <= 5, warnings[:10]  # rate-limited, with a count
