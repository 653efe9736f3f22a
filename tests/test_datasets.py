"""Datasets end to end: a CSV of URLs and captions in, WebDataset shards out, with workers killed on the way.

Real processes, real sockets, a loopback HTTP server; the shards are read
back with tarfile and with the webdataset library, as a training loader would.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import signal
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as parquet
import webdataset
from PIL import Image

from crawler.broker.manager import ManagerConnector
from crawler.broker.transport import parse_address
from crawler.messages import Outcome, Policy, Result
from crawler.shards import ShardBook
from tests.conftest import TestBroker, finish, run_crawler, start_crawler
from tests.helpers import served_address, wait_until
from tests.site import Site


def image(number: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40 + number, 30), (number * 5 % 256, 80, 160)).save(out, "PNG")
    return out.getvalue()


def image_table(tmp_path: Path, site: Site, count: int, delay: float = 0.0) -> tuple[Path, dict[str, bytes]]:
    """A CSV of ``count`` image URLs with captions and licenses; returns it and each URL's body."""
    bodies = {}
    table = tmp_path / "images.csv"
    with open(table, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["url", "caption", "license", "unused"])
        for number in range(count):
            body = image(number)
            url = site.add(f"/i/{number}.png", body=body, content_type="image/png", delay=delay)
            bodies[url] = body
            writer.writerow([url, f"picture number {number}", "cc-by", "x"])
    return table, bodies


def shard_samples(out: Path) -> dict[str, dict[str, bytes]]:
    """Every sample of every final shard, by key; fails on a key found twice."""
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, _, extension = member.name.partition(".")
                body = tar.extractfile(member)
                assert body is not None
                entry = samples.setdefault(key, {})
                assert extension not in entry, f"key {key} twice"
                entry[extension] = body.read()
    return samples


def loader_samples(shards: list[Path]) -> list[dict[str, Any]]:
    """The samples as webdataset's loader makes them from tar streams: the steps WebDataset runs, but
    with the files opened and closed here (its own opener leaves them to the garbage collector)."""
    with contextlib.ExitStack() as stack:
        streams = [{"url": str(path), "stream": stack.enter_context(open(path, "rb"))} for path in shards]
        files = webdataset.tariterators.tar_file_expander(streams)
        return list(webdataset.tariterators.group_by_keys(files))


def assert_each_row_once(out: Path, bodies: dict[str, bytes], rows: dict[str, int]) -> None:
    """Each URL's sample is in exactly one final shard, under its row's key; nothing else is."""
    samples = shard_samples(out)
    assert sorted(samples) == sorted(f"{row:09d}" for row in rows.values())
    for url, row in rows.items():
        sample = samples[f"{row:09d}"]
        meta = json.loads(sample["json"])
        assert meta["url"] == url and sample["png"] == bodies[url]
    assert not list((out / "shards").glob("*.part"))  # no torn shard left, under any name
    staging = out / ".crawler" / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    lines = {}
    for line in (out / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        lines[record["url"]] = record
    for url, row in rows.items():
        shard, _, key = str(lines[url]["path"]).partition("#")
        assert key == f"{row:09d}" and (out / shard).is_file() and lines[url]["status"] == "ok"


def test_a_csv_with_captions_becomes_shards_a_training_loader_reads(tmp_path: Path, site: Site) -> None:
    table, bodies = image_table(tmp_path, site, 23)
    with open(table, "a") as file:
        file.write(",a row without a URL,cc0,x\nftp://example.com/x.png,wrong scheme,cc0,x\n")
    out = tmp_path / "out"
    done = run_crawler(
        "run", str(table), "-o", str(out), "-w", "2", "-t", "4", "--output-format", "webdataset",
        "--save-cols", "caption,license", "--shard-size", "5",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr  # the two bad rows failed
    assert "row 24: no URL in column 'url'" in done.stderr
    rows = {url: number + 1 for number, url in enumerate(bodies)}
    assert_each_row_once(out, bodies, rows)
    shards = sorted((out / "shards").glob("*.tar"))
    assert len(shards) >= 5  # 23 samples, at most 5 a shard
    # A training loader's view: the webdataset library groups each key's files into a sample.
    loaded = loader_samples(shards)
    assert sorted(sample["__key__"] for sample in loaded) == sorted(f"{row:09d}" for row in rows.values())
    for sample in loaded:
        number = int(sample["__key__"]) - 1
        assert sample["txt"] == f"picture number {number}".encode()
        meta = json.loads(sample["json"])
        assert meta["caption"] == f"picture number {number}" and meta["license"] == "cc-by" and "unused" not in meta
        assert Image.open(io.BytesIO(sample["png"])).size == (40 + number, 30)
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    good = [record for record in records if record["status"] == "ok"]
    assert all(
        record["columns"] == {"caption": f"picture number {record['row'] - 1}", "license": "cc-by"} for record in good
    )
    bad = sorted((record["row"], record["error"]) for record in records if record["status"] == "failed")
    assert [row for row, _error in bad] == [24, 25]
    # The same manifest as Parquet, typed, for the tools dataset builders filter with.
    exported = run_crawler("manifest", "-o", str(out), "--format", "parquet")
    assert exported.returncode == 0, exported.stderr
    frame = parquet.read_table(out / "manifest.parquet")
    assert str(frame.schema.field("bytes").type) == "int64" and str(frame.schema.field("kept").type) == "bool"
    ok_rows = [row for row in frame.to_pylist() if row["status"] == "ok"]
    assert len(ok_rows) == 23 and all(row["shard"].startswith("shards/") and len(row["key"]) == 9 for row in ok_rows)


def test_a_rerun_of_a_finished_dataset_fetches_nothing(tmp_path: Path, site: Site) -> None:
    table, bodies = image_table(tmp_path, site, 6)
    out = tmp_path / "out"
    options = ["-w", "1", "-t", "2", "--output-format", "webdataset", "--save-cols", "caption"]
    assert run_crawler("run", str(table), "-o", str(out), *options).returncode == 0
    first = sorted(path.name for path in (out / "shards").glob("*.tar"))
    again = run_crawler("run", str(table), "-o", str(out), *options)
    assert again.returncode == 0, again.stderr
    assert sorted(path.name for path in (out / "shards").glob("*.tar")) == first
    assert all(count == 1 for count in site.hits.values())
    # A deleted shard: its samples, and only they, are fetched again into a new one.
    (out / "shards" / first[0]).unlink()
    assert run_crawler("run", str(table), "-o", str(out), *options).returncode == 0
    assert_each_row_once(out, bodies, {url: number + 1 for number, url in enumerate(bodies)})


def start_dataset_master(
    tmp_path: Path, table: Path, broker: TestBroker, *options: str
) -> tuple[subprocess.Popen[str], str]:
    log = tmp_path / "master.log"
    master = start_crawler(
        "master", str(table), "-o", str(tmp_path / "out"), *broker.master_args(), "--output-format", "webdataset",
        "--save-cols", "caption", "--lease-seconds", "2", *options, authkey="k", log=log,
    )  # fmt: skip
    return master, served_address(log)


def test_a_worker_killed_while_filling_a_shard_loses_no_sample_and_leaves_no_torn_tar(
    tmp_path: Path, site: Site, broker: TestBroker
) -> None:
    table, bodies = image_table(tmp_path, site, 30, delay=0.1)
    out = tmp_path / "out"
    master, address = start_dataset_master(tmp_path, table, broker, "--shard-size", "1000", "--shard-seconds", "600")
    doomed = start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "4", authkey="k")
    wait_until(lambda: sum(site.hits.values()) >= 10, "the first worker to fill its shard")
    [part] = (out / "shards").glob("*.tar.part")
    doomed.send_signal(signal.SIGKILL)
    finish(doomed)
    survivor = start_crawler("worker", *broker.worker_args(address), "-o", str(out), "-t", "4", authkey="k")
    assert finish(survivor)[0] == 0
    status, error = finish(master)
    assert status == 0, error
    assert not part.exists()  # the dead worker's torn shard is gone
    assert_each_row_once(out, bodies, {url: number + 1 for number, url in enumerate(bodies)})


def test_a_shard_renamed_but_never_reported_does_not_count(tmp_path: Path, site: Site) -> None:
    """A worker dies after the rename, before its results reach the master: the URLs go into another shard."""
    table, bodies = image_table(tmp_path, site, 8)
    out = tmp_path / "out"
    master, address = start_dataset_master(tmp_path, table, TestBroker())
    # A worker by hand: it takes every URL, writes them into a shard and renames it, then dies unheard.
    link = ManagerConnector(parse_address(address), b"k")("by-hand:1", 8)
    tasks = link.get(True, 10, 8, 0)
    assert len(tasks) == 8
    book = ShardBook(out, Policy(shard_size=8))
    for task in tasks:
        staged = out / "staging-by-hand" / f"{task.id}.png"
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(b"not what the site serves")
        closed = book.add(task, Result(task.id, task.url, Outcome.OK, path=f"x/{task.id}.png"), staged)
    assert closed is not None and len(closed) == 8
    [orphan] = (out / "shards").glob("*.tar")
    # It dies unheard: no result, no renewal; its leases run out.
    worker = start_crawler("worker", "--connect", address, "-o", str(out), "-t", "4", authkey="k")
    assert finish(worker)[0] == 0
    status, error = finish(master)
    assert status == 0, error
    assert not orphan.exists()  # never accepted: removed at the end, never listed
    assert_each_row_once(out, bodies, {url: number + 1 for number, url in enumerate(bodies)})


def test_resume_after_the_master_is_killed(tmp_path: Path, site: Site, broker: TestBroker) -> None:
    table, bodies = image_table(tmp_path, site, 40, delay=0.05)
    out = tmp_path / "out"
    options = ("--shard-size", "6")
    master, address = start_dataset_master(tmp_path, table, broker, *options)
    worker = start_crawler(
        "worker", *broker.worker_args(address), "-o", str(out), "-t", "3", "--connect-timeout", "60", authkey="k"
    )
    wait_until(lambda: len(list((out / "shards").glob("*.tar"))) >= 2, "a few shards")
    master.send_signal(signal.SIGKILL)
    finish(master)
    bind = [] if broker.redis is not None else ["--bind", address]
    again = start_crawler(
        "master", str(table), "-o", str(out), *(bind or broker.master_args()), "--output-format", "webdataset",
        "--save-cols", "caption", "--lease-seconds", "2", *options, authkey="k", log=tmp_path / "again.log",
    )  # fmt: skip
    assert finish(worker)[0] == 0
    status, error = finish(again)
    assert status == 0, error
    assert_each_row_once(out, bodies, {url: number + 1 for number, url in enumerate(bodies)})
