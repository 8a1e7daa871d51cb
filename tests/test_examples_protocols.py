"""
The protocol handlers of twisted_tcp.examples -- resp_ping (Redis's RESP, PING) and
http_hello (minimal HTTP/1.1 keep-alive).  What they answer to what bytes,
split wherever, and when they close, is the handlers' logic, to which a
socket adds nothing: those tests run them in memory
(L{twisted_tcp.testing.run_handler}), which gives them the bytes in the
pieces the test chooses.  One test of each is served by a real L{Server} on
127.0.0.1 and spoken to over a real socket, as the benchmark's
redis-benchmark and wrk workloads use them.

examples/ is a directory of scripts, not a package that is installed: the
handlers are loaded from their files, so the tests run the same from the
repository's root and against an installed (non-editable) twisted_tcp.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted

import twisted_tcp as tt
from twisted_tcp import _service
from twisted_tcp.examples import http_hello, resp_ping
from twisted_tcp.testing import HandlerRun, run_handler

from .conftest import WAIT, logged_errors, within

LOCAL = "127.0.0.1"


@asynccontextmanager
async def serving(handler: Any) -> AsyncIterator[tt.WhereToConnect]:
    """A Server running C{handler}; no handler error may be logged while it runs."""
    with logged_errors() as errors:
        server = await within(tt.Server.create(tt.on_port(0, interface=LOCAL), handler))
        try:
            yield tt.to_host_and_port(LOCAL, server.listening_on)
        finally:
            await within(server.close(close_existing_connections=True))
            await within(server.drained())
    assert not errors, errors


@asynccontextmanager
async def client(where: tt.WhereToConnect) -> AsyncIterator[tuple[tt.Reader, tt.Writer]]:
    sock, reader, writer = await within(tt.connect(where, timeout=WAIT))
    try:
        yield reader, writer
    finally:
        await within(sock.close())


async def closed_by_server(reader: tt.Reader) -> bool:
    """Whether the server closes the connection, with nothing more sent."""
    return await within(reader.read()) == b""


def served(handler: Any, received: bytes | list[bytes], *, end: bool = False) -> HandlerRun:
    """
    C{handler} run in memory over C{received} (the pieces delivered one at a
    time), then the end of the stream if C{end}; it must not have raised.
    Without the end of the stream, a handler that ended closed the
    connection of its own accord.
    """
    run = run_handler(handler, received, end=end)
    assert run.error is None, run.error
    assert run.closed == run.ended
    return run


# -- RESP: PING ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_resp_ping_inline_and_array_pipelined() -> None:
    requests = (
        b"PING\r\n"  # inline, as redis-benchmark's PING_INLINE
        b"*1\r\n$4\r\nPING\r\n"  # an array, as PING_MBULK and every client library
        b"ping hello\r\n"
        b"*2\r\n$4\r\nECHO\r\n$8\r\nli\r\nne\n!\r\n"  # a bulk string holds any bytes
        b"\r\n"  # an empty inline command is ignored
        b"*0\r\n"  # so is an empty array
        b"PING\n"  # a bare LF ends an inline command too
    )
    replies = b"+PONG\r\n+PONG\r\n$5\r\nhello\r\n$8\r\nli\r\nne\n!\r\n+PONG\r\n"
    async with serving(resp_ping.handle) as where, client(where) as (reader, writer):
        for _ in range(3):  # pipelined: every request in one write, the replies in order
            writer.write(requests)
            assert await within(reader.really_read(len(replies))) == replies
        writer.write(b"QUIT\r\n")
        assert await within(reader.read_line()) == b"+OK"
        assert await closed_by_server(reader)


def test_resp_command_split_across_packets() -> None:
    parts = [b"*1\r", b"\n$4\r\nPI", b"NG", b"\r", b"\nPI", b"NG\r\n"]
    run = served(resp_ping.handle, parts)
    assert run.written == b"+PONG\r\n+PONG\r\n"
    assert not run.ended  # it waits for the next command
    data = b"".join(parts)
    for cut in range(1, len(data)):  # and cut in two anywhere
        assert served(resp_ping.handle, [data[:cut], data[cut:]]).written == run.written
    # The shortest strings there are: what a command not all there says it
    # needs is never more than it needs.
    data = b"*3\r\n$4\r\nECHO\r\n$0\r\n\r\n$0\r\n\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"
    whole = served(resp_ping.handle, data).written
    assert whole == b"-ERR wrong number of arguments for 'echo' command\r\n$0\r\n\r\n"
    for cut in range(1, len(data)):
        assert served(resp_ping.handle, [data[:cut], data[cut:]]).written == whole, cut


def test_resp_large_string_in_small_pieces() -> None:
    # The command's length is known from its header: it is parsed once,
    # when all of it is there, not once per piece.
    value = bytes(range(256)) * 800
    data = b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\nPING\r\n" % (len(value), value)
    pieces = [data[i : i + 1000] for i in range(0, len(data), 1000)]
    calls = []
    parse = resp_ping.parse_command

    def counted(data: bytes, pos: int, begun: Any = None) -> Any:
        calls.append(len(data))
        return parse(data, pos, begun)

    resp_ping.parse_command = counted
    try:
        run = served(resp_ping.handle, pieces)
    finally:
        resp_ping.parse_command = parse
    assert run.written == b"$%d\r\n%s\r\n+PONG\r\n" % (len(value), value)
    assert len(calls) < 10, calls


def test_resp_command_of_many_strings_in_pieces_is_parsed_in_linear_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each string's header is parsed once or twice (once more if its body
    # was not all there), however many pieces the command comes in: an
    # array begun is resumed where it stopped, not parsed from its start.
    args = [b"%04d" % i + b"x" * 1000 for i in range(600)]
    data = b"*%d\r\n" % (len(args) + 1) + b"$4\r\nPING\r\n"
    data += b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
    lengths = []
    length = resp_ping._length

    def counted(header: bytes, kind: bytes, limit: int, what: str) -> int:
        lengths.append(header)
        return length(header, kind, limit, what)

    monkeypatch.setattr(resp_ping, "_length", counted)
    run = served(resp_ping.handle, [data[i : i + 700] for i in range(0, len(data), 700)])
    assert run.written == b"-ERR wrong number of arguments for 'ping' command\r\n"
    assert len(lengths) <= 2 * (len(args) + 2)  # (from its start each time: 100,000)


def test_resp_unknown_command_and_wrong_arity_keep_the_connection() -> None:
    run = served(
        resp_ping.handle,
        [
            b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n",  # redis-benchmark's
            b"PING a b\r\n",
            b"PING\r\n",
        ],
    )
    assert run.written.split(b"\r\n") == [
        b"-ERR unknown command 'CONFIG'",
        b"-ERR wrong number of arguments for 'ping' command",
        b"+PONG",
        b"",
    ]
    assert not run.ended


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (b"*x\r\n", b"invalid multibulk length"),
        (b"*1\r\n+PING\r\n", b"expected '$', got '+'"),
        (b"*1\r\n$-1\r\n", b"invalid bulk length"),
        (b"*1\r\n$2\r\nPING\r\n", b"expected CRLF after a bulk string"),
        (b"*1\r\n$99999999999\r\n", b"invalid bulk length"),
        (b"*5000\r\n", b"invalid multibulk length"),
        (b"*" + b"1" * 70000, b"too big mbulk count string"),  # a header line never ending
        (b"*1\r\n$" + b"1" * 70000, b"too big bulk count string"),
        (b"x" * 70000, b"too big inline request"),
        (b"*2\r\n$1048576\r\n" + b"x" * 1048576 + b"\r\n$70000\r\n", b"too big request"),
    ],
)
def test_resp_protocol_error_answers_then_closes(request_: bytes, error: bytes) -> None:
    run = served(resp_ping.handle, b"PING\r\n" + request_)
    assert run.written == b"+PONG\r\n-ERR Protocol error: " + error + b"\r\n"
    assert run.ended and run.closed  # of its own accord: the stream had not ended


def test_resp_client_leaving_mid_command_ends_the_handler() -> None:
    half = b"*2\r\n$4\r\nECHO\r\n$10\r\nabc"
    assert not served(resp_ping.handle, half).ended  # it waits for the rest ...
    run = served(resp_ping.handle, half, end=True)  # ... until the client leaves
    assert run.ended and run.closed and run.written == b""


# -- HTTP/1.1 ------------------------------------------------------------------


Response = tuple[bytes, dict[bytes, bytes], bytes]


def parse_head(head: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """The status line and the headers (names in lower case) of a response's head."""
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def read_response(reader: tt.Reader) -> Response:
    """One response: its status line, its headers (names in lower case), its body."""
    head = await within(reader.read_until(b"\r\n\r\n"))
    assert head is not None, "the connection closed before a response"
    status, headers = parse_head(head)
    body = await within(reader.really_read(int(headers[b"content-length"])))
    return status, headers, body


def split_response(written: bytes) -> tuple[Response, bytes]:
    """The first response in C{written} (as L{read_response} reads it), and what follows."""
    head, end, rest = written.partition(b"\r\n\r\n")
    assert end, f"no whole response in {written[:200]!r}"
    status, headers = parse_head(head)
    length = int(headers[b"content-length"])
    assert len(rest) >= length, "the body is cut short"
    return (status, headers, rest[:length]), rest[length:]


GET = b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: test\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_http_keep_alive_then_connection_close() -> None:
    async with serving(http_hello.handle) as where, client(where) as (reader, writer):
        for _ in range(2):  # twice on one connection, as wrk does
            writer.write(GET)
            status, headers, body = await read_response(reader)
            assert status == b"HTTP/1.1 200 OK"
            assert body == http_hello.BODY
            assert int(headers[b"content-length"]) == len(http_hello.BODY)
            assert b"connection" not in headers
        writer.write(b"GET /last HTTP/1.1\r\nHost: localhost\r\nConnection: Close\r\n\r\n")
        status, headers, body = await read_response(reader)
        assert status == b"HTTP/1.1 200 OK"
        assert headers[b"connection"] == b"close"
        assert body == http_hello.BODY
        assert await closed_by_server(reader)


def test_http_pipelined_requests_head_and_body() -> None:
    # The body holds a blank line and the start of what looks like a request:
    # it is read whole, and the next request starts right after it.
    post = b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello\r\n\r\nGE"
    run = served(
        http_hello.handle,
        b"\r\n"  # one blank line before a request is allowed
        + GET
        + b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
        + post
        + b"T / HTTP/1.1\nHost: x\n\n"  # lines ending with a bare LF
        + GET,
    )
    (status, headers, body), rest = split_response(run.written)
    assert (status, body) == (b"HTTP/1.1 200 OK", http_hello.BODY)
    # HEAD: the same headers, no body.
    head, _, rest = rest.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: %d" % len(http_hello.BODY) in head
    for _ in range(2):  # POST, then T: not allowed, and the connection stays open
        (status, headers, body), rest = split_response(rest)
        assert status == b"HTTP/1.1 405 Method Not Allowed"
        assert headers[b"allow"] == b"GET, HEAD"
        assert b"connection" not in headers
    (status, headers, body), rest = split_response(rest)
    assert (status, body) == (b"HTTP/1.1 200 OK", http_hello.BODY)
    assert rest == b"" and not run.ended


def test_http_requests_cut_anywhere_get_the_same_responses() -> None:
    # Heads are parsed from the bytes received, whole ones at once: cut in
    # three anywhere, the requests get the same responses as sent in one go.
    data = (
        b"\r\n" + GET + b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab\r\nc"
        b"GET / HTTP/1.1\nHost: y\n\n" + GET
    )
    whole = served(http_hello.handle, data).written
    assert whole.count(b"HTTP/1.1 200 OK") == 3 and whole.count(b"HTTP/1.1 405") == 1
    for cut in range(1, len(data)):
        for cut2 in (cut + 1, cut + 7):
            parts = [data[:cut], data[cut:cut2], data[cut2:]]
            assert served(http_hello.handle, parts).written == whole, (cut, cut2)


BAD_REQUEST = b"HTTP/1.1 400 Bad Request"


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (b"GARBAGE\r\n\r\n", BAD_REQUEST),
        (b"GET / HTTP/2.0\r\n\r\n", BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n", BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", BAD_REQUEST),
        (b"GET / HTTP/1.1\r\n" + b"A: b\r\n" * 101 + b"\r\n", BAD_REQUEST),
        (b"GET /" + b"x" * 70000 + b" HTTP/1.1\r\n\r\n", BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", b"HTTP/1.1 413 Content Too Large"),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"HTTP/1.1 501 Not Implemented"),
    ],
)
def test_http_malformed_request_answers_then_closes(request_: bytes, status: bytes) -> None:
    run = served(http_hello.handle, GET + request_)
    (ok, _, _), rest = split_response(run.written)
    assert ok == b"HTTP/1.1 200 OK"
    (got, headers, _), rest = split_response(rest)
    assert got == status
    assert headers[b"connection"] == b"close"
    assert rest == b"" and run.ended  # closed of its own accord


@pytest.mark.parametrize("line", [b"GET /\r\n", b"HELLO\n", b"GET / HTTP/1.1 extra\r\nHost: x"])
def test_http_a_bad_request_line_is_answered_before_the_head_ends(line: bytes) -> None:
    run = served(http_hello.handle, [GET, line])  # and nothing more, the client waiting
    (_, _, _), rest = split_response(run.written)
    (status, headers, _), rest = split_response(rest)
    assert status == BAD_REQUEST and headers[b"connection"] == b"close"
    assert run.ended


def test_http_1_0_closes_unless_keep_alive() -> None:
    run = served(
        http_hello.handle,
        [b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", b"GET / HTTP/1.0\r\n\r\n"],
    )
    (status, headers, _), rest = split_response(run.written)
    assert headers[b"connection"] == b"keep-alive"
    (status, headers, body), rest = split_response(rest)
    assert (status, headers[b"connection"], body) == (
        b"HTTP/1.1 200 OK",
        b"close",
        http_hello.BODY,
    )
    assert rest == b"" and run.ended  # closed of its own accord


def test_http_client_leaving_mid_request_ends_the_handler() -> None:
    half = b"GET / HTTP/1.1\r\nHost: x\r\n"
    assert not served(http_hello.handle, half).ended  # it waits for the rest ...
    run = served(http_hello.handle, half, end=True)  # ... until the client leaves
    assert run.ended and run.closed and run.written == b""


# -- as twistd loads them ------------------------------------------------------


@pytest.mark.parametrize("name", ["resp_ping", "http_hello"])
def test_installed_and_loadable_as_twistd_handlers(name: str) -> None:
    """C{--handler twisted_tcp.examples.NAME:handle}, as pip installs them."""
    handler = _service.load_handler(f"twisted_tcp.examples.{name}:handle")
    assert handler is sys.modules[f"twisted_tcp.examples.{name}"].handle
    assert handler.__doc__
