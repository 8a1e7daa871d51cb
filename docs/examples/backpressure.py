"""
Back-pressure both ways: a handler that writes a lot waits for flushed()
whenever it is too far ahead of its peer, and a client that reads slowly
keeps little in memory (reader_buffer_size) while TCP holds the sender back.
"""

from twisted.internet.task import deferLater

import twisted_tcp

HIGH_WATER = 256 * 1024  # bytes written but not yet handed to the kernel


async def numbers(address, reader, writer):
    """Read a count N, then send N numbered lines, never more than HIGH_WATER ahead."""
    request = await reader.read_line()
    if request is None or not request.isdigit():
        writer.write_line(b"ERR send a count")
        return
    for i in range(int(request)):
        writer.write_line(b"line %d" % i)
        if writer.bytes_to_write > HIGH_WATER:
            await writer.flushed()  # fails if the peer is gone or stopped reading


async def count_slowly(reactor, where, n):
    """Ask for n lines and count them, pausing now and then as a busy client would."""

    async def count(sock, reader, writer):
        writer.write_line(b"%d" % n)
        seen = 0
        async for _line in reader.lines():
            seen += 1
            if seen % 20000 == 0:
                await deferLater(reactor, 0.05, lambda: None)  # busy elsewhere
        return seen

    return await twisted_tcp.with_connection(
        where, count, reader_buffer_size=16 * 1024, timeout=5, reactor=reactor
    )
