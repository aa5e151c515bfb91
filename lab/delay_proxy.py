#!/usr/bin/env python3
"""A slow link in user space (the lab's kernel has no netem): a TCP proxy that delays every chunk.

    python3 lab/delay_proxy.py --target 172.18.0.5:22 --rtt-ms 300 [--listen 127.0.0.1:0] [--kbit 2000]
                               [--stats stats.json]

Each direction holds every chunk it reads for half the round-trip time before writing it on, in
order, so a request and its answer take --rtt-ms longer than on the direct path; --kbit also
limits each direction's bandwidth (a satellite link's). Prints the listening address
(`host:port`) on its first line of stdout, then runs until SIGTERM or SIGINT. --stats FILE measures
the link: what the clients send (upstream, as it enters the proxy), in bytes per wall-clock second
and in lines (newlines not part of a CRLF: the lines of an uncompressed line-protocol body), written
to FILE as JSON ({"upstream_bytes": {second: bytes}, "upstream_lines": n}) every 100 ms while it
changes and at the stop, replaced whole (bridge/chaos/test_links_spec.py). Standard library only: it
runs on any controller with Python 3.11.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import defaultdict


class Meter:
    """What clients send on the link: bytes per wall-clock second, and lines (see --stats)."""

    def __init__(self) -> None:
        self.per_second: dict[int, int] = defaultdict(int)
        self.lines = 0
        self.changed = False

    def count(self, data: bytes, previous: bytes) -> None:
        self.per_second[int(time.time())] += len(data)
        self.lines += data.count(b"\n") - data.count(b"\r\n") - (previous == b"\r" and data[:1] == b"\n")
        self.changed = True

    def write(self, path: str) -> None:
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump({"upstream_bytes": dict(self.per_second), "upstream_lines": self.lines}, out)
        os.replace(tmp, path)
        self.changed = False


class Direction:
    """One direction of one connection: read eagerly, deliver each chunk `delay` seconds later."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float,
                 bytes_per_s: float | None, meter: Meter | None = None) -> None:
        self.reader, self.writer, self.delay, self.rate, self.meter = reader, writer, delay, bytes_per_s, meter
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def receive(self) -> None:
        loop = asyncio.get_running_loop()
        free_at = 0.0  # when the link has finished serialising what it already carries
        previous = b""
        try:
            while data := await self.reader.read(65536):
                if self.meter is not None:
                    self.meter.count(data, previous)
                    previous = data[-1:]
                now = loop.time()
                if self.rate:
                    free_at = max(free_at, now) + len(data) / self.rate
                    due = free_at + self.delay
                else:
                    due = now + self.delay
                await self.queue.put((due, data))
        except (ConnectionError, OSError):
            pass
        await self.queue.put((loop.time() + self.delay, b""))  # end of stream, delayed like data

    async def send(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                due, data = await self.queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    if self.writer.can_write_eof():
                        self.writer.write_eof()
                    break
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, OSError):
            pass


async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                 target: tuple[str, int], delay: float, rate: float | None, meter: Meter | None) -> None:
    try:
        server_reader, server_writer = await asyncio.open_connection(*target)
    except OSError:
        client_writer.close()
        return
    directions = [Direction(client_reader, server_writer, delay, rate, meter),
                  Direction(server_reader, client_writer, delay, rate)]
    try:
        await asyncio.gather(*(d.receive() for d in directions), *(d.send() for d in directions))
    except asyncio.CancelledError:
        pass  # the proxy is stopping: its connections end with it
    finally:
        for writer in (client_writer, server_writer):
            writer.close()


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def serve(args: argparse.Namespace) -> None:
    target = address(args.target)
    delay = args.rtt_ms / 2000.0
    rate = args.kbit * 1000 / 8 if args.kbit else None
    listen_host, listen_port = address(args.listen)
    meter = Meter() if args.stats else None
    server = await asyncio.start_server(lambda r, w: handle(r, w, target, delay, rate, meter), listen_host, listen_port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        if meter is None:
            await stop.wait()
        else:
            meter.write(args.stats)
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), 0.1)
                except TimeoutError:
                    pass
                if meter.changed:
                    meter.write(args.stats)
            meter.write(args.stats)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="host:port to forward to (e.g. a container's sshd)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="address to listen on (port 0: any free port)")
    parser.add_argument("--rtt-ms", type=float, default=300.0, help="round-trip time added (default 300 ms)")
    parser.add_argument("--kbit", type=float, default=0.0, help="bandwidth per direction in kbit/s (0: unlimited)")
    parser.add_argument("--stats", default="", help="a JSON file of what clients send: bytes per second, lines")
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
