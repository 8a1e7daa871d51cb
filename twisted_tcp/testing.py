"""
Helpers for testing code that uses twisted_tcp, with no socket and no
reactor: a connected pair of in-memory ends (L{connected_pair}), each with a
Reader and a Writer as a real connection has them, whose bytes move when the
test says so (L{MemoryPair.flush}); and L{run_handler}, which runs a server
handler over given bytes and says what it wrote and how it ended.  Timers
(the buffer-age limit, close timeouts) run on a
L{twisted.internet.task.Clock} that the test advances::

    from twisted_tcp.testing import run_handler

    def test_echo():
        run = run_handler(echo, [b"hello\\n", b"world\\n"])
        assert run.written == b"hello\\nworld\\n"
        assert run.ended and run.error is None

Everything here happens within the calls a test makes: an C{async def}
handler or function runs on twisted_tcp's own driver, which resumes it as
soon as its bytes are delivered, so a test needs no reactor as long as the
code it tests awaits only twisted_tcp's reads and Deferreds that the test
itself fires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import attrs
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IAddress,
    IConsumer,
    IPullProducer,
    IPushProducer,
    ITransport,
)
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from ._connection import Connection, Socket
from ._driver import run
from ._reader import Reader
from ._settings import DEFAULTS, Settings
from ._writer import Writer

CLIENT_ADDRESS = IPv4Address("TCP", "192.0.2.1", 40000)
"""The address of the client end of a pair, unless given (RFC 5737's TEST-NET-1)."""

SERVER_ADDRESS = IPv4Address("TCP", "192.0.2.2", 9000)
"""The address of the server end of a pair, unless given."""


@implementer(ITransport, IConsumer, IPushProducer)
class _MemoryTransport:
    """
    One end's transport, which behaves as Twisted's socket transports do
    where the Writer and the connection can tell: what is written waits
    until the pair delivers it to the other end, which it does only while
    that end reads (it has not paused), as a socket's kernel buffers would;
    it says how many bytes it holds (so the writer asks it rather than
    registering); a registered producer is told of each drain in place of
    the end of the stream or the close, which wait until it unregisters;
    an abort ends the connection at the next delivery, not in the call.
    """

    disconnecting = False
    dataBuffer = b""  # what Twisted's transports hold, as _twisted_private reads it:
    offset = 0  # here everything waits in outgoing (_tempDataLen)

    def __init__(self, pair: MemoryPair, host: IAddress, peer: IAddress) -> None:
        self._pair = pair
        self._host = host
        self._peer = peer
        self.outgoing: list[bytes] = []
        self.reading = True  # not paused by the protocol above
        self.write_closed = False  # loseWriteConnection: the end of the stream follows
        self.eof_delivered = False
        self.aborting = False
        self.peer_gone = False  # the other end closed the connection (its FIN came)
        self.lost = False
        self.producer: Any = None
        self.streaming = False

    @property
    def _tempDataLen(self) -> int:
        return sum(map(len, self.outgoing))

    # ITransport
    def write(self, data: bytes) -> None:
        if not (self.lost or self.write_closed or self.aborting) and data:
            self.outgoing.append(data)

    def writeSequence(self, data: Iterable[bytes]) -> None:
        for chunk in data:
            self.write(chunk)

    def loseConnection(self) -> None:
        self.disconnecting = True

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborting = True
        self.outgoing.clear()

    def getPeer(self) -> IAddress:
        return self._peer

    def getHost(self) -> IAddress:
        return self._host

    # IConsumer: the writer registers as a pull producer, told of each drain.
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError("a producer is registered already")
        self.producer = producer
        self.streaming = streaming
        if not streaming and not self.lost:
            IPullProducer(producer).resumeProducing()  # as Twisted's transports do at once

    def unregisterProducer(self) -> None:
        self.producer = None

    # IPushProducer: the reader pauses its end's reading.
    def pauseProducing(self) -> None:
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    def stopProducing(self) -> None:
        self.abortConnection()


@attrs.define(eq=False)
class MemoryEnd:
    """
    One end of a L{MemoryPair}: a Reader and a Writer, as L{connect}
    returns them, and the L{Socket} they belong to.
    """

    socket: Socket
    reader: Reader
    writer: Writer
    _protocol: Connection = attrs.field(repr=False, alias="protocol")

    @property
    def closed(self) -> bool:
        """Whether the connection is closed, as this end has learnt."""
        return self._protocol.closed


class MemoryPair:
    """
    Two connected in-memory ends, L{client} and L{server}.  Bytes written at
    one end reach the other one when L{flush} is called.

    @ivar client: the client's end (L{MemoryEnd}).
    @ivar server: the server's end.
    @ivar clock: the clock of both ends' timers (the buffer-age limit, close
        timeouts); advance it to make them fire.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        settings: Settings = DEFAULTS,
        client_address: IAddress = CLIENT_ADDRESS,
        server_address: IAddress = SERVER_ADDRESS,
    ) -> None:
        self.clock = Clock() if clock is None else clock
        self._protocols: dict[_MemoryTransport, Connection] = {}
        self.client = self._end(settings, client_address, server_address)
        self.server = self._end(settings, server_address, client_address)

    def _end(self, settings: Settings, host: IAddress, peer: IAddress) -> MemoryEnd:
        transport = _MemoryTransport(self, host, peer)
        protocol = Connection(self.clock, settings)
        self._protocols[transport] = protocol
        protocol.makeConnection(transport)
        assert protocol.reader is not None and protocol.writer is not None
        return MemoryEnd(Socket(protocol), protocol.reader, protocol.writer, protocol=protocol)

    def flush(self) -> None:
        """
        Deliver what each end has written to the other one, and the ends of
        the streams and the closes that follow, until nothing moves any
        more.  Bytes wait while their receiver does not read (its Reader is
        full), as they would in the kernel.
        """
        moved = True
        while moved:
            moved = False
            for transport, protocol in list(self._protocols.items()):
                moved |= self._deliver(transport, protocol)

    def _other(self, transport: _MemoryTransport) -> tuple[_MemoryTransport, Connection]:
        (other,) = (t for t in self._protocols if t is not transport)
        return other, self._protocols[other]

    def _deliver(self, transport: _MemoryTransport, protocol: Connection) -> bool:
        """Move what C{transport}'s end wrote, and what follows; whether anything moved."""
        if transport.lost:
            return False
        if transport.aborting:
            self._lose(transport, Failure(ConnectionAborted()))
            return True
        other, receiver = self._other(transport)
        if transport.peer_gone and transport.outgoing:
            # Bytes sent to a peer that closed: the connection is reset.
            transport.outgoing.clear()
            self._lose(transport, Failure(ConnectionLost("the peer had closed")))
            return True
        moved = False
        if transport.outgoing and other.reading and not other.lost:
            data = b"".join(transport.outgoing)
            transport.outgoing.clear()
            receiver.dataReceived(data)
            moved = True
            if transport.producer is not None and not transport.streaming:
                transport.producer.resumeProducing()  # drained, as Twisted's transports say
        if transport.outgoing or transport.lost or transport.producer is not None:
            return moved  # (a registered producer holds back the end of the stream and the close)
        if transport.write_closed and not transport.eof_delivered:
            transport.eof_delivered = True
            protocol.writeConnectionLost()
            if not other.lost:
                receiver.readConnectionLost()
            moved = True
        if transport.disconnecting and not transport.lost:
            self._lose(transport, Failure(ConnectionDone()))
            moved = True
        return moved

    def _lose(self, transport: _MemoryTransport, reason: Failure) -> None:
        """
        C{transport}'s end is closed (or aborted, or reset): it learns it
        now; the other end reads the end of the stream after a close, as
        over TCP, and is told of the loss after an abort or a reset.
        """
        other, receiver = self._other(transport)
        transport.lost = True
        transport.outgoing.clear()
        self._protocols[transport].connectionLost(reason)
        if other.lost:
            return
        if reason.check(ConnectionDone):
            other.peer_gone = True
            if not transport.eof_delivered:
                transport.eof_delivered = True
                receiver.readConnectionLost()
            if other.disconnecting and not other.outgoing:
                other.lost = True
                receiver.connectionLost(Failure(ConnectionDone()))
        else:
            other.lost = True
            other.outgoing.clear()
            receiver.connectionLost(Failure(ConnectionLost("reset by the peer")))


def connected_pair(*, clock: Clock | None = None, settings: Settings = DEFAULTS) -> MemoryPair:
    """
    A client end and a server end connected in memory, each with a Reader
    and a Writer (limits from C{settings}, timers on C{clock}).
    """
    return MemoryPair(clock=clock, settings=settings)


@attrs.frozen
class HandlerRun:
    """
    How a server handler ran over the bytes L{run_handler} gave it.

    @ivar written: every byte the handler wrote, in order.
    @ivar ended: whether the handler ended (returned or raised).
    @ivar result: what it returned (None while it has not).
    @ivar error: what it raised, or None.
    @ivar closed: whether the connection is closed (it is once the handler
        ends: the server closes it then).
    """

    written: bytes
    ended: bool
    result: object
    error: BaseException | None
    closed: bool


def run_handler(
    handler: Callable[[IAddress, Reader, Writer], Any],
    received: bytes | Iterable[bytes],
    *,
    end: bool = True,
    settings: Settings = DEFAULTS,
    clock: Clock | None = None,
    peer: IAddress = CLIENT_ADDRESS,
) -> HandlerRun:
    """
    Run C{handler(address, reader, writer)} as a server would for a client
    at C{peer} that sends C{received} (bytes, or chunks delivered one at a
    time), then, if C{end}, the end of its stream; close the connection
    when the handler ends, as the server does; return what it wrote and how
    it ended.  A handler still waiting for bytes when they are all
    delivered is left running (C{ended} is false).
    """
    pair = MemoryPair(clock=clock, settings=settings, client_address=peer)
    outcome: list[Any] = []
    server, client = pair.server, pair.client

    def done(result: object) -> None:
        outcome.append(result)
        server.writer.start_close()  # as the server does, whether it returned or raised

    run(handler, (peer, server.reader, server.writer), done)
    written: list[bytes] = []

    def deliver() -> None:
        # Move bytes both ways, the client taking all it is sent (its reads
        # complete at once), until nothing moves.
        while True:
            pair.flush()
            if not client.reader.bytes_buffered:
                return
            while client.reader.bytes_buffered:
                client.reader.read(client.reader.bytes_buffered).addCallback(written.append)

    for chunk in [received] if isinstance(received, bytes) else received:
        client.writer.write(chunk)
        deliver()
    if end and not client.writer.is_closed:
        client.writer.write_eof()
    deliver()
    result = outcome[0] if outcome else None
    failure = result if isinstance(result, Failure) else None
    return HandlerRun(
        written=b"".join(written),
        ended=bool(outcome),
        result=None if failure is not None else result,
        error=failure.value if failure is not None else None,
        closed=server.closed,
    )


__all__ = [
    "CLIENT_ADDRESS",
    "SERVER_ADDRESS",
    "HandlerRun",
    "MemoryEnd",
    "MemoryPair",
    "connected_pair",
    "run_handler",
]
