#!/usr/bin/env python3
"""A TCP relay on loopback that delays what passes through it.

`delay_relay.py LISTEN_PORT TARGET_PORT MAX_DELAY_MS [SEED]`: accepts connections on
127.0.0.1:LISTEN_PORT and relays each to 127.0.0.1:TARGET_PORT. Every chunk read, in
either direction, is forwarded after a delay drawn uniformly from 0..MAX_DELAY_MS, but
never before the chunk read before it on the same direction (TCP keeps the order), so
the latency a client sees moves between 0 and MAX_DELAY_MS and jitters within that.
The bench puts one in front of etcd for each agent (`bench/compare.sh`, step `soak`),
as a stand-in for `tc netem` that needs no network namespace.
"""
import asyncio
import random
import sys
import time


async def pump(reader, writer, max_delay, rng):
    queue = asyncio.Queue()

    async def sender():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    task = asyncio.ensure_future(sender())
    last_due = 0.0
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            due = max(time.monotonic() + rng.uniform(0, max_delay), last_due)
            last_due = due
            queue.put_nowait((due, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait((0, None))
    try:
        await task
    except (ConnectionError, OSError):
        pass


async def main():
    listen, target, max_ms = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else None)
    max_delay = max_ms / 1000.0

    async def handle(client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            pump(client_reader, server_writer, max_delay, rng),
            pump(server_reader, client_writer, max_delay, rng),
        )

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
