"""
twisted_tcp.testing: the in-memory pair and run_handler, which users' own
tests rely on.  No socket, no reactor: every step happens in the test's calls.
"""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

import twisted_tcp as tt
from twisted_tcp.examples import echo, kv
from twisted_tcp.testing import CLIENT_ADDRESS, connected_pair, run_handler

from .conftest import PENDING, outcome


def test_lines_both_ways_then_close() -> None:
    pair = connected_pair()
    line = pair.server.reader.read_line()
    pair.client.writer.write_line(b"hello")
    assert outcome(line) is PENDING  # nothing moves before flush()
    pair.flush()
    assert outcome(line) == b"hello"
    pair.server.writer.write_line(b"hi")
    closed = pair.server.writer.close()
    pair.flush()
    assert outcome(closed) is None
    assert outcome(pair.client.reader.read_line()) == b"hi"
    assert outcome(pair.client.reader.read_line()) is None  # the server closed
    assert pair.server.closed and not pair.client.closed  # as over TCP: until it closes too
    assert outcome(pair.client.writer.close()) is PENDING
    pair.flush()
    assert pair.client.closed
    assert pair.server.socket.peer_address == CLIENT_ADDRESS


def test_half_close_then_the_reply() -> None:
    pair = connected_pair()
    pair.client.writer.write_line(b"question")
    eof = pair.client.writer.write_eof()
    pair.flush()
    assert outcome(eof) is None
    assert outcome(pair.server.reader.contents()) == b"question\n"
    pair.server.writer.write_line(b"answer")
    pair.server.writer.close()
    pair.flush()
    assert outcome(pair.client.reader.contents()) == b"answer\n"


def test_a_reader_that_does_not_read_holds_the_bytes_back() -> None:
    pair = connected_pair(settings=tt.Settings(reader_buffer_size=1024))
    pair.client.writer.write(b"x" * 100_000)
    pair.flush()  # delivered: the server's reader is over its buffer size, and stops reading
    pair.client.writer.write(b"y" * 10)
    flushed = pair.client.writer.flushed()
    pair.flush()
    assert outcome(flushed) is PENDING
    assert pair.client.writer.bytes_to_write == 10
    assert pair.server.reader.bytes_buffered == 100_000
    assert outcome(pair.server.reader.really_read(100_000)) == b"x" * 100_000
    pair.flush()
    assert outcome(flushed) is None
    assert outcome(pair.server.reader.read()) == b"y" * 10


def test_the_buffer_age_limit_on_the_pairs_clock() -> None:
    clock = Clock()
    settings = tt.Settings(reader_buffer_size=16, buffer_age_limit=5.0)
    pair = connected_pair(clock=clock, settings=settings)
    pair.server.writer.write(b"x" * 1000)
    pair.flush()  # the client reads none of it: its reader is full, and stops reading
    pair.server.writer.write(b"y" * 1000)
    pair.flush()
    assert pair.server.writer.bytes_to_write == 1000  # it waits, as in the kernel
    left = pair.server.writer.consumer_left()
    clock.advance(1.0)  # the sweep finds the bytes waiting
    clock.advance(4.0)
    assert pair.server.writer.error is None
    clock.advance(1.0)  # past the limit, counted from the sweep
    pair.flush()
    assert isinstance(pair.server.writer.error, tt.BufferAgeLimitError)
    failure = outcome(left)
    assert failure.check(tt.BufferAgeLimitError)
    assert pair.server.closed and pair.client.closed


def test_run_handler_echo() -> None:
    run = run_handler(echo.handle, [b"hello\n", b"wor", b"ld\n"])
    assert run.written == b"hello\nworld\n"
    assert run.ended and run.error is None and run.closed


def test_run_handler_left_waiting() -> None:
    run = run_handler(echo.handle, b"one\ntw", end=False)
    assert run.written == b"one\n"
    assert not run.ended and not run.closed


def test_run_handler_reports_what_the_handler_raised() -> None:
    async def boom(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write_line(b"about to fail")
        await reader.read_line()
        raise ValueError("no")

    run = run_handler(boom, b"go\n")
    assert isinstance(run.error, ValueError) and run.ended and run.closed
    assert run.written == b"about to fail\n"  # flushed, then closed, as the server does


def test_run_handler_result_and_address() -> None:
    async def greet(address: Any, reader: tt.Reader, writer: tt.Writer) -> str:
        writer.write_line(b"hello %s" % address.host.encode())
        return "greeted"

    run = run_handler(greet, b"")
    assert run.written == b"hello 192.0.2.1\n"
    assert run.result == "greeted"


def test_run_handler_with_the_kv_example() -> None:
    run = run_handler(kv.handle, b"SET a 1\nGET a\nGET b\n")
    assert run.written.splitlines() == [b"OK", b"1", b"NIL"]


@pytest.mark.parametrize("chunk", [1, 3, 7])
def test_run_handler_any_chunking(chunk: int) -> None:
    data = b"".join(b"line %d\n" % i for i in range(50))
    run = run_handler(echo.handle, [data[i : i + chunk] for i in range(0, len(data), chunk)])
    assert run.written == data


def test_an_abort_reaches_both_ends_at_the_next_flush() -> None:
    pair = connected_pair()
    left = pair.client.writer.consumer_left()
    pair.server.writer.write(b"never sent")
    pair.server.writer.abort()
    assert not pair.server.closed  # as Twisted's transports: not within the call
    pair.flush()
    assert pair.server.closed and pair.client.closed
    assert outcome(left) is None  # the peer is gone
    assert outcome(pair.client.reader.read()) == b""
