"""
A minimal HTTP/1.1 server, written with twisted_tcp: every GET is answered
``200 OK`` with a short text body, over persistent (keep-alive) connections,
so that a benchmarking client such as ``wrk`` can drive it:

    twistd -n --pidfile= tcpserver --port 8080 --handler twisted_tcp.examples.http_hello:handle

then (Debian: ``apt-get install wrk``):

    curl -i http://127.0.0.1:8080/
    wrk -t1 -c50 -d5s http://127.0.0.1:8080/

For each request it reads the head -- the request line and the header lines,
up to the blank line that ends them -- and a body if a C{Content-Length}
announces one (it is read and ignored), then writes one response with a
C{Content-Length}.  Heads are parsed as a hand-written Twisted protocol parses
them, every whole one in a received chunk at once, with
L{Reader.read_one_chunk_at_a_time}: a read per header line would cost more
than the response.
The connection stays open for the next request -- requests may be pipelined --
unless the client asked otherwise: C{Connection: close}, or HTTP/1.0 without
C{Connection: keep-alive}; then the response says C{Connection: close} and the
server closes the connection after it.

    GET, HEAD               200 OK, the body L{BODY} (HEAD: the headers only)
    any other method        405 Method Not Allowed (the connection stays open)
    a malformed request     400 Bad Request, then the connection is closed:
                            not "METHOD TARGET HTTP/1.x", a header line
                            without a colon or with a space before it, a
                            folded header line, a bad Content-Length, more
                            than L{MAX_HEADERS} header lines, a head longer
                            than L{MAX_HEAD}
    a body over L{MAX_BODY}  413 Content Too Large, then the connection is closed
    Transfer-Encoding       501 Not Implemented (a chunked body is not read),
                            then the connection is closed

Lines may end with CRLF or a bare LF.  It sends no C{Date} header and serves
no files: it is the smallest server a real HTTP client can be pointed at.
"""

from __future__ import annotations

import re

from twisted.internet.interfaces import IAddress

from twisted_tcp import IncompleteReadError, Reader, Stop, Writer

BODY = b"Hello, world!\n"
"""The body of every 200 response."""

MAX_HEADERS = 100
"""The most header lines a request may have."""

MAX_HEAD = 64 * 1024
"""The longest request head (the request line and the header lines), in bytes."""

MAX_BODY = 1 << 20
"""The longest request body read (and ignored), in bytes."""

_HEAD = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
OK = _HEAD % (200, b"OK", len(BODY)) + b"\r\n" + BODY
"""The response to a GET on a connection kept open."""
OK_CLOSE = _HEAD % (200, b"OK", len(BODY)) + b"Connection: close\r\n\r\n" + BODY
"""The response to a GET after which the connection is closed."""
OK_KEEP_ALIVE = _HEAD % (200, b"OK", len(BODY)) + b"Connection: keep-alive\r\n\r\n" + BODY
"""The response to an HTTP/1.0 GET that asked to keep the connection open."""

_REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    501: b"Not Implemented",
}


class BadRequest(Exception):
    """The request cannot be served: answer C{status} and close the connection."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def error_response(status: int, why: str, close: bool) -> bytes:
    """A short plain-text error response."""
    body = f"{status} {_REASONS[status].decode()}: {why}\n".encode()
    head = _HEAD % (status, _REASONS[status], len(body))
    if status == 405:
        head += b"Allow: GET, HEAD\r\n"
    if close:
        head += b"Connection: close\r\n"
    return head + b"\r\n" + body


class Request:
    """What the response depends on: the method, and whether to keep the connection."""

    __slots__ = ("content_length", "keep_alive", "method", "target", "version")

    def __init__(self, method: bytes, target: bytes, version: bytes) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.keep_alive = version == b"HTTP/1.1"  # HTTP/1.0 closes unless asked not to
        self.content_length = 0

    def header(self, line: bytes) -> None:
        """Take one header line into account."""
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or b" " in name or b"\t" in name:
            raise BadRequest(400, "malformed header line")
        name = name.lower()
        if name == b"connection":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if b"close" in tokens:
                self.keep_alive = False
            elif b"keep-alive" in tokens:
                self.keep_alive = True
        elif name == b"content-length":
            value = value.strip()
            if not value.isdigit() or len(value) > 18:
                raise BadRequest(400, "invalid Content-Length")
            length = int(value)
            if self.content_length not in (0, length):
                raise BadRequest(400, "conflicting Content-Length headers")
            if length > MAX_BODY:
                raise BadRequest(413, f"a body longer than {MAX_BODY} bytes")
            self.content_length = length
        elif name == b"transfer-encoding":
            raise BadRequest(501, "Transfer-Encoding is not supported")


def parse_request_line(line: bytes) -> Request:
    parts = line.split(b" ")
    if (
        len(parts) != 3
        or not parts[0]
        or not parts[1]
        or parts[2]
        not in (
            b"HTTP/1.1",
            b"HTTP/1.0",
        )
    ):
        raise BadRequest(400, "the request line is not METHOD TARGET HTTP/1.x")
    return Request(parts[0], parts[1], parts[2])


def parse_request(data: bytes, pos: int, searched: int = 0) -> tuple[Request | None, int]:
    """
    The request whose head starts at C{data[pos]} (after one blank line,
    which may come before a request), and the offset after its head; or,
    while the head has not all arrived, C{None} and how many bytes from
    C{pos} have been searched for its end: given back as C{searched} once
    more bytes have arrived, they are not searched again.

    @raise BadRequest: the head is malformed, not supported, or longer than
        L{MAX_HEAD} (said as soon as that many bytes have arrived); or its
        request line is malformed (said as soon as that line has arrived).
    """
    start = pos
    if data.startswith(b"\r\n", pos):  # one blank line is allowed (RFC 9112, 2.2)
        start += 2
    elif data.startswith(b"\n", pos):
        start += 1
    # The head ends with an empty line: after CRLF or a bare LF.
    found = _HEAD_END.search(data, max(start, pos + searched - 2), start + MAX_HEAD + 3)
    if found is None:
        if len(data) - start > MAX_HEAD + 2:
            raise BadRequest(400, "the request head is too long")
        eol = data.find(b"\n", start, start + 8192)
        if eol >= 0:  # the request line has arrived: is it one?
            parse_request_line(data[start:eol].removesuffix(b"\r"))
        return None, len(data) - pos
    end, after = found.span()
    if end - start > MAX_HEAD:
        raise BadRequest(400, "the request head is too long")
    lines = data[start:end].split(b"\n")
    if len(lines) > MAX_HEADERS + 1:
        raise BadRequest(400, f"more than {MAX_HEADERS} header lines")
    lines = [line.removesuffix(b"\r") for line in lines]
    request = parse_request_line(lines[0])
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            raise BadRequest(400, "folded header lines are not accepted")
        request.header(line)
    return request, after


def response_to(request: Request) -> bytes:
    """The response to C{request}, which has no body left to read."""
    if request.method not in (b"GET", b"HEAD"):
        return error_response(405, "only GET and HEAD", close=not request.keep_alive)
    if not request.keep_alive:
        response = OK_CLOSE
    elif request.version == b"HTTP/1.1":
        response = OK
    else:  # an HTTP/1.0 client that asked for keep-alive is told it has it
        response = OK_KEEP_ALIVE
    return response if request.method == b"GET" else response[: -len(BODY)]


_FLUSH = "flush"

_HEAD_END = re.compile(rb"\n\r?\n")
"""The empty line that ends a request head (and the line ending before it)."""


async def handle(address: IAddress, reader: Reader, writer: Writer) -> None:
    """Answer each request on the connection until it is to be closed."""
    searched = 0  # of the head begun at the start of the bytes left, how much was searched

    def answer(data: bytes) -> int | Stop:
        """
        Answer every whole request in C{data}, but stop at one with a body
        to read, or after which the connection is to close.
        """
        nonlocal searched
        pos = 0
        size = len(data)
        while pos < size:
            request, end = parse_request(data, pos, searched)
            if request is None:
                searched = end  # the request not all there starts the next call's data
                break
            searched = 0
            if request.content_length or not request.keep_alive:
                return Stop(end, request)
            writer.write(response_to(request))
            pos = end
        if writer.bytes_to_write > 1 << 20:  # a client that sends but does not read
            return Stop(pos, _FLUSH)
        return pos

    while True:
        try:
            request = await reader.read_one_chunk_at_a_time(answer)
            if isinstance(request, Request) and request.content_length:
                await reader.really_read(request.content_length)  # read, and dropped
        except BadRequest as exc:
            writer.write(error_response(exc.status, str(exc), close=True))
            return  # the server flushes the response, then closes the connection
        except IncompleteReadError:
            return  # the client left in the middle of a request
        if request is None:
            return  # the end of the stream
        if request is _FLUSH:
            await writer.flushed()
            continue
        writer.write(response_to(request))
        if not request.keep_alive:
            return  # the server flushes the response, then closes the connection
