"""
Tests for L{twisted_tcp.Server}: real sockets on 127.0.0.1 (and [::1]), Unix
sockets under C{tmp_path}.

Every wait is bounded by L{within}; every server and client is closed in a
C{finally} block, and the autouse C{no_leaks} fixture checks that nothing
(descriptor, reactor reader/writer, timer) is left behind.
"""

from __future__ import annotations

import gc
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import error, reactor, tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import (
    Deferred,
    gatherResults,
    inlineCallbacks,
)
from twisted.logger import formatEvent

import twisted_tcp as tt

from .conftest import (
    LOCAL,
    WAIT,
    chat,
    echo,
    echo_in_batches,
    logged_errors,
    open_fds,
    raw_client,
    reset,
    serving,
    sleep,
    until,
    where_of,
    within,
)

# -- helpers -------------------------------------------------------------------


async def raw_read_line(s: socket.socket) -> bytes:
    """Read from a non-blocking socket up to a newline or the end of stream."""

    async def read() -> bytes:
        data = b""
        while not data.endswith(b"\n"):
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                await sleep(0.005)
                continue
            if not chunk:
                break
            data += chunk
        return data

    return await within(read())  # type: ignore[no-any-return]


def listening_port_reading(server: tt.Server) -> bool:
    """Whether the reactor watches the server's listening socket (it accepts)."""
    return any(
        isinstance(r, tcp.Port) and r.getHost().port == server.listening_on
        for r in reactor.getReaders()
    )


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- serving -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_an_echo_leaves_twisted_transports_as_they_were() -> None:
    """
    Neither end registers a producer with Twisted's transport while nobody
    waits for a flush: adding one grows every transport by 0.8 KiB (its
    __dict__), and costs a call at every drain.  A flush that waits does,
    until the drain it waits for.
    """
    transports: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        transports.append(writer._transport)
        await echo(address, reader, writer)

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> Any:
        transports.append(writer._transport)
        for line in (b"one", b"two"):
            writer.write_line(line)
            assert await reader.read_line() == line
        assert "producer" not in vars(transports[0]) and "producer" not in vars(transports[1])
        writer.write((b"x" * 1023 + b"\n") * 4096)  # more than the kernel takes at once
        flushed = writer.flushed()
        during = transports[1].producer
        await flushed
        return during, transports[1].producer

    async with serving(handler) as server:
        during, after = await within(tt.with_connection(where_of(server), f))
    assert isinstance(during, tt.Writer)
    assert after is None  # watched until the drain it waited for, not for good


@pytest_twisted.ensureDeferred
async def test_a_handler_ending_with_its_peer_closes_in_that_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    A handler that ends at its peer's end of the stream, with nothing left
    to send, has its connection closed in that turn of the reactor: the
    transport is not added to the poller for writing only to find, on the
    next turn, that it has nothing to write (two epoll_ctl calls more for
    every connection).
    """
    added: list[Any] = []
    add_writer = reactor.addWriter
    monkeypatch.setattr(reactor, "addWriter", lambda s: (added.append(s), add_writer(s))[1])

    def server_writers() -> list[Any]:
        return [w for w in reactor.getWriters() if isinstance(w, tcp.Server)]

    async with serving(echo) as server:
        s = raw_client(int(server.listening_on))
        try:
            s.sendall(b"one\n")
            assert await raw_read_line(s) == b"one\n"
            await until(lambda: not server_writers())
            added.clear()
            s.shutdown(socket.SHUT_WR)
            assert await raw_read_line(s) == b""  # the server closed
            await until(lambda: server.num_connections == 0)
        finally:
            s.close()
    assert [w for w in added if isinstance(w, tcp.Server)] == []


@pytest_twisted.ensureDeferred
async def test_a_connection_that_ended_is_freed_without_the_garbage_collector() -> None:
    """
    Once its handler has ended and it is gone, a connection is freed by
    reference counting: no cycle (its writer refers back to it) is left for
    the garbage collector to find, walk and promote at every connection.
    """
    from twisted_tcp._server import _ServerConnection

    def ours(thing: object) -> bool:
        if isinstance(thing, tt.Writer):
            thing = thing._connection
        return isinstance(thing, _ServerConnection) and thing.server is server

    def left_for_the_collector() -> list[Any]:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            return [o for o in gc.garbage if ours(o)]  # (not other tests' leftovers)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    server: tt.Server
    async with serving(echo) as server:
        left_for_the_collector()
        gc.disable()
        try:
            for _ in range(10):
                s = raw_client(int(server.listening_on))
                try:
                    s.sendall(b"one\n")
                    assert await raw_read_line(s) == b"one\n"
                    s.shutdown(socket.SHUT_WR)
                    assert await raw_read_line(s) == b""
                finally:
                    s.close()
            await until(lambda: server.num_connections == 0)
            assert left_for_the_collector() == []
        finally:
            gc.enable()


@pytest_twisted.ensureDeferred
async def test_write_eof_then_flushed_sends_the_end_of_the_stream() -> None:
    """
    A flush awaited after write_eof() (the bytes still in Twisted's buffer)
    does not keep the FIN from being sent: the server reads the end of the
    stream and answers.
    """

    async def count(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        data = await reader.contents()
        writer.write(b"got %d bytes\n" % len(data))

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> bytes:
        writer.write(b"small request\n")
        eof = writer.write_eof()
        await writer.flushed()
        await eof
        return await reader.contents()  # type: ignore[no-any-return]

    async with serving(count) as server:
        assert await within(tt.with_connection(where_of(server), f)) == b"got 14 bytes\n"


@pytest.mark.parametrize("flush", [True, False])
@pytest_twisted.ensureDeferred
async def test_write_eof_reaches_a_reader_slower_than_the_grace(flush: bool) -> None:
    """
    Bytes still waiting after write_eof() when the sweep comes (the peer
    reads late) arm the age check without holding back the FIN behind them.
    """
    size = 8 << 20

    async def send(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write(b"x" * size)
        eof = writer.write_eof()
        if flush:
            await writer.flushed()
        await eof

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> int:
        await sleep(1.6)  # past the sweeper's grace, with most bytes still unsent
        return len(await reader.contents())

    async with serving(send) as server:
        assert await within(tt.with_connection(where_of(server), f)) == size


@pytest_twisted.ensureDeferred
async def test_many_concurrent_clients_echo() -> None:
    """100 clients at once, 5 lines each, every line echoed to its sender."""
    running = 0
    peak = 0
    peers: set[int] = set()

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        peers.add(address.port)
        try:
            await echo(address, reader, writer)
        finally:
            running -= 1

    async with serving(handler, backlog=128) as server:
        where = where_of(server)
        lines = {i: [b"client %d line %d" % (i, j) for j in range(5)] for i in range(100)}
        replies = await within(
            gatherResults([Deferred.fromCoroutine(chat(where, lines[i])) for i in range(100)])
        )
        assert replies == [lines[i] for i in range(100)]
        assert len(peers) == 100
        assert peak > 1, "the clients were not served at the same time"
        await until(lambda: server.num_connections == 0)


@pytest_twisted.ensureDeferred
async def test_port_chosen_by_os_is_reported() -> None:
    seen: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        seen.append(address)
        await echo(address, reader, writer)

    async with serving(handler, tt.on_port_chosen_by_os) as server:
        port = server.listening_on
        assert isinstance(port, int) and port != 0
        assert server.listening_on_address.port == port
        assert not server.is_closed
        assert server.max_connections == 10000

        async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> Any:
            writer.write_line(b"ping")
            assert await reader.read_line() == b"ping"
            assert server.num_connections == 1
            return sock.peer_address, sock.local_address

        peer, local = await within(tt.with_connection(where_of(server), f, timeout=WAIT))
        assert peer.port == port
        assert seen == [IPv4Address("TCP", LOCAL, local.port)]


@pytest_twisted.ensureDeferred
async def test_ipv6_loopback() -> None:
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    seen: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        seen.append(address)
        await echo(address, reader, writer)

    async with serving(handler, tt.on_port(0, interface="::1")) as server:
        assert isinstance(server.listening_on_address, IPv6Address)
        assert server.listening_on_address.host == "::1"
        assert await chat(where_of(server, "::1"), [b"six", b"seven"]) == [b"six", b"seven"]
        assert len(seen) == 1
        assert isinstance(seen[0], IPv6Address) and seen[0].host == "::1"


def plain_handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> int:
    writer.write_line(b"plain")
    return 42


def deferred_handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> Deferred[None]:
    return reader.read_line().addCallback(lambda line: writer.write_line(b"deferred " + line))


@inlineCallbacks
def generator_handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> Any:
    line = yield reader.read_line()
    yield sleep(0.01)
    writer.write_line(b"generator " + line)


async def coroutine_handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    line = await reader.read_line()
    await sleep(0.01)
    writer.write_line(b"coroutine " + line)


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (plain_handler, b"plain"),
        (deferred_handler, b"deferred x"),
        (generator_handler, b"generator x"),
        (coroutine_handler, b"coroutine x"),
    ],
    ids=["plain", "deferred", "inlineCallbacks", "async"],
)
@pytest_twisted.ensureDeferred
async def test_handler_kinds(handler: Callable[..., Any], expected: bytes) -> None:
    """
    A handler may return a value, a Deferred or a coroutine (or be an
    inlineCallbacks generator); when its result comes, the writer is flushed
    and the connection closed: the client reads the reply, then the end.
    """
    async with serving(handler) as server:

        async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> Any:
            writer.write_line(b"x")
            return [await reader.read_line(), await reader.read_line()]

        result = await within(tt.with_connection(where_of(server), f, timeout=WAIT))
        assert result == [expected, None]
        await until(lambda: server.num_connections == 0)


@pytest_twisted.ensureDeferred
async def test_tcp_nodelay_on_accepted_sockets() -> None:
    """
    The handler gets no transport, so the accepted socket is found through
    the reactor (the transport reading from the handler's peer).
    """
    values: list[object] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()
        transports = [
            r for r in reactor.getReaders() if isinstance(r, tcp.Server) and r.getPeer() == address
        ]
        values.extend(
            t.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for t in transports
        )
        writer.write_line(b"done")

    async with serving(handler) as server:
        assert await chat(where_of(server), [b"hi"]) == [b"done"]
    assert len(values) == 1
    assert values[0] != 0


# -- the connection limit ------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_max_connections_limits_handlers() -> None:
    """max_connections=5, 50 clients at once: never more than 5 handlers, all served."""
    running = 0
    peak = 0
    over: list[tuple[int, int]] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running > 5 or server.num_connections > 5:
            over.append((running, server.num_connections))
        try:
            async for line in reader.lines():
                await sleep(0.002)
                writer.write_line(line)
        finally:
            running -= 1

    async with serving(handler, max_connections=5) as server:
        assert server.max_connections == 5
        where = where_of(server)
        replies = await within(
            gatherResults(
                [
                    Deferred.fromCoroutine(chat(where, [b"%d-a" % i, b"%d-b" % i]))
                    for i in range(50)
                ]
            )
        )
        assert replies == [[b"%d-a" % i, b"%d-b" % i] for i in range(50)]
        assert over == []
        assert peak == 5
        await until(lambda: server.num_connections == 0)
        assert listening_port_reading(server)


@pytest_twisted.ensureDeferred
async def test_at_the_limit_accepting_pauses_and_resumes() -> None:
    """
    At the limit the listening socket is no longer read (clients wait in the
    backlog, connected but without a handler); when a connection ends,
    accepting resumes and the waiting client is served.
    """
    gates: list[Deferred[None]] = []
    started: list[bytes | None] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        line = await reader.read_line()
        started.append(line)
        gate: Deferred[None] = Deferred()
        gates.append(gate)
        await gate
        writer.write_line(b"bye " + (line or b""))

    async with serving(handler, max_connections=2) as server:
        where = where_of(server)
        first = Deferred.fromCoroutine(chat(where, [b"one"]))
        second = Deferred.fromCoroutine(chat(where, [b"two"]))
        try:
            await until(lambda: len(started) == 2)
            assert server.num_connections == 2
            assert not listening_port_reading(server)

            third = Deferred.fromCoroutine(chat(where, [b"three"]))
            try:
                await sleep(0.3)
                assert sorted(started) == [b"one", b"two"]  # "three" is not served yet
                assert server.num_connections == 2

                gates[0].callback(None)
                await until(lambda: len(started) == 3)
                assert started[2] == b"three"
                assert server.num_connections == 2
                gates[1].callback(None)
                gates[2].callback(None)
                assert await within(third) == [b"bye three"]
            finally:
                if not third.called:
                    third.cancel()
                    third.addErrback(lambda _: None)
            results = sorted([await within(first), await within(second)])
            assert results == [[b"bye one"], [b"bye two"]]
            await until(lambda: server.num_connections == 0)
            assert listening_port_reading(server)
        finally:
            for gate in gates:
                if not gate.called:
                    gate.callback(None)
            for d in (first, second):
                if not d.called:
                    d.cancel()
                    d.addErrback(lambda _: None)


# -- handler errors ----------------------------------------------------------------


class Boom(Exception):
    pass


def failing_handler(raised: list[BaseException]) -> Callable[..., Any]:
    """A handler that echoes lines, and raises Boom on the line b"boom"."""

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        async for line in reader.lines():
            if line == b"boom":
                exc = Boom(f"boom from {address.port}")
                raised.append(exc)
                raise exc
            writer.write_line(line)

    return handler


async def boom_client(where: tt.WhereToConnect) -> tuple[int, list[bytes | None]]:
    """Send a line, then b"boom": return the local port and what was read."""

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> Any:
        writer.write_line(b"before")
        first = await reader.read_line()
        writer.write_line(b"boom")
        return sock.local_address.port, [first, await reader.read_line()]

    return await within(tt.with_connection(where, f, timeout=WAIT))  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_handler_error_log() -> None:
    raised: list[BaseException] = []
    with logged_errors() as errors:
        async with serving(failing_handler(raised)) as server:
            port, replies = await boom_client(where_of(server))
            assert replies == [b"before", None]  # the connection ended with the error
            assert len(raised) == 1
            assert len(errors) == 1, [formatEvent(e) for e in errors]
            event = errors[0]
            assert event["log_failure"].value is raised[0]
            assert f"{LOCAL}:{port}" in formatEvent(event)

            assert await chat(where_of(server), [b"still", b"here"]) == [b"still", b"here"]
            assert not server.is_closed
        assert len(errors) == 1


@pytest_twisted.ensureDeferred
async def test_handler_error_ignore() -> None:
    raised: list[BaseException] = []
    with logged_errors() as errors:
        async with serving(failing_handler(raised), on_handler_error="ignore") as server:
            _, replies = await boom_client(where_of(server))
            assert replies == [b"before", None]
            assert await chat(where_of(server), [b"still"]) == [b"still"]
            assert not server.is_closed
        assert len(raised) == 1
        assert errors == []


@pytest_twisted.ensureDeferred
async def test_handler_error_raise() -> None:
    """
    "raise": the server stops listening, close_finished fails with the
    error, new clients are refused, an existing connection is still served.
    """
    raised: list[BaseException] = []
    async with serving(failing_handler(raised), on_handler_error="raise") as server:
        where = where_of(server)
        _, reader, writer = await within(tt.connect(where, timeout=WAIT))
        try:
            writer.write_line(b"first")
            assert await within(reader.read_line()) == b"first"

            _, replies = await boom_client(where)
            assert replies == [b"before", None]
            assert len(raised) == 1
            with pytest.raises(Boom) as caught:
                await within(server.close_finished)
            assert caught.value is raised[0]
            assert server.is_closed

            with pytest.raises(error.ConnectionRefusedError):
                await within(tt.connect(where, timeout=WAIT))

            writer.write_line(b"existing")  # the other connection lives on
            assert await within(reader.read_line()) == b"existing"
        finally:
            await within(writer.close())
        await within(server.drained())
        # close() after the error still works, and close_finished keeps failing.
        await within(server.close())
        with pytest.raises(Boom):
            await within(server.close_finished)


@pytest_twisted.ensureDeferred
async def test_handler_error_callable() -> None:
    raised: list[BaseException] = []
    calls: list[tuple[Any, BaseException]] = []
    with logged_errors() as errors:
        async with serving(
            failing_handler(raised), on_handler_error=lambda a, e: calls.append((a, e))
        ) as server:
            port, replies = await boom_client(where_of(server))
            assert replies == [b"before", None]
            assert len(raised) == 1
            assert calls == [(IPv4Address("TCP", LOCAL, port), raised[0])]
            assert await chat(where_of(server), [b"still"]) == [b"still"]
            assert not server.is_closed
        assert errors == []


@pytest_twisted.ensureDeferred
async def test_handler_error_callable_that_raises() -> None:
    raised: list[BaseException] = []
    policy_errors: list[BaseException] = []

    def policy(address: Any, exc: BaseException) -> None:
        policy_errors.append(RuntimeError(f"policy failed on {exc}"))
        raise policy_errors[-1]

    with logged_errors() as errors:
        async with serving(failing_handler(raised), on_handler_error=policy) as server:
            port, replies = await boom_client(where_of(server))
            assert replies == [b"before", None]
            assert len(policy_errors) == 1
            assert len(errors) == 1, [formatEvent(e) for e in errors]
            assert errors[0]["log_failure"].value is policy_errors[0]
            assert f"{LOCAL}:{port}" in formatEvent(errors[0])

            assert await chat(where_of(server), [b"still", b"serving"]) == [
                b"still",
                b"serving",
            ]
            assert not server.is_closed
        assert len(errors) == 1


# -- peers that go away -------------------------------------------------------------


def recording_handler(
    finished: list[list[bytes]],
) -> Callable[..., Any]:
    """An echo handler that appends the lines it read to C{finished} at EOF."""

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        lines = []
        async for line in reader.lines():
            lines.append(line)
            writer.write_line(line)
        finished.append(lines)

    return handler


@pytest_twisted.ensureDeferred
async def test_peer_disconnects_mid_line() -> None:
    finished: list[list[bytes]] = []
    with logged_errors() as errors:
        async with serving(recording_handler(finished)) as server:
            s = raw_client(server.listening_on)
            try:
                s.sendall(b"hello\n")
                assert await raw_read_line(s) == b"hello\n"
                s.sendall(b"half a li")
            finally:
                s.close()
            await until(lambda: finished)
            assert finished == [[b"hello", b"half a li"]]
            await until(lambda: server.num_connections == 0)
            assert await chat(where_of(server), [b"next"]) == [b"next"]
        assert errors == [], [formatEvent(e) for e in errors]


@pytest_twisted.ensureDeferred
async def test_peer_sends_rst() -> None:
    finished: list[list[bytes]] = []
    with logged_errors() as errors:
        async with serving(recording_handler(finished)) as server:
            s = raw_client(server.listening_on)
            try:
                s.sendall(b"hello\n")
                assert await raw_read_line(s) == b"hello\n"
                s.sendall(b"half a li")
            finally:
                reset(s)
            await until(lambda: finished)
            # Whether the bytes before the RST are read depends on the kernel.
            assert finished[0][0] == b"hello"
            assert finished[0][1:] in ([], [b"half a li"])
            await until(lambda: server.num_connections == 0)
            assert await chat(where_of(server), [b"next"]) == [b"next"]
        assert errors == [], [formatEvent(e) for e in errors]


@pytest.mark.parametrize("how", ["rst", "fin"])
@pytest_twisted.ensureDeferred
async def test_handler_outliving_its_peer(how: str) -> None:
    """
    A handler still running after its peer left reads the end of the stream,
    and its writes are dropped without raising.
    """
    gate: Deferred[None] = Deferred()
    outcome: list[object] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        outcome.append(await reader.read_line())
        await gate
        outcome.append(await reader.read_line())
        outcome.append(await reader.read(100))
        for _ in range(3):
            writer.write_line(b"x" * 10000)
            await sleep(0.01)
        outcome.append("wrote")

    with logged_errors() as errors:
        async with serving(handler) as server:
            s = raw_client(server.listening_on)
            try:
                s.sendall(b"hi\n")
                await until(lambda: outcome)
            finally:
                if how == "rst":
                    reset(s)
                else:
                    s.close()
            if how == "rst":
                # The peer left: the connection ended and its slot is free,
                # although the handler still runs.
                await until(lambda: server.num_connections == 0)
            else:
                await sleep(0.05)
            gate.callback(None)
            await until(lambda: len(outcome) == 4)
            assert outcome == [b"hi", None, b"", "wrote"]
            await until(lambda: server.num_connections == 0)
        assert errors == [], [formatEvent(e) for e in errors]


# -- the buffer-age limit ----------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_buffer_age_limit_ends_connection() -> None:
    """
    A client that never reads while the handler writes 16 MB: after
    buffer_age_limit the connection is closed and the error reported once,
    through on_handler_error; other clients are still served.
    """
    calls: list[tuple[Any, BaseException]] = []
    handler_errors: list[BaseException] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        line = await reader.read_line()
        if line != b"flood":
            writer.write_line(line or b"")
            return
        try:
            for _ in range(16):
                writer.write(b"x" * (1 << 20))
            await writer.flushed()
        except Exception as e:
            handler_errors.append(e)
            raise

    with logged_errors() as errors:
        async with serving(
            handler,
            buffer_age_limit=0.5,
            on_handler_error=lambda a, e: calls.append((a, e)),
        ) as server:
            where = where_of(server)
            sock, _reader, writer = await within(tt.connect(where, timeout=WAIT))
            try:
                writer.write_line(b"flood")
                assert await chat(where, [b"meanwhile"]) == [b"meanwhile"]
                await until(lambda: calls, 5)
                address, exc = calls[0]
                assert isinstance(exc, tt.BufferAgeLimitError)
                assert address == IPv4Address("TCP", LOCAL, sock.local_address.port)
                assert handler_errors and handler_errors[0] is exc
                await until(lambda: server.num_connections == 0)
                assert await chat(where, [b"after"]) == [b"after"]
                assert len(calls) == 1, calls
            finally:
                sock.abort()
        assert errors == [], [formatEvent(e) for e in errors]


# -- closing ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_close_keeps_existing_connections() -> None:
    """
    close() stops listening, but an existing connection is served until it
    ends; then drained() fires.  close() is idempotent.
    """
    ended: list[object] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await echo(address, reader, writer)
        ended.append(address)

    server = await within(tt.Server.create(tt.on_port(0, interface=LOCAL), handler))
    try:
        where = where_of(server)
        _, reader, writer = await within(tt.connect(where, timeout=WAIT))
        try:
            writer.write_line(b"one")
            assert await within(reader.read_line()) == b"one"

            closing = server.close()
            again = server.close()
            assert server.is_closed
            assert await within(closing) is None
            assert await within(again) is None
            assert await within(server.close_finished) is None
            drained = server.drained()
            assert not drained.called

            with pytest.raises(error.ConnectionRefusedError):
                await within(tt.connect(where, timeout=WAIT))

            writer.write_line(b"two")
            assert await within(reader.read_line()) == b"two"
            assert server.num_connections == 1
            assert ended == []
        finally:
            await within(writer.close())
        await within(drained)
        assert len(ended) == 1
        assert server.num_connections == 0
        assert await within(server.close()) is None  # still idempotent
    finally:
        await within(server.close(close_existing_connections=True))
        await within(server.drained())


@pytest_twisted.ensureDeferred
async def test_close_existing_connections() -> None:
    """close(close_existing_connections=True) closes them: the handler reads EOF."""
    got: list[object] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        got.append(await reader.read_line())
        got.append(await reader.read_line())
        writer.write_line(b"dropped")  # after the close: no error
        got.append("returned")

    with logged_errors() as errors:
        server = await within(tt.Server.create(tt.on_port(0, interface=LOCAL), handler))
        try:
            _, reader, writer = await within(tt.connect(where_of(server), timeout=WAIT))
            try:
                writer.write_line(b"one")
                await until(lambda: got)
                assert server.num_connections == 1
                await within(server.close(close_existing_connections=True))
                assert server.num_connections == 0
                await within(server.drained())
                assert got == [b"one", None, "returned"]
                assert await within(reader.read_line()) is None  # the client sees the end
            finally:
                await within(writer.close())
        finally:
            await within(server.close(close_existing_connections=True))
            await within(server.drained())
        assert errors == [], [formatEvent(e) for e in errors]


@pytest_twisted.ensureDeferred
async def test_no_handler_starts_after_close() -> None:
    """A client waiting for a slot when the server closes never gets a handler."""
    gate: Deferred[None] = Deferred()
    started: list[bytes | None] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        started.append(await reader.read_line())
        await gate
        writer.write_line(b"bye")

    server = await within(
        tt.Server.create(tt.on_port(0, interface=LOCAL), handler, max_connections=1)
    )
    clients = []
    try:
        where = where_of(server)
        clients.append(await within(tt.connect(where, timeout=WAIT)))
        clients[0][2].write_line(b"first")
        await until(lambda: started)
        clients.append(await within(tt.connect(where, timeout=WAIT)))  # waits for a slot
        clients[1][2].write_line(b"second")
        await sleep(0.1)
        closing = server.close()
        gate.callback(None)
        await within(closing)
        assert await within(clients[0][1].read_line()) == b"bye"
        assert await within(clients[1][1].read_line()) is None
        await within(server.drained())
        assert started == [b"first"]
    finally:
        if not gate.called:
            gate.callback(None)
        for _, _, writer in clients:
            await within(writer.close())
        await within(server.close(close_existing_connections=True))
        await within(server.drained())


# -- Unix sockets ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unix_socket_file_removed_on_close(tmp_path: Any) -> None:
    path = str(tmp_path / "s.sock")
    server = await within(tt.Server.create(tt.on_file(path), echo))
    try:
        assert server.listening_on == path
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert await chat(tt.to_file(path), [b"unix", b"line"]) == [b"unix", b"line"]
    finally:
        await within(server.close())
        await within(server.drained())
    assert not os.path.exists(path)
    assert os.listdir(tmp_path) == []


@pytest_twisted.ensureDeferred
async def test_unix_stale_socket_file_is_replaced(tmp_path: Any) -> None:
    path = str(tmp_path / "s.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(path)  # a server that died without removing its socket file
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    server = await within(tt.Server.create(tt.on_file(path), echo))
    try:
        assert await chat(tt.to_file(path), [b"fresh"]) == [b"fresh"]
    finally:
        await within(server.close())
        await within(server.drained())
    assert not os.path.exists(path)


@pytest_twisted.ensureDeferred
async def test_unix_live_path_refused(tmp_path: Any) -> None:
    path = str(tmp_path / "s.sock")
    server = await within(tt.Server.create(tt.on_file(path), echo))
    try:
        with pytest.raises(error.CannotListenError) as caught:
            await within(tt.Server.create(tt.on_file(path), echo))
        assert path in str(caught.value)
        # The live server is untouched.
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert await chat(tt.to_file(path), [b"alive"]) == [b"alive"]
        assert not server.is_closed
    finally:
        await within(server.close())
        await within(server.drained())
    assert not os.path.exists(path)


@pytest_twisted.ensureDeferred
async def test_unix_unbindable_path(tmp_path: Any) -> None:
    path = str(tmp_path / "no" / "such" / "dir" / "s.sock")
    with pytest.raises(error.CannotListenError) as caught:
        await within(tt.Server.create(tt.on_file(path), echo))
    assert path in str(caught.value)


@pytest_twisted.ensureDeferred
async def test_port_in_use() -> None:
    async with serving(echo) as server:
        port = server.listening_on
        with pytest.raises(error.CannotListenError) as caught:
            await within(tt.Server.create(tt.on_port(port, interface=LOCAL), echo))
        assert str(port) in str(caught.value)
        assert await chat(where_of(server), [b"first one"]) == [b"first one"]
    # Twisted before 26.10 does not close the socket that it failed to bind:
    # the exception's traceback holds it until the garbage collector breaks
    # the cycle.  Collected here, so that no_leaks still catches a socket
    # that something alive holds.
    del caught
    gc.collect()


# -- no leaks ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_2000_connections_leave_no_fd() -> None:
    fds = open_fds()
    assert await echo_in_batches(20, 100, backlog=128) == 2000
    assert open_fds() == fds
