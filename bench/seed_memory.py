#!/usr/bin/env python3
"""The master's memory while it reads a long seed list: a text list against a CSV with captions.

    python bench/seed_memory.py [--rows 10000000]

Writes a text list of ROWS URLs and a CSV of the same URLs with a caption
each (under /tmp/crawler-bench/seed-memory), starts ``crawler master`` on
each with no worker, waits until every row is in the crawl state, and
reports the master's peak RSS (VmHWM) and how long the list took to read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

WORK = Path("/tmp/crawler-bench/seed-memory")


def write_lists(rows: int) -> tuple[Path, Path]:
    text, table = WORK / f"seeds-{rows}.txt", WORK / f"seeds-{rows}.csv"
    if not (text.exists() and table.exists()):
        WORK.mkdir(parents=True, exist_ok=True)
        with open(text, "w") as plain, open(table, "w") as csv:
            csv.write("url,caption,license\n")
            for number in range(rows):
                url = f"http://host{number % 1000}.example/images/{number}.jpg"
                plain.write(url + "\n")
                csv.write(f'{url},"a photo, number {number}, of something",cc-by\n')
    return text, table


def rows_in_state(out: Path) -> int:
    try:
        with sqlite3.connect(f"file:{out}/.crawler/state.db?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT coalesce(max(id), 0) FROM urls").fetchone()[0])
    except sqlite3.Error:
        return 0


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(seeds: Path, rows: int, options: list[str]) -> tuple[float, float]:
    out = WORK / "out"
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "CRAWLER_AUTHKEY": "bench", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    started = time.monotonic()
    master = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crawler",
            "master",
            str(seeds),
            "-o",
            str(out),
            "--bind",
            "127.0.0.1:0",
            "-q",
            *options,
        ],
        env=env,
    )
    try:
        while rows_in_state(out) < rows:
            if master.poll() is not None:
                raise SystemExit(f"bench: the master exited with {master.returncode}")
            time.sleep(0.5)
        return peak_rss_mb(master.pid), time.monotonic() - started
    finally:
        master.send_signal(signal.SIGKILL)
        master.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    text, table = write_lists(args.rows)
    for name, seeds, options in (
        ("text list", text, []),
        ("CSV, 2 kept columns", table, ["--save-cols", "caption,license"]),
    ):
        rss, seconds = measure(seeds, args.rows, options)
        size = seeds.stat().st_size / 2**20
        print(f"{name}: {args.rows:,} rows ({size:,.0f} MB): master peak RSS {rss:.0f} MB, read in {seconds:.0f} s")


if __name__ == "__main__":
    main()
