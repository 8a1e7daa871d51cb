"""
Connecting: C{connect_sock}, C{connect} and C{with_connection}.

One deadline covers the whole attempt, DNS and the TLS handshake included,
and so does C{interrupt}: both work by cancelling the endpoint's Deferred,
which closes any socket the attempt had opened, or, during the handshake, by
aborting the connection.  What comes back is then replaced by an error of our
own that names the address.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

from twisted.internet import error
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.protocol import ClientFactory
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ._connection import Connection, Socket
from ._driver import Driver, run_on
from ._errors import ConnectInterruptedError, ConnectTimeoutError, TLSHandshakeError
from ._handler import check_handler
from ._reader import Reader
from ._settings import DEFAULTS, Settings, settings_with
from ._sweeper import Deadline
from ._tls import describe_tls_error
from ._where import ToHostAndPort, WhereToConnect
from ._writer import Writer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IConnector, IReactorTime

_T = TypeVar("_T")  # what with_connection's f gives

_log = Logger()


def default_reactor(reactor: Any) -> Any:
    """C{reactor}, or the global reactor (imported only now) if it is None."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        return global_reactor
    return reactor


class _ConnectionFactory(ClientFactory):
    """
    Makes the connection of one attempt.  Given to an endpoint, it only
    builds the protocol; given to the reactor's own connectTCP or
    connectUNIX (L{WhereToConnect.connect_directly}), it also reports how
    the attempt ended to C{report} (the connection, once made, or the
    failure), as an endpoint's Deferred would, with no Deferred of its own.
    """

    noisy = False  # no "Starting factory" log line at every connect

    def __init__(self, clock: IReactorTime, options: Settings | None) -> None:
        self.clock = clock
        self.options = options
        self.connector: IConnector | None = None
        self.report: Callable[[Any], None] | None = None

    def buildProtocol(self, addr: object) -> Connection:
        connection = Connection(self.clock, self.options)
        connection.on_made = self.report
        return connection

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if self.report is not None:
            self.report(reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        # The connector and its transport refer to each other until the
        # connector connects again, which ours never does: a cycle that
        # only the garbage collector would free, at every connection.  The
        # connector forgets its transport, as it does after a failed attempt.
        connector.transport = None  # type: ignore[attr-defined]

    def cancel(self) -> None:
        """Abandon the attempt: the connector reports it failed, its socket closed."""
        if self.connector is not None:
            try:
                self.connector.stopConnecting()
            except error.NotConnectingError:
                pass


def _name_address(reason: Failure, where: WhereToConnect) -> Failure:
    """The same failure, with a message that says which address failed."""
    exc = reason.value
    text = f"connecting to {where}"
    named: BaseException
    try:
        if isinstance(exc, error.ConnectError):
            detail = exc.args[0] if exc.args and exc.args[0] else ""
            named = copy.copy(exc)
            named.args = (f"{detail} ({text})" if detail else text,)
        elif isinstance(exc, error.DNSLookupError):
            named = error.DNSLookupError(f"{text}:", *exc.args)
        else:
            return reason
    except Exception:  # pragma: no cover - an exotic exception class
        return reason
    return Failure(named)


def _attempt(
    where: WhereToConnect,
    settings: Settings,
    options: Settings | None,
    interrupt: Deferred[Any] | None,
    reactor: Any,
) -> Deferred[Connection]:
    """
    Start one attempt to connect to C{where} and return its Deferred: the
    connection (with a reader and a writer if C{options} is given), or a
    failure that names the address.
    """
    result = _start_attempt(where, settings, options, interrupt, reactor).result
    assert result is not None
    return result


def _start_attempt(
    where: WhereToConnect,
    settings: Settings,
    options: Settings | None,
    interrupt: Deferred[Any] | None,
    reactor: Any,
    report: Callable[[Any], None] | None = None,
) -> _Attempt:
    """
    Start one attempt to connect to C{where}, as L{_attempt} says; its
    outcome goes to C{report} if given (see L{_Attempt}).

    @raise TypeError: if C{where} or C{interrupt} is not what an attempt takes.
    """
    if not isinstance(where, WhereToConnect):
        raise TypeError(
            "where must be made by to_host_and_port(), to_file() or to_endpoint(), "
            f"not {type(where).__name__}: {where!r}"
        )
    if interrupt is not None and not isinstance(interrupt, Deferred):
        raise TypeError(
            f"interrupt must be a Deferred or None, not {type(interrupt).__name__}: "
            f"{interrupt!r:.80}"
        )
    return _Attempt(where, settings.timeout, options, interrupt, default_reactor(reactor), report)


class _Attempt:
    """
    One attempt to connect, under one deadline (and interrupt) that covers
    all of it, name resolution and TLS handshake included: both work by
    cancelling what is pending (the endpoint's Deferred, or the connector),
    which closes any socket the attempt had opened, or, during the
    handshake, by aborting the connection.  What comes back is then
    replaced by an error of our own that names the address.

    An object with slots rather than closures: an attempt costs the garbage
    collector a handful of objects, not two dozen cells and functions, and
    holds nothing once it is over.

    Its outcome goes to C{result}, a Deferred whose cancelling stops the
    attempt; or, given C{report}, to C{report(outcome)} (the connection, or
    a Failure), with no Deferred: L{with_connection}'s, which stops it with
    L{cancel}.
    """

    __slots__ = (
        "_deadline",
        "_interrupt",
        "_pending",
        "_report",
        "_securing",
        "_timeout",
        "_where",
        "_why",
        "over",
        "result",
    )

    def __init__(
        self,
        where: WhereToConnect,
        timeout: float | None,
        options: Settings | None,
        interrupt: Deferred[Any] | None,
        reactor: Any,
        report: Callable[[Any], None] | None = None,
    ) -> None:
        self._where = where
        self._timeout = timeout
        self._why: str | None = None  # why it was stopped, if it was
        self._securing: Connection | None = None  # connected, its TLS handshake under way
        self.over = False
        """Whether its outcome was given."""
        self._report = report
        self._interrupt: Deferred[Any] | None = None  # what interrupts it, until it is over
        self.result: Deferred[Connection] | None = (
            Deferred(self._cancelled) if report is None else None
        )
        factory = _ConnectionFactory(reactor, options)
        # What cancels the attempt: the factory itself, connecting directly
        # (it reports to _finish), or the endpoint's Deferred.
        self._pending: _ConnectionFactory | Deferred[Any] | None
        try:
            factory.connector = where.connect_directly(reactor, factory)
        except Exception:  # (an IPv6 scope the system does not know, say)
            self._pending = self._deadline = None
            self._give(self._failure(Failure()))
            return
        if factory.connector is not None:
            self._pending = factory
            factory.report = self._finish  # (a connector reports in a later turn, never now)
        else:
            # No timeout of the endpoint's own (a timer of the connector's,
            # per attempt): the deadline below covers the whole attempt.
            self._pending = where.endpoint(reactor, None).connect(factory)
        self._deadline = (
            None if timeout is None else Deadline(reactor, timeout, self._stop, "timeout")
        )
        if isinstance(self._pending, Deferred):
            self._pending.addBoth(self._finish)
        if interrupt is not None and not self.over:
            if interrupt.called:
                self._stop("interrupt")
                return
            _interrupts.add(interrupt, self._interrupted)
            self._interrupt = interrupt

    def _cancelled(self, _: object) -> None:
        self._stop("cancel")

    def cancel(self) -> None:
        """Stop the attempt: its outcome is a CancelledError, unless it has one already."""
        self._stop("cancel")

    def _interrupted(self) -> None:
        self._stop("interrupt")

    def _forget_interrupt(self) -> None:
        """The attempt is over: its interrupt keeps nothing of it."""
        interrupt = self._interrupt
        if interrupt is not None:
            self._interrupt = None
            _interrupts.discard(interrupt, self._interrupted)

    def _give(self, outcome: Any) -> None:
        """Give the outcome, once: to C{report}, or to C{result}."""
        self.over = True
        self._forget_interrupt()
        report = self._report
        if report is not None:
            self._report = None
            report(outcome)
        elif self.result is not None:
            if isinstance(outcome, Failure):
                self.result.errback(outcome)
            else:
                self.result.callback(outcome)

    def _stop(self, reason: str) -> None:
        if self._why is not None or self.over:
            return
        self._why = reason
        securing = self._securing
        if securing is None:
            pending = self._pending
            if pending is not None:
                pending.cancel()  # reports the attempt failed, to _finish
                if self._pending is pending and isinstance(pending, _ConnectionFactory):
                    # A connector that does not report at once (a fake reactor's).
                    self._finish(Failure(error.UserError()))
        else:
            securing.transport.abortConnection()
            self._give(self._failure(Failure(error.ConnectionAborted())))

    def _failure(self, outcome: Failure) -> Failure:
        where, why = self._where, self._why
        if why == "timeout" or outcome.check(error.TimeoutError):
            return Failure(ConnectTimeoutError(where, self._timeout or DEFAULTS.timeout or 0.0))
        if why == "interrupt":
            return Failure(ConnectInterruptedError(where))
        if why == "cancel":
            return Failure(CancelledError(f"connecting to {where} was cancelled"))
        if self._securing is not None:
            host = where.host if isinstance(where, ToHostAndPort) else None
            reason = describe_tls_error(outcome.value or Exception(), host)
            return Failure(TLSHandshakeError(where, reason))
        return _name_address(outcome, where)

    def _finish(self, outcome: Any) -> None:
        over = self.over or (self.result is not None and self.result.called)
        if isinstance(outcome, Connection) and self._securing is None and not over:
            handshake = outcome.secured()
            if handshake is not None:
                self._securing = outcome
                handshake.addCallbacks(self._secured, self._finish)
                return
        pending, self._pending = self._pending, None
        if isinstance(pending, _ConnectionFactory):
            # (Its connector refers to it: no cycle left for the collector.)
            pending.report = pending.connector = None
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.cancel()
        if over:  # cancelled by the user after connecting; do not leak
            self._forget_interrupt()
            if isinstance(outcome, Connection):
                outcome.transport.abortConnection()
            return
        self._give(self._failure(outcome) if isinstance(outcome, Failure) else outcome)

    def _secured(self, _: object) -> None:
        self._finish(self._securing)


class _Interrupts:
    """
    One callback on each C{interrupt} Deferred, whatever the number of
    attempts it interrupts: an attempt is added when it starts and taken out
    when it ends, so that a long-lived interrupt (a shutdown signal passed
    to every connect) holds nothing for the attempts that are over.
    """

    def __init__(self) -> None:
        self._waiting: weakref.WeakKeyDictionary[Deferred[Any], set[Callable[[], None]]] = (
            weakref.WeakKeyDictionary()
        )

    def add(self, interrupt: Deferred[Any], stop: Callable[[], None]) -> None:
        waiting = self._waiting.get(interrupt)
        if waiting is None:
            waiting = self._waiting[interrupt] = set()
            interrupt.addBoth(self._fired, waiting)
        waiting.add(stop)

    def discard(self, interrupt: Deferred[Any], stop: Callable[[], None]) -> None:
        waiting = self._waiting.get(interrupt)
        if waiting is not None:
            waiting.discard(stop)

    @staticmethod
    def _fired(value: object, waiting: set[Callable[[], None]]) -> object:
        stops = list(waiting)
        waiting.clear()
        for stop in stops:
            stop()
        return value


_interrupts = _Interrupts()


def connect_sock(
    where: WhereToConnect,
    *,
    timeout: float | None = DEFAULTS.timeout,
    interrupt: Deferred[Any] | None = None,
    reactor: Any = None,
) -> Deferred[Socket]:
    """
    Connect to C{where} and return the connected L{Socket}, which does not
    read until a reader/writer pair (L{Socket.reader_writer}) or a protocol
    (L{Socket.attach_protocol}) is attached to it.

    @param timeout: seconds for the whole attempt, DNS and every address
        included; C{None} for no deadline.  On expiry the attempt fails with
        L{ConnectTimeoutError}.
    @param interrupt: a Deferred; if it fires before the connection is made,
        the attempt fails with L{ConnectInterruptedError}.
    @param reactor: the reactor; the global one if C{None}.
    @return: a Deferred that fires with the L{Socket}, or fails with an error
        naming the address (refused, DNS failure, missing Unix path, ...).
        Cancelling it abandons the attempt with C{CancelledError}.  No socket
        is left open after a failure.
    """
    settings = settings_with(timeout=timeout)
    return _attempt(where, settings, None, interrupt, reactor).addCallback(Socket)


def connect(
    where: WhereToConnect,
    *,
    timeout: float | None = DEFAULTS.timeout,
    interrupt: Deferred[Any] | None = None,
    reader_buffer_size: int = DEFAULTS.reader_buffer_size,
    buffer_age_limit: float | None = DEFAULTS.buffer_age_limit,
    max_line_length: int = DEFAULTS.max_line_length,
    reactor: Any = None,
) -> Deferred[tuple[Socket, Reader, Writer]]:
    """
    Connect as L{connect_sock} does and return C{(socket, reader, writer)}.
    The caller closes the connection: C{writer.close()} (which flushes) or
    C{socket.close()}; L{with_connection} does it for you.

    @param reader_buffer_size: unread bytes above which the reader stops
        reading from the socket until the user reads.
    @param buffer_age_limit: seconds written bytes may wait unflushed before
        the connection is closed with L{BufferAgeLimitError} (the peer stopped
        reading), or C{None} for no limit.
    @param max_line_length: the longest line C{read_line} returns.
    """
    settings = settings_with(
        timeout=timeout,
        reader_buffer_size=reader_buffer_size,
        buffer_age_limit=buffer_age_limit,
        max_line_length=max_line_length,
    )

    def triple(connection: Connection) -> tuple[Socket, Reader, Writer]:
        reader, writer = connection.reader, connection.writer
        assert reader is not None and writer is not None
        connection.let_go_when_lost()  # (the caller holds them: no cycle left for the collector)
        return Socket(connection), reader, writer

    return _attempt(where, settings, settings, interrupt, reactor).addCallback(triple)


@overload
def with_connection(
    where: WhereToConnect,
    f: Callable[[Socket, Reader, Writer], Awaitable[_T]],
    *,
    timeout: float | None = ...,
    interrupt: Deferred[Any] | None = ...,
    reader_buffer_size: int = ...,
    buffer_age_limit: float | None = ...,
    max_line_length: int = ...,
    reactor: Any = ...,
) -> Deferred[_T]: ...


@overload
def with_connection(
    where: WhereToConnect,
    f: Callable[[Socket, Reader, Writer], _T],
    *,
    timeout: float | None = ...,
    interrupt: Deferred[Any] | None = ...,
    reader_buffer_size: int = ...,
    buffer_age_limit: float | None = ...,
    max_line_length: int = ...,
    reactor: Any = ...,
) -> Deferred[_T]: ...


def with_connection(
    where: WhereToConnect,
    f: Callable[[Socket, Reader, Writer], Any],
    *,
    timeout: float | None = DEFAULTS.timeout,
    interrupt: Deferred[Any] | None = None,
    reader_buffer_size: int = DEFAULTS.reader_buffer_size,
    buffer_age_limit: float | None = DEFAULTS.buffer_age_limit,
    max_line_length: int = DEFAULTS.max_line_length,
    reactor: Any = None,
) -> Deferred[Any]:
    """
    Connect as L{connect} does, call C{f(socket, reader, writer)} (which may
    return a value, a Deferred or a coroutine), then close: the writer is
    flushed (for at most 30 s) and closed, then the socket.

    @return: a Deferred that fires, once the connection is closed, with
        C{f}'s result, or fails with C{f}'s exception, or with
        L{BufferAgeLimitError} if the peer stopped reading first (C{f} then
        goes on alone; a later error of it is logged).
    @raise TypeError: if C{f} cannot be called with C{(socket, reader, writer)}
        or is a generator function, or as L{connect} raises.
    """
    check_handler(f, "with_connection's f", "f(socket, reader, writer)")
    settings = settings_with(
        timeout=timeout,
        reader_buffer_size=reader_buffer_size,
        buffer_age_limit=buffer_age_limit,
        max_line_length=max_line_length,
    )
    run = _WithConnection(where, f)
    # (Told of the outcome directly: no Deferred between the attempt and f.)
    attempt = _start_attempt(where, settings, settings, interrupt, reactor, run._attempted)
    if not attempt.over:  # (an outcome given at once: an interrupt that had fired)
        run._attempt = attempt
    return run.done


class _WithConnection(Driver):
    """
    L{with_connection} once the attempt has started: runs C{f} on the
    connection (as its L{Driver}, if it is a coroutine), closes it, and
    fires C{done} with C{f}'s outcome once the connection is closed.  (An
    object with slots rather than closures, as L{_Attempt} is.)
    """

    __slots__ = (
        "_attempt",
        "_connection",
        "_context",
        "_coroutine",
        "_ended",
        "_f",
        "_outcome",
        "_returned",
        "_waiting",
        "_where",
        "done",
    )

    def __init__(self, where: WhereToConnect, f: Callable[..., Any]) -> None:
        self._where = where
        self._f = f
        self._attempt: _Attempt | None = None  # (set by with_connection), until it is over
        self._connection: Connection | None = None
        self._returned: Deferred[Any] | None = None  # the Deferred f returned, if it did
        self._waiting = None
        self._ended = False  # f has ended (or was cancelled)
        self._outcome: Any = None  # ... with this result, or Failure
        self.done: Deferred[Any] = Deferred(self._cancel)

    def _attempted(self, outcome: Any) -> None:
        """The attempt's outcome: the connection, on which f runs, or a Failure."""
        if isinstance(outcome, Failure):
            self._attempt = None
            self.done.errback(outcome)
        else:
            self._call_f(outcome)

    def _cancel(self, done: Deferred[Any]) -> None:
        connection = self._connection
        if connection is None:
            attempt = self._attempt
            if attempt is not None:
                attempt.cancel()  # fails the attempt (and so done) with a CancelledError
        elif not self._ended:
            # Twisted fires a cancelled Deferred at once: the connection is
            # aborted now and closes on the reactor's next turn; f is
            # cancelled where it waits.
            self._ended = True
            connection.abort()
            if self._returned is not None:
                self._returned.cancel()
            else:
                self.cancel_await()
            done.errback(CancelledError(f"with_connection to {self._where} was cancelled"))

    def _call_f(self, connection: Connection) -> None:
        self._attempt = None
        self._connection = connection
        reader, writer = connection.reader, connection.writer
        assert reader is not None and writer is not None
        connection.call_when_lost(self._lost)
        # What f writes as it starts (its request) leaves in one send, at
        # once (Writer.send_gathered), not in the reactor's next turn.
        writer.gather()
        self._returned = run_on(self, self._f, (Socket(connection), reader, writer))
        writer.send_gathered()

    def driven_ended(self, value: Any) -> None:
        """How f ended: its value, or a Failure."""
        if self._ended:
            if isinstance(value, Failure) and not value.check(CancelledError):
                _log.failure(
                    "with_connection to {where}: f failed after the connection ended",
                    value,
                    level=LogLevel.error,
                    where=str(self._where),
                )
            return
        self._ended = True
        self._outcome = value
        self._returned = None
        connection = self._connection
        assert connection is not None and connection.writer is not None
        connection.writer.start_close()  # (with our side already shut, it may end now)
        if connection.closed:
            self._end()  # else _lost does, once the close is done

    def _lost(self) -> None:
        # Told after the writer, before the reader: f's next read cannot
        # beat the writer's error, which is then the outcome.  Not when f
        # already ended (maybe with this very error): that is not an error
        # of f's to log.
        if not self._ended:
            connection = self._connection
            assert connection is not None and connection.writer is not None
            error = connection.writer.error
            if error is not None:
                self.driven_ended(Failure(error))
        else:
            self._end()

    def _end(self) -> None:
        connection = self._connection
        if connection is not None:
            connection.let_go()  # (no cycle left for the collector)
        done = self.done
        if not done.called:
            outcome = self._outcome
            if isinstance(outcome, Failure):
                done.errback(outcome)
            else:
                done.callback(outcome)


__all__ = [
    "connect",
    "connect_sock",
    "default_reactor",
    "with_connection",
]
