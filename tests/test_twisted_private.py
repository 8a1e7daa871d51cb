"""
Each part of Twisted that twisted_tcp uses without Twisted promising it
(C{twisted_tcp._twisted_private}), checked against the installed Twisted:
when a release changes one, the test named after it fails, and says which.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import inspect
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

import twisted_tcp as tt
from twisted_tcp import _twisted_private as private
from twisted_tcp._tls import split_transport

from .conftest import LOCAL, logged_errors, raw_client, read_exactly, sleep, until, within
from .helpers.pki import Pki
from .test_tls import tls_1_2_where, to

CHANGED = "Twisted changed a private part that twisted_tcp._twisted_private relies on: "


class Recorded(Protocol):
    """A server protocol that keeps itself, and writes its factory's greeting if it has one."""

    def connectionMade(self) -> None:
        factory = self.factory
        factory.made.append(self)
        if factory.greeting:
            self.transport.write(factory.greeting)
            factory.unsent_at_once.append(private.unsent_bytes(self.transport))

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.lost.append(reason)


class Producer:
    """A pull producer with nothing to produce."""

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


def recording_factory(greeting: bytes = b"") -> Any:
    factory = Factory.forProtocol(Recorded)
    factory.made = []
    factory.lost = []
    factory.unsent_at_once = []
    factory.greeting = greeting  # the factory's, not the class's: no test sees another's
    return factory


@contextlib.asynccontextmanager
async def recorded_connection(
    family: str, tmp_path: Path, greeting: bytes
) -> AsyncIterator[tuple[Any, socket.socket]]:
    """
    A connection, over TCP or a Unix socket, to a L{Recorded} protocol that
    wrote C{greeting}: its factory and the client's non-blocking socket.
    """
    factory = recording_factory(greeting=greeting)
    if family == "tcp":
        port = reactor.listenTCP(0, factory, interface=LOCAL)
        client = raw_client(port.getHost().port)
    else:
        path = str(tmp_path / "s")
        port = reactor.listenUNIX(path, factory)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(path)
        client.setblocking(False)
    try:
        await until(lambda: factory.made)
        yield factory, client
    finally:
        client.close()
        for protocol in factory.made:
            protocol.transport.abortConnection()
        await within(port.stopListening())


@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_unsent_bytes_of_socket_transports(family: str, tmp_path: Path) -> None:
    async with recorded_connection(family, tmp_path, b"0123456789") as (factory, client):
        # Written, and not yet handed to the kernel, which the reactor does later.
        assert factory.unsent_at_once == [10], CHANGED + "FileDescriptor's write buffer"
        assert await read_exactly(client, 10) == b"0123456789"
        assert private.unsent_bytes(factory.made[0].transport) == 0
        assert private.unsent_bytes(StringTransport()) is None  # a transport that cannot say


@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_send_now_sends_only_on_a_transport_that_holds_nothing(
    family: str, tmp_path: Path
) -> None:
    async with recorded_connection(family, tmp_path, b"0123456789") as (factory, client):
        transport = factory.made[0].transport
        names = ("socket", "dataBuffer", "_tempDataLen", "_writeDisconnected", "TLS", "producer")
        for name in names:
            assert hasattr(transport, name), CHANGED + f"FileDescriptor.{name}"
        if family == "unix":  # (the descriptors that wait for the next bytes)
            assert transport._sendmsgQueue == [], CHANGED + "unix.Server._sendmsgQueue"
        assert await read_exactly(client, 10) == b"0123456789"
        # Bytes in Twisted's buffer (until the reactor's next turn): none overtakes them.
        transport.write(b"held")
        assert private.send_now(transport, b"late", None) == 0, CHANGED + "FileDescriptor's buffer"
        transport.write(b"late")
        assert await read_exactly(client, 8) == b"heldlate"
        # Drained: sent at once, with no turn of the reactor.
        assert private.send_now(transport, b"now", None) == 3
        assert private.unsent_bytes(transport) == 0
        assert await read_exactly(client, 3) == b"now"
        # Somebody's producer, told of the drains of Twisted's buffer: bytes
        # go through that buffer, but for the producer named (the writer's).
        producer = Producer()
        transport.registerProducer(producer, False)
        assert transport.producer is producer, CHANGED + "FileDescriptor.producer"
        assert private.send_now(transport, b"theirs", None) == 0
        assert private.send_now(transport, b"ours", producer) == 4
        assert await read_exactly(client, 4) == b"ours"
        transport.unregisterProducer()
        transport.loseConnection()  # closing: nothing more goes out
        assert private.send_now(transport, b"after", None) == 0


@pytest.mark.parametrize("ended_by", [None, "abortConnection", "loseConnection"])
@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_a_transport_ended_by_a_reset_reports_its_loss_once(
    family: str, ended_by: str | None, tmp_path: Path
) -> None:
    # What the peer sent before the error is handed over first, unless the
    # protocol ends the connection meanwhile; then the loss, once.
    from twisted.internet.error import ConnectionLost

    async with recorded_connection(family, tmp_path, b"") as (factory, client):
        transport = factory.made[0].transport
        assert transport._aborting is False, CHANGED + "tcp.Connection._aborting"
        received: list[bytes] = []
        factory.made[0].dataReceived = received.append
        transport.stopReading()  # what the peer sent before the error waits in the kernel
        client.sendall(b"before")
        await sleep(0.05)
        private._end_for_error(
            transport, ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")
        )
        if ended_by is not None:
            getattr(transport, ended_by)()  # nothing more than that: it is ending already
        transport.startReading()  # (the reader resuming it): nothing is read
        client.sendall(b"more")
        await until(lambda: factory.lost)
        await sleep(0.05)  # (a second report would come within a turn or two)
        assert len(factory.lost) == 1
        assert received == ([b"before"] if ended_by is None else [])
        assert factory.lost[0].check(ConnectionLost)
        assert "Connection reset by peer" in str(factory.lost[0].value)


@pytest_twisted.ensureDeferred
async def test_a_transport_ended_by_a_reset_is_lost_though_its_protocol_raises(
    tmp_path: Path,
) -> None:
    async with recorded_connection("tcp", tmp_path, b"") as (factory, client):
        transport = factory.made[0].transport

        def fails(data: bytes) -> None:
            raise ValueError("bad bytes")

        factory.made[0].dataReceived = fails
        transport.stopReading()
        client.sendall(b"before")
        await sleep(0.05)
        with logged_errors() as errors:
            private._end_for_error(transport, ConnectionResetError(errno.ECONNRESET, "reset"))
            await until(lambda: factory.lost)
        assert len(factory.lost) == 1
        assert [e["log_failure"].type for e in errors] == [ValueError]


@pytest_twisted.ensureDeferred
async def test_tls_plaintext_held(pki: Pki) -> None:
    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write(await reader.really_read(3))

    server = await within(tt.Server.create(tt.on_port(0, interface=LOCAL, tls=pki.files), handler))
    try:
        sock, reader, writer = await within(tt.connect(to(server, pki)))
        try:
            _, tls = split_transport(sock.transport)
            assert tls is not None
            assert isinstance(tls._appSendBuffer, list), CHANGED + "TLS _appSendBuffer"
            writer.write(b"abc")  # gathered by the TLS layer for its next turn
            assert private.tls_plaintext_held(tls) == 3, CHANGED + "TLS _aggregator._buffer"
            assert await within(reader.really_read(3)) == b"abc"
            assert private.tls_plaintext_held(tls) == 0
        finally:
            await within(writer.close())
    finally:
        await within(server.close(close_existing_connections=True))


@pytest_twisted.ensureDeferred
async def test_tls_session_ended(pki: Pki) -> None:
    async def bye(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await writer.close()  # close_notify, which ends a TLS 1.2 session

    server = await within(tt.Server.create(tls_1_2_where(pki), bye))
    try:
        sock, reader, writer = await within(tt.connect(to(server, pki)))
        try:
            _, tls = split_transport(sock.transport)
            assert not private.tls_session_ended(tls)
            assert await within(reader.read()) == b""
            assert private.tls_session_ended(tls), CHANGED + "TLS _lostTLSConnection"
        finally:
            await within(writer.close())
    finally:
        await within(server.close(close_existing_connections=True))


def test_half_closeable_tls_overrides_what_twisted_still_calls() -> None:
    from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol

    # close_notify is read where Twisted's layer reads every record.
    assert "_flushReceiveBIO" in inspect.getsource(TLSMemoryBIOProtocol.dataReceived), (
        CHANGED + "TLSMemoryBIOProtocol.dataReceived no longer calls _flushReceiveBIO"
    )
    for name in ("_flushReceiveBIO", "_flushSendBIO", "_shutdownTLS", "_tlsShutdownFinished"):
        assert callable(getattr(BufferingTLSTransport, name, None)), CHANGED + name
    for name in ("_lostTLSConnection", "_aborted"):
        assert name in inspect.getsource(TLSMemoryBIOProtocol), CHANGED + name
    assert "_aggregator" in inspect.getsource(BufferingTLSTransport), CHANGED + "_aggregator"
    # write_now: the records OpenSSL makes of a write are read from the
    # connection's memory BIO by _flushSendBIO, which _write calls.
    assert "_flushSendBIO" in inspect.getsource(TLSMemoryBIOProtocol._write), (
        CHANGED + "TLSMemoryBIOProtocol._write no longer calls _flushSendBIO"
    )
    assert "self._tlsConnection.bio_read(" in inspect.getsource(
        TLSMemoryBIOProtocol._flushSendBIO
    ), CHANGED + "_tlsConnection.bio_read in _flushSendBIO"
    layer = private.half_closeable_tls()
    assert issubclass(layer, BufferingTLSTransport)


@pytest_twisted.ensureDeferred
async def test_a_shared_unix_socket_is_left_as_its_owner_made_it(tmp_path: Path) -> None:
    path = str(tmp_path / "shared")
    owner = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    owner.bind(path)
    owner.listen(5)
    owner.setblocking(False)  # as the supervisor hands it down
    os.chmod(path, 0o600)
    factories = [recording_factory(), recording_factory()]
    ports = [
        private.adopt_shared_unix_socket(reactor, owner.fileno(), 7, factory)
        for factory in factories
    ]
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, CHANGED + "unix.Port chmods"
        await within(ports[0].stopListening())
        client.connect(path)  # the other port still accepts on the shared socket
        await until(lambda: factories[1].made)
        assert not factories[0].made
    finally:
        client.close()
        for protocol in factories[1].made:
            protocol.transport.abortConnection()
        await within(ports[1].stopListening())
        assert os.path.exists(path)  # the owner's to remove
        owner.close()
        os.unlink(path)


@pytest_twisted.ensureDeferred
async def test_fit_accepts_after_reads_fits_what_the_port_sets_as_a_read_ends() -> None:
    factory = recording_factory()
    port = reactor.listenTCP(0, factory, interface=LOCAL)
    clients = []
    try:
        private.fit_accepts_after_reads(port, lambda: 3)
        assert port.numberAccepts == 3
        # Three clients in the backlog before the port reads: it accepts
        # all three, as many as it may, and would take 20 more next time.
        clients = [raw_client(port.getHost().port) for _ in range(3)]
        await until(lambda: len(factory.made) == 3)
        assert port.numberAccepts == 3, CHANGED + "tcp.Port.doRead sets numberAccepts"
    finally:
        for client in clients:
            client.close()
        for protocol in factory.made:
            protocol.transport.abortConnection()
        await within(port.stopListening())


class FailingListener:
    """A listening socket whose accept() fails with C{errors}, then would block."""

    def __init__(self, real: socket.socket, errors: list[int]) -> None:
        self.real = real
        self.errors = errors

    def accept(self) -> Any:
        code = self.errors.pop(0) if self.errors else errno.EAGAIN
        raise OSError(code, os.strerror(code))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.mark.parametrize("error", ["EMFILE", "ENOBUFS", "ENFILE", "ENOMEM"])
def test_accept_errors_are_told_by_their_log_events(error: str) -> None:
    port = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface=LOCAL)
    real = port.socket
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        port.socket = FailingListener(real, [getattr(errno, error)] * 2)
        port.doRead()
    finally:
        globalLogPublisher.removeObserver(events.append)
        port.socket = real
        port.stopListening()
    told = {private.accept_error(event) for event in events} - {None}
    assert told == {error}, CHANGED + f"the log events of a failed accept() ({error})"


def test_fit_accepts_bounds_what_one_read_accepts() -> None:
    factory = recording_factory()
    port = reactor.listenTCP(0, factory, interface=LOCAL)
    clients = [raw_client(port.getHost().port) for _ in range(3)]
    try:
        private.fit_accepts(port, 1)
        assert port.numberAccepts == 1, CHANGED + "tcp.Port.numberAccepts"
        port.doRead()
        assert len(factory.made) == 1, CHANGED + "tcp.Port.numberAccepts"
    finally:
        for client in clients:
            client.close()
        for protocol in factory.made:
            protocol.transport.abortConnection()
        port.stopListening()


def test_a_fired_deferred_made_without_init_is_a_fired_deferred_in_every_use() -> None:
    from twisted.internet.defer import Deferred, ensureDeferred

    from twisted_tcp._reader import _fired

    assert private._callbacks_name() is not None, CHANGED + "what Deferred.__init__ sets"
    made = private.made_without_init(type("Fired", (Deferred,), {}))
    assert isinstance(made, functools.partial), CHANGED + "what Deferred.__init__ sets"

    # Callbacks, in a chain, each Deferred with its own list, as with succeed().
    one, two = _fired(b"one"), _fired(b"two")
    seen: list[Any] = []
    one.addCallback(lambda value: value + b"!").addCallback(seen.append)
    two.addCallback(lambda _: 1 / 0).addErrback(lambda f: seen.append(f.type))
    assert seen == [b"one!", ZeroDivisionError]
    # Chained to a Deferred that waits.
    inner: Deferred[bytes] = Deferred()
    _fired(b"three").addCallback(lambda _: inner).addCallback(seen.append)
    assert seen[2:] == []
    inner.callback(b"inner")
    assert seen[2:] == [b"inner"]
    # Cancelled once fired: nothing happens.
    four = _fired(b"four")
    four.cancel()
    assert four.result == b"four"

    # Awaited under Twisted's own driver.
    async def awaits() -> Any:
        return await _fired(b"five")

    ensureDeferred(awaits()).addCallback(seen.append)
    assert seen[3:] == [b"five"]


@pytest.mark.parametrize("debug", [False, True])
def test_a_fired_read_records_where_it_was_made_in_debug_mode(debug: bool) -> None:
    # Debugging is turned on by an application after its imports.
    from twisted.internet import defer

    reader = tt.Reader(None)
    reader.data_received(b"line\n")
    was = defer.getDebugging()
    defer.setDebugging(debug)
    try:
        d = reader.read_line()
    finally:
        defer.setDebugging(was)
    assert d.result == b"line"
    assert (d._debugInfo is not None) is debug


@pytest.mark.parametrize("debug", [False, True])
def test_a_waiting_read_is_a_cancellable_deferred_in_every_use(debug: bool) -> None:
    # Made with no call to Deferred.__init__ (but in debug mode): its
    # canceller is its class's, and each has a callbacks list of its own.
    from twisted.internet import defer

    reader = tt.Reader(None)
    was = defer.getDebugging()
    defer.setDebugging(debug)
    try:
        first = reader.read_line()
    finally:
        defer.setDebugging(was)
    assert (first._debugInfo is not None) is debug
    seen: list[Any] = []
    first.addErrback(lambda f: seen.append(f.type))
    first.cancel()  # the reader's canceller: the read is no longer pending
    assert seen == [defer.CancelledError]
    second = reader.read_line()
    reader.data_received(b"line\n")
    assert second.called
    second.addCallback(seen.append)
    assert seen == [defer.CancelledError, b"line"]


def test_a_deferred_made_without_init_where_twisted_does_not_allow_it(monkeypatch: Any) -> None:
    # As with Deferred debugging on at import, or a Twisted whose
    # Deferred.__init__ sets more: Deferred.__init__ is called after all.
    from twisted.internet.defer import CancelledError, Deferred

    cancelled: list[Any] = []

    class Waiting(Deferred[Any]):
        _canceller = staticmethod(cancelled.append)

    monkeypatch.setattr(private, "_callbacks_name", lambda: None)
    made = private.made_without_init(Waiting)
    d = made()
    assert type(d) is Waiting
    seen: list[Any] = []
    d.addErrback(lambda f: seen.append(f.type))
    d.cancel()
    assert cancelled == [d]
    assert seen == [CancelledError]
    other = made()  # with callbacks of its own
    other.callback(1)
    other.addCallback(seen.append)
    assert seen == [CancelledError, 1]
