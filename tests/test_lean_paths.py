"""
The lean paths of connections, against what they replaced: a close that the
peer's end of the stream leads to (finished in that turn), connecting
directly with the reactor's connectTCP and connectUNIX (cancel, interrupt
and timeout in every turn, on a fake reactor too), the handler's address,
reads ready at once awaited with callbacks added, and lines() asked for and
awaited later.  Real sockets on 127.0.0.1 and Unix sockets under tmp_path.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, tcp, unix
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IPullProducer
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

import twisted_tcp as tt
from twisted_tcp import ConnectInterruptedError

from .conftest import (
    LOCAL,
    echo,
    logged_errors,
    read_exactly,
    read_to_end,
    serving,
    sleep,
    until,
    where_of,
    within,
)


def raw_unix(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.setblocking(False)
    return s


def raw_tcp(port: int) -> socket.socket:
    s = socket.create_connection((LOCAL, port), timeout=5)
    s.setblocking(False)
    return s


def small_window_tcp(port: int) -> socket.socket:
    """A connection whose receive buffer takes little: what it is sent soon waits."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect((LOCAL, port))
    s.setblocking(False)
    return s


def listening(kind: str, tmp_path: Any) -> tt.WhereToListen:
    """Where a test server listens: a Unix socket under C{tmp_path}, or a port of 127.0.0.1."""
    return tt.on_file(str(tmp_path / "s")) if kind == "unix" else tt.on_port(0, interface=LOCAL)


def connecting(kind: str, server: tt.Server) -> tt.WhereToConnect:
    """Where to connect to a test server that listens where L{listening} says."""
    return tt.to_file(server.listening_on) if kind == "unix" else where_of(server)


def raw_client_of(kind: str, server: tt.Server) -> socket.socket:
    """A plain non-blocking socket connected to that server."""
    return raw_unix(server.listening_on) if kind == "unix" else raw_tcp(server.listening_on)


# -- the handler's address ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unix_handler_address_is_what_getpeer_says(tmp_path: Any) -> None:
    seen: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        seen.append((address, writer.socket.peer_address))
        await reader.read_line()

    path = str(tmp_path / "s")
    async with serving(handler, tt.on_file(path)):
        s = raw_unix(path)
        try:
            await until(lambda: seen)
        finally:
            s.close()
    address, peer = seen[0]
    assert address == peer == UNIXAddress(None)


# -- connecting directly: cancel / interrupt in the same turn -----------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest.mark.parametrize(
    "how", ["cancel", "interrupt", "with_connection_cancel", "with_connection_interrupt"]
)
@pytest_twisted.ensureDeferred
async def test_stop_an_attempt_in_the_turn_it_started(kind: str, how: str, tmp_path: Any) -> None:
    where_listen = listening(kind, tmp_path)

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()

    async with serving(handler, where_listen) as server:
        where = connecting(kind, server)
        if how == "cancel":
            d = tt.connect(where, timeout=5)
            d.cancel()
            with pytest.raises(CancelledError):
                await within(d)
        elif how == "interrupt":
            interrupt: Deferred[None] = Deferred()
            d = tt.connect(where, timeout=5, interrupt=interrupt)
            interrupt.callback(None)
            with pytest.raises(ConnectInterruptedError):
                await within(d)
        elif how == "with_connection_interrupt":
            interrupt = Deferred()
            d = tt.with_connection(
                where, lambda s, r, w: r.read_line(), timeout=5, interrupt=interrupt
            )
            interrupt.callback(None)
            with pytest.raises(ConnectInterruptedError):
                await within(d)
        else:
            d = tt.with_connection(where, lambda s, r, w: r.read_line(), timeout=5)
            d.cancel()
            with pytest.raises(CancelledError):
                await within(d)
        await sleep(0.05)
        await until(lambda: server.num_connections == 0)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_connect_with_an_interrupt_already_fired(kind: str, tmp_path: Any) -> None:
    where_listen = listening(kind, tmp_path)
    async with serving(lambda a, r, w: None, where_listen) as server:
        where = connecting(kind, server)
        with pytest.raises(ConnectInterruptedError):
            await within(tt.connect(where, timeout=5, interrupt=succeed(None)))
        with pytest.raises(ConnectInterruptedError):
            await within(tt.with_connection(where, lambda s, r, w: None, interrupt=succeed(None)))


# -- the close that the peer's end of stream leads to -------------------------------


async def reply_at_eof(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    data = await reader.contents()
    writer.write(data.upper())


async def lines_then_bye(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    async for line in reader.lines():
        writer.write_line(line)
    writer.write_line(b"bye")


async def write_eof_at_eof(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    data = await reader.contents()
    writer.write(data.upper())
    await writer.write_eof()


async def eof_first_then_read(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    writer.write(b"hello ")
    await writer.write_eof()
    data = await reader.contents()
    del data


async def close_and_wait(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    data = await reader.contents()
    writer.write(data.upper())
    await writer.close()


@pytest.mark.parametrize(
    "handler,expect",
    [
        (reply_at_eof, b"ONE\nTWO\n"),
        (lines_then_bye, b"one\ntwo\nbye\n"),
        (write_eof_at_eof, b"ONE\nTWO\n"),
        (eof_first_then_read, b"hello "),
        (close_and_wait, b"ONE\nTWO\n"),
    ],
)
@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_handler_ending_at_the_peers_eof(
    handler: Any, expect: bytes, kind: str, tmp_path: Any
) -> None:
    where_listen = listening(kind, tmp_path)
    with logged_errors() as errors:
        async with serving(handler, where_listen) as server:
            s = raw_client_of(kind, server)
            try:
                s.sendall(b"one\ntwo\n")
                s.shutdown(socket.SHUT_WR)
                assert await read_to_end(s) == expect
                await until(lambda: server.num_connections == 0)
            finally:
                s.close()
    assert not errors, errors


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_with_connection_f_ends_at_the_servers_close(kind: str, tmp_path: Any) -> None:
    where_listen = listening(kind, tmp_path)

    async def server_handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()
        writer.write(b"x" * 300000)  # then close

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> int:
        writer.write(b"hi\n")
        return len(await reader.contents())

    async def f_lines(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> int:
        writer.write(b"hi\n")
        n = 0
        async for line in reader.lines():
            n += len(line)
        return n

    async with serving(server_handler, where_listen, max_line_length=10**6) as server:
        where = connecting(kind, server)
        assert await within(tt.with_connection(where, f, timeout=5)) == 300000
        n = await within(tt.with_connection(where, f_lines, timeout=5, max_line_length=10**6))
        assert n == 300000


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_cancel_with_connection_while_f_waits_in_lines(kind: str, tmp_path: Any) -> None:
    where_listen = listening(kind, tmp_path)
    f_saw: list[Any] = []
    started: list[tt.Socket] = []

    async def server_handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write_line(b"one")
        await reader.read_line()

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> None:
        started.append(sock)
        try:
            async for line in reader.lines():
                f_saw.append(line)
        except CancelledError:
            f_saw.append("cancelled")
            f_saw.append(reader._waiter)
            raise

    async with serving(server_handler, where_listen) as server:
        where = connecting(kind, server)
        d = tt.with_connection(where, f, timeout=5)
        await until(lambda: f_saw)
        d.cancel()
        with pytest.raises(CancelledError):
            await within(d)
        await within(started[0].close_finished())
    assert f_saw == [b"one", "cancelled", None]


# -- reads ready at once, lines asked for early, connects that fail or stop at once --------


@pytest.mark.parametrize("driver", ["lean", "twisted"])
def test_a_ready_read_given_a_failing_callback_raises_when_awaited(driver: str) -> None:
    from twisted.internet.defer import ensureDeferred

    from twisted_tcp import Reader
    from twisted_tcp._driver import run

    def parse(line: bytes) -> Any:
        raise ValueError(line)

    reader = Reader(None)
    reader.data_received(b"hello\n")  # buffered: read_line() has its result at once

    async def handler() -> Any:
        try:
            return await reader.read_line().addCallback(parse)
        except ValueError:
            return "raised"

    out: list[Any] = []
    with logged_errors() as errors:
        if driver == "lean":
            run(handler, (), out.append)
        else:
            ensureDeferred(handler()).addBoth(out.append)
    assert out == ["raised"]
    assert not errors


def test_a_ready_read_whose_callback_returns_a_deferred_waits_for_it() -> None:
    from twisted_tcp import Reader
    from twisted_tcp._driver import run

    reader = Reader(None)
    reader.data_received(b"hello\n")
    inner: Deferred[str] = Deferred()

    async def handler() -> Any:
        return await reader.read_line().addCallback(lambda _: inner)

    out: list[Any] = []
    run(handler, (), out.append)
    assert out == []  # it waits for the Deferred its callback returned
    inner.callback("later")
    assert out == ["later"]


@pytest.mark.parametrize("driver", ["lean", "twisted"])
def test_a_line_asked_for_and_awaited_later_is_not_lost(driver: str) -> None:
    from twisted.internet.defer import ensureDeferred

    from twisted_tcp import Reader
    from twisted_tcp._driver import run

    reader = Reader(None)
    gate: Deferred[None] = Deferred()

    async def handler() -> Any:
        nxt = reader.lines().__anext__()
        await gate
        return await nxt

    out: list[Any] = []
    if driver == "lean":
        run(handler, (), out.append)
    else:
        ensureDeferred(handler()).addBoth(out.append)
    reader.data_received(b"first\n")
    gate.callback(None)
    assert out == [b"first"]


def test_connect_to_a_bad_ipv6_scope_fails_its_deferred_not_the_call() -> None:
    d = tt.connect(tt.to_host_and_port("fe80::1%nosuchif0", 80), timeout=5, reactor=reactor)
    with pytest.raises(socket.gaierror):
        raise_from(d)


def raise_from(d: Deferred[Any]) -> None:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "pending"
    box[0].raiseException()


@pytest.mark.parametrize("how", ["timeout", "interrupt"])
def test_a_direct_attempt_stops_on_a_reactor_whose_connector_reports_later(how: str) -> None:
    from twisted.internet.testing import MemoryReactorClock

    memory = MemoryReactorClock()
    interrupt: Deferred[None] = Deferred()
    d = tt.connect(
        tt.to_host_and_port("127.0.0.1", 80), timeout=5, interrupt=interrupt, reactor=memory
    )
    if how == "timeout":
        memory.advance(6)
    else:
        interrupt.callback(None)
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the attempt never ended"
    assert box[0].check(tt.ConnectTimeoutError if how == "timeout" else ConnectInterruptedError)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_client_half_closes_then_reads_the_reply(kind: str, tmp_path: Any) -> None:
    where_listen = listening(kind, tmp_path)

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> bytes:
        writer.write(b"request " * 10000)
        await writer.write_eof()
        return await reader.contents()

    with logged_errors() as errors:
        async with serving(reply_at_eof, where_listen) as server:
            where = connecting(kind, server)
            for _ in range(5):
                assert await within(tt.with_connection(where, f, timeout=5)) == b"REQUEST " * 10000
            await until(lambda: server.num_connections == 0)
    assert not errors, errors


# -- no object per connection to run the handler -------------------------------------


class _LineReader(tt.Reader):
    """A user's Reader subclass (say, over a decoded sub-stream)."""

    __slots__ = ()


@pytest.mark.parametrize("kind", [tt.Reader, _LineReader])
@pytest.mark.parametrize("driver", ["lean", "twisted"])
def test_a_reader_is_its_own_iterator_of_lines(driver: str, kind: type[tt.Reader]) -> None:
    # (The lean driver knows the await of a line by the reader's class: a
    # subclass's must not be taken for something it cannot await.)
    from twisted.internet.defer import ensureDeferred

    from twisted_tcp._driver import run

    reader = kind(None)
    seen: list[bytes] = []

    async def f() -> list[bytes]:
        assert reader.lines() is reader
        async for line in reader:
            seen.append(line)
        return seen

    outcome: list[Any] = []
    if driver == "lean":
        run(f, (), outcome.append)
    else:
        ensureDeferred(f()).addBoth(outcome.append)
    reader.data_received(b"one\ntw")
    reader.data_received(b"o\n")
    assert seen == [b"one", b"two"] and not outcome
    reader.eof_received()
    assert outcome == [[b"one", b"two"]]


@pytest_twisted.ensureDeferred
async def test_a_served_handler_is_driven_by_its_connection() -> None:
    # The connection itself resumes its handler: no Task, no bound method.
    drivers: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        async for line in reader.lines():
            writer.write_line(line)

    async with serving(handler) as server:
        s = raw_tcp(server.listening_on)
        try:
            await until(lambda: server.stats().connections)
            (connection,) = server._connections
            await until(lambda: connection.reader._task is not None)
            drivers.append(connection.reader._task)
            s.sendall(b"ping\n")
            s.shutdown(socket.SHUT_WR)
            assert await read_to_end(s) == b"ping\n"
        finally:
            s.close()
    assert drivers == [connection]


@pytest_twisted.ensureDeferred
async def test_cancelling_with_connection_cancels_the_deferred_f_returned() -> None:
    cancelled: list[Deferred[Any]] = []
    returned: list[Deferred[Any]] = []

    async def server_handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()

    def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(cancelled.append)
        returned.append(d)
        return d

    async with serving(server_handler) as server:
        d = tt.with_connection(tt.to_host_and_port(LOCAL, server.listening_on), f, timeout=5)
        await until(lambda: returned)
        d.cancel()
        with pytest.raises(CancelledError):
            await within(d)
    assert cancelled == returned


@pytest.mark.parametrize("api", ["with_connection", "connect"])
@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_a_client_connection_that_ended_leaves_no_cycle_of_ours(
    kind: str, api: str, tmp_path: Any
) -> None:
    """
    Once f has ended (with_connection) and the connection is gone, the
    connection lets go of the reader and the writer: its connection, reader
    and writer are freed by reference counting once nobody holds them, not
    left as a cycle (the writer refers back to the connection) for the
    garbage collector.  (Twisted's connector and transport no longer do
    either, after a direct connect.)
    """
    import gc

    from twisted_tcp._connection import Connection

    # Only the ids of what is ours: a reference kept here would keep it from
    # being garbage at all.  (An id may come back: what was freed is reused.)
    mine: set[int] = set()
    calls: list[None] = []

    def ours(thing: object) -> bool:
        if isinstance(thing, tt.Writer):
            thing = thing._connection
        return isinstance(thing, (Connection, tcp.Client, unix.Client)) and id(thing) in mine

    def left_for_the_collector() -> list[Any]:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            return [o for o in gc.garbage if ours(o)]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> bytes | None:
        mine.update((id(sock._connection), id(sock.transport)))
        calls.append(None)
        writer.write_line(b"one")
        return await reader.read_line()

    where_listen = listening(kind, tmp_path)

    async def echo(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        async for line in reader.lines():
            writer.write_line(line)

    async with serving(echo, where_listen) as server:
        where = connecting(kind, server)
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                if api == "with_connection":
                    assert await within(tt.with_connection(where, f, timeout=5)) == b"one"
                else:
                    sock, reader, writer = await within(tt.connect(where, timeout=5))
                    assert await f(sock, reader, writer) == b"one"
                    await within(writer.close())
                    with pytest.raises(RuntimeError, match="already has"):
                        sock.reader_writer()
                    await within(sock.close())  # (closed already: fires at once)
                    del sock, reader, writer
            await sleep(0.01)  # (the last transport's own close, on the next turn)
            assert len(calls) == 5
            assert left_for_the_collector() == []
        finally:
            gc.enable()


@pytest_twisted.ensureDeferred
async def test_a_served_handler_iterates_the_lines_of_its_own_reader_subclass() -> None:
    """
    A handler that decodes the connection's bytes into a Reader of its own
    (a subclass) and iterates its lines.
    """
    errors: list[BaseException] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        inner = _LineReader(None)

        def pump(data: bytes) -> None:
            if data:
                inner.data_received(data.upper())
                reader.read().addCallback(pump)
            else:
                inner.eof_received()

        reader.read().addCallback(pump)
        async for line in inner.lines():
            writer.write_line(line)

    async with serving(handler, on_handler_error=lambda a, e: errors.append(e)) as server:
        s = raw_tcp(server.listening_on)
        try:
            s.sendall(b"one\ntwo\n")
            s.shutdown(socket.SHUT_WR)
            reply = await read_to_end(s)
        finally:
            s.close()
    assert errors == []
    assert reply == b"ONE\nTWO\n"


# -- replies sent at once ------------------------------------------------------------


def record_writes(transport: Any, written: list[bytes]) -> None:
    """Add to C{written} what is written to C{transport} (to its buffer) from now on."""
    write = transport.write
    transport.write = lambda data: (written.append(data), write(data))


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_a_reply_to_a_received_line_leaves_without_twisted_buffering_it(
    kind: str, tmp_path: Any
) -> None:
    # What a handler writes as it handles a chunk goes to the kernel as the
    # chunk's handling ends, not to the transport's buffer for a later turn.
    buffered: list[bytes] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        record_writes(writer.socket.transport, buffered)
        async for line in reader.lines():
            writer.write_line(line + b"!")
            writer.write_line(line + b"?")

    where = listening(kind, tmp_path)
    async with serving(handler, where) as server:
        s = raw_client_of(kind, server)
        try:
            for i in range(3):
                s.sendall(b"%d\n" % i)
                assert await read_exactly(s, 6) == b"%d!\n%d?\n" % (i, i)
        finally:
            s.close()
    assert buffered == []


@pytest_twisted.ensureDeferred
async def test_replies_to_a_peer_that_does_not_read_keep_their_order(monkeypatch: Any) -> None:
    # Replies larger than the socket takes: the kernel takes part of one,
    # Twisted's buffer the rest, and the next ones go after it.
    from twisted_tcp import _writer

    sends: list[tuple[int, int]] = []

    def send_now(transport: Any, data: bytes, producer: object) -> int:
        sent = _send_now(transport, data, producer)
        sends.append((sent, len(data)))
        return sent

    _send_now = _writer.send_now
    monkeypatch.setattr(_writer, "send_now", send_now)
    reply = b"x" * 40_000

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        async for line in reader.lines():
            writer.write_line(line + b":" + reply)

    async with serving(handler) as server:
        s = small_window_tcp(server.listening_on)
        try:
            for i in range(12):  # one chunk each, not read
                s.sendall(b"%02d\n" % i)
                await until(lambda i=i: len(sends) > i)
            expected = b"".join(b"%02d:%s\n" % (i, reply) for i in range(12))
            assert await read_exactly(s, len(expected)) == expected
        finally:
            s.close()
    assert any(0 < sent < size for sent, size in sends)  # the kernel took part of one
    assert any(sent == 0 for sent, _ in sends)  # and then none: Twisted's buffer held bytes


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_with_connection_sends_what_f_writes_as_it_starts_at_once(
    kind: str, tmp_path: Any
) -> None:
    buffered: list[bytes] = []

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> bytes | None:
        record_writes(sock.transport, buffered)
        writer.write_line(b"one")
        writer.write_line(b"two")
        return await reader.read_line()

    where = listening(kind, tmp_path)
    async with serving(echo, where) as server:
        to = connecting(kind, server)
        assert await within(tt.with_connection(to, f)) == b"one"
    assert buffered == []


@pytest.mark.parametrize("kind", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_a_large_write_leaves_at_once_and_small_ones_together(
    kind: str, tmp_path: Any
) -> None:
    # Outside a gather (after a wait the reactor ends), a write of at least
    # SEND_NOW_MIN bytes goes to the kernel as it is made; smaller ones go to
    # Twisted's buffer, to leave in its next send.
    from twisted_tcp._writer import SEND_NOW_MIN

    buffered: list[bytes] = []
    large, small = b"L" * SEND_NOW_MIN, b"s" * (SEND_NOW_MIN - 1)

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> bytes:
        record_writes(sock.transport, buffered)
        await sleep(0)
        writer.write(large)
        assert writer.bytes_to_write == 0
        writer.write(small)
        writer.write(b"\n")
        assert writer.bytes_to_write == len(small) + 1
        await within(writer.flushed())
        writer.write_eof()
        return await within(reader.contents())

    where = listening(kind, tmp_path)
    async with serving(echo, where) as server:
        to = connecting(kind, server)
        assert await within(tt.with_connection(to, f)) == large + small + b"\n"
    assert buffered == [small, b"\n"]


@pytest_twisted.ensureDeferred
async def test_large_writes_to_a_peer_that_does_not_read_keep_their_order(
    monkeypatch: Any,
) -> None:
    # Large writes outside a gather, more than the socket takes: the kernel
    # takes some whole, part of one, then none while Twisted's buffer holds
    # bytes; every byte arrives, in order.
    from twisted_tcp import _writer

    sends: list[tuple[int, int]] = []

    def send_now(transport: Any, data: bytes, producer: object) -> int:
        sent = _send_now(transport, data, producer)
        sends.append((sent, len(data)))
        return sent

    _send_now = _writer.send_now
    monkeypatch.setattr(_writer, "send_now", send_now)
    chunks = [bytes([65 + i]) * 40_000 for i in range(26)]
    received: list[bytes] = []
    paused: list[Any] = []
    lost: Deferred[None] = Deferred()

    class Slow(Protocol):
        def connectionMade(self) -> None:
            self.transport.pauseProducing()  # type: ignore[union-attr]
            paused.append(self.transport)

        def dataReceived(self, data: bytes) -> None:
            received.append(data)

        def connectionLost(self, reason: object = None) -> None:
            lost.callback(None)

    async def send(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        await sleep(0)
        for chunk in chunks:
            writer.write(chunk)
        await until(lambda: paused)
        paused[0].resumeProducing()
        await within(writer.flushed())

    port = reactor.listenTCP(0, Factory.forProtocol(Slow), interface=LOCAL)  # type: ignore[attr-defined]
    try:
        where = tt.to_host_and_port(LOCAL, port.getHost().port)
        await within(tt.with_connection(where, send))
        await within(lost)
    finally:
        await port.stopListening()
    assert b"".join(received) == b"".join(chunks)
    assert any(0 < sent < size for sent, size in sends)  # the kernel took part of one
    assert any(sent == 0 for sent, _ in sends)  # and then none: Twisted's buffer held bytes


@pytest_twisted.ensureDeferred
async def test_a_pull_producer_of_large_writes_on_the_transport_is_resumed() -> None:
    # Somebody's non-streaming producer on the connection's transport, which
    # writes 20 KB through the writer each time Twisted resumes it (when its
    # buffer drained): those bytes go through that buffer, or it would never
    # be resumed again.
    chunks = [bytes([65 + i]) * 20_000 for i in range(5)]
    done: Deferred[None] = Deferred()

    @implementer(IPullProducer)
    class Producer:
        def __init__(self, writer: tt.Writer) -> None:
            self.writer = writer
            self.left = list(chunks)

        def resumeProducing(self) -> None:
            if self.left:
                self.writer.write(self.left.pop(0))
            else:
                self.writer.socket.transport.unregisterProducer()
                done.callback(None)

        def stopProducing(self) -> None:
            pass

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()
        await sleep(0)  # (outside the gather)
        writer.socket.transport.registerProducer(Producer(writer), False)
        await within(done)
        await within(writer.close())

    async with serving(handler) as server:
        s = raw_tcp(server.listening_on)
        try:
            s.sendall(b"go\n")
            got = await read_to_end(s)
        finally:
            s.close()
    assert got == b"".join(chunks)


@pytest_twisted.ensureDeferred
async def test_a_line_sent_before_a_reset_that_a_large_write_meets_is_read() -> None:
    # The peer sends a line, then resets, before the reactor looks.  The
    # handler, resumed by something else in that turn, writes 32 KB (sent at
    # once, meeting the reset), then reads: it gets the line the kernel held,
    # then the end of the stream, and the consumer is known to have left.
    go: Deferred[None] = Deferred()
    events: list[object] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.consumer_left().addBoth(lambda _: events.append("lost"))
        await go
        writer.write(b"x" * 32768)
        events.append(await reader.read_line())
        events.append(await reader.read_line())

    async with serving(handler) as server:
        s = raw_tcp(server.listening_on)
        await until(lambda: server.num_connections == 1)
        reset_after(s, b"last words\n")
        go.callback(None)
        await until(lambda: len(events) == 3)
    assert events == [b"last words", "lost", None]


@pytest_twisted.ensureDeferred
async def test_what_came_before_a_reset_is_not_handed_over_after_an_abort() -> None:
    # As above, with much more sent before the reset than one read takes:
    # once the handler aborts, it reads only what was buffered by then.
    go: Deferred[None] = Deferred()
    sizes: list[int] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await go
        writer.write(b"x" * 32768)
        sizes.append(len(await reader.read(1000)))
        writer.abort()
        while data := await reader.read():
            sizes.append(len(data))
        sizes.append(0)

    async with serving(handler, reader_buffer_size=4096) as server:
        s = raw_tcp(server.listening_on)
        await until(lambda: server.num_connections == 1)
        reset_after(s, b"y" * 300_000)
        go.callback(None)
        await until(lambda: sizes[-1:] == [0])
        await until(lambda: server.num_connections == 0)
    assert sizes[0] == 1000
    assert sum(sizes) <= 65536  # one read's worth, no more


@pytest_twisted.ensureDeferred
async def test_what_came_before_a_reset_is_handed_over_one_read_at_most() -> None:
    # The peer fills the server's receive buffer (its reader is paused past
    # reader_buffer_size), then resets: a large write meets the reset, and
    # what the kernel held is handed over as one read would take it, not
    # all of it, past the reader's limit.
    go: Deferred[None] = Deferred()
    buffered: list[int] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await go
        writer.write(b"x" * 32768)
        await sleep(0.1)  # (the hand-over, then the loss)
        buffered.append(reader.bytes_buffered)

    async with serving(handler, reader_buffer_size=4096) as server:
        s = raw_tcp(server.listening_on)
        await until(lambda: server.num_connections == 1)
        sent = 0
        for _ in range(1000):  # until the kernel takes no more
            try:
                sent += s.send(b"y" * 65536)
            except BlockingIOError:
                await sleep(0.05)
                try:
                    sent += s.send(b"y" * 65536)
                except BlockingIOError:
                    break
        assert sent > 3 * 65536
        reset_after(s, b"")
        go.callback(None)
        await until(lambda: buffered)
    assert buffered[0] <= 2 * 65536  # one read before the pause, one hand-over


@pytest_twisted.ensureDeferred
async def test_a_reply_sent_at_once_tells_whoever_waits_for_its_drain() -> None:
    # A handler that waits for each flush, on a server with an idle timeout
    # (whose writers are told of every drain): replies still leave at once,
    # and each flush fires as its reply leaves.
    buffered: list[bytes] = []
    flushed: list[bytes] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        record_writes(writer.socket.transport, buffered)
        async for line in reader.lines():
            writer.write_line(line)
            await writer.flushed()
            flushed.append(line)

    async with serving(handler, idle_timeout=30) as server:
        s = raw_tcp(server.listening_on)
        try:
            for i in range(3):
                s.sendall(b"%d\n" % i)
                assert await read_exactly(s, 2) == b"%d\n" % i
                await until(lambda i=i: len(flushed) > i)
        finally:
            s.close()
    assert flushed == [b"0", b"1", b"2"]
    assert buffered == []


@pytest_twisted.ensureDeferred
async def test_a_descriptor_passed_with_a_reply_goes_with_it(tmp_path: Any) -> None:
    # A Unix socket's sendFileDescriptor: the descriptor waits in the
    # transport for the next bytes, which are then left to the transport.
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, b"through the pipe")

        async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
            async for _ in reader.lines():
                writer.socket.transport.sendFileDescriptor(read_end)
                writer.write(b"here is a descriptor\n")

        path = str(tmp_path / "s")
        async with serving(handler, tt.on_file(path)):
            s = raw_unix(path)
            try:
                s.sendall(b"give\n")
                fds = array.array("i")

                async def receive() -> bytes:
                    while True:
                        try:
                            data, ancillary, _, _ = s.recvmsg(100, socket.CMSG_LEN(fds.itemsize))
                        except BlockingIOError:
                            await sleep(0.005)
                            continue
                        for level, kind, item in ancillary:
                            if (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS):
                                fds.frombytes(item)
                        return data  # type: ignore[no-any-return]

                assert await within(receive()) + await read_to_end_of_line(s) == (
                    b"here is a descriptor\n"
                )
                assert len(fds) == 1
                try:
                    assert os.read(fds[0], 100) == b"through the pipe"
                finally:
                    os.close(fds[0])
            finally:
                s.close()
    finally:
        os.close(read_end)
        os.close(write_end)


async def read_to_end_of_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        data += await read_exactly(s, 1)
    return data


def reset_after(s: socket.socket, data: bytes) -> None:
    """Send C{data}, then reset the connection (a close with SO_LINGER 0)."""
    s.sendall(data)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


@pytest.mark.parametrize("reply", [b"hello\n", b""], ids=["line", "empty"])
@pytest_twisted.ensureDeferred
async def test_a_reset_met_by_a_reply_is_the_connections_loss_not_an_end_of_stream(
    reply: bytes,
) -> None:
    # The peer resets the connection right after its request: the kernel
    # hands over the request, then the reset to whoever meets it first --
    # the reply's send -- and then a plain end of the stream.  (An empty
    # reply sends nothing: the transport's next read meets the reset.)
    events: list[str] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.consumer_left().addBoth(lambda _: events.append("lost"))
        async for _ in reader.lines():
            writer.write(reply)
        events.append("end of stream")

    async with serving(handler) as server:
        reset_after(socket.create_connection((LOCAL, server.listening_on), timeout=5), b"hi\n")
        await until(lambda: len(events) == 2)
        await until(lambda: server.num_connections == 0)
    assert events == ["lost", "end of stream"]


@pytest_twisted.ensureDeferred
async def test_a_reset_met_by_a_reply_stays_the_loss_when_the_reader_resumes_reading() -> None:
    # The reader, paused above its buffer_size, resumes the transport in
    # the turn after the reply met the reset, before the reactor polls:
    # still no read is tried (it would find a clean end of the stream).
    events: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        reader.buffer_size = 1024
        writer.consumer_left().addBoth(lambda _: events.append("lost"))
        line = await reader.read_line()
        writer.write_line(line)
        await sleep(0)
        events.append(len(await reader.really_read(8192)))
        events.append(await reader.read_line())

    async with serving(handler) as server:
        s = socket.create_connection((LOCAL, server.listening_on), timeout=5)
        reset_after(s, b"hello\n" + b"x" * 8192)  # both read in one chunk, then the reset
        await until(lambda: len(events) == 3)
    assert sorted(events, key=str) == [8192, None, "lost"]


@pytest_twisted.ensureDeferred
async def test_a_reply_gathered_before_the_transport_is_aborted_is_dropped() -> None:
    # As Twisted drops what was written to a transport it aborts.
    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()
        writer.write_line(b"not for the peer")
        writer.socket.transport.abortConnection()

    async with serving(handler) as server:
        s = raw_tcp(server.listening_on)
        try:
            s.sendall(b"hi\n")
            assert await read_to_end(s) == b""
        finally:
            s.close()


@pytest_twisted.ensureDeferred
async def test_a_reply_sent_at_once_leaves_the_writer_drained_with_no_age_to_watch() -> None:
    # Nothing waits, so nothing is noted for the buffer-age check (a note
    # costs the sweeper a call per writer each second): the writer knows
    # at once that every byte has left.
    from twisted_tcp._sweeper import sweeper_for

    seen: list[tuple[int, bool]] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        async for line in reader.lines():
            if line == b"?":
                noted = writer in sweeper_for(reactor)._noted
                seen.append((writer.bytes_to_write, noted))
            writer.write_line(line)

    async with serving(handler) as server:
        s = raw_tcp(server.listening_on)
        try:
            for line in (b"a", b"b", b"?"):
                s.sendall(line + b"\n")
                assert await read_exactly(s, 2) == line + b"\n"
        finally:
            s.close()
    assert seen == [(0, False)]


@pytest.mark.parametrize("limit", [0.3, 1.2])  # a timer of its own; the sweeper's first
@pytest_twisted.ensureDeferred
async def test_replies_that_do_not_all_leave_at_once_have_their_age_checked(
    limit: float,
) -> None:
    # A peer that sends requests but never reads their large replies: the
    # part the kernel did not take waits, and the buffer-age limit ends it.
    reply = b"x" * 60_000  # sent at once, if the kernel takes it all
    reported: list[BaseException] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        async for _line in reader.lines():
            writer.write_line(reply)

    async with serving(
        handler, buffer_age_limit=limit, on_handler_error=lambda a, e: reported.append(e)
    ) as server:
        s = small_window_tcp(server.listening_on)
        try:
            s.sendall(b"give\n")
            await until(lambda: reported, 5 + limit)
            await until(lambda: server.num_connections == 0)
        finally:
            s.close()
    assert len(reported) == 1
    assert isinstance(reported[0], tt.BufferAgeLimitError)


@pytest.mark.parametrize("how", ["abort", "transport"])
@pytest_twisted.ensureDeferred
async def test_a_flush_of_a_gathered_reply_that_was_dropped_fails(how: str) -> None:
    # Never sent, so never flushed: the writer's abort, or the connection
    # lost, drops what was gathered.
    outcomes: list[object] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()
        writer.write_line(b"not for the peer")
        if how == "abort":
            writer.abort()
        else:
            writer.socket.transport.abortConnection()
            await writer.consumer_left()
        try:
            await writer.flushed()
        except Exception as e:
            outcomes.append(e)
        else:
            outcomes.append("flushed")

    async with serving(handler) as server:
        s = raw_tcp(server.listening_on)
        try:
            s.sendall(b"hi\n")
            assert await read_to_end(s) == b""
            await until(lambda: outcomes)
        finally:
            s.close()
    assert len(outcomes) == 1 and isinstance(outcomes[0], Exception), outcomes


@pytest.mark.parametrize("empty", ["write", "write_sequence"])
@pytest_twisted.ensureDeferred
async def test_a_flush_after_an_empty_gathered_write_fires(empty: str) -> None:
    # Nothing to send, so nothing to wait for (a decompressor that gave no
    # bytes yet, say).
    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        async for line in reader.lines():
            if empty == "write":
                writer.write(b"")
            else:
                writer.write_sequence([b"", b""])
            await writer.flushed()
            writer.write_line(b"done " + line)

    async with serving(handler) as server:
        s = raw_tcp(server.listening_on)
        try:
            s.sendall(b"hi\n")
            assert await read_exactly(s, 8) == b"done hi\n"
        finally:
            s.close()


@pytest_twisted.ensureDeferred
async def test_a_reply_gathered_then_closed_leaves_whole_past_the_age_limit() -> None:
    # The handler replies and closes as it handles the request; the peer
    # reads only after the age limit: close_timeout bounds the close, and
    # every byte arrives.
    reply = b"x" * (4 << 20)

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()
        writer.write(reply)
        await writer.close()

    async with serving(handler, buffer_age_limit=0.3, close_timeout=20) as server:
        s = small_window_tcp(server.listening_on)
        try:
            s.sendall(b"hi\n")
            await sleep(1.0)  # past the age limit, well within close_timeout
            assert await read_to_end(s) == reply
        finally:
            s.close()


@pytest_twisted.ensureDeferred
async def test_with_connection_sends_a_request_whole_to_a_peer_slow_to_read() -> None:
    # f writes its request and returns in the same turn: the close that
    # follows is bounded by close_timeout, not by the age limit.
    request = b"x" * (16 << 20)
    received: list[int] = [0]
    lost: Deferred[None] = Deferred()

    class Slow(Protocol):
        def connectionMade(self) -> None:
            self.transport.pauseProducing()  # type: ignore[union-attr]
            reactor.callLater(1.0, self.transport.resumeProducing)  # type: ignore[attr-defined, union-attr]

        def dataReceived(self, data: bytes) -> None:
            received[0] += len(data)

        def connectionLost(self, reason: object = None) -> None:
            lost.callback(None)

    port = reactor.listenTCP(0, Factory.forProtocol(Slow), interface=LOCAL)  # type: ignore[attr-defined]
    try:

        def send(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> str:
            writer.write(request)
            return "sent"

        where = tt.to_host_and_port(LOCAL, port.getHost().port)
        assert await within(tt.with_connection(where, send, buffer_age_limit=0.5)) == "sent"
        await within(lost)
    finally:
        await port.stopListening()
    assert received[0] == len(request)


@pytest_twisted.ensureDeferred
async def test_bytes_to_write_after_the_kernel_took_part_of_a_write() -> None:
    # A write sent at once of which the kernel takes only part: what the
    # kernel took is no longer to write, also while the writer is told of
    # every drain (an idle timeout has it watch them), when it does not ask
    # the transport.
    seen: list[tuple[int, int]] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()
        transport = writer.socket.transport
        chunk = b"x" * (64 * 1024)
        for _ in range(64):  # (the window is small: one of these is sent in part)
            await sleep(0)  # (out of the reader's gather: each write is sent as it is made)
            writer.write(chunk)
            held = transport._tempDataLen + len(transport.dataBuffer) - transport.offset
            if held:
                seen.append((writer.bytes_to_write, held))
                return

    async with serving(handler, idle_timeout=30.0) as server:
        s = small_window_tcp(server.listening_on)
        try:
            s.sendall(b"go\n")
            await until(lambda: seen)
        finally:
            s.close()
    [(to_write, held)] = seen
    assert to_write == held
