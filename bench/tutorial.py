#!/usr/bin/env python3
"""The classic distributed-process tutorial, made runnable as a peer: one master, K workers.

    python3 tutorial.py URLS OUT -k K          # master: starts K local worker processes
    python3 tutorial.py --worker OUT --connect HOST:PORT   # one worker (authkey in env)

Master: registers two queue.Queue objects (task, result) on a BaseManager subclass through
named functions (not lambdas), serves them on 127.0.0.1 with an authkey (manager.start()),
puts every URL on the task queue, starts K worker processes that connect with address +
authkey, then collects N results and shuts the manager down.

Worker: exactly the tutorial's loop, single-threaded, no Session (a new connection per URL):

    while not task.empty():
        url = task.get(True, 1)
        r = requests.get(url)
        write r.content to OUT/<basename>
        result.put(path)

Known flaws kept on purpose (they are what the project's `crawler` must fix): empty() then
get() races at the end (the loser gets queue.Empty, caught here only so that it exits
quietly), a worker that dies loses its URL, HTTP errors are saved as if they were files,
whole bodies are held in memory. Needs `requests`.
"""

from __future__ import annotations

import argparse
import os
import queue
import secrets
import subprocess
import sys
import time
from multiprocessing.managers import BaseManager

task_queue: queue.Queue = queue.Queue()
result_queue: queue.Queue = queue.Queue()


def return_task_queue() -> queue.Queue:
    return task_queue


def return_result_queue() -> queue.Queue:
    return result_queue


class QueueManager(BaseManager):
    pass


def master(urls_file: str, out: str, k: int, result_timeout: float) -> int:
    QueueManager.register("get_task_queue", callable=return_task_queue)
    QueueManager.register("get_result_queue", callable=return_result_queue)
    authkey = secrets.token_hex(16)
    manager = QueueManager(address=("127.0.0.1", 0), authkey=authkey.encode())
    manager.start()
    host, port = manager.address
    task = manager.get_task_queue()
    result = manager.get_result_queue()
    with open(urls_file) as f:
        urls = [line.strip() for line in f if line.strip()]
    for url in urls:
        task.put(url)
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, SEED_AUTHKEY=authkey)
    workers = [
        subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", out, "--connect", f"{host}:{port}"], env=env
        )
        for _ in range(k)
    ]
    got = 0
    t0 = time.time()
    while got < len(urls):
        try:
            result.get(timeout=result_timeout)
            got += 1
        except queue.Empty:
            break
    for w in workers:
        w.wait()
    manager.shutdown()
    print(f"tutorial: {got}/{len(urls)} results from {k} workers in {time.time() - t0:.2f} s")
    return 0 if got == len(urls) else 1


def worker(out: str, connect: str) -> None:
    import requests

    QueueManager.register("get_task_queue")
    QueueManager.register("get_result_queue")
    host, port = connect.rsplit(":", 1)
    m = QueueManager(address=(host, int(port)), authkey=os.environ["SEED_AUTHKEY"].encode())
    m.connect()
    task = m.get_task_queue()
    result = m.get_result_queue()
    try:
        while not task.empty():
            url = task.get(True, 1)
            r = requests.get(url)
            path = os.path.join(out, url.rsplit("/", 1)[-1])
            with open(path, "wb") as f:
                f.write(r.content)
            result.put(path)
    except queue.Empty:  # another worker took the last URL between empty() and get()
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("urls", nargs="?")
    ap.add_argument("out", nargs="?")
    ap.add_argument("-k", "--workers", type=int, default=2, help="worker processes (K)")
    ap.add_argument("--result-timeout", type=float, default=60)
    ap.add_argument("--worker", metavar="OUT", help=argparse.SUPPRESS)
    ap.add_argument("--connect", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a.worker, a.connect)
    else:
        if not (a.urls and a.out):
            ap.error("URLS and OUT are required")
        sys.exit(master(a.urls, a.out, a.workers, a.result_timeout))


if __name__ == "__main__":
    main()
