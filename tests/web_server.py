"""A static file server for tests in namespaces: a folder over HTTP/1.1, one log line per request.

Unlike ``python -m http.server`` it keeps a long listen queue (a burst of
connections is not a second-long SYN retry) and logs ``GET PATH STATUS``
lines a test counts hits from::

    python -m tests.web_server --bind 10.231.0.4 --port 8080 --root DIR --log hits.log
"""

from __future__ import annotations

import argparse
import functools
import http.server
import threading
from typing import Any


class Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits_log: Any = None
    lock = threading.Lock()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        with self.lock:
            self.hits_log.write(f"{self.command} {self.path} {code}\n")
            self.hits_log.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 256
    daemon_threads = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()
    with open(args.log, "a") as log:
        Handler.hits_log = log
        handler = functools.partial(Handler, directory=args.root)
        with Server((args.bind, args.port), handler) as server:
            server.serve_forever()


if __name__ == "__main__":
    main()
