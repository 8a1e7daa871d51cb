"""
Every part of Twisted that twisted_tcp uses without Twisted promising it: in
this one module, each for a job that Twisted's public API cannot do, each
checked by C{tests/test_twisted_private.py}, which fails naming the part
when a Twisted release changes it.  Checked on the Twisted releases in
L{CHECKED_ON}.

    - L{unsent_bytes}: how many written bytes a socket transport still holds
      (C{FileDescriptor.dataBuffer}, C{offset}, C{_tempDataLen}).  The
      writer asks it instead of registering as the transport's producer on
      every connection (which costs each transport 0.8 KiB), and the
      buffer-age check tells a slow reader from a stuck one by it.
    - L{send_now}: the bytes of a reply to a received chunk, or of a large
      write, sent on the socket at once when the transport holds none
      unsent and has no producer of somebody else's (its C{socket},
      C{dataBuffer}, C{_tempDataLen}, C{_writeDisconnected}, C{producer},
      and a Unix socket's C{_sendmsgQueue} of descriptors to pass; and, to
      end it when a send met an error that ended the connection, C{_aborting}),
      as asyncio's transports do: Twisted's own write always waits for the
      reactor to see the socket writable, which costs a request and its
      reply two C{epoll_ctl} calls and one more turn of the reactor.
    - L{tls_plaintext_held}, L{tls_session_ended}: what the TLS layer
      (C{TLSMemoryBIOProtocol}) holds of ours, not yet encrypted
      (C{_appSendBuffer} before the handshake, C{_aggregator._buffer} the
      small writes it gathers for its next turn), and whether its session
      has ended (C{_lostTLSConnection}): a flush is reported only once the
      plaintext has left too.
    - L{half_closeable_tls}: the TLS layer with TLS 1.3's half-close, which
      Twisted's closes at the peer's close_notify.  It overrides
      C{_flushReceiveBIO} (where close_notify is read) and uses
      C{_lostTLSConnection}, C{_shutdownTLS}, C{_tlsShutdownFinished},
      C{_flushSendBIO}, C{_aborted} and C{_aggregator.flush()}.  Its
      C{write_now} encrypts a write at once and sends the records in one
      send (L{send_now}), gathering them from C{_flushSendBIO}, which
      C{TLSMemoryBIOProtocol._write} calls for each, as C{_tlsConnection}'s
      C{bio_read}.
    - L{adopt_shared_unix_socket}: a Unix listening socket adopted as it is,
      shared by the workers of C{twistd tcpserver --workers}
      (C{unix.Port._fromListeningDescriptor}, C{_preexistingSocket},
      C{_shouldShutdown}): Twisted's public C{adoptStreamPort} chmods the
      socket's file, listens with its own backlog, and shuts the socket down
      for every process that shares it when one stops.
    - L{accept_error}: which resource a failed C{accept()} lacked, read from
      the log event that is the only report Twisted's ports make of it (the
      C{acceptError} key, and the text "EMFILE encountered").
    - L{fit_accepts}, L{fit_accepts_after_reads}: the number of connections
      a port accepts each time its socket is readable
      (C{tcp.Port.numberAccepts}, public but not documented, which its
      C{doRead} sets anew as each read ends), kept to the free connection
      slots.
    - L{made_without_init}: a Deferred of a class of ours made with no call to
      C{Deferred.__init__}, whose only work is to give each Deferred its
      list of callbacks (C{_callbacks}, C{callbacks} before Twisted 25.5)
      and its canceller: the list is made on first use instead, since a
      read, whose result is there at once or comes to the lean driver
      directly, is awaited, and never given a callback, far more often
      than not; the canceller is the class's own.
"""

from __future__ import annotations

import errno
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort, IProtocolFactory

CHECKED_ON = ("24.7.0", "26.10.0")
"""The lowest and the newest Twisted release that the tests were run on."""

RESOURCE_ERRORS = frozenset({"EMFILE", "ENFILE", "ENOBUFS", "ENOMEM"})
"""The accept() errors that mean a resource ran out (not a bad client)."""


# -- socket transports -------------------------------------------------------------


SOCKET_TRANSPORTS = frozenset({tcp.Server, tcp.Client, unix.Server, unix.Client})
"""Twisted's own socket transports: each says what it holds (L{unsent_bytes})."""


def unsent_bytes(transport: Any) -> int | None:
    """
    The bytes written to C{transport}, one of Twisted's socket transports,
    that it has not handed to the kernel yet; None for a transport that
    does not say (another reactor's, a test's).
    """
    try:
        held: int = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return None
    return held


def send_now(transport: Any, data: bytes, producer: object) -> int:
    """
    Send C{data} on the socket of C{transport}, one of Twisted's socket
    transports (L{SOCKET_TRANSPORTS}), as far as the kernel takes it now,
    if the transport is open for writing, not under C{startTLS}, holds no
    byte unsent (which C{data} would overtake), no file descriptor to
    pass with the next bytes (a Unix socket's C{sendFileDescriptor}) and
    no producer but C{producer} (another one is told of drains of the
    transport's buffer, which bytes sent here never fill: a pull producer
    that writes as it is resumed would not be resumed again); else send
    nothing.  Return the number of bytes sent: the rest is the caller's to
    write to the transport.

    A send that fails sends nothing.  On a TCP socket, an error that ends
    the connection (the peer's reset, a timeout, an unreachable host) may
    be one the kernel held for the socket and reports once, followed by a
    clean end of the stream: the transport is ended here, with that error
    (L{_end_for_error}).  Any other error (a full socket buffer, or a Unix
    socket's) is left for the transport's own write to meet.
    """
    if (
        transport.connected
        and not transport.disconnecting
        and not transport._aborting  # (abortConnection drops what was written)
        and not transport._writeDisconnected
        and not transport.TLS
        and not transport._tempDataLen
        and not transport.dataBuffer  # (b"" once all of it was sent)
        and not getattr(transport, "_sendmsgQueue", None)  # (Unix sockets only)
        and (transport.producer is None or transport.producer is producer)
    ):
        try:
            sent: int = transport.socket.send(data)
        except OSError as e:
            if e.errno not in _SEND_LATER and type(transport) in _TCP_TRANSPORTS:
                _end_for_error(transport, e)
            return 0
        return sent
    return 0


_SEND_LATER = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS, errno.EINTR})
"""The errors of a send that Twisted's transports try again later."""

_TCP_TRANSPORTS = (tcp.Server, tcp.Client)  # (not their subclasses: Unix sockets')


def _end_for_error(transport: Any, error: OSError) -> None:
    """
    A send took the kernel's only report of C{error}, which ends the
    connection of C{transport}: in the reactor's next turn, hand the
    protocol what the peer sent before it (still in the kernel, read now:
    as much as one read of the transport takes, the rest being dropped
    with the connection), unless the protocol closes or aborts the
    connection first, then report the connection lost (as a read would
    have, with C{ConnectionLost}); reading and writing nothing meanwhile,
    whoever asks it to (the reader resuming it, the writer closing it), and
    once only (C{_aborting}, which its C{abortConnection} checks too).
    """
    if transport.disconnected or transport._aborting:
        return
    transport._aborting = True
    transport.stopReading()
    transport.stopWriting()
    # (Nor polled again: a write would have the reactor report the socket
    # closed before the bytes unread are handed over.)
    transport.doRead = transport.doWrite = _do_nothing
    transport.startReading = transport.startWriting = _do_nothing
    try:  # (what one of Twisted's reads takes: the reader's buffer limit holds as ever)
        data = transport.socket.recv(transport.bufferSize)
    except OSError:
        data = b""
    unread = [data] if data else []
    transport.abortConnection = unread.clear  # (loseConnection() sets disconnecting)
    reason = Failure(ConnectionLost(error.strerror or str(error)))
    transport.reactor.callLater(0, _lost_after, transport, unread, reason)


def _lost_after(transport: Any, unread: list[bytes], reason: Failure) -> None:
    """L{_end_for_error}'s next turn: what came before the error, then the loss."""
    try:
        if unread and not transport.disconnecting:
            transport.protocol.dataReceived(unread.pop())
    finally:  # (a protocol that raises is logged by the reactor, and still told)
        transport.connectionLost(reason)


def _do_nothing() -> None:
    """What an ended transport does when asked to read or write."""


def fit_accepts(port: Any, free: int) -> None:
    """
    Keep the number of connections that C{port} accepts each time its
    socket is readable (which Twisted's ports adapt to the load) at most
    C{free}, and at least 1.
    """
    accepts = getattr(port, "numberAccepts", None)
    if accepts is not None and not 1 <= accepts <= free:  # (else it fits: the usual case)
        port.numberAccepts = max(1, min(accepts, free))


def fit_accepts_after_reads(port: Any, free: Callable[[], int]) -> None:
    """
    L{fit_accepts} C{port} to C{free()} now, and again after each read of
    its socket: a port sets the number anew as a read ends, after the
    connections it accepted started (C{tcp.Port.doRead}, which C{unix.Port}
    inherits: 20 more after a read that accepted that many, else as many as
    it accepted), which the free slots may no longer allow.  The port's
    C{doRead}, which the reactor calls, is wrapped for it.
    """
    if getattr(port, "numberAccepts", None) is None:
        return
    fit_accepts(port, free())
    read = port.doRead

    def doRead() -> object:
        try:
            return read()
        finally:
            fit_accepts(port, free())

    port.doRead = doRead


def accept_error(event: dict[str, Any]) -> str | None:
    """
    The name of the resource error (one of L{RESOURCE_ERRORS}) that the log
    event C{event} reports a failed accept() of, else None.
    """
    namespace = str(event.get("log_namespace", ""))
    if not namespace.startswith(("twisted.internet.tcp", "twisted.internet.unix")):
        return None
    error = event.get("acceptError")
    if error is None and str(event.get("log_format", "")).startswith("EMFILE encountered"):
        error = "EMFILE"
    return error if error in RESOURCE_ERRORS else None


# -- Deferreds ----------------------------------------------------------------------


def _callbacks_name() -> str | None:
    """
    The attribute that holds a Deferred's list of callbacks, if that list
    and the canceller are all that C{Deferred.__init__} sets (with
    debugging off); else None.
    """
    fresh = vars(Deferred())
    names = set(fresh) - {"_canceller"}
    if len(names) == 1 and fresh.get("_canceller", 0) is None:
        name = names.pop()
        if name in ("_callbacks", "callbacks") and fresh[name] == []:
            return name
    return None


class _OwnList:
    """A class attribute that gives each instance a new list of its own, on first use."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, instance: object, owner: type) -> Any:
        if instance is None:
            return self
        made: list[Any] = []
        instance.__dict__[self.name] = made  # found before this attribute from now on
        return made


def made_without_init(cls: type[Deferred[Any]]) -> Any:
    """
    Let C{cls}, a Deferred subclass of ours, be made without
    C{Deferred.__init__}: return a function of no arguments that makes one,
    with no callbacks and the canceller C{cls._canceller} if the class
    gives one (a staticmethod), else none; yet to be given the rest of its
    state (a fired one, C{called} and C{result}).  That is
    C{object.__new__} for C{cls}, where the Deferred of the installed
    Twisted allows it (and Deferred debugging was off at import); else a
    function that calls C{Deferred.__init__} too.  Not for use while
    Deferred debugging is on (C{Deferred.debug}): then C{Deferred.__init__}
    records where each Deferred was made.
    """
    canceller = getattr(cls, "_canceller", None)
    name = _callbacks_name()
    if name is None:

        def made() -> Any:
            d = object.__new__(cls)
            Deferred.__init__(d, canceller)
            return d

        return made
    setattr(cls, name, _OwnList(name))
    if canceller is None:
        cls._canceller = None  # type: ignore[attr-defined]
    return functools.partial(object.__new__, cls)


# -- the TLS layer -----------------------------------------------------------------


def tls_plaintext_held(tls: Any) -> int:
    """
    The plaintext bytes that the TLS layer C{tls} holds and has not
    encrypted and passed to its transport yet: waiting for the handshake,
    or gathered for its next write.
    """
    held = sum(map(len, getattr(tls, "_appSendBuffer", None) or ()))
    aggregator = getattr(tls, "_aggregator", None)
    if aggregator is not None:
        held += sum(map(len, getattr(aggregator, "_buffer", ())))
    return held


def tls_session_ended(tls: Any) -> bool:
    """Whether the TLS session of C{tls} has ended (a close_notify, an error)."""
    return bool(getattr(tls, "_lostTLSConnection", False))


@functools.cache
def half_closeable_tls() -> type:
    """
    Twisted's TLS layer (C{BufferingTLSTransport}), but for one thing: under
    TLS 1.3, which allows it, the peer's close_notify ends only the stream
    it sends, as a TCP half-close does: the protocol above gets
    C{readConnectionLost} and can still write its reply, and the connection
    closes when it closes it.  Twisted's layer answers close_notify with
    its own and closes at once, as TLS 1.2 requires (and as this one still
    does under TLS 1.2, or when the protocol above cannot half-close).
    """
    from OpenSSL.SSL import Error, WantReadError, ZeroReturnError
    from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol

    @implementer(IHalfCloseableProtocol)
    class HalfCloseableTLS(BufferingTLSTransport):
        _read_closed = False  # the peer's close_notify was read

        def unregisterProducer(self) -> None:
            # After loseConnection, Twisted's layer sends close_notify here,
            # before the small writes it still gathers for its next turn,
            # which are then lost: send them first.
            self._aggregator.flush()
            super().unregisterProducer()

        def dataReceived(self, data: bytes) -> None:
            if self._read_closed:
                return  # after close_notify: ignored (RFC 8446, 6.1), not buffered
            super().dataReceived(data)

        _records: list[bytes] | None = None  # what write_now gathers of OpenSSL's output

        def write_now(self, data: bytes, producer: object = None) -> None:
            """
            Encrypt C{data} now, after what the layer still gathers for its
            next turn, and hand the records made to the kernel at once, in
            one send, where the transport below is a socket's that holds
            nothing unsent and has no producer but C{producer} (L{send_now});
            the rest, or all of them otherwise, to the transport below.
            Twisted's own write waits for its next turn, then for the
            reactor to see the socket writable: two turns and two
            epoll_ctl calls per reply.  (The writer gathers small writes
            itself.)
            """
            self._aggregator.flush()
            records: list[bytes] = []
            outer, self._records = self._records, records
            try:
                TLSMemoryBIOProtocol.write(self, data)
            finally:
                # (Records made are sent whatever happened: OpenSSL counts
                # them as sent, and a later record after a missing one would
                # break the stream.)
                self._records = outer
                if records:
                    self._send_records(
                        records[0] if len(records) == 1 else b"".join(records), producer
                    )

        def _send_records(self, data: bytes, producer: object) -> None:
            """Send C{data}, records, as L{write_now} says."""
            gathering = self._records
            if gathering is not None:  # (a write_now within a write_now: in order)
                gathering.append(data)
                return
            below: Any = self.transport
            if type(below) in SOCKET_TRANSPORTS:
                sent = send_now(below, data, producer)
                if sent == len(data):
                    return
                if sent:
                    data = data[sent:]
            below.write(data)

        def _flushSendBIO(self) -> None:
            # What OpenSSL made, to the transport below as Twisted's layer
            # hands it, or to write_now's one send.
            records = self._records
            if records is None:
                super()._flushSendBIO()
                return
            try:
                records.append(self._tlsConnection.bio_read(2**15))
            except WantReadError:
                pass  # nothing made

        def _flushReceiveBIO(self) -> None:
            # Hand the protocol above every record decrypted so far; at the
            # peer's close_notify, half-close where TLS 1.3 allows it.
            connection = self.getHandle()
            while not (self._lostTLSConnection or self._read_closed):
                try:
                    data = connection.recv(2**15)
                except WantReadError:
                    break  # all that arrived is read
                except ZeroReturnError:  # the peer's close_notify
                    if self._may_half_close():
                        self._read_closed = True
                        IHalfCloseableProtocol(self.wrappedProtocol).readConnectionLost()
                        break
                    self._shutdownTLS()
                    self._tlsShutdownFinished(None)
                except Error:
                    self._tlsShutdownFinished(Failure())
                else:
                    if not self._aborted:
                        ProtocolWrapper.dataReceived(self, data)
            self._flushSendBIO()  # what reading made OpenSSL send (a key update, an alert)

        def _may_half_close(self) -> bool:
            return (
                not self.disconnecting
                and IHalfCloseableProtocol.providedBy(self.wrappedProtocol)
                and self.getHandle().get_protocol_version_name() == "TLSv1.3"
            )

        # IHalfCloseableProtocol, for the TCP connection below.
        def readConnectionLost(self) -> None:
            below: Any = self.transport
            if self._read_closed:
                return  # the peer closed after its close_notify: ours comes when we close
            if self.disconnecting or self._lostTLSConnection:
                below.loseConnection()  # a TLS close under way: let it finish
            else:
                # A FIN with no close_notify: the stream was cut short.  End
                # the connection at once, as Twisted does (reported as lost).
                below.abortConnection()

        def writeConnectionLost(self) -> None:
            pass

    return HalfCloseableTLS


# -- a Unix listening socket shared by processes -------------------------------------


class _SharedUNIXPort(unix.Port):
    """
    An adopted Unix port that leaves the socket as its owner made it.

    Twisted's adopted Unix port (what C{adoptStreamPort(fd, AF_UNIX, ...)}
    makes) would, as it starts, chmod the socket's file to 0666 (undoing an
    endpoint's C{mode=}, and failing in a worker that runs as another user
    than the supervisor, under C{twistd --uid}) and listen with its own
    backlog; and as it stops, C{shutdown(2)} the socket, after which every
    process that shares it refuses connections, and remove the file.  This
    one keeps the owner's backlog, does not chmod, and only closes its own
    descriptor when it stops.
    """

    _shouldShutdown = False

    def startListening(self) -> None:
        """Start accepting on the adopted socket, left as it is."""
        port: Any = self
        port.factory.doStart()
        skt, port._preexistingSocket = port._preexistingSocket, None
        skt.listen(self.backlog)
        self.connected = True
        self.socket = skt
        port.fileno = skt.fileno
        self.numberAccepts = 100
        self.startReading()

    def connectionLost(self, reason: Failure) -> None:
        """Close this process's descriptor: C{tcp.Port}'s way, not C{unix.Port}'s (rm the file)."""
        tcp.Port.connectionLost(self, reason)


def adopt_shared_unix_socket(
    reactor: Any, fd: int, backlog: int, factory: IProtocolFactory
) -> IListeningPort:
    """
    A port that serves C{factory} on the listening Unix socket C{fd} (which
    it duplicates), made and owned by another process, listening with
    C{backlog}, the backlog that process gave it.
    """
    port = _SharedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    port.backlog = backlog
    port.startListening()
    return port  # type: ignore[no-any-return]
