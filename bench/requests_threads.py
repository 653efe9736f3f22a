"""Reference point: requests and a thread pool in one process, nothing else.

    python bench/requests_threads.py URLS OUT C

One requests.Session per thread, bodies streamed to OUT/<basename>.part and
renamed: what a hand-written thread pool gets, without queues, state or
manifest.
"""

from __future__ import annotations

import concurrent.futures
import os
import sys
import threading

import requests

local = threading.local()


def download(url: str, out: str) -> bool:
    session = getattr(local, "session", None)
    if session is None:
        session = local.session = requests.Session()
    path = os.path.join(out, url.rsplit("/", 1)[-1])
    try:
        with session.get(url, stream=True, timeout=30) as response:
            response.raise_for_status()
            with open(path + ".part", "wb") as file:
                for chunk in response.iter_content(65536):
                    file.write(chunk)
        os.replace(path + ".part", path)
        return True
    except (requests.RequestException, OSError) as error:
        print(f"{url}: {error}", file=sys.stderr)
        return False


def download_into(out: str):  # type: ignore[no-untyped-def]
    def one(url: str) -> bool:
        return download(url, out)

    return one


def main() -> None:
    urls_file, out, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(out, exist_ok=True)
    with open(urls_file) as file:
        urls = [line.strip() for line in file if line.strip()]
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        ok = sum(pool.map(download_into(out), urls))
    sys.exit(0 if ok == len(urls) else 1)


if __name__ == "__main__":
    main()
