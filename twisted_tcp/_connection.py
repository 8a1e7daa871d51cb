"""
One connection: the Twisted protocol under a Reader and a Writer, and the
Socket object a user holds.

A byte received goes from the protocol's C{dataReceived} straight to
L{Reader.data_received}, with the writer holding what is written meanwhile
so that it goes out in one call; a byte written goes from L{Writer.write}
straight to the transport.  Otherwise the protocol only relays the
connection's life: made, half-closed by the peer, lost.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IProtocol,
    IPushProducer,
    ITCPTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from ._oneshot import OneShot
from ._reader import Reader
from ._settings import DEFAULTS, Settings, settings_with
from ._tls import split_transport
from ._twisted_private import SOCKET_TRANSPORTS
from ._where import show_address
from ._writer import Writer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IReactorTime


class IStreamTransport(ITCPTransport, IPushProducer):
    """What the transport of a connection is (Twisted's, or a wrapper's): for type checks."""


@implementer(IHalfCloseableProtocol)
class Connection(Protocol):
    """
    The protocol of every twisted_tcp connection.

    With C{options} (the L{Settings} of its Reader and Writer), a Reader and
    a Writer are attached as soon as the connection is made.  Without, the
    transport is paused until the user attaches them
    (L{Socket.reader_writer}) or a protocol of their own
    (L{Socket.attach_protocol}).
    """

    transport: IStreamTransport  # (set by makeConnection)
    reader: Reader | None = None
    writer: Writer | None = None
    closed = False
    # The rest of the state, here as class attributes: an instance holds in
    # its dict only what it changed (an idle connection is a few hundred
    # bytes smaller).
    _lost: OneShot[Failure] | None = None  # made by the first when_lost()
    _lost_reason: Failure | None = None
    _read_eof = False
    _holding = False  # the transport is paused until something is attached
    _held: list[bytes] | None = None  # received before anything was attached
    _user: IProtocol | None = None
    _secured: OneShot[None] | None = None  # made by secured()
    _handshake_done = False
    _tls: Any = None  # the TLS layer under this protocol, if any
    # The transport under every wrapper (found with the TLS layer); None
    # where there is none, the transport being a socket's itself.
    _sink: Any = None
    _lost_calls: list[Callable[[], object]] | None = None  # call_when_lost()
    _close_on_eof = False  # close_when_peer_ends()
    on_made: Callable[[Connection], object] | None = None  # told once it is connected
    _ending = False  # the reader is being told of the end of the stream
    _released = False  # the reader and writer were let go (let_go)
    _let_go_at_loss = False  # let_go_when_lost()

    def __init__(self, clock: IReactorTime, options: Settings | None) -> None:
        self.clock = clock
        self.options = options

    # -- IProtocol -----------------------------------------------------------

    def connectionMade(self) -> None:
        tls = self._find_tls()
        self._no_delay()
        if self.options is not None:
            self.start_stream(self.options)
        elif tls is not None:
            self._holding = True  # paused once the handshake, which must read, is done
        else:
            self.pause_until_attached()
        on_made = self.on_made
        if on_made is not None:
            self.on_made = None
            on_made(self)

    def _find_tls(self) -> Any:
        """
        Find the TLS layer under this protocol, if any, and ask it to say
        when its handshake is done (L{handshakeCompleted}); return it.
        """
        transport = self.transport
        if type(transport) in SOCKET_TRANSPORTS:  # the usual case: no layer between
            return None
        self._sink, self._tls = split_transport(transport)
        tls = self._tls
        if tls is not None:
            # Said only now, and only over TLS: a client endpoint's wrapper
            # checks its protocol's interfaces when it is built and keeps
            # just the last one it finds (directlyProvides in a loop), so a
            # class that declared both would lose IHalfCloseableProtocol.
            # A wrapper between the TLS layer and this protocol (connectSSL's)
            # relays handshakeCompleted, once it says it can.
            protocol = tls.wrappedProtocol
            for _ in range(4):
                alsoProvides(protocol, IHandshakeListener)
                if protocol is self:
                    break
                protocol = getattr(protocol, "_wrappedProtocol", self)
        return tls

    def _no_delay(self) -> None:
        """
        Turn Nagle's algorithm off, on a TCP socket only (the sink is found
        by L{_find_tls}): Twisted before 24.11 passes the option on for a
        Unix socket too, and the kernel refuses it there (EOPNOTSUPP).
        """
        sink = self.transport if self._sink is None else self._sink
        kind = type(sink)
        if kind is tcp.Server or kind is tcp.Client:  # (unix.Server is a subclass)
            sink.setTcpNoDelay(True)
        elif (
            kind not in SOCKET_TRANSPORTS
            and ITCPTransport.providedBy(sink)
            and isinstance(sink.getHost(), (IPv4Address, IPv6Address))
        ):
            sink.setTcpNoDelay(True)

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake succeeded (Twisted's TLS layer calls this); but one
        whose TLS layer is closing already does not count: the reason it
        closes comes with connectionLost.  (Twisted before 26.4 checks the
        server's name only as the handshake ends, aborts the connection if
        it does not match, and calls this all the same.)
        """
        if self._tls is not None and self._tls.disconnecting:
            return
        self._handshake_done = True
        if self._holding:
            self.pause_until_attached()
        if self._secured is not None:
            self._secured.fire(None)

    def secured(self) -> Deferred[None] | None:
        """
        C{None} if the connection is not over TLS or its handshake is done;
        else a Deferred that fires when the handshake is done, or fails with
        the reason the connection was lost first.
        """
        if self._handshake_done or self.closed or self._tls is None:
            return None
        if self._secured is None:
            self._secured = OneShot()
        return self._secured.wait()

    def pause_until_attached(self) -> None:
        """Stop reading until a reader/writer or a protocol is attached."""
        self._holding = True
        self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        writer = self.writer
        if writer is None:  # nothing attached yet (a user protocol replaces this method)
            if self._held is None:
                self._held = []
            self._held.append(data)
            return
        # What the reader's consumers write meanwhile goes out in one call.
        writer.gather()
        try:
            self.reader.data_received(data)  # type: ignore[union-attr]
        finally:
            writer.send_gathered()

    def readConnectionLost(self) -> None:
        """The peer half-closed: the reader sees the end of the stream."""
        self._read_eof = True
        reader = self.reader
        if reader is not None:
            # A close that the end of the stream leads to (the handler ends)
            # is finished below, in this turn, not by the transport.
            self._ending = True
            try:
                reader.eof_received()
            finally:
                self._ending = False
            writer = self.writer
            if writer is not None and writer.is_closed:
                if not (writer.all_sent() and self._end_now()):
                    self.transport.loseConnection()
            elif writer is not None and self._close_on_eof:
                writer.close()
        elif self._user is not None:
            halfclose = IHalfCloseableProtocol(self._user, None)
            if halfclose is not None:
                halfclose.readConnectionLost()
            else:
                self.transport.loseConnection()

    def _end_now(self) -> bool:
        """
        Both streams have ended and every byte written has gone: end the
        connection in this turn of the reactor, as Twisted itself does for a
        protocol that cannot half-close, rather than ask the transport to
        (it would add itself to the poller for writing, to find on the next
        turn that it has nothing to write).  For plain socket transports
        only (a TLS layer still has its close_notify to send); return
        whether it was one.
        """
        transport: Any = self.transport
        if self._tls is None and type(transport) in SOCKET_TRANSPORTS and transport.connected:
            transport.stopReading()
            transport.stopWriting()
            transport.connectionLost(connectionDone)
            return True
        return False

    def close_transport(self) -> None:
        """
        Close the transport once what was written has gone (the writer's
        close).  While the reader is told of the end of the stream, that is
        left to L{readConnectionLost}, which may end the connection at once.
        """
        if not (self._ending and self._tls is None):
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our end of the stream was sent (after L{Writer.write_eof})."""
        if self.writer is not None:
            self.writer.eof_sent()
            if self._read_eof:
                self.transport.loseConnection()
        elif self._user is not None:
            halfclose = IHalfCloseableProtocol(self._user, None)
            if halfclose is not None:
                halfclose.writeConnectionLost()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        # Everyone learns in this order, each seeing the ones before already
        # told: the socket is closed and the reader at the end of the
        # stream, then the writer (whose error, if any, is the
        # connection's), then the reader's pending read, then whoever waits
        # on lost.
        self.closed = True
        # (A reader told of the end of the stream already, by
        # readConnectionLost or start_stream, has nothing more to learn.)
        reader = None if self._read_eof else self.reader
        if reader is not None:
            reader.eof_known()
        if self._secured is not None:
            self._secured.fire(reason)
        if self.writer is not None:
            self.writer.connection_lost(reason)
        calls, self._lost_calls = self._lost_calls, None
        for call in calls or ():
            call()
        if reader is not None:
            reader.eof_received()
        if self._user is not None:
            self._user.connectionLost(reason)
        self._lost_reason = reason
        if self._lost is not None:
            self._lost.fire(reason)
        if self._let_go_at_loss:
            self.let_go()

    def let_go(self) -> None:
        """
        Whoever ran on the connection has ended and the connection is gone:
        let go of the reader and the writer.  The writer refers back to the
        connection (for its C{socket}), so that the two would be a cycle,
        which only the garbage collector frees; without it, the whole
        connection is freed the moment nothing else holds it.  Whoever
        still holds the reader or the writer keeps them as they are.
        """
        self.reader = self.writer = None
        self._released = True

    def let_go_when_lost(self) -> None:
        """
        L{let_go} once the connection is lost (now, if it is): for a
        connection whose reader and writer are the user's alone (L{connect}
        hands them over), nothing of ours runs on it after that.
        """
        if self.closed:
            self.let_go()
        else:
            self._let_go_at_loss = True

    def close_when_peer_ends(self) -> None:
        """
        From now on, when the peer ends its stream (at once if it has),
        close the connection as C{writer.close()} does: flush, then close.
        What the peer sent stays readable.
        """
        self._close_on_eof = True
        if self._read_eof and self.writer is not None and not self.closed:
            self.writer.close()

    def abort(self) -> None:
        """Close the connection at once, dropping unwritten bytes (if it is not gone)."""
        if not self.closed:
            self.transport.abortConnection()

    def call_when_lost(self, call: Callable[[], object]) -> None:
        """
        Call C{call()} when the connection is lost, after the writer has
        learnt it and before the reader's pending read does (at once if it
        is lost already): no Deferred for it.
        """
        if self.closed:
            call()
        elif self._lost_calls is None:
            self._lost_calls = [call]
        else:
            self._lost_calls.append(call)

    def when_lost(self) -> Deferred[None]:
        """A Deferred that fires (with None) once the connection is lost."""
        if self._lost_reason is not None:
            return succeed(None)
        if self._lost is None:
            self._lost = OneShot()
        return self._lost.wait().addBoth(lambda _: None)

    # -- attaching what reads and writes -------------------------------------

    def _check_unattached(self) -> None:
        if self.reader is not None or self._user is not None or self._released:
            raise RuntimeError("this connection already has a reader/writer or a protocol")

    def start_stream(self, options: Settings) -> tuple[Reader, Writer]:
        """Attach a Reader and a Writer, and start reading."""
        self._check_unattached()
        transport = self.transport
        assert transport is not None
        reader = Reader(transport, options.reader_buffer_size, options.max_line_length)
        writer = Writer.for_connection(self, options)
        self.reader = reader
        self.writer = writer
        writer.start()
        held = self._held
        if held is not None:
            self._held = None
            for data in held:
                reader.data_received(data)
        if self._read_eof or self.closed:
            reader.eof_received()
        if self.closed:
            writer.connection_lost(Failure(RuntimeError("connection already lost")))
        elif self._holding:
            self._holding = False
            reader._paused = True  # paused until attached: let the reader resume it
            reader._update_flow()
        return reader, writer

    def attach_protocol(self, protocol: IProtocol) -> None:
        """Hand the connection to C{protocol}, with the bytes received so far."""
        self._check_unattached()
        self._user = protocol
        self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]
        protocol.makeConnection(self.transport)
        held, self._held = self._held or [], None
        for data in held:
            protocol.dataReceived(data)
        if not self.closed:
            if self._read_eof:
                self.readConnectionLost()
            if self._holding:
                self._holding = False
                self.transport.resumeProducing()


class Socket:
    """
    A connected stream socket: its addresses and options, its reader and
    writer if it has them, and its lifetime.
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def transport(self) -> Any:
        """The Twisted transport of the connection."""
        return self._connection.transport

    @property
    def peer_address(self) -> IAddress:
        """The peer's address (an C{IPv4Address}, C{IPv6Address} or C{UNIXAddress})."""
        return self.transport.getPeer()  # type: ignore[no-any-return]

    @property
    def local_address(self) -> IAddress:
        """This end's address."""
        return self.transport.getHost()  # type: ignore[no-any-return]

    def fileno(self) -> int:
        """The socket's file descriptor (-1 once closed)."""
        return self.transport.fileno()  # type: ignore[no-any-return]

    def _handle(self) -> Any:
        """The socket object (under TLS or any other protocol wrapper)."""
        return split_transport(self.transport)[0].getHandle()

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        """Set a socket option, as L{socket.socket.setsockopt}."""
        self._handle().setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int, buflen: int | None = None) -> int | bytes:
        """Read a socket option, as L{socket.socket.getsockopt}."""
        handle = self._handle()
        if buflen is None:
            return handle.getsockopt(level, option)  # type: ignore[no-any-return]
        return handle.getsockopt(level, option, buflen)  # type: ignore[no-any-return]

    def reader_writer(
        self,
        *,
        reader_buffer_size: int = DEFAULTS.reader_buffer_size,
        buffer_age_limit: float | None = DEFAULTS.buffer_age_limit,
        max_line_length: int = DEFAULTS.max_line_length,
    ) -> tuple[Reader, Writer]:
        """
        Make the Reader and Writer of this socket (once), and start reading.

        @raise RuntimeError: if it already has them or a protocol.
        """
        connection = self._connection
        if connection.reader is not None and connection.writer is not None:
            raise RuntimeError("this socket already has a reader and a writer")
        return connection.start_stream(
            settings_with(
                reader_buffer_size=reader_buffer_size,
                buffer_age_limit=buffer_age_limit,
                max_line_length=max_line_length,
            )
        )

    def attach_protocol(self, protocol: IProtocol) -> None:
        """
        Speak a Twisted protocol (AMP, HTTP, ...) on this socket: C{protocol}
        gets C{makeConnection} with the transport, then every byte received.

        @raise RuntimeError: if the socket already has a reader/writer or a
            protocol.
        """
        self._connection.attach_protocol(protocol)

    @property
    def alpn_protocol(self) -> str | None:
        """
        The application protocol chosen over TLS's ALPN (such as C{"h2"} or
        C{"http/1.1"}), or C{None}: not over TLS, no ALPN, or none chosen.
        """
        tls = self._connection._tls
        name = None if tls is None else tls.negotiatedProtocol
        return None if name is None else name.decode("ascii", "backslashreplace")

    def close(self) -> Deferred[None]:
        """
        Close the connection, after flushing what the writer holds; fires
        when it is closed.  Idempotent.
        """
        connection = self._connection
        if connection.writer is not None:
            return connection.writer.close()
        if not connection.closed:
            self.transport.loseConnection()
            sink, tls = split_transport(self.transport)
            if tls is not None and connection._user is None:
                # Nothing attached, so nothing written: close_notify has gone
                # out.  Close the socket after it, with no wait for the
                # peer's, which nothing reads.  (A protocol's producer or
                # unfinished handshake would hold close_notify back: then
                # Twisted's TLS layer closes in its own time.)
                sink.loseConnection()
        return self.close_finished()

    def abort(self) -> None:
        """Close the connection at once, dropping unwritten bytes."""
        self._connection.abort()

    def close_finished(self) -> Deferred[None]:
        """A Deferred that fires (with None) when the connection is closed."""
        return self._connection.when_lost()

    @property
    def is_closed(self) -> bool:
        """Whether the connection is closed."""
        return self._connection.closed

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open"
        return f"<Socket {show_address(self.peer_address)} {state}>"
