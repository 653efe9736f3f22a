"""A far server on loopback: every response waits L ms before it is sent.

An asyncio HTTP/1.1 server with keep-alive that serves the corpus from memory
and answers each request after a timer (no CPU spent waiting), so a
downloader's concurrency decides its rate: at most C/L URLs/s. ``GET
/__stats`` returns the most requests it held at once and resets the count.

    python bench/latency_server.py --root /tmp/crawler-bench/corpus/www --port 18081 --delay-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path


class Files:
    def __init__(self, root: Path, delay: float) -> None:
        self.delay = delay
        self.bodies = {
            "/" + str(path.relative_to(root)): path.read_bytes()
            for path in root.rglob("*")
            if path.is_file() and "large" not in path.parts
        }
        self.in_flight = 0
        self.peak = 0


class Connection(asyncio.Protocol):
    def __init__(self, files: Files) -> None:
        self.files = files
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            path = head.split(b" ", 2)[1].decode("latin-1").split("?", 1)[0]
            self.handle(path)

    def handle(self, path: str) -> None:
        if path == "/__stats":
            body = json.dumps({"peak_in_flight": self.files.peak}).encode()
            self.files.peak = 0
            self.send(200, body, "application/json")
            return
        self.files.in_flight += 1
        self.files.peak = max(self.files.peak, self.files.in_flight)
        asyncio.get_running_loop().call_later(self.files.delay, self.answer, path)

    def answer(self, path: str) -> None:
        self.files.in_flight -= 1
        body = self.files.bodies.get(path)
        if body is None:
            self.send(404, b"not found", "text/plain")
        else:
            self.send(200, body, "image/jpeg")

    def send(self, status: int, body: bytes, content_type: str) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        reason = "OK" if status == 200 else "Not Found"
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
        self.transport.write(head.encode() + body)


async def serve(root: Path, port: int, delay: float) -> None:
    files = Files(root, delay)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(files), "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, default=18081)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    asyncio.run(serve(args.root, args.port, args.delay_ms / 1000))


if __name__ == "__main__":
    main()
