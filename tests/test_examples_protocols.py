"""
The protocol handlers of twisted_tcp.examples -- resp_ping (Redis's RESP, PING) and
http_hello (minimal HTTP/1.1 keep-alive) -- served by a real L{Server} on
127.0.0.1 and spoken to over real sockets, as the benchmark's redis-benchmark
and wrk workloads use them.

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

from .conftest import WAIT, logged_errors, sleep, within

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


@pytest_twisted.ensureDeferred
async def test_resp_command_split_across_packets() -> None:
    async with serving(resp_ping.handle) as where, client(where) as (reader, writer):
        for part in (b"*1\r", b"\n$4\r\nPI", b"NG", b"\r", b"\nPI", b"NG\r\n"):
            writer.write(part)
            await writer.flushed()
            await sleep(0.01)
        assert await within(reader.really_read(14)) == b"+PONG\r\n+PONG\r\n"


@pytest_twisted.ensureDeferred
async def test_resp_unknown_command_and_wrong_arity_keep_the_connection() -> None:
    async with serving(resp_ping.handle) as where, client(where) as (reader, writer):
        writer.write(b"*3\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n$4\r\nsave\r\n")  # redis-benchmark's
        assert await within(reader.read_line()) == b"-ERR unknown command 'CONFIG'"
        writer.write(b"PING a b\r\n")
        assert await within(reader.read_line()) == (
            b"-ERR wrong number of arguments for 'ping' command"
        )
        writer.write(b"PING\r\n")
        assert await within(reader.read_line()) == b"+PONG"


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (b"*x\r\n", b"invalid multibulk length"),
        (b"*1\r\n+PING\r\n", b"expected '$', got '+'"),
        (b"*1\r\n$-1\r\n", b"invalid bulk length"),
        (b"*1\r\n$2\r\nPING\r\n", b"expected CRLF after a bulk string"),
        (b"*1\r\n$99999999999\r\n", b"invalid bulk length"),
        (b"*5000\r\n", b"invalid multibulk length"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_resp_protocol_error_answers_then_closes(request_: bytes, error: bytes) -> None:
    async with serving(resp_ping.handle) as where, client(where) as (reader, writer):
        writer.write(b"PING\r\n" + request_)
        assert await within(reader.read_line()) == b"+PONG"
        assert await within(reader.read_line()) == b"-ERR Protocol error: " + error
        assert await closed_by_server(reader)


@pytest_twisted.ensureDeferred
async def test_resp_client_leaving_mid_command_ends_the_handler() -> None:
    async with serving(resp_ping.handle) as where, client(where) as (reader, writer):
        writer.write(b"*2\r\n$4\r\nECHO\r\n$10\r\nabc")
        await within(writer.write_eof())
        assert await closed_by_server(reader)


# -- HTTP/1.1 ------------------------------------------------------------------


async def read_response(reader: tt.Reader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One response: its status line, its headers (names in lower case), its body."""
    head = await within(reader.read_until(b"\r\n\r\n"))
    assert head is not None, "the connection closed before a response"
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    body = await within(reader.really_read(int(headers[b"content-length"])))
    return status, headers, body


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


@pytest_twisted.ensureDeferred
async def test_http_pipelined_requests_head_and_body() -> None:
    # The body holds a blank line and the start of what looks like a request:
    # it is read whole, and the next request starts right after it.
    post = b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello\r\n\r\nGE"
    async with serving(http_hello.handle) as where, client(where) as (reader, writer):
        writer.write(
            b"\r\n"  # one blank line before a request is allowed
            + GET
            + b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
            + post
            + b"T / HTTP/1.1\nHost: x\n\n"  # lines ending with a bare LF
            + GET
        )
        status, headers, body = await read_response(reader)
        assert (status, body) == (b"HTTP/1.1 200 OK", http_hello.BODY)
        # HEAD: the same headers, no body.
        head = await within(reader.read_until(b"\r\n\r\n"))
        assert head is not None and head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Length: %d" % len(http_hello.BODY) in head
        for _ in range(2):  # POST, then T: not allowed, and the connection stays open
            status, headers, body = await read_response(reader)
            assert status == b"HTTP/1.1 405 Method Not Allowed"
            assert headers[b"allow"] == b"GET, HEAD"
            assert b"connection" not in headers
        status, headers, body = await read_response(reader)
        assert (status, body) == (b"HTTP/1.1 200 OK", http_hello.BODY)


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
@pytest_twisted.ensureDeferred
async def test_http_malformed_request_answers_then_closes(request_: bytes, status: bytes) -> None:
    async with serving(http_hello.handle) as where, client(where) as (reader, writer):
        writer.write(GET + request_)
        assert (await read_response(reader))[0] == b"HTTP/1.1 200 OK"
        got, headers, _ = await read_response(reader)
        assert got == status
        assert headers[b"connection"] == b"close"
        assert await closed_by_server(reader)


@pytest_twisted.ensureDeferred
async def test_http_1_0_closes_unless_keep_alive() -> None:
    async with serving(http_hello.handle) as where:
        async with client(where) as (reader, writer):
            writer.write(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = await read_response(reader)
            assert headers[b"connection"] == b"keep-alive"
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            status, headers, body = await read_response(reader)
            assert (status, headers[b"connection"], body) == (
                b"HTTP/1.1 200 OK",
                b"close",
                http_hello.BODY,
            )
            assert await closed_by_server(reader)


@pytest_twisted.ensureDeferred
async def test_http_client_leaving_mid_request_ends_the_handler() -> None:
    async with serving(http_hello.handle) as where, client(where) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        await within(writer.write_eof())
        assert await closed_by_server(reader)


# -- as twistd loads them ------------------------------------------------------


@pytest.mark.parametrize("name", ["resp_ping", "http_hello"])
def test_installed_and_loadable_as_twistd_handlers(name: str) -> None:
    """C{--handler twisted_tcp.examples.NAME:handle}, as pip installs them."""
    handler = _service.load_handler(f"twisted_tcp.examples.{name}:handle")
    assert handler is sys.modules[f"twisted_tcp.examples.{name}"].handle
    assert handler.__doc__
