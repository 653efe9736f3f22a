#!/usr/bin/env python3
"""How many URLs/s one master moves when workers answer instantly (no HTTP).

Everything but the download is real: the seed file is streamed into the
SQLite state, URLs are leased in batches through the manager, results come
back through the result queue, final states are committed and the manifest
is written. K worker processes take batches and answer each URL at once.

    python bench/master_ceiling.py --urls 200000 --workers 4
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crawler.master import Master, MasterConfig
from crawler.messages import Policy, Result
from crawler.queues import MasterLink


def instant_worker(address: tuple[str, int], authkey: bytes, name: str, capacity: int) -> None:
    """The worker loop with the download replaced by an immediate answer."""
    link = MasterLink(address, authkey, name, capacity)
    task, results = link.task, link.result
    while not task.empty():
        try:
            batch = task.get(True, 1.0, capacity)
        except queue.Empty:
            continue
        results.put(
            [
                Result(
                    item.id,
                    item.url,
                    "ok",
                    path=f"x/{item.id}",
                    bytes=1,
                    sha256="0" * 64,
                    content_type="image/png",
                    http_status=200,
                    attempt=item.attempt,
                    worker=name,
                )
                for item in batch
            ]
        )


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ru_maxrss: Linux carries it across exec from the parent."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--urls", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=256, help="URLs per get (a worker's capacity)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        seeds = root / "seeds.txt"
        with open(seeds, "w") as file:
            file.writelines(f"http://host{number % 97}.example/img/{number}.jpg\n" for number in range(args.urls))
        config = MasterConfig(
            output=root / "out",
            bind=("127.0.0.1", 0),
            authkey=os.urandom(16),
            policy=Policy(),
            show_progress=False,
            linger_seconds=2,
        )
        started = time.perf_counter()
        with open(seeds) as lines, Master(config, lines) as master:
            context = multiprocessing.get_context("spawn")
            workers = [
                context.Process(
                    target=instant_worker, args=(master.server.address, config.authkey, f"w{index}", args.batch)
                )
                for index in range(args.workers)
            ]
            for worker in workers:
                worker.start()
            status = master.run()
            elapsed = time.perf_counter() - started
            for worker in workers:
                worker.join(10)
        peak_mb = peak_rss_mb()
        print(
            f"urls={args.urls} workers={args.workers} batch={args.batch} status={status} "
            f"ok={master.counts.ok} elapsed={elapsed:.2f}s rate={args.urls / elapsed:,.0f} URLs/s "
            f"master_peak_rss={peak_mb:.0f}MB"
        )


if __name__ == "__main__":
    main()
