"""
Tests of the shout handler, as you would write them for your own handler:
pytest with pytest-twisted, a real Server on a port the OS chooses on
127.0.0.1, real clients, and a bound on every wait.

    python -m pytest test_shout.py
"""

from contextlib import asynccontextmanager

import pytest_twisted
import shout
from twisted.internet import reactor

import twisted_tcp

WAIT = 5.0  # seconds: no test waits longer than this for anything


def within(d, seconds=WAIT):
    """d, failing with TimeoutError after seconds instead of hanging the test run."""
    return d.addTimeout(seconds, reactor)


@asynccontextmanager
async def serving(handler):
    """A server running handler; its failures are collected, and it is closed at the end."""
    failures = []
    server = await within(
        twisted_tcp.Server.create(
            twisted_tcp.on_port(0, interface="127.0.0.1"),
            handler,
            on_handler_error=lambda address, error: failures.append(error),
        )
    )
    try:
        yield twisted_tcp.to_host_and_port("127.0.0.1", server.listening_on)
    finally:
        await within(server.close(close_existing_connections=True))
        await within(server.drained())
    assert failures == []


@pytest_twisted.ensureDeferred
async def test_lines_come_back_in_capitals():
    async def talk(sock, reader, writer):
        writer.write_line(b"hello")
        first = await within(reader.read_line())
        writer.write_line(b"quit")
        return first, await within(reader.read_line()), await within(reader.read_line())

    async with serving(shout.handle) as where:
        first, last, end = await within(twisted_tcp.with_connection(where, talk))
    assert first == b"HELLO"
    assert last == b"1 line(s) from 127.0.0.1, bye"
    assert end is None  # the server closed the connection


@pytest_twisted.ensureDeferred
async def test_end_of_stream_ends_the_conversation():
    async def talk(sock, reader, writer):
        writer.write(b"one\r\ntwo\nthree")  # CRLF, LF, and a last line without newline
        await writer.write_eof()
        return [line async for line in reader.lines()]

    async with serving(shout.handle) as where:
        replies = await within(twisted_tcp.with_connection(where, talk))
    assert replies == [b"ONE", b"TWO", b"THREE", b"3 line(s) from 127.0.0.1, bye"]
