"""
Reading lines from peers you do not trust: every line is bounded by
max_line_length, and a longer one is an error the handler chooses how to
handle.
"""

import twisted_tcp

MAX_LINE = 1024  # bytes, not counting the newline


async def handle(address, reader, writer):
    """Answer every line with its length; a line too long gets ERR, and the next one is read."""
    while True:
        try:
            line = await reader.read_line()
        except twisted_tcp.LineTooLongError as e:
            # The reader has dropped that line, up to and including its
            # newline, even the part that has not arrived yet.
            writer.write_line(b"ERR line longer than %d bytes, ignored" % e.max_line_length)
            continue
        if line is None:
            return
        writer.write_line(b"OK %d" % len(line))


async def handle_strict(address, reader, writer):
    """The same, but a line too long ends the connection."""
    try:
        async for line in reader.lines():
            writer.write_line(b"OK %d" % len(line))
    except twisted_tcp.LineTooLongError:
        writer.write_line(b"ERR line too long, goodbye")


def serve(where, handler=handle, reactor=None):
    return twisted_tcp.Server.create(where, handler, max_line_length=MAX_LINE, reactor=reactor)
