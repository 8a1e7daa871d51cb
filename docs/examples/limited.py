"""
A server that bounds what its clients can hold: at most max_connections
connections at once, and none of them idle for more than idle_timeout.
"""

import twisted_tcp


async def handle(address, reader, writer):
    writer.write_line(b"welcome")
    async for line in reader.lines():
        writer.write_line(line)


def serve(where, *, max_connections=1000, idle_timeout=300.0, reactor=None):
    return twisted_tcp.Server.create(
        where,
        handle,
        max_connections=max_connections,  # beyond: new clients wait in the backlog
        backlog=128,  # how many may wait there (the kernel may cap it)
        idle_timeout=idle_timeout,  # seconds with nothing received nor sent
        reactor=reactor,
    )
