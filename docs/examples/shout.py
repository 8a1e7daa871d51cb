"""
The tutorial's handler: every line comes back in capitals, and when the
client has sent everything (or says "quit") a last line counts what it sent.

Run it from the repository root with:

    PYTHONPATH=docs/examples twistd -n --pidfile= tcpserver --port 9000 --handler shout:handle
"""

from twisted_tcp import Reader, Writer


async def handle(address, reader: Reader, writer: Writer) -> None:
    count = 0
    async for line in reader.lines():  # until the client ends its side
        if line == b"quit":
            break
        count += 1
        writer.write_line(line.upper())
    writer.write_line(b"%d line(s) from %s, bye" % (count, address.host.encode()))
    # Returning closes the connection, after what was written is sent.
