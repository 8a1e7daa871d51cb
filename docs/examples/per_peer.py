"""
A server that no single client address can fill: at most
max_connections_per_peer connections from each one.
"""

import twisted_tcp


async def handle(address, reader, writer):
    writer.write_line(b"welcome")
    async for line in reader.lines():
        writer.write_line(line)


def serve(where, *, reactor=None):
    return twisted_tcp.Server.create(
        where,
        handle,
        max_connections=1000,
        # Beyond 20 from one address: closed at once.
        max_connections_per_peer=20,
        idle_timeout=300.0,  # and none idle for long
        reactor=reactor,
    )


def refused(server):
    """How many connections the per-peer limit closed."""
    return server.stats().refused_per_peer
