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
L{MAX_BULK_LENGTH} or not followed by CRLF, an inline command or a header
line longer than L{MAX_INLINE}, a command longer than L{MAX_REQUEST} -- is
answered with ``-ERR Protocol error: ...`` and the connection is closed, as
Redis does.

Commands are parsed as a hand-written Twisted protocol parses them, from the
bytes received, every whole one in a chunk at once, with
L{Reader.read_one_chunk_at_a_time}: a read per field would cost more than the
PING itself when a client pipelines.  Each reply is written as soon as its
command has been parsed, so pipelined commands are answered in order, and
the replies to one chunk leave in one system call.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress

from twisted_tcp import IncompleteReadError, Need, Reader, Stop, Writer

MAX_ELEMENTS = 1024
"""The most elements an array command may have."""

MAX_BULK_LENGTH = 1 << 20
"""The longest bulk string a command may hold, in bytes (it is read whole into memory)."""

MAX_INLINE = 64 * 1024
"""The longest inline command, in bytes (as Redis's limit)."""

MAX_REQUEST = MAX_BULK_LENGTH + 64 * 1024
"""The most bytes a command may span: what one connection holds unparsed."""

PONG = b"+PONG\r\n"
OK = b"+OK\r\n"

_QUIT = "quit"
_FLUSH = "flush"


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


Begun = tuple[list[bytes], int, int]
"""
An array command parsed part of the way: its words so far, how many it has,
and where the next one starts, from the command's start.
"""


def parse_command(
    data: bytes, pos: int, begun: Begun | None = None
) -> tuple[list[bytes] | None, int, Begun | None]:
    """
    The command that starts at C{data[pos]}, inline or an array of bulk
    strings: its words (C{[]} for an empty line or array, to be ignored),
    the offset after it and C{None}; or, if it has not all arrived yet,
    C{None}, how many bytes from C{pos} it needs at least, and how far an
    array command was parsed: given back as C{begun} once more bytes are
    there, the parsing goes on from there (a command of many strings
    arriving in many pieces costs time linear in its length).

    @raise ProtocolError: the request is malformed.
    """
    if begun is not None:
        words, count, offset = begun
        at = pos + offset
    elif data[pos] != 42:  # not b"*": inline
        eol = data.find(b"\n", pos)
        if eol < 0:
            if len(data) - pos > MAX_INLINE:
                raise ProtocolError("too big inline request")
            return None, len(data) - pos + 1, None
        return data[pos:eol].split(), eol + 1, None
    else:
        eol = _header_end(data, pos, "too big mbulk count string")
        if eol < 0:
            return None, len(data) - pos + 1, None
        count = _length(data[pos:eol], b"*", MAX_ELEMENTS, "multibulk length")
        words = []
        at = eol + 2
    while len(words) < count:
        # At least the rest of this string, and 6 bytes ("$0\r\n\r\n") for each after it.
        after = 6 * (count - len(words) - 1)
        eol = _header_end(data, at, "too big bulk count string")
        if eol < 0:
            return None, len(data) - pos + 1 + after, (words, count, at - pos)
        size = _length(data[at:eol], b"$", MAX_BULK_LENGTH, "bulk length")
        start = eol + 2
        end = start + size
        if len(data) < end + 2:
            return None, end + 2 - pos + after, (words, count, at - pos)
        if data[end : end + 2] != b"\r\n":
            raise ProtocolError("expected CRLF after a bulk string")
        words.append(data[start:end])
        at = end + 2
    return words, at, None


def _header_end(data: bytes, pos: int, too_big: str) -> int:
    """Where the header line at C{data[pos]} ends (its CRLF), or -1 if it has not all arrived."""
    eol = data.find(b"\r\n", pos)
    if eol < 0 and len(data) - pos > MAX_INLINE:
        raise ProtocolError(too_big)
    return eol


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

    begun: Begun | None = None  # the command at the start of the bytes left, parsed so far

    def answer(data: bytes) -> int | Need | Stop:
        """Answer every whole command in C{data}; say how far they go."""
        nonlocal begun
        pos = 0
        size = len(data)
        need = 0
        while pos < size:
            words, end, begun = parse_command(data, pos, begun)
            if words is None:
                if end > MAX_REQUEST:
                    raise ProtocolError("too big request")
                need = end
                break
            pos = end
            if words:
                reply = execute(words)
                if reply is None:
                    writer.write(OK)
                    return Stop(pos, _QUIT)
                writer.write(reply)
        if writer.bytes_to_write > 1 << 20:  # a client that sends but does not read
            return Stop(pos, _FLUSH)
        if need:
            return Need(pos, need)  # called again once the command is all there
        return pos

    while True:
        try:
            stopped = await reader.read_one_chunk_at_a_time(answer)
        except ProtocolError as exc:
            writer.write(b"-ERR Protocol error: %s\r\n" % str(exc).encode("latin-1"))
            return
        except IncompleteReadError:
            return  # the client left in the middle of a command
        if stopped is not _FLUSH:
            return  # QUIT (the server flushes the +OK, then closes), or the end of the stream
        await writer.flushed()
