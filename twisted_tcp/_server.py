"""
The Server: a handler per connection, behind a connection limit.

A connection is admitted as soon as it is accepted if a slot is free; the
slot it takes is freed when the connection closes.  At the limit the listening
port is paused, so new clients wait in the kernel's backlog.  (Twisted accepts
in batches; a connection accepted in the same batch as the one that reached
the limit waits, unread and without a handler, until a slot frees.)
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from twisted.internet import tcp
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from ._connect import default_reactor
from ._connection import Connection
from ._driver import Driver, run_on
from ._handler import check_handler
from ._logbudget import LogBudget
from ._oneshot import OneShot
from ._reader import Reader
from ._settings import DEFAULTS, Settings, settings_with
from ._stats import DurationCounter, ServerStats
from ._sweeper import Deadline
from ._tls import describe_tls_error
from ._twisted_private import accept_error, fit_accepts_after_reads
from ._where import WhereToListen, show_address
from ._writer import Writer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IDelayedCall, IListeningPort, IReactorTime

Handler = Callable[["IAddress", Reader, Writer], Any]
HandlerErrorPolicy = (
    Literal["log", "ignore", "raise"] | Callable[["IAddress", BaseException], object]
)

_log = Logger()


MAX_HANDSHAKES = 1000
"""TLS handshakes under way at once on a server; beyond, new connections are closed."""


class _ServerConnection(Connection, Driver):
    # The connection is its handler's Driver too: no Task per connection.
    server: Server
    _idle_timer: IDelayedCall | None = None
    _handshake_timer: Deadline | None = None  # a TLS handshake is under way
    _peer_key: str | None = None  # counted against max_connections_per_peer as this
    _started = 0.0  # when the handler started
    _handler_over = False  # the handler has ended
    accepted_from: IAddress | None = None  # the address buildProtocol was given
    options = None  # (the server attaches the reader and writer)

    def __init__(self, server: Server) -> None:
        # (Nothing else: each attribute an instance sets costs every idle
        # connection 8 bytes or more; its clock is its server's reactor.)
        self.server = server

    @property
    def clock(self) -> IReactorTime:  # type: ignore[override]
        """The server's reactor."""
        return self.server._reactor  # type: ignore[no-any-return]

    def connectionMade(self) -> None:
        transport: Any = self.transport
        plain = type(transport) is tcp.Server  # the usual case: TCP, no layer between
        tls = None if plain else self._find_tls()  # (found with no call where plain)
        server = self.server
        if server._per_peer_limit is not None and not server._peer_arrived(self):
            return
        if plain:
            transport.setTcpNoDelay(True)  # (what _no_delay does)
        else:
            self._no_delay()
        if tls is not None:
            server._handshaking(self)
        else:
            server._admit(self)

    def handshakeCompleted(self) -> None:
        Connection.handshakeCompleted(self)
        if self._handshake_done:  # else the connection is closing: connectionLost follows
            self.server._handshake_done(self)

    def byte_counts(self) -> tuple[int, int]:
        """The bytes its handler received and wrote (none before it started)."""
        reader, writer = self.reader, self.writer
        if reader is None or writer is None:
            return 0, 0
        return reader._received, writer._written  # (what their properties say, with no call)

    def driven_ended(self, result: object) -> None:
        """The handler returned C{result} or failed (a L{Failure})."""
        self._handler_over = True
        self.server._handler_done(result, self)
        if self.closed:
            self.let_go()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        # The slot is freed first, so that whoever waits on when_lost() (as
        # close(close_existing_connections=True) does) sees it freed.
        self.server._ended(self, reason)
        Connection.connectionLost(self, reason)
        if self._handler_over:
            self.let_go()

    def watch_idle(self, timeout: float) -> None:
        """
        Close the connection once nothing was received, nor written, for
        C{timeout} seconds.  While written bytes wait to be flushed the
        connection is not idle (the buffer-age limit watches that).
        """
        clock = self.clock
        receive = self.dataReceived
        writer = self.writer
        assert writer is not None
        writer.watch_drains(always=True)  # the time of every drain counts
        self._last_received = clock.seconds()

        def data_received(data: bytes) -> None:
            self._last_received = clock.seconds()
            receive(data)

        def check() -> None:
            now = clock.seconds()
            sent = writer.sent_at()
            # While bytes wait to be sent, the buffer-age limit watches instead.
            last_active = now if sent is None else max(self._last_received, sent)
            idle = now - last_active
            if idle < timeout:
                self._idle_timer = clock.callLater(timeout - idle, check)
                return
            self._idle_timer = None
            _log.info(
                "closing the connection from {peer}: idle for {timeout:g} s (idle_timeout)",
                peer=show_address(self.transport.getPeer()),
                timeout=timeout,
            )
            self.transport.abortConnection()

        self.dataReceived = data_received  # type: ignore[method-assign]
        self._idle_timer = clock.callLater(timeout, check)


class _ServerFactory(Factory):
    noisy = False  # no "Starting factory" log line at every listen

    def __init__(self, server: Server) -> None:
        self.server = server

    def logPrefix(self) -> str:
        """What Twisted's port logs as it starts: C{twisted_tcp server starting on 9000}."""
        return "twisted_tcp server"

    def buildProtocol(self, addr: IAddress | None) -> _ServerConnection:
        server = self.server
        server._accepted += 1
        connection = _ServerConnection(server)
        connection.accepted_from = addr
        return connection


class Server:
    """
    A listening server that runs C{handler(address, reader, writer)} for
    each connection.  Make one with L{Server.create}.
    """

    def __init__(
        self,
        where: WhereToListen,
        handler: Handler,
        *,
        settings: Settings,
        on_handler_error: HandlerErrorPolicy,
        reactor: Any,
    ) -> None:
        self._where = where
        self._handler = handler
        self._settings = settings
        self._max_connections = settings.max_connections
        self._idle_timeout = settings.idle_timeout
        self._handshake_timeout = settings.handshake_timeout
        self._handshakes: set[_ServerConnection] = set()  # TLS handshakes under way
        self._handshakes_full = False  # at MAX_HANDSHAKES, and said so
        self._handshake_log = LogBudget(reactor, "failed TLS handshakes")
        self._on_handler_error = on_handler_error
        self._reactor = reactor
        self._port: IListeningPort | None = None
        self._connections: set[_ServerConnection] = set()
        self._parked: deque[_ServerConnection] = deque()
        self._handlers_running = 0
        self._accepting = True
        self._retry_timer: IDelayedCall | None = None  # accept() failed: waiting to retry
        self._accept_error_logged = False
        self._closed = False
        self._close_finished: OneShot[None] = OneShot()
        self._drained: OneShot[None] = OneShot()
        # max_connections_per_peer: the connections of each peer address,
        # the peers refused since they last had fewer, and the budget of
        # the lines that say so.
        self._per_peer_limit = settings.max_connections_per_peer
        self._per_peer: dict[str, int] = {}
        self._peers_refused: set[str] = set()
        self._peer_log = LogBudget(reactor, "peers at max_connections_per_peer")
        # What stats() reports, besides what it counts when asked.
        self._accepted = 0
        self._refused_per_peer = 0
        self._handler_errors = 0
        self._ended_received = 0  # bytes of the connections that ended
        self._ended_sent = 0
        self._durations = DurationCounter()

    @classmethod
    def create(
        cls,
        where_to_listen: WhereToListen,
        handler: Handler,
        *,
        max_connections: int = DEFAULTS.max_connections,
        backlog: int = DEFAULTS.backlog,
        buffer_age_limit: float | None = DEFAULTS.buffer_age_limit,
        reader_buffer_size: int = DEFAULTS.reader_buffer_size,
        max_line_length: int = DEFAULTS.max_line_length,
        close_timeout: float | None = DEFAULTS.close_timeout,
        idle_timeout: float | None = DEFAULTS.idle_timeout,
        handshake_timeout: float = DEFAULTS.handshake_timeout,
        max_connections_per_peer: int | None = DEFAULTS.max_connections_per_peer,
        on_handler_error: HandlerErrorPolicy = "log",
        reactor: Any = None,
        settings: Settings | None = None,
    ) -> Deferred[Server]:
        """
        Start listening on C{where_to_listen} and return a Deferred that fires
        with the L{Server} once it listens, or fails (with Twisted's
        C{CannotListenError}, naming the address) if it cannot: a port in
        use, a path that cannot be bound or that a live server holds.

        C{handler(address, reader, writer)} may return a value, a Deferred or
        a coroutine.  The connection ends at the first of: the handler's
        result, its exception, the writer's error (the peer stopped reading
        for C{buffer_age_limit}), or the peer leaving.  The writer is then
        flushed (for at most C{close_timeout} seconds) and the connection
        closed.  A handler still running after its peer left reads the end of
        the stream, and its writes are dropped; a C{flushed()} it awaits fails
        with the connection's loss, and the handler failing with that error is
        not reported through C{on_handler_error}.

        @param max_connections: at most this many connections are served at
            once; beyond, accepting pauses until one closes.  A connection
            holds its slot until it is closed, so a handler that outlives its
            peer no longer counts.
        @param backlog: the listen queue length given to the kernel.
        @param idle_timeout: seconds after which a connection that received
            nothing and wrote nothing is closed (aborted), or C{None}.  It
            frees the slot of a peer that vanished without a FIN or a RST,
            and of a peer that holds a connection open without using it.
        @param handshake_timeout: on a TLS server, seconds a client has to
            finish its handshake; its handler starts once it is done.  A
            handshake under way takes no connection slot; at most
            L{MAX_HANDSHAKES} are under way at once (beyond, new connections
            are closed at once).  A failed or late handshake closes the
            connection and is logged at info level, with the peer and the
            reason (at most 10 such lines each 10 s).
        @param max_connections_per_peer: at most this many connections
            from one client address (an IP address; under C{haproxy:}, the
            one the PROXY header gives), whether served, waiting for a slot
            or in their TLS handshake; beyond, a new connection from that
            address is closed at once (a reset), counted in L{stats}, and
            logged once until that address has fewer.  C{None}: no limit.
            Peers of a Unix socket have no address, and no such limit.
        @param on_handler_error: what to do when a handler fails: C{"log"}
            (log it with the peer's address and keep serving), C{"ignore"},
            C{"raise"} (stop listening; L{close_finished} fails with the
            error), or a callable C{(address, exception)}.
        @param settings: all of the limits above at once, as a L{Settings}
            (the keyword arguments are then not given).
        @raise TypeError: if C{handler} cannot be called as
            C{handler(address, reader, writer)} or is a generator function,
            or a limit is not a number (see L{Settings}).
        @raise ValueError: if a limit is out of range, NaN or infinite.
        """
        given = settings_with(
            max_connections=max_connections,
            backlog=backlog,
            buffer_age_limit=buffer_age_limit,
            reader_buffer_size=reader_buffer_size,
            max_line_length=max_line_length,
            close_timeout=close_timeout,
            idle_timeout=idle_timeout,
            handshake_timeout=handshake_timeout,
            max_connections_per_peer=max_connections_per_peer,
        )
        if settings is None:
            settings = given
        elif not isinstance(settings, Settings):
            raise TypeError(f"settings must be a Settings, not {type(settings).__name__}")
        elif given is not DEFAULTS:
            raise TypeError("give the limits either as settings= or as keyword arguments")
        check_handler(handler, "handler", "handler(address, reader, writer)")
        if not (callable(on_handler_error) or on_handler_error in ("log", "ignore", "raise")):
            raise ValueError(
                "on_handler_error must be 'log', 'ignore', 'raise' or a callable, "
                f"not {on_handler_error!r}"
            )
        if not isinstance(where_to_listen, WhereToListen):
            raise TypeError(
                "where_to_listen must be made by on_port(), on_file() or "
                f"on_port_chosen_by_os, not {where_to_listen!r}"
            )
        reactor = default_reactor(reactor)
        server = cls(
            where_to_listen,
            handler,
            settings=settings,
            on_handler_error=on_handler_error,
            reactor=reactor,
        )
        listening = where_to_listen.listen(reactor, settings.backlog, _ServerFactory(server))

        def listening_now(port: IListeningPort) -> Server:
            server._port = port
            fit_accepts_after_reads(port, server._free_slots)
            _accept_errors.watch(server)
            return server

        return listening.addCallback(listening_now)

    # -- what the user reads -------------------------------------------------

    @property
    def listening_on(self) -> int | str:
        """The port listened on (the real one, also for port 0), or the socket path."""
        address = self.listening_on_address
        port = getattr(address, "port", None)
        if port is not None:
            return int(port)
        name = getattr(address, "name", b"")
        return os.fsdecode(name) if isinstance(name, bytes) else str(name)

    @property
    def listening_on_address(self) -> IAddress:
        """The address listened on, as Twisted reports it."""
        assert self._port is not None
        return self._port.getHost()

    @property
    def num_connections(self) -> int:
        """
        The number of connections currently served (each holds a slot); TLS
        connections whose handshake is under way are not counted.
        """
        return len(self._connections)

    @property
    def max_connections(self) -> int:
        """The most connections served at once."""
        return self._max_connections

    @property
    def is_closed(self) -> bool:
        """Whether L{close} was called (or a handler error closed the server)."""
        return self._closed

    @property
    def close_finished(self) -> Deferred[None]:
        """
        A Deferred that fires once the server has stopped listening, after
        L{close}; it fails with the handler's error under
        C{on_handler_error="raise"}.
        """
        return self._close_finished.wait()

    def drained(self) -> Deferred[None]:
        """
        A Deferred that fires once the server is closed, every connection
        has ended and every handler has returned.
        """
        return self._drained.wait()

    def stats(self) -> ServerStats:
        """
        What the server has done since it started, and what it does now:
        connections served, waiting and in their TLS handshake now;
        connections accepted, and refused by C{max_connections_per_peer};
        bytes received and sent by handlers; handler errors, and how long
        handlers ran.  It takes a moment for each connection served.
        """
        received, sent = self._ended_received, self._ended_sent
        for connection in self._connections:
            connection_received, connection_sent = connection.byte_counts()
            received += connection_received
            sent += connection_sent
        return ServerStats(
            connections=len(self._connections),
            parked=len(self._parked),
            handshakes=len(self._handshakes),
            accepted=self._accepted,
            refused_per_peer=self._refused_per_peer,
            bytes_received=received,
            bytes_sent=sent,
            handler_errors=self._handler_errors,
            handler_seconds=self._durations.histogram(),
        )

    def close(self, close_existing_connections: bool = False) -> Deferred[None]:
        """
        Stop listening; no handler starts after this.  With
        C{close_existing_connections}, also close every connection at once
        (handlers then read the end of the stream).  Idempotent.

        @return: a Deferred that fires when the server has stopped listening
            and, with C{close_existing_connections}, every connection is closed.
        """
        if not isinstance(close_existing_connections, bool):
            raise TypeError(
                "close_existing_connections must be a bool, not "
                f"{type(close_existing_connections).__name__}: {close_existing_connections!r:.80}"
            )
        self._stop(None)
        waits = [self._close_finished.wait().addErrback(lambda _: None)]
        if close_existing_connections:
            for connection in list(self._connections):
                waits.append(connection.when_lost())
                connection.transport.abortConnection()
        return DeferredList(waits).addCallback(lambda _: None)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "listening"
        return f"<Server {self._where!r} {state}, {self.num_connections} connections>"

    # -- connections -----------------------------------------------------------

    def _peer_arrived(self, connection: _ServerConnection) -> bool:
        """
        Count C{connection} against its peer's C{max_connections_per_peer};
        if the peer has that many already, close it at once and return False.
        """
        key = _peer_key(connection.transport.getPeer())
        if key is None:
            return True
        limit = self._per_peer_limit
        assert limit is not None
        count = self._per_peer.get(key, 0)
        if count < limit:
            self._per_peer[key] = count + 1
            connection._peer_key = key
            return True
        self._refused_per_peer += 1
        if key not in self._peers_refused:
            self._peers_refused.add(key)
            if self._peer_log.allow():
                _log.warn(
                    "server on {where}: {peer} is at max_connections_per_peer ({n}); closing "
                    "its new connections until it has fewer",
                    where=str(self._where),
                    peer=key,
                    n=count,
                )
        connection.transport.abortConnection()
        return False

    def _peer_left(self, key: str) -> None:
        count = self._per_peer[key] - 1
        if count:
            self._per_peer[key] = count
        else:
            del self._per_peer[key]
        self._peers_refused.discard(key)

    def _handshaking(self, connection: _ServerConnection) -> None:
        """A TLS connection was accepted: its handshake has a deadline."""
        self._accept_error_logged = False
        if not self._closed and len(self._handshakes) < MAX_HANDSHAKES:
            self._handshakes.add(connection)
            # (No timer unless the handshake takes longer than the sweeper's grace.)
            connection._handshake_timer = Deadline(
                self._reactor, self._handshake_timeout, self._handshake_too_slow, connection
            )
            return
        if not self._closed and not self._handshakes_full:
            self._handshakes_full = True
            _log.warn(
                "server on {where}: {n} TLS handshakes are under way; closing new connections "
                "until fewer are (logged once)",
                where=str(self._where),
                n=len(self._handshakes),
            )
        connection.transport.abortConnection()

    def _handshake_ended(self, connection: _ServerConnection) -> bool:
        """Forget C{connection}'s handshake; return whether it was under way."""
        if connection not in self._handshakes:
            return False
        self._handshakes.discard(connection)
        deadline, connection._handshake_timer = connection._handshake_timer, None
        if deadline is not None:
            deadline.cancel()
        if len(self._handshakes) < MAX_HANDSHAKES:
            self._handshakes_full = False
        return True

    def _handshake_done(self, connection: _ServerConnection) -> None:
        if self._handshake_ended(connection):
            self._admit(connection)

    def _handshake_too_slow(self, connection: _ServerConnection) -> None:
        connection._handshake_timer = None
        self._handshake_ended(connection)
        self._handshake_failed(connection, f"not done within {self._handshake_timeout:g} s")
        connection.transport.abortConnection()

    def _handshake_failed(self, connection: _ServerConnection, why: str) -> None:
        if self._handshake_log.allow():
            _log.info(
                "TLS handshake with {peer} failed: {why}",
                peer=show_address(connection.transport.getPeer()),
                why=why,
            )

    def _admit(self, connection: _ServerConnection) -> None:
        self._accept_error_logged = False
        if self._closed:
            connection.transport.abortConnection()
        elif len(self._connections) < self._max_connections:
            self._serve(connection)
        else:
            connection.pause_until_attached()
            self._parked.append(connection)

    def _serve(self, connection: _ServerConnection) -> None:
        self._connections.add(connection)
        if len(self._connections) >= self._max_connections:
            self._pause_accepting()
        reader, writer = connection.start_stream(self._settings)
        if self._idle_timeout is not None:
            connection.watch_idle(self._idle_timeout)
        transport: Any = connection.transport
        # The address a TCP port accepted from (its getPeer() makes a new
        # one), unless a layer (TLS, the PROXY protocol's) is between; a Unix
        # port gives buildProtocol the socket's name as accept() said it,
        # which getPeer() turns into None for an unnamed peer.
        address = connection.accepted_from
        if address is None or type(transport) is not tcp.Server:
            address = transport.getPeer()
        self._handlers_running += 1
        connection._started = self._reactor.seconds()
        run_on(connection, self._handler, (address, reader, writer))

    def _handler_done(self, result: object, connection: _ServerConnection) -> None:
        self._handlers_running -= 1
        self._durations.add(max(0.0, self._reactor.seconds() - connection._started))
        writer = connection.writer
        assert writer is not None
        writer.start_close()
        # A handler that fails with the writer's own error (say, from an
        # awaited flushed()) is not reported here: _ended reports that error
        # once, when the connection it closed is lost.  Nor is one that fails
        # because the peer left (or the server aborted the connection): its
        # awaited flushed() failed with the connection's loss, which is the
        # end of the connection, not a fault of the handler.
        if (
            isinstance(result, Failure)
            and result.value is not writer.error
            and not writer._failed_for_loss(result.value)
        ):
            self._report(connection, result)
        if self._closed:
            self._maybe_drained()

    def _ended(self, connection: _ServerConnection, reason: Failure) -> None:
        if connection._peer_key is not None:
            self._peer_left(connection._peer_key)
        if self._handshakes and self._handshake_ended(connection):
            if not self._closed:
                self._handshake_failed(connection, _handshake_error(reason))
            return
        connections = self._connections
        try:
            connections.remove(connection)
        except KeyError:  # parked, or never admitted
            try:
                self._parked.remove(connection)
            except ValueError:
                pass
            return
        received, sent = connection.byte_counts()
        self._ended_received += received
        self._ended_sent += sent
        writer = connection.writer
        if writer is not None and writer.error is not None:
            self._report(connection, Failure(writer.error))
        parked = self._parked
        while parked and len(connections) < self._max_connections and not self._closed:
            self._serve(parked.popleft())
        # (The port's accepts need no fitting as a slot frees: they are
        # fitted after each read of its socket, and a freed slot leaves
        # them fitting.  Behind the PROXY protocol a connection takes its
        # slot when its header arrives, after the read that accepted it,
        # which no fitting here would follow either.)
        if not parked and not self._accepting and len(connections) < self._max_connections:
            self._resume_accepting()
        if self._closed:
            self._maybe_drained()

    def _maybe_drained(self) -> None:
        if self._closed and not self._connections and not self._handlers_running:
            self._drained.fire(None)

    def _free_slots(self) -> int:
        return self._max_connections - len(self._connections) - len(self._handshakes)

    def _pause_accepting(self) -> None:
        if self._accepting and self._port is not None:
            self._accepting = False
            self._port.pauseProducing()  # type: ignore[attr-defined]

    def _resume_accepting(self) -> None:
        if (
            not self._accepting
            and not self._closed
            and self._retry_timer is None
            and self._port is not None
        ):
            self._accepting = True
            self._port.resumeProducing()  # type: ignore[attr-defined]

    def _accept_failed(self, error: str) -> None:
        """
        accept() failed for want of a resource (EMFILE: too many open files,
        ...): pause accepting, and retry after L{ACCEPT_RETRY_DELAY} seconds
        rather than spin.  Logged once until a connection is accepted again.
        """
        if self._closed or self._retry_timer is not None:
            return
        if not self._accept_error_logged:
            self._accept_error_logged = True
            _log.warn(
                "server on {where} cannot accept connections ({error}); pausing accepting "
                "and retrying every {delay:g} s",
                where=str(self._where),
                error=error,
                delay=ACCEPT_RETRY_DELAY,
            )
        self._pause_accepting()
        self._retry_timer = self._reactor.callLater(ACCEPT_RETRY_DELAY, self._retry_accept)

    def _retry_accept(self) -> None:
        self._retry_timer = None
        if len(self._connections) < self._max_connections and not self._parked:
            self._resume_accepting()

    # -- errors and closing ----------------------------------------------------

    def _report(self, connection: _ServerConnection, failure: Failure) -> None:
        self._handler_errors += 1
        policy = self._on_handler_error
        address = connection.transport.getPeer()
        if policy == "ignore":
            return
        if policy == "log":
            _log.failure(
                "handler for {peer} failed",
                failure,
                level=LogLevel.error,
                peer=show_address(address),
            )
        elif policy == "raise":
            _log.failure(
                "handler for {peer} failed; the server stops listening (on_handler_error='raise')",
                failure,
                level=LogLevel.error,
                peer=show_address(address),
            )
            self._stop(failure)
        else:
            try:
                policy(address, failure.value)  # type: ignore[arg-type]
            except Exception:
                _log.failure(
                    "on_handler_error callable failed for {peer}",
                    level=LogLevel.error,
                    peer=show_address(address),
                )

    def _stop(self, failure: Failure | None) -> None:
        if self._closed:
            return
        self._closed = True
        _accept_errors.unwatch(self)
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
        parked = [*self._parked, *self._handshakes]
        self._parked.clear()
        for connection in parked:
            connection.transport.abortConnection()
        port = self._port
        stopped = maybeDeferred(port.stopListening) if port is not None else succeed(None)

        def finished(result: object) -> None:
            self._close_finished.fire(failure if failure is not None else None)
            self._maybe_drained()

        stopped.addBoth(finished)


def _peer_key(address: IAddress) -> str | None:
    """
    The address that C{max_connections_per_peer} counts C{address} as: its
    IP address (an IPv4 address mapped into IPv6 as the IPv4 one), or None
    for a peer with no IP address (a Unix socket's).
    """
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return None
    if host[:7].lower() == "::ffff:":  # (Python before 3.13 writes ::ffff:102:304)
        try:
            mapped = ipaddress.IPv6Address(host.partition("%")[0]).ipv4_mapped
        except ValueError:
            return host
        if mapped is not None:
            return str(mapped)
    return host


def _handshake_error(reason: Failure) -> str:
    """Why a TLS handshake ended in C{reason}, for the server's log."""
    if reason.check(ConnectionDone, ConnectionLost):
        return "the client closed the connection, or it was lost, before the handshake was done"
    return describe_tls_error(reason.value)  # type: ignore[arg-type]


ACCEPT_RETRY_DELAY = 1.0


@implementer(ILogObserver)
class _AcceptErrorWatch:
    """
    Twisted's listening ports report a failed accept() only as a log event
    (after closing the backlog's clients when EMFILE strikes, to free a
    descriptor), then try again at once.  While any Server listens, this
    observer turns such an event into a short pause of every Server: running
    out of descriptors is a condition of the whole process.
    """

    def __init__(self) -> None:
        self._servers: set[Server] = set()

    def watch(self, server: Server) -> None:
        if not self._servers:
            globalLogPublisher.addObserver(self)
        self._servers.add(server)

    def unwatch(self, server: Server) -> None:
        if server in self._servers:
            self._servers.discard(server)
            if not self._servers:
                globalLogPublisher.removeObserver(self)

    def __call__(self, event: dict[str, Any]) -> None:
        error = accept_error(event)
        if error is not None:
            for server in list(self._servers):
                server._accept_failed(f"{error}: {os.strerror(getattr(errno, error))}")


_accept_errors = _AcceptErrorWatch()

__all__ = [
    "ACCEPT_RETRY_DELAY",
    "MAX_HANDSHAKES",
    "Handler",
    "HandlerErrorPolicy",
    "Server",
]
