"""
A line echo handler: every line a client sends comes back to it.

    twistd -n tcpserver --port 9000 --handler twisted_tcp.examples.echo:handle
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress

from twisted_tcp import Reader, Writer


async def handle(address: IAddress, reader: Reader, writer: Writer) -> None:
    """
    Echo each line back until the client closes; a line too long ends it.
    The lines are taken in batches (as many as arrived together): a client
    that pipelines its lines costs the least that way.
    """
    async for lines in reader.line_batches():
        for line in lines:
            writer.write_line(line)
        if writer.bytes_to_write > 1 << 20:  # a client that sends but does not read
            await writer.flushed()
