"""
Connecting, over real sockets: TCP on 127.0.0.1 and [::1], and Unix sockets
in tmp_path.  The servers are plain Twisted protocols, so that these tests
check the client side alone.  A fake name resolver (through a reactor wrapper,
never the global C{installNameResolver}) stands in for DNS, and a Clock for
the deadline when the resolver never answers.  The Reader's reads at the
end of the stream and after a cancelled read, to which a socket adds
nothing, run over twisted_tcp.testing's in-memory pair.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import select
import socket
import stat
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import error, reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    ensureDeferred,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHostnameResolver,
    IHostResolution,
    IPullProducer,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

import twisted_tcp as tt
from twisted_tcp import (
    BufferAgeLimitError,
    ConnectInterruptedError,
    ConnectTimeoutError,
    IncompleteReadError,
    Reader,
)
from twisted_tcp._sweeper import GRACE
from twisted_tcp.testing import MemoryPair, connected_pair

from .conftest import PENDING, failure_of, open_fds, outcome, result_of, sleep, within

MiB = 1 << 20


# -- servers -----------------------------------------------------------------------


class ServerProtocol(Protocol):
    """Base of the test servers: tracked by the factory so they can be cleaned up."""

    factory: ServerFactory

    def connectionMade(self) -> None:
        self.received = 0
        self.lost: Deferred[BaseException] = Deferred()  # fires with the reason
        self.factory.protocols.add(self)
        self.factory.connected.append(self)
        self.started()

    def started(self) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.factory.protocols.discard(self)
        self.lost.callback(reason.value)


class ServerFactory(Factory):
    def __init__(self, protocol: type[ServerProtocol], **options: Any) -> None:
        self.protocol = protocol
        self.options = options
        self.protocols: set[ServerProtocol] = set()
        self.connected: list[ServerProtocol] = []


class Echo(ServerProtocol):
    """Echoes everything, with flow control: it stops reading while its output backs up."""

    def started(self) -> None:
        self.transport.registerProducer(self.transport, True)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.transport.write(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.transport.unregisterProducer()
        ServerProtocol.connectionLost(self, reason)


class GreetThenEcho(Echo):
    """Sends a greeting as soon as the connection is made, then echoes."""

    def started(self) -> None:
        Echo.started(self)
        self.transport.write(self.factory.options["greeting"])


class SendAndClose(ServerProtocol):
    """Sends a fixed payload and closes."""

    def started(self) -> None:
        self.transport.write(self.factory.options["payload"])
        self.transport.loseConnection()


class Sink(ServerProtocol):
    """Reads and hashes everything, sends nothing."""

    def started(self) -> None:
        self.hash = hashlib.sha256()

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)
        self.hash.update(data)


class NeverReads(ServerProtocol):
    """Accepts, then never reads: the client's bytes pile up in the kernel."""

    def started(self) -> None:
        self.transport.pauseProducing()


@implementer(IPullProducer)
class Source(ServerProtocol):
    """Sends C{size} bytes of C{pattern(i)} chunks as fast as the client reads, then closes."""

    def started(self) -> None:
        self.sent = 0
        self.chunk_index = 0
        self.transport.registerProducer(self, False)

    def resumeProducing(self) -> None:
        size = self.factory.options["size"]
        if self.sent >= size:
            self.transport.unregisterProducer()
            self.transport.loseConnection()
            return
        chunk = pattern(self.chunk_index)[: size - self.sent]
        self.chunk_index += 1
        self.sent += len(chunk)
        self.transport.write(chunk)

    def stopProducing(self) -> None:
        pass


@implementer(IHalfCloseableProtocol)
class ReplyAfterEof(ServerProtocol):
    """Reads until the client half-closes, then replies with what it saw and closes."""

    def started(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def readConnectionLost(self) -> None:
        self.transport.write(b"you sent %d bytes: %s\n" % (len(self.data), self.data))
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass


_BLOCK = os.urandom(256 * 1024)


def pattern(i: int) -> bytes:
    """Chunk C{i} of a stream: 256 KiB of random bytes tagged with its index."""
    return i.to_bytes(8, "big") + _BLOCK[8:]


def stream(size: int) -> list[bytes]:
    chunks = []
    i = 0
    while size > 0:
        chunk = pattern(i)[:size]
        chunks.append(chunk)
        size -= len(chunk)
        i += 1
    return chunks


@asynccontextmanager
async def serving(
    factory: ServerFactory,
    kind: str = "tcp4",
    path: str | None = None,
    rcvbuf: int | None = None,
) -> AsyncIterator[tt.WhereToConnect]:
    """
    Listen with C{factory}; on exit stop listening and end every server
    connection.  C{rcvbuf} sets the accepted sockets' receive buffer.
    """
    if kind == "tcp4":
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        where: tt.WhereToConnect = tt.to_host_and_port("127.0.0.1", port.getHost().port)
    elif kind == "tcp6":
        port = reactor.listenTCP(0, factory, interface="::1")
        where = tt.to_host_and_port("::1", port.getHost().port)
    else:
        assert path is not None
        port = reactor.listenUNIX(path, factory)
        where = tt.to_file(path)
    if rcvbuf is not None:
        port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        yield where
    finally:
        await within(maybeDeferred(port.stopListening))
        for protocol in list(factory.protocols):
            protocol.transport.abortConnection()
        for protocol in list(factory.connected):
            await within(protocol.lost)


def closed_port() -> int:
    """A loopback port nobody listens on (it was just closed)."""
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()


def has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")


class Unresponsive:
    """
    A loopback listener whose accept queue is full: a new client's SYN is
    dropped, so connecting to it hangs until a deadline.
    """

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.fillers: list[socket.socket] = []
        try:
            self.listener.bind(("127.0.0.1", 0))
            self.listener.listen(0)
            self.port = self.listener.getsockname()[1]
            for _ in range(16):
                s = socket.socket()
                self.fillers.append(s)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", self.port))
                _, writable, _ = select.select([], [s], [], 0.2)
                if not writable:
                    return  # this one hangs: the queue is full
            raise AssertionError("could not fill the accept queue")
        except BaseException:
            self.close()
            raise

    @property
    def where(self) -> tt.WhereToConnect:
        return tt.to_host_and_port("127.0.0.1", self.port)

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.listener.close()


# -- fake DNS ------------------------------------------------------------------------


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class FakeResolver:
    """
    Answers from a table of names to full addresses (port included);
    a name not in the table has no address; C{hang} never answers.
    """

    def __init__(self, table: dict[str, list[Any]] | None = None, hang: bool = False) -> None:
        self.table = table or {}
        self.hang = hang
        self.asked: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: Any,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        self.asked.append(hostName)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        if not self.hang:
            for address in self.table.get(hostName, []):
                resolutionReceiver.addressResolved(address)
            resolutionReceiver.resolutionComplete()
        return resolution


@implementer(IReactorTCP, IReactorTime, IReactorPluggableNameResolver)
class ResolvingReactor:
    """The real reactor with our own name resolver, and optionally a Clock for timers."""

    def __init__(self, resolver: FakeResolver, clock: Clock | None = None) -> None:
        self.nameResolver = resolver
        self._time: Any = clock if clock is not None else reactor

    def installNameResolver(self, resolver: Any) -> Any:
        old, self.nameResolver = self.nameResolver, resolver
        return old

    def callLater(self, delay: float, f: Callable[..., Any], *a: Any, **kw: Any) -> Any:
        return self._time.callLater(delay, f, *a, **kw)

    def seconds(self) -> float:
        return float(self._time.seconds())

    def getDelayedCalls(self) -> Any:
        return self._time.getDelayedCalls()

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


def has_fired(d: Deferred[Any]) -> bool:
    box: list[Any] = []

    def grab(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(grab)
    return bool(box)


def assert_fired_with_failure(d: Deferred[Any], kind: type[BaseException]) -> BaseException:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box, "the Deferred has not fired"
    assert isinstance(box[0], Failure), f"expected {kind.__name__}, got {box[0]!r}"
    assert box[0].check(kind), box[0]
    return box[0].value


# -- round trips -----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connect_round_trip() -> None:
    factory = ServerFactory(Echo)
    async with serving(factory) as where:
        sock, reader, writer = await within(tt.connect(where, timeout=5))
        try:
            assert isinstance(sock, tt.Socket)
            assert isinstance(reader, tt.Reader) and isinstance(writer, tt.Writer)
            writer.write_line(b"hello")
            writer.write(b"wor")
            writer.write(b"ld\r\n")
            assert await within(reader.read_line()) == b"hello"
            assert await within(reader.read_line()) == b"world"
            await within(writer.flushed())
            assert not sock.is_closed
        finally:
            await within(writer.close())
        assert sock.is_closed
        assert writer.is_closed
        # The server sees the client leave.
        await within(factory.connected[0].lost)


@pytest_twisted.ensureDeferred
async def test_connect_without_timeout() -> None:
    async with serving(ServerFactory(Echo)) as where:
        sock, reader, writer = await within(tt.connect(where, timeout=None))
        try:
            writer.write_line(b"x")
            assert await within(reader.read_line()) == b"x"
        finally:
            await within(sock.close())
        assert sock.is_closed


@pytest_twisted.ensureDeferred
async def test_bad_arguments_fail_at_once() -> None:
    async with serving(ServerFactory(Echo)) as where:
        with pytest.raises(ValueError, match="timeout"):
            tt.connect(where, timeout=0)
        with pytest.raises(ValueError, match="timeout"):
            tt.connect_sock(where, timeout=-1)
        with pytest.raises(TypeError, match="to_host_and_port"):
            tt.connect(str(where))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="reader_buffer_size"):
            tt.connect(where, reader_buffer_size=0)
        with pytest.raises(ValueError, match="buffer_age_limit"):
            tt.connect(where, buffer_age_limit=0)


@pytest_twisted.ensureDeferred
async def test_with_connection_f_returns_a_value() -> None:
    factory = ServerFactory(Sink)
    seen: list[tt.Socket] = []

    def f(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> int:
        seen.append(sock)
        writer.write(b"x" * (4 * MiB))  # returned before it is flushed
        return 42

    async with serving(factory) as where:
        assert await within(tt.with_connection(where, f)) == 42
        # Fired only after the writer was flushed and closed, and the socket closed.
        assert seen[0].is_closed
        server = factory.connected[0]
        await within(server.lost)
        assert server.received == 4 * MiB


@pytest_twisted.ensureDeferred
async def test_with_connection_f_returns_a_deferred() -> None:
    def f(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> Deferred[bytes | None]:
        writer.write_line(b"deferred")
        return reader.read_line()

    async with serving(ServerFactory(Echo)) as where:
        assert await within(tt.with_connection(where, f)) == b"deferred"


@pytest_twisted.ensureDeferred
async def test_with_connection_f_is_a_coroutine() -> None:
    seen: list[tt.Socket] = []

    async def f(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> list[bytes]:
        seen.append(sock)
        out = []
        for word in [b"one", b"two", b"three"]:
            writer.write_line(word)
            line = await reader.read_line()
            assert line is not None
            out.append(line)
        return out

    async with serving(ServerFactory(Echo)) as where:
        result = await within(tt.with_connection(where, f))
        assert result == [b"one", b"two", b"three"]
        assert seen[0].is_closed


class Boom(Exception):
    pass


@pytest.mark.parametrize("style", ["plain", "deferred", "coroutine"])
@pytest_twisted.ensureDeferred
async def test_with_connection_f_raises(style: str) -> None:
    boom = Boom("from f")
    seen: list[tt.Socket] = []

    def plain(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> None:
        seen.append(sock)
        writer.write_line(b"partial work")
        raise boom

    def deferred(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> Deferred[None]:
        seen.append(sock)
        d: Deferred[None] = Deferred()
        reactor.callLater(0.01, d.errback, boom)
        return d

    async def coroutine(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> None:
        seen.append(sock)
        writer.write_line(b"ping")
        assert await reader.read_line() == b"ping"
        raise boom

    f = {"plain": plain, "deferred": deferred, "coroutine": coroutine}[style]
    async with serving(ServerFactory(Echo)) as where:
        with pytest.raises(Boom) as info:
            await within(tt.with_connection(where, f))
        assert info.value is boom
        assert seen[0].is_closed


# -- 64 MiB ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_64_mib_both_ways_intact() -> None:
    size = 64 * MiB
    chunks = stream(size)
    sent = hashlib.sha256(b"".join(chunks)).hexdigest()

    async def f(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> tuple[int, str]:
        async def send() -> None:
            for chunk in chunks:
                writer.write(chunk)
                if writer.bytes_to_write > 4 * MiB:
                    await writer.flushed()
            await writer.flushed()

        async def receive() -> tuple[int, str]:
            digest = hashlib.sha256()
            total = 0
            while total < size:
                data = await reader.read(MiB)
                assert data, "end of stream before everything came back"
                digest.update(data)
                total += len(data)
            return total, digest.hexdigest()

        sending = Deferred.fromCoroutine(send())
        received = await Deferred.fromCoroutine(receive())
        await sending
        return received

    factory = ServerFactory(Echo)
    async with serving(factory) as where:
        total, digest = await within(tt.with_connection(where, f), 60)
        assert total == size
        assert digest == sent
        assert factory.connected[0].received == size


# -- reading at the end of the stream --------------------------------------------------
# What each read returns once the peer's close came is the Reader's logic,
# not the socket's: these run over twisted_tcp.testing's in-memory pair,
# whose peer (the server end) sends and closes; the test after them reads
# to the end of a real socket.


def sent_and_closed(payload: bytes) -> MemoryPair:
    """An in-memory pair whose server end sent C{payload} and closed, both delivered."""
    pair = connected_pair()
    pair.server.writer.write(payload)
    pair.server.writer.close()
    pair.flush()
    assert pair.server.closed and not pair.client.closed
    return pair


def test_every_reader_method_at_eof() -> None:
    pair = sent_and_closed(b"one\r\ntwo\nrec|last")
    reader = pair.client.reader

    async def lines() -> list[bytes]:
        return [line async for line in reader.lines()]

    assert result_of(reader.read_line()) == b"one"
    assert result_of(reader.read_until(b"\n", keep_delimiter=True)) == b"two\n"
    assert result_of(reader.read_until(b"|")) == b"rec"
    assert result_of(reader.read_line()) == b"last"
    assert result_of(reader.read_line()) is None
    assert result_of(reader.read()) == b""
    assert result_of(reader.read_until(b"|")) is None
    assert result_of(reader.contents()) == b""
    assert failure_of(reader.really_read(1), IncompleteReadError).partial == b""  # type: ignore[attr-defined]
    assert result_of(ensureDeferred(lines())) == []
    assert reader.at_eof
    closed = pair.client.writer.close()
    pair.flush()
    assert result_of(closed) is None
    assert pair.client.socket.is_closed


@pytest.mark.parametrize(
    ("read", "partial"),
    [
        (lambda r: r.really_read(100), b"0123456789"),
        (lambda r: r.read_until(b"||"), b"0123456789"),
    ],
)
def test_partial_data_at_eof(read: Any, partial: bytes) -> None:
    reader = sent_and_closed(b"0123456789").client.reader
    assert failure_of(read(reader), IncompleteReadError).partial == partial  # type: ignore[attr-defined]
    assert result_of(reader.read()) == b""


@pytest_twisted.ensureDeferred
async def test_contents_and_lines_over_a_socket() -> None:
    payload = b"".join(b"line %d\n" % i for i in range(10000))
    async with serving(ServerFactory(SendAndClose, payload=payload)) as where:
        sock, reader, writer = await within(tt.connect(where, reader_buffer_size=4096))
        try:
            assert await within(reader.contents()) == payload
            # The peer closed after sending: our side closes once both are done.
            await within(writer.close())
            assert sock.is_closed
        finally:
            await within(writer.close())
        sock, reader, writer = await within(tt.connect(where, reader_buffer_size=4096))
        try:

            async def collect() -> list[bytes]:
                return [line async for line in reader.lines()]

            assert await within(collect()) == [b"line %d" % i for i in range(10000)]
        finally:
            await within(writer.close())
        assert sock.is_closed


# -- half-close --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_half_close_then_read_the_reply() -> None:
    factory = ServerFactory(ReplyAfterEof)
    async with serving(factory) as where:
        sock, reader, writer = await within(tt.connect(where))
        try:
            writer.write(b"request")
            await within(writer.write_eof())
            assert writer.is_closed
            with pytest.raises(tt.WriterClosedError):
                writer.write(b"more")
            # The server only replies once it saw our end of stream.
            assert await within(reader.read_line()) == b"you sent 7 bytes: request"
            assert await within(reader.read_line()) is None
            await within(sock.close_finished())
            assert sock.is_closed
        finally:
            await within(sock.close())


@implementer(IHalfCloseableProtocol)
class ReplyAndKeepOpen(ServerProtocol):
    """Replies when the client half-closes, and never closes its own side."""

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def readConnectionLost(self) -> None:
        self.transport.write(b"reply\n")

    def writeConnectionLost(self) -> None:
        pass


@pytest_twisted.ensureDeferred
async def test_close_after_half_close_does_not_wait_for_the_peer() -> None:
    factory = ServerFactory(ReplyAndKeepOpen)
    async with serving(factory) as where:
        sock, reader, writer = await within(tt.connect(where))
        try:
            writer.write(b"abc")
            await within(writer.write_eof())
            assert await within(reader.read_line()) == b"reply"
            assert factory.connected[0].received == 3
            await within(writer.close(), 3)
            assert sock.is_closed
        finally:
            sock.abort()


@pytest_twisted.ensureDeferred
async def test_with_connection_after_half_close_does_not_wait_for_the_peer() -> None:
    async def f(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> bytes | None:
        writer.write(b"request")
        await writer.write_eof()
        return await reader.read_line()

    async with serving(ServerFactory(ReplyAndKeepOpen)) as where:
        assert await within(tt.with_connection(where, f), 3) == b"reply"


# -- cancelling reads ------------------------------------------------------------------


def test_cancel_a_pending_read_then_read_again() -> None:
    """In memory: the timeout is on the pair's clock, the bytes arrive at flush()."""
    pair = connected_pair()
    reader = pair.client.reader
    d = reader.read_line()
    d.cancel()
    failure_of(d, CancelledError)
    pair.server.writer.write(b"half ")
    pair.flush()
    d = reader.read_line().addTimeout(0.05, pair.clock)
    assert outcome(d) is PENDING
    pair.clock.advance(0.05)
    failure_of(d, DeferredTimeoutError)
    pair.server.writer.write_line(b"line")
    pair.flush()
    assert result_of(reader.read_line()) == b"half line"


# -- other address families ----------------------------------------------------------


@needs_ipv6
@pytest.mark.parametrize("bracketed", [False, True])
@pytest_twisted.ensureDeferred
async def test_ipv6_round_trip(bracketed: bool) -> None:
    async with serving(ServerFactory(Echo), "tcp6") as where:
        assert isinstance(where, type(tt.to_host_and_port("::1", 1)))
        host = "[::1]" if bracketed else "::1"
        where = tt.to_host_and_port(host, where.port)  # type: ignore[attr-defined]
        sock, reader, writer = await within(tt.connect(where))
        try:
            assert isinstance(sock.peer_address, IPv6Address)
            assert sock.peer_address.host == "::1"
            writer.write_line(b"over ipv6")
            assert await within(reader.read_line()) == b"over ipv6"
            assert "[::1]" in repr(sock)
            # An IP literal is connected by the reactor's connectTCP, with no
            # endpoint's wrapper protocol between the transport and ours.
            assert sock.transport.protocol is sock._connection
        finally:
            await within(writer.close())


@pytest_twisted.ensureDeferred
async def test_unix_socket_round_trip(tmp_path: Any) -> None:
    path = str(tmp_path / "s.sock")
    async with serving(ServerFactory(Echo), "unix", path) as where:
        assert where == tt.to_file(path)

        async def f(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> bytes | None:
            assert isinstance(sock.peer_address, UNIXAddress)
            assert sock.transport.protocol is sock._connection  # connectUNIX, no wrapper
            writer.write_line(b"over a unix socket")
            return await reader.read_line()

        assert await within(tt.with_connection(where, f)) == b"over a unix socket"


# -- failures to connect -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_refused_names_the_address() -> None:
    port = closed_port()
    where = tt.to_host_and_port("127.0.0.1", port)
    for connect in (tt.connect, tt.connect_sock):
        with pytest.raises(error.ConnectionRefusedError) as info:
            await within(connect(where, timeout=5))
        assert f"127.0.0.1:{port}" in str(info.value)
    with pytest.raises(error.ConnectionRefusedError) as info:
        await within(tt.with_connection(where, lambda s, r, w: None))
    assert f"127.0.0.1:{port}" in str(info.value)


@pytest_twisted.ensureDeferred
async def test_missing_unix_path_names_the_path(tmp_path: Any) -> None:
    path = str(tmp_path / "nobody-here.sock")
    with pytest.raises(error.ConnectError) as info:
        await within(tt.connect(tt.to_file(path), timeout=5))
    assert path in str(info.value)


@pytest_twisted.ensureDeferred
async def test_dns_failure_names_the_address() -> None:
    resolver = FakeResolver({})
    fake = ResolvingReactor(resolver)
    where = tt.to_host_and_port("no-such-host.invalid", 8080)
    with pytest.raises(error.DNSLookupError) as info:
        await within(tt.connect(where, timeout=5, reactor=fake))
    assert "no-such-host.invalid:8080" in str(info.value)
    assert resolver.asked == ["no-such-host.invalid"]


@pytest_twisted.ensureDeferred
async def test_host_name_resolved_and_every_address_tried() -> None:
    async with serving(ServerFactory(Echo)) as where:
        port = where.port  # type: ignore[attr-defined]
        refusing = closed_port()
        resolver = FakeResolver(
            {
                "service.test": [
                    IPv4Address("TCP", "127.0.0.1", refusing),  # refused: try the next
                    IPv4Address("TCP", "127.0.0.1", port),
                ]
            }
        )
        fake = ResolvingReactor(resolver)
        name = tt.to_host_and_port("service.test", port)
        sock, reader, writer = await within(tt.connect(name, timeout=5, reactor=fake))
        try:
            assert sock.peer_address.port == port  # type: ignore[attr-defined]
            writer.write_line(b"by name")
            assert await within(reader.read_line()) == b"by name"
        finally:
            await within(writer.close())
        assert resolver.asked == ["service.test"]


def test_deadline_covers_a_resolver_that_never_answers() -> None:
    clock = Clock()
    fake = ResolvingReactor(FakeResolver(hang=True), clock)
    where = tt.to_host_and_port("slow-dns.test", 443)
    d = tt.connect(where, timeout=5, reactor=fake)
    clock.advance(4.9)
    assert not has_fired(d)  # still resolving
    clock.advance(0.1)
    err = assert_fired_with_failure(d, ConnectTimeoutError)
    assert isinstance(err, error.TimeoutError)
    assert isinstance(err, builtins.TimeoutError)
    assert "slow-dns.test:443" in str(err)
    assert "5 s" in str(err)
    assert not clock.getDelayedCalls()


def test_interrupt_during_dns() -> None:
    clock = Clock()
    fake = ResolvingReactor(FakeResolver(hang=True), clock)
    where = tt.to_host_and_port("slow-dns.test", 443)
    interrupt: Deferred[None] = Deferred()
    d = tt.connect_sock(where, timeout=5, interrupt=interrupt, reactor=fake)
    clock.advance(1)
    interrupt.callback(None)
    err = assert_fired_with_failure(d, ConnectInterruptedError)
    assert isinstance(err, error.ConnectingCancelledError)
    assert "slow-dns.test:443" in str(err)
    assert not clock.getDelayedCalls()


def test_cancel_during_dns() -> None:
    clock = Clock()
    fake = ResolvingReactor(FakeResolver(hang=True), clock)
    d = tt.connect(tt.to_host_and_port("slow-dns.test", 443), timeout=5, reactor=fake)
    d.cancel()
    err = assert_fired_with_failure(d, CancelledError)
    assert not isinstance(err, error.ConnectingCancelledError)
    assert "slow-dns.test:443" in str(err)
    clock.advance(GRACE)  # the sweeper's turn: it arms no deadline for an attempt over
    assert not clock.getDelayedCalls()


@pytest_twisted.ensureDeferred
async def test_timeout_against_a_peer_that_does_not_answer() -> None:
    peer = Unresponsive()
    try:
        start = time.monotonic()
        with pytest.raises(ConnectTimeoutError) as info:
            await within(tt.connect(peer.where, timeout=0.3))
        elapsed = time.monotonic() - start
        assert 0.25 <= elapsed < 3
        assert f"127.0.0.1:{peer.port}" in str(info.value)
        assert isinstance(info.value, builtins.TimeoutError)
        with pytest.raises(ConnectTimeoutError):
            await within(tt.with_connection(peer.where, lambda s, r, w: None, timeout=0.2))
    finally:
        peer.close()


@pytest_twisted.ensureDeferred
async def test_interrupt_against_a_peer_that_does_not_answer() -> None:
    peer = Unresponsive()
    try:
        interrupt: Deferred[None] = Deferred()
        reactor.callLater(0.1, interrupt.callback, None)
        start = time.monotonic()
        with pytest.raises(ConnectInterruptedError) as info:
            await within(tt.connect_sock(peer.where, timeout=10, interrupt=interrupt))
        assert time.monotonic() - start < 3
        assert isinstance(info.value, error.ConnectingCancelledError)
        assert str(info.value) == f"connecting to 127.0.0.1:{peer.port} was interrupted"
        # An interrupt that already fired stops the attempt at once.
        with pytest.raises(ConnectInterruptedError):
            await within(tt.connect(peer.where, timeout=10, interrupt=succeed(None)))
    finally:
        peer.close()


@pytest_twisted.ensureDeferred
async def test_cancel_against_a_peer_that_does_not_answer() -> None:
    peer = Unresponsive()
    try:
        d = tt.connect(peer.where, timeout=10)
        reactor.callLater(0.05, d.cancel)
        with pytest.raises(CancelledError) as info:
            await within(d)
        assert not isinstance(info.value, error.ConnectingCancelledError)
        assert f"127.0.0.1:{peer.port}" in str(info.value)
    finally:
        peer.close()


@pytest_twisted.ensureDeferred
async def test_interrupt_after_connecting_changes_nothing() -> None:
    async with serving(ServerFactory(Echo)) as where:
        interrupt: Deferred[None] = Deferred()
        _sock, reader, writer = await within(tt.connect(where, interrupt=interrupt))
        try:
            interrupt.callback(None)
            writer.write_line(b"still here")
            assert await within(reader.read_line()) == b"still here"
        finally:
            await within(writer.close())


# -- the buffer-age limit over a real socket ---------------------------------------------


@pytest.fixture
def logged_failures() -> Any:
    """The failures logged through twisted.logger while the test runs."""
    failures: list[Failure] = []

    def observer(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observer)
    yield failures
    globalLogPublisher.removeObserver(observer)


@pytest.mark.parametrize("waits_on", ["flushed", "read", "read_then_raise"])
@pytest_twisted.ensureDeferred
async def test_buffer_age_limit_with_a_peer_that_never_reads(
    waits_on: str, logged_failures: list[Failure]
) -> None:
    factory = ServerFactory(NeverReads)
    seen: list[Any] = []
    f_ended: Deferred[None] = Deferred()

    async def f(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> Any:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
            writer.write(b"x" * (16 * MiB))
            seen.append(writer)
            if waits_on == "flushed":
                await writer.flushed()
                return "flushed?!"
            # Never answered: the read ends when the connection does.
            data = await reader.read()
            if waits_on == "read_then_raise":
                raise Boom("f failed late")
            return data
        finally:
            reactor.callLater(0, f_ended.callback, None)

    async with serving(factory, rcvbuf=16 * 1024) as where:
        start = time.monotonic()
        with pytest.raises(BufferAgeLimitError) as info:
            await within(tt.with_connection(where, f, buffer_age_limit=0.5))
        elapsed = time.monotonic() - start
        assert 0.45 <= elapsed < 5
        assert "stopped reading" in str(info.value)
        assert str(where) in str(info.value)
        assert seen[0].is_closed
        await within(f_ended)
    # f's own error, after the connection ended, is logged; nothing else is.
    if waits_on == "read_then_raise":
        assert [failure.type for failure in logged_failures] == [Boom]
    else:
        assert logged_failures == []


# -- back-pressure over a real socket ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_back_pressure_bounds_the_reader_buffer(monkeypatch: Any) -> None:
    size = 64 * MiB
    buffer_size = 64 * 1024
    expected = hashlib.sha256(b"".join(stream(size))).hexdigest()
    high = [0]
    original = Reader.data_received

    def measuring(self: Reader, data: bytes) -> None:
        original(self, data)
        high[0] = max(high[0], self.bytes_buffered)

    monkeypatch.setattr(Reader, "data_received", measuring)
    factory = ServerFactory(Source, size=size)
    async with serving(factory) as where:
        _sock, reader, writer = await within(tt.connect(where, reader_buffer_size=buffer_size))
        try:
            digest = hashlib.sha256()
            total = 0
            # A slow reader: the sender could fill megabytes between two reads.
            for _ in range(20):
                await sleep(0.005)
                data = await within(reader.read(4096))
                digest.update(data)
                total += len(data)
                assert reader.bytes_buffered <= 2 * buffer_size
            while True:
                data = await within(reader.read(MiB))
                if not data:
                    break
                digest.update(data)
                total += len(data)
            assert total == size
            assert digest.hexdigest() == expected
        finally:
            await within(writer.close())
    assert buffer_size < high[0] <= 2 * buffer_size


# -- connect_sock ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connect_sock_then_reader_writer() -> None:
    factory = ServerFactory(GreetThenEcho, greeting=b"welcome\n")
    async with serving(factory) as where:
        sock = await within(tt.connect_sock(where))
        try:
            await sleep(0.05)  # the greeting arrives before anyone reads
            reader, writer = sock.reader_writer(reader_buffer_size=1024, max_line_length=100)
            assert reader.buffer_size == 1024
            assert reader.max_line_length == 100
            assert await within(reader.read_line()) == b"welcome"
            writer.write_line(b"echo me")
            assert await within(reader.read_line()) == b"echo me"
            with pytest.raises(RuntimeError):
                sock.reader_writer()
            with pytest.raises(RuntimeError):
                sock.attach_protocol(Protocol())
        finally:
            await within(sock.close())
        assert sock.is_closed
        assert writer.is_closed


@pytest_twisted.ensureDeferred
async def test_connect_sock_peer_sent_and_closed_before_reader_writer() -> None:
    payload = b"said and gone\n" * 1000
    async with serving(ServerFactory(SendAndClose, payload=payload)) as where:
        sock = await within(tt.connect_sock(where))
        try:
            await sleep(0.05)
            reader, writer = sock.reader_writer()
            assert await within(reader.contents()) == payload
            assert reader.at_eof
            assert not writer.is_closed
        finally:
            await within(sock.close())
        assert sock.is_closed


class Collector(Protocol):
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.received = 0
        self.made = False
        self.done: Deferred[BaseException] = Deferred()  # fires with the reason

    def connectionMade(self) -> None:
        self.made = True

    def dataReceived(self, data: bytes) -> None:
        self.digest.update(data)
        self.received += len(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.done.callback(reason.value)


@pytest_twisted.ensureDeferred
async def test_connect_sock_then_attach_protocol() -> None:
    size = 8 * MiB
    expected = hashlib.sha256(b"".join(stream(size))).hexdigest()
    async with serving(ServerFactory(Source, size=size)) as where:
        sock = await within(tt.connect_sock(where))
        try:
            await sleep(0.05)  # the server starts sending before the protocol is there
            collector = Collector()
            sock.attach_protocol(collector)
            assert collector.made
            assert collector.transport is sock.transport
            with pytest.raises(RuntimeError):
                sock.attach_protocol(Protocol())
            with pytest.raises(RuntimeError):
                sock.reader_writer()
            reason = await within(collector.done)
            assert isinstance(reason, error.ConnectionDone)
            assert collector.received == size
            assert collector.digest.hexdigest() == expected
            assert sock.is_closed
        finally:
            await within(sock.close())


@pytest_twisted.ensureDeferred
async def test_connect_sock_close_without_attaching() -> None:
    factory = ServerFactory(GreetThenEcho, greeting=b"ignored\n")
    async with serving(factory) as where:
        sock = await within(tt.connect_sock(where))
        assert not sock.is_closed
        await within(sock.close())
        assert sock.is_closed
        await within(sock.close())  # idempotent
        await within(factory.connected[0].lost)


@pytest_twisted.ensureDeferred
async def test_max_line_length_option() -> None:
    async with serving(ServerFactory(Echo)) as where:
        sock, reader, writer = await within(tt.connect(where, max_line_length=10))
        try:
            assert reader.max_line_length == 10
            writer.write(b"0123456789\n" + b"x" * 100 + b"\nafter\n")
            assert await within(reader.read_line()) == b"0123456789"
            with pytest.raises(tt.LineTooLongError):
                await within(reader.read_line())
            assert await within(reader.read_line()) == b"after"
        finally:
            await within(sock.close())


@pytest_twisted.ensureDeferred
async def test_abort_and_close_finished() -> None:
    factory = ServerFactory(Echo)
    async with serving(factory) as where:
        sock, reader, writer = await within(tt.connect(where))
        finished = sock.close_finished()
        assert not has_fired(finished)
        read = reader.read()
        writer.write(b"x" * MiB)  # dropped by the abort
        sock.abort()
        assert await within(finished) is None
        assert sock.is_closed
        assert await within(read) == b""  # the reader sees the end of the stream
        assert await within(writer.close()) is None
        assert writer.is_closed
        lost = await within(factory.connected[0].lost)
        assert isinstance(lost, error.ConnectionLost)  # reset, not a clean close


@pytest_twisted.ensureDeferred
async def test_close_finished_sees_reader_and_writer_closed() -> None:
    async with serving(ServerFactory(Echo)) as where:
        sock, reader, writer = await within(tt.connect(where))
        try:
            finished = sock.close_finished()
            sock.abort()
            await within(finished)
            states = (reader.at_eof, writer.is_closed)
        finally:
            await within(writer.close())
        assert states == (True, True)


@pytest_twisted.ensureDeferred
async def test_close_finished_when_the_peer_closes() -> None:
    async with serving(ServerFactory(SendAndClose, payload=b"bye\n")) as where:
        sock, reader, writer = await within(tt.connect(where))
        try:
            assert await within(reader.read_line()) == b"bye"
            assert await within(reader.read_line()) is None
            # The end of the stream does not close our side: only close() does.
            assert not sock.is_closed and not writer.is_closed
            finished = sock.close_finished()
            await sleep(0.01)
            assert not has_fired(finished)
            await within(writer.close())
            assert await within(finished) is None
            assert sock.is_closed
        finally:
            await within(sock.close())


@pytest_twisted.ensureDeferred
async def test_via_local_interface() -> None:
    async with serving(ServerFactory(Echo)) as where:
        port = where.port  # type: ignore[attr-defined]
        via = tt.to_host_and_port("127.0.0.1", port, via_local_interface="127.0.0.2")
        sock, reader, writer = await within(tt.connect(via))
        try:
            assert sock.local_address.host == "127.0.0.2"  # type: ignore[attr-defined]
            writer.write_line(b"from 127.0.0.2")
            assert await within(reader.read_line()) == b"from 127.0.0.2"
        finally:
            await within(writer.close())


# -- the socket object -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_socket_options_and_addresses() -> None:
    factory = ServerFactory(Echo)
    async with serving(factory) as where:
        sock, _reader, writer = await within(tt.connect(where))
        try:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
            linger = sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)
            assert isinstance(linger, bytes) and len(linger) == 8

            fd = sock.fileno()
            assert fd in open_fds()
            assert stat.S_ISSOCK(os.fstat(fd).st_mode)

            peer = sock.peer_address
            local = sock.local_address
            assert isinstance(peer, IPv4Address) and isinstance(local, IPv4Address)
            assert (peer.host, peer.port) == ("127.0.0.1", where.port)  # type: ignore[attr-defined]
            assert local.host == "127.0.0.1"
            await within(writer.flushed())
            server_side = factory.connected[0].transport.getPeer()
            assert server_side.port == local.port
            assert repr(sock) == f"<Socket 127.0.0.1:{peer.port} open>"
        finally:
            await within(writer.close())
        assert sock.is_closed
        assert sock.fileno() == -1
        assert repr(sock).endswith("closed>")


@pytest_twisted.ensureDeferred
async def test_unix_socket_has_no_tcp_options(tmp_path: Any) -> None:
    path = str(tmp_path / "u.sock")
    async with serving(ServerFactory(Echo), "unix", path) as where:
        sock, _reader, writer = await within(tt.connect(where))
        try:
            assert isinstance(sock.local_address, UNIXAddress)
            assert stat.S_ISSOCK(os.fstat(sock.fileno()).st_mode)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
            assert repr(sock).startswith("<Socket unix:")
        finally:
            await within(writer.close())


# -- no leaks ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connect_close_cycles_leave_no_fd() -> None:
    factory = ServerFactory(Echo)
    async with serving(factory) as where:
        _sock, _reader, writer = await within(tt.connect(where))
        await within(writer.close())
        await within(factory.connected[-1].lost)
        before = open_fds()

        async def cycles() -> None:
            socks: list[tt.Socket] = []
            for i in range(1000):
                if i % 3 == 0:
                    sock = await tt.connect_sock(where)
                    await sock.close()
                elif i % 3 == 1:
                    sock, _reader, writer = await tt.connect(where)
                    writer.write(b"x")
                    await writer.close()
                else:
                    await tt.with_connection(
                        where, lambda s, r, w: socks.append(s) or w.write(b"x")
                    )
                    sock = socks.pop()
                assert sock.is_closed

        await within(cycles(), 60)
        await within(gatherResults([p.lost for p in factory.connected]))
        assert len(factory.connected) == 1001
        for _ in range(300):
            if open_fds() == before:
                break
            await sleep(0.01)
        assert open_fds() == before


@pytest_twisted.ensureDeferred
async def test_write_eof_to_a_peer_that_never_reads_fails_with_the_age_limit() -> None:
    """write_eof() waits for the flush; a stuck peer ends it with BufferAgeLimitError."""
    async with serving(ServerFactory(NeverReads), rcvbuf=16 * 1024) as where:
        sock, _, writer = await within(tt.connect(where, buffer_age_limit=0.5))
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
            writer.write(b"x" * (16 * MiB))
            with pytest.raises(BufferAgeLimitError):
                await within(writer.write_eof(), 5)
        finally:
            sock.abort()
            await within(sock.close_finished())


@pytest_twisted.ensureDeferred
async def test_cancelling_with_connection_aborts_and_names_the_address() -> None:
    """Cancelled while f runs: f is cancelled, the connection aborted, the error named."""
    f_saw: list[BaseException] = []
    sockets: list[tt.Socket] = []

    async def f(sock: tt.Socket, reader: Reader, writer: tt.Writer) -> None:
        sockets.append(sock)
        try:
            await reader.read_line()  # the echo server never answers unasked
        except CancelledError as e:
            f_saw.append(e)
            raise

    async with serving(ServerFactory(Echo)) as where:
        d = tt.with_connection(where, f)
        while not sockets:
            await sleep(0.01)
        d.cancel()
        with pytest.raises(CancelledError) as info:
            await within(d)
        assert str(where) in str(info.value)
        assert len(f_saw) == 1
        await within(sockets[0].close_finished())
        assert sockets[0].is_closed
