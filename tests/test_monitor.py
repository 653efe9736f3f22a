"""The status snapshot, its file, the metrics and the text, without a crawl."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from crawler.broker.frontier import Frontier
from crawler.errors import UsageError
from crawler.ledger import Ledger
from crawler.messages import Outcome, Policy, Result, Status, Task
from crawler.monitor import Monitor, read_status, render_status
from crawler.output import CrawlOutput
from crawler.state import FinalRecord
from crawler.web import Metrics
from tests.helpers import Clock


def make_monitor(tmp_path: Path, clock: Clock) -> tuple[Monitor, Ledger, Frontier, CrawlOutput]:
    output = CrawlOutput.open(tmp_path, 0, 30)
    ledger = Ledger(output)
    frontier = Frontier(30, clock=clock)
    return Monitor(tmp_path, ledger, frontier, Policy(), clock=clock), ledger, frontier, output  # type: ignore[arg-type]


def finish(ledger: Ledger, url: str, ok: bool, error: str | None = None) -> None:
    status = Status.OK if ok else Status.FAILED
    ledger.record([FinalRecord(url=url, status=status, bytes=1000 if ok else None, error=error, attempts=1)])


def test_the_snapshot_counts_rates_workers_and_failures(tmp_path: Path) -> None:
    clock = Clock()
    monitor, ledger, frontier, output = make_monitor(tmp_path, clock)
    output.state.add_urls([f"http://a.example/{number}" for number in range(10)])
    ledger.counts.known(10)
    frontier.add([Task(number, f"http://a.example/{number}", 1) for number in range(1, 5)])
    frontier.connect("w1", 2)
    taken = frontier.take("w1", 2, 0)
    monitor.tick()
    clock.now += 60
    for number in range(3):
        finish(ledger, f"http://a.example/{number}", ok=True)
    finish(ledger, "http://a.example/3", ok=False, error="HTTP 404 Not Found")
    frontier.deliver("w1", [Result(taken[0].id, taken[0].url, Outcome.OK, attempt=1)])
    monitor.tick()
    snapshot = monitor.snapshot
    assert snapshot["running"] and snapshot["urls"] == {
        "total": 10, "ok": 3, "failed": 1, "pending": 5, "leased": 1, "retry_waiting": 0,
    }  # fmt: skip
    assert snapshot["bytes"] == 3000
    assert snapshot["rate"]["urls_per_second_last_minute"] == round(4 / 60, 2)
    assert snapshot["eta_seconds"] == round(6 / (4 / 60))
    assert snapshot["failures"] == [("HTTP 404 Not Found", 1)]
    [worker] = snapshot["workers"]
    assert (worker["name"], worker["threads"], worker["leases"], worker["done"]) == ("w1", 2, 1, 1)
    assert snapshot["oldest_lease_seconds"] == 60.0
    assert snapshot["history"] == [[1, round(4 / 60, 2)]]
    output.close()


def test_bytes_saved_count_earlier_runs_and_rates_only_this_one(tmp_path: Path) -> None:
    output = CrawlOutput.open(tmp_path, 0, 30)
    output.state.add_urls(["http://a/1"])
    (tmp_path / "earlier.png").write_bytes(b"x" * 5000)  # the file is there: nothing to fetch again
    earlier = FinalRecord(id=1, url="http://a/1", status=Status.OK, path="earlier.png", bytes=5000, attempts=1)
    output.state.save([earlier])
    output.close()
    clock = Clock()
    monitor, ledger, _frontier, output = make_monitor(tmp_path, clock)
    monitor.tick()
    clock.now += 10
    finish(ledger, "http://a/2", ok=True)
    monitor.tick()
    assert monitor.snapshot["bytes"] == 6000
    assert monitor.snapshot["rate"]["mb_per_second_last_minute"] == round(1000 / 10 / 1e6, 3)
    output.close()


def test_the_status_file_is_what_status_reads_and_a_dead_master_is_not_running(tmp_path: Path) -> None:
    monitor, _ledger, _frontier, output = make_monitor(tmp_path, Clock())
    monitor.tick()
    assert read_status(tmp_path) == json.loads(json.dumps(monitor.snapshot))
    written = json.loads((tmp_path / ".crawler" / "status.json").read_text())
    written["pid"] = 2**22 + 12345  # no such process
    (tmp_path / ".crawler" / "status.json").write_text(json.dumps(written))
    assert read_status(tmp_path)["running"] is False
    output.close()


def test_without_a_status_file_the_state_alone_answers(tmp_path: Path) -> None:
    output = CrawlOutput.open(tmp_path, 0, 30)
    output.state.add_urls(["http://a/1", "http://a/2", "http://a/3"])
    output.state.save([
        FinalRecord(id=1, url="http://a/1", status=Status.OK, bytes=7, attempts=1),
        FinalRecord.failure("http://a/2", "HTTP 500 (gave up after 4 attempts)", 4, row_id=2),
    ])  # fmt: skip
    output.close()
    snapshot = read_status(tmp_path)
    assert snapshot["urls"]["ok"] == 1 and snapshot["urls"]["pending"] == 1 and snapshot["bytes"] == 7
    assert snapshot["failures"] == [["HTTP 500 (gave up after 4 attempts)", 1]]
    text = render_status(snapshot)
    assert "crawl not running" in text and "1 ok, 1 failed, 1 pending" in text and "HTTP 500" in text


def test_no_crawl_in_the_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no crawl in"):
        read_status(tmp_path)


def test_metrics_parse_and_carry_no_label_that_grows_with_the_crawl(tmp_path: Path) -> None:
    monitor, ledger, _frontier, output = make_monitor(tmp_path, Clock())
    metrics = Metrics(monitor)
    for number in range(5):
        finish(ledger, f"http://host{number}.example/x", ok=number != 4, error="HTTP 500")
        monitor.observe(Result(number, f"http://host{number}.example/x", Outcome.OK, bytes=2048, elapsed=0.2))
    monitor.tick()
    families = {
        family.name: family for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
    }
    outcomes = {sample.labels["outcome"]: sample.value for sample in families["crawler_urls"].samples}
    assert outcomes == {"ok": 4, "failed": 1}
    assert [sample.value for sample in families["crawler_bytes"].samples] == [4000]
    counts = [sample for sample in families["crawler_download_seconds"].samples if sample.name.endswith("_count")]
    assert counts[0].value == 5
    labels = {key for family in families.values() for sample in family.samples for key in sample.labels}
    assert labels <= {"outcome", "le"}  # no URL, no host
    assert os.path.exists(tmp_path / ".crawler" / "status.json")
    output.close()
