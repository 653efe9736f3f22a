"""Whole crawls: real processes, real sockets on 127.0.0.1, a loopback HTTP server."""

from __future__ import annotations

import base64
import collections
import gzip
import hashlib
import io
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import finish, run_crawler, start_crawler
from tests.helpers import served_address, wait_for_text, wait_until
from tests.site import Site


def manifest(out: Path) -> dict[str, dict[str, object]]:
    """The last line per URL, as the README promises."""
    records: dict[str, dict[str, object]] = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        records[record["url"]] = record
    return records


def image_site(site: Site, count: int) -> list[str]:
    return [
        site.add(f"/img/{number}.png", body=os.urandom(1000 + number * 37), content_type="image/png")
        for number in range(count)
    ]


def write_seeds(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def assert_saved(out: Path, site: Site, records: dict[str, dict[str, object]], url: str) -> None:
    record = records[url]
    assert record["status"] == "ok", record
    body = site.routes[url.split(str(site.port), 1)[1]].body
    assert (out / str(record["path"])).read_bytes() == body
    assert record["sha256"] == hashlib.sha256(body).hexdigest() and record["bytes"] == len(body)


def test_run_downloads_everything_and_exits_0(tmp_path: Path, site: Site) -> None:
    urls = image_site(site, 30)
    gzipped = site.add(
        "/zipped", body=gzip.compress(b"P" * 5000), content_type="image/png", headers={"Content-Encoding": "gzip"}
    )
    seeds = write_seeds(tmp_path / "seeds.txt", ["# images", *urls, "", urls[0], gzipped])
    out = tmp_path / "out"
    done = run_crawler("run", str(seeds), "-o", str(out), "-w", "2", "-t", "4")
    assert done.returncode == 0, done.stderr
    records = manifest(out)
    assert set(records) == {*urls, gzipped}
    for url in urls:
        assert_saved(out, site, records, url)
    assert (out / str(records[gzipped]["path"])).read_bytes() == b"P" * 5000
    assert str(records[gzipped]["path"]).endswith(".png")
    assert all(site.hits[f"/img/{number}.png"] == 1 for number in range(30))  # the duplicate fetched once
    assert "done: 31 ok, 0 failed of 31 URLs" in done.stderr
    assert not list(out.rglob("*.part"))


def test_failures_exit_1_and_are_recorded(tmp_path: Path, site: Site) -> None:
    good = site.add("/good.png", body=b"fine", content_type="image/png")
    flaky = site.add("/flaky.png", body=b"eventually", content_type="image/png", fail_first=2)
    always = site.add("/down.png", body=b"", fail_first=100)
    cut = site.add("/cut.png", body=os.urandom(20000), truncate=True)
    seeds = write_seeds(
        tmp_path / "seeds.txt",
        [good, flaky, always, cut, site.url("/missing.png"), "ftp://example.com/x", "javascript:alert(1)"],
    )
    out = tmp_path / "out"
    done = run_crawler(
        "run", str(seeds), "-o", str(out), "-w", "1", "-t", "4", "--retries", "2", "--retry-wait", "0.05"
    )
    assert done.returncode == 1, done.stderr
    records = manifest(out)
    assert records[good]["status"] == "ok"
    assert records[flaky]["status"] == "ok" and records[flaky]["attempts"] == 3
    assert records[always]["status"] == "failed" and records[always]["attempts"] == 3
    assert "503" in str(records[always]["error"]) and site.hits["/down.png"] == 3
    assert records[cut]["status"] == "failed" and records[cut]["attempts"] == 3 and records[cut]["path"] is None
    missing = records[site.url("/missing.png")]
    assert missing["status"] == "failed" and missing["attempts"] == 1 and missing["http_status"] == 404
    assert site.hits["/missing.png"] == 1
    assert records["ftp://example.com/x"]["status"] == "failed"
    assert "seeds line 6: invalid URL" in done.stderr and "seeds line 7: invalid URL" in done.stderr
    assert not list(out.rglob("*.part")) and not list(out.rglob("cut*"))


def test_a_stalled_server_cannot_hang_the_crawl(tmp_path: Path, site: Site) -> None:
    slow = site.add("/slow.png", body=b"late", delay=3)
    fast = site.add("/fast.png", body=b"quick")
    seeds = write_seeds(tmp_path / "seeds.txt", [slow, fast])
    out = tmp_path / "out"
    started = time.monotonic()
    done = run_crawler(
        "run", str(seeds), "-o", str(out), "-w", "1", "--timeout", "0.3", "--retries", "1", "--retry-wait", "0.05"
    )
    assert done.returncode == 1
    assert time.monotonic() - started < 20
    records = manifest(out)
    assert records[slow]["status"] == "failed" and "timed out" in str(records[slow]["error"])
    assert records[fast]["status"] == "ok"


def test_seeds_from_stdin(tmp_path: Path, site: Site) -> None:
    urls = image_site(site, 3)
    out = tmp_path / "out"
    process = start_crawler("run", "-", "-o", str(out), "-w", "1", stdin=subprocess.PIPE)
    assert finish(process, input="\n".join(urls))[0] == 0
    assert {url for url, record in manifest(out).items() if record["status"] == "ok"} == set(urls)


def test_a_rerun_fetches_nothing_and_a_deleted_file_is_fetched_again(tmp_path: Path, site: Site) -> None:
    urls = image_site(site, 5)
    seeds = write_seeds(tmp_path / "seeds.txt", urls)
    out = tmp_path / "out"
    assert run_crawler("run", str(seeds), "-o", str(out), "-w", "1").returncode == 0
    assert run_crawler("run", str(seeds), "-o", str(out), "-w", "1").returncode == 0
    assert all(count == 1 for count in site.hits.values())
    (out / str(manifest(out)[urls[2]]["path"])).unlink()
    assert run_crawler("run", str(seeds), "-o", str(out), "-w", "1").returncode == 0
    assert site.hits["/img/2.png"] == 2 and sum(site.hits.values()) == 6
    assert_saved(out, site, manifest(out), urls[2])


def test_master_with_two_workers_and_one_with_a_wrong_key(tmp_path: Path, site: Site) -> None:
    urls = [site.add(f"/p/{number}.png", body=os.urandom(2000), delay=0.01) for number in range(60)]
    seeds = write_seeds(tmp_path / "seeds.txt", urls)
    out, log = tmp_path / "out", tmp_path / "master.log"
    master = start_crawler("master", str(seeds), "-o", str(out), "--bind", "127.0.0.1:0", authkey="right-key", log=log)
    address = served_address(log)
    intruder = start_crawler(
        "worker", "--connect", address, "-o", str(tmp_path / "intruder"), "--connect-timeout", "5", authkey="wrong-key"
    )
    workers = [
        start_crawler("worker", "--connect", address, "-o", str(out), "-t", "2", authkey="right-key") for _ in range(2)
    ]
    status, intruder_error = finish(intruder)
    assert status == 2
    assert "authentication failed" in intruder_error and "Traceback" not in intruder_error
    for worker in workers:
        assert finish(worker)[0] == 0
    status, master_error = finish(master)
    assert status == 0, master_error
    assert "refused a connection: authentication failed" in master_error
    records = manifest(out)
    for url in urls:
        assert_saved(out, site, records, url)
    assert len({record["worker"] for record in records.values()}) == 2  # both workers did some
    assert not (tmp_path / "intruder").exists() or not any((tmp_path / "intruder").rglob("*.png"))
    assert "right-key" not in (out / "manifest.jsonl").read_text()
    assert "right-key" not in master_error


def test_a_worker_started_before_the_master_waits_for_it(tmp_path: Path, site: Site, free_port: int) -> None:
    urls = image_site(site, 5)
    seeds = write_seeds(tmp_path / "seeds.txt", urls)
    out = tmp_path / "out"
    address = f"127.0.0.1:{free_port}"
    log = tmp_path / "worker.log"
    worker = start_crawler("worker", "--connect", address, "-o", str(out), "-v", authkey="k", log=log)
    wait_for_text(log, "no master at", count=2)  # it has tried and is trying again
    master = start_crawler("master", str(seeds), "-o", str(out), "--bind", address, authkey="k")
    status, error = finish(worker)
    assert status == 0 and "connected to" in error
    assert finish(master)[0] == 0
    assert all(record["status"] == "ok" for record in manifest(out).values())


def test_the_last_urls_go_to_idle_threads_not_behind_busy_ones(tmp_path: Path, site: Site, free_port: int) -> None:
    # Eight slow URLs, two workers of four threads: neither may queue URLs the other could start.
    urls = [site.add(f"/slow/{number}.png", body=os.urandom(500), delay=2.0) for number in range(8)]
    seeds = write_seeds(tmp_path / "seeds.txt", urls)
    out = tmp_path / "out"
    address = f"127.0.0.1:{free_port}"
    logs = [tmp_path / f"worker{number}.log" for number in range(2)]
    workers = [
        start_crawler("worker", "--connect", address, "-o", str(out), "-t", "4", "-v", authkey="k", log=log)
        for log in logs
    ]
    for log in logs:  # both are already trying to connect when the master comes up
        wait_for_text(log, "no master at")
    master = start_crawler("master", str(seeds), "-o", str(out), "--bind", address, authkey="k")
    for worker in workers:
        assert finish(worker)[0] == 0
    assert finish(master)[0] == 0
    per_worker = collections.Counter(str(record["worker"]) for record in manifest(out).values())
    assert sorted(per_worker.values()) == [4, 4], per_worker


@pytest.fixture
def second_host() -> Iterator[Site]:
    server = Site("127.0.0.2").start()
    yield server
    server.stop()


def children_argv(pid: int) -> list[str]:
    """The command lines of a process's children, as ps shows them."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode() for child in children]


def test_headers_cookies_and_credentials_reach_the_server_and_no_secret_is_recorded(
    tmp_path: Path, site: Site, second_host: Site
) -> None:
    a_urls = [site.add(f"/a/{number}.png", body=os.urandom(500), delay=0.3) for number in range(6)]
    b_url = second_host.add("/b.png", body=os.urandom(500))
    headers, cookies, netrc = tmp_path / "headers", tmp_path / "cookies.txt", tmp_path / "netrc"
    headers.write_text("X-Api-Key: HEADER-SECRET\n")
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsid\tCOOKIE-SECRET\n")
    netrc.write_text("machine 127.0.0.1 login ann password NETRC-SECRET\n")
    netrc.chmod(0o600)
    with_credentials = b_url.replace("http://", "http://bob:URL-SECRET@")
    seeds = write_seeds(tmp_path / "seeds.txt", [*a_urls, with_credentials])
    out, log = tmp_path / "out", tmp_path / "run.log"
    options = [
        "--header",
        f"@{headers}",
        "--header",
        "X-Tag: t1",
        "--cookies",
        str(cookies),
        "--netrc-file",
        str(netrc),
    ]
    crawl = start_crawler("run", str(seeds), "-o", str(out), "-w", "1", "-t", "1", "-v", *options, log=log)
    wait_until(lambda: bool(children_argv(crawl.pid)), "the local worker to start")
    argv = " ".join(children_argv(crawl.pid))
    status, stderr = finish(crawl)
    assert status == 0, stderr
    a_headers = [headers for path, headers in site.received if path.startswith("/a/")]
    assert len(a_headers) == 6
    for received in a_headers:
        assert (received["X-Api-Key"], received["X-Tag"], received["Cookie"]) == (
            "HEADER-SECRET",
            "t1",
            "sid=COOKIE-SECRET",
        )
        assert received["Authorization"] == "Basic " + base64.b64encode(b"ann:NETRC-SECRET").decode()
    [(_path, b_headers)] = second_host.received
    assert b_headers["Authorization"] == "Basic " + base64.b64encode(b"bob:URL-SECRET").decode()
    assert "Cookie" not in b_headers  # the file's cookie is for 127.0.0.1 only
    records = manifest(out)
    assert set(records) == {*a_urls, b_url}  # the URL without its credentials
    recorded = b"".join(path.read_bytes() for path in [out / "manifest.jsonl", *(out / ".crawler").iterdir()])
    for secret in ("HEADER-SECRET", "COOKIE-SECRET", "NETRC-SECRET", "URL-SECRET"):
        assert secret not in stderr and secret not in argv and secret.encode() not in recorded, secret


def test_resize_end_to_end_keeps_resized_images_and_fails_what_cannot_be_one(tmp_path: Path, site: Site) -> None:
    from PIL import Image

    def jpeg(width: int, height: int) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", (width, height), (90, 90, 200)).save(out, "JPEG")
        return out.getvalue()

    sizes = [(800, 600), (300, 900), (2000, 1000), (64, 64)]
    urls = [site.add(f"/img/{w}x{h}.jpg", body=jpeg(w, h), content_type="image/jpeg") for w, h in sizes]
    corrupt = site.add("/img/corrupt.jpg", body=jpeg(500, 500)[:200], content_type="image/jpeg")
    opted = site.add("/img/noai.jpg", body=jpeg(500, 500), content_type="image/jpeg", headers={"X-Robots-Tag": "noai"})
    seeds = write_seeds(tmp_path / "seeds.txt", [*urls, corrupt, opted])
    out = tmp_path / "out"
    done = run_crawler(
        "run", str(seeds), "-o", str(out), "-w", "2", "-t", "4", "--resize", "128", "--image-format", "png"
    )
    assert done.returncode == 1, done.stderr  # two URLs failed, as they should
    records = manifest(out)
    for url, (width, height) in zip(urls, sizes, strict=True):
        record = records[url]
        scale = 128 / min(width, height)
        assert record["status"] == "ok", record
        assert (record["width"], record["height"]) == (round(width * scale), round(height * scale))
        assert (record["original_width"], record["original_height"], record["image_format"]) == (width, height, "PNG")
        with Image.open(out / str(record["path"])) as saved:
            assert str(record["path"]).endswith(".png") and saved.size == (record["width"], record["height"])
    assert records[corrupt]["status"] == "failed" and str(records[corrupt]["error"]).startswith("not a decodable image")
    assert records[opted]["error"] == "opted out by X-Robots-Tag: noai"
    assert (
        len(list(out.rglob("*.png"))) == len(sizes) and not list(out.rglob("*.jpg")) and not list(out.rglob("*.part"))
    )
