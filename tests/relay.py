"""A TCP relay that delays: each chunk is held ``--delay-ms`` (plus jitter) in each direction.

The kernel here has no ``netem``; this stands in for it on the links the
tests route through it. Order is kept: a chunk never overtakes the one
before it, whatever the jitter. Run in a namespace by tests.netns::

    python -m tests.relay --delay-ms 50 --route 10.231.0.9:15000=10.231.0.1:5000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, jitter: float) -> None:
    """Copy reader to writer, each chunk written ``delay`` (+-jitter) seconds after it was read."""
    loop = asyncio.get_running_loop()
    held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def release() -> None:
        while True:
            due, chunk = await held.get()
            await asyncio.sleep(max(0.0, due - loop.time()))
            if not chunk:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    releaser = asyncio.create_task(release())
    last_due = 0.0
    try:
        while chunk := await reader.read(65536):
            last_due = max(last_due, loop.time() + delay + random.uniform(-jitter, jitter))
            held.put_nowait((last_due, chunk))
        held.put_nowait((last_due, b""))
        await releaser
    except (OSError, asyncio.IncompleteReadError):
        releaser.cancel()
    finally:
        writer.close()


async def serve(listen: str, target: str, delay: float, jitter: float) -> asyncio.Server:
    listen_host, listen_port = listen.rsplit(":", 1)
    target_host, target_port = target.rsplit(":", 1)

    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(target_host, int(target_port))
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer, delay, jitter),
            pump(server_reader, client_writer, delay, jitter),
            return_exceptions=True,
        )

    return await asyncio.start_server(handle, listen_host, int(listen_port), backlog=256)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--route", action="append", default=[], help="LISTEN_HOST:PORT=TARGET_HOST:PORT")
    args = parser.parse_args()
    servers = []
    for route in args.route:
        listen, target = route.split("=", 1)
        servers.append(await serve(listen, target, args.delay_ms / 1000, args.jitter_ms / 1000))
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main())
