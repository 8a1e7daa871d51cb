"""
A server that speaks enough of the Redis protocol (RESP) to answer PING,
written with twisted_tcp: ``redis-cli ping`` and ``redis-benchmark -t ping``
work against it:

    twistd -n --pidfile= tcpserver --port 6380 --handler twisted_tcp.examples.resp_ping:handle

then, in another terminal (Debian: ``apt-get install redis-tools``):

    redis-cli -p 6380 ping                               # PONG
    redis-benchmark -p 6380 -t ping -P 16 -n 100000 -q

A command comes in either of the two forms a Redis server reads:

- inline: one line of words separated by spaces, ``PING\\r\\n`` (what
  redis-benchmark's PING_INLINE test and a person typing into ``nc`` send);
- an array of bulk strings, ``*1\\r\\n$4\\r\\nPING\\r\\n`` (what client
  libraries, redis-cli and redis-benchmark's PING_MBULK test send).

The commands, case-insensitive:

    PING            +PONG
    PING message    the message, as a bulk string
    ECHO message    the message, as a bulk string
    QUIT            +OK, then the server closes the connection
    anything else   -ERR unknown command '...'; the connection stays open

(redis-benchmark first asks ``CONFIG GET save``: the error it gets makes it
print "WARNING: Could not fetch server CONFIG", and it goes on.)

A malformed request -- an array or bulk-string header that is not a number,
more than L{MAX_ELEMENTS} elements, a bulk string longer than
L{MAX_BULK_LENGTH} or not followed by CRLF, a line longer than the reader's
C{max_line_length} -- is answered with ``-ERR Protocol error: ...`` and the
connection is closed, as Redis does.  Each reply is written as soon as its
command has been read, so pipelined commands are answered in order, with the
replies to one batch gathered into few system calls by Twisted.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress

from twisted_tcp import IncompleteReadError, LineTooLongError, Reader, Writer

MAX_ELEMENTS = 1024
"""The most elements an array command may have."""

MAX_BULK_LENGTH = 1 << 20
"""The longest bulk string a command may hold, in bytes (it is read whole into memory)."""

PONG = b"+PONG\r\n"
OK = b"+OK\r\n"


class ProtocolError(Exception):
    """The client sent something that is not RESP; the connection is closed."""


def _length(header: bytes, kind: bytes, limit: int, what: str) -> int:
    """The number in an array (C{*N}) or bulk-string (C{$N}) header line."""
    if header[:1] != kind:
        raise ProtocolError(f"expected '{kind.decode()}', got '{header[:1].decode('latin-1')}'")
    digits = header[1:]
    if digits.isdigit() and len(digits) <= 10:
        length = int(digits)  # (parsed once: this is every request's path)
        if length <= limit:
            return length
    # Redis reads "*0" and "*-1" as an empty command; "$-1" is not a command's argument.
    elif kind == b"*" and digits[:1] == b"-" and digits[1:].isdigit():
        return 0
    raise ProtocolError(f"invalid {what}")


async def read_command(reader: Reader) -> list[bytes] | None:
    """
    Read one command, inline or an array of bulk strings, and return its
    words; C{[]} for an empty line or array (to be ignored); C{None} at the
    end of the stream.

    @raise ProtocolError: the request is malformed.
    """
    line = await reader.read_line()
    if line is None:
        return None
    if line[:1] != b"*":
        return line.split()
    count = _length(line, b"*", MAX_ELEMENTS, "multibulk length")
    words = []
    for _ in range(count):
        header = await reader.read_line()
        if header is None:
            return None  # the client left in the middle of a command
        size = _length(header, b"$", MAX_BULK_LENGTH, "bulk length")
        data = await reader.really_read(size + 2)
        if data[size:] != b"\r\n":
            raise ProtocolError("expected CRLF after a bulk string")
        words.append(data[:size])
    return words


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


def execute(words: list[bytes]) -> bytes | None:
    """The reply to one command (its words, not empty), or C{None} for QUIT."""
    name = words[0].upper()
    if name == b"PING":
        if len(words) == 1:
            return PONG
        if len(words) == 2:
            return _bulk(words[1])
    elif name == b"ECHO":
        if len(words) == 2:
            return _bulk(words[1])
    elif name == b"QUIT":
        return None
    else:
        shown = words[0][:40].decode("latin-1").replace("\r", " ").replace("\n", " ")
        return f"-ERR unknown command '{shown}'\r\n".encode("latin-1")
    return b"-ERR wrong number of arguments for '%s' command\r\n" % name.lower()


async def handle(address: IAddress, reader: Reader, writer: Writer) -> None:
    """Answer each command until QUIT, the end of the stream or a protocol error."""
    while True:
        try:
            words = await read_command(reader)
        except ProtocolError as exc:
            writer.write(b"-ERR Protocol error: %s\r\n" % str(exc).encode("latin-1"))
            return
        except LineTooLongError:
            writer.write(b"-ERR Protocol error: too big inline request\r\n")
            return
        except IncompleteReadError:
            return  # the client left in the middle of a bulk string
        if words is None:
            return
        if not words:
            continue
        reply = execute(words)
        if reply is None:
            writer.write(OK)
            return  # the server flushes the +OK, then closes the connection
        writer.write(reply)
        if writer.bytes_to_write > 1 << 20:  # a client that sends but does not read
            await writer.flushed()
