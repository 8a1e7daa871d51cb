"""
Persistent connections: L{persistent_connection} keeps one connection up,
reconnecting with back-off, as Async's C{Persistent_connection} does.

Twisted's L{ClientService} does the retrying and its timing.  Its endpoint
here is an adapter whose every C{connect} is one attempt of L{connect}'s own
(one deadline, the TLS handshake included, and cancellation); the protocol
it hands ClientService is a bare one, told when the connection is made and
lost.  The state machine of ClientService must not be re-entered while it
makes a transition (with Twisted's typed state machine, a C{stopService}
made from inside one raises C{RuntimeError}, and it has no transition for a
connection lost while it is still connecting), and an attempt starts inside
one: so whatever a user gives (C{on_event}, the callbacks of
C{connected()}, which the link answers itself) runs from a queue drained in
a later turn of the reactor, and so does telling it that a connection was
lost.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

import attrs
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from ._connect import _attempt, default_reactor
from ._connection import Connection, Socket
from ._oneshot import OneShot
from ._reader import Reader
from ._settings import DEFAULTS, Settings, check_count, settings_with
from ._where import WhereToConnect, show_address
from ._writer import Writer

_log = Logger()
_SAY = {  # what the log says of each kind of event
    "attempting": "connecting",
    "failed": "attempt failed: {reason}",
    "connected": "connected to {peer} from {local}",
    "disconnected": "disconnected: {reason}",
}
_Triple = tuple[Socket, Reader, Writer]
_Kind = Literal["attempting", "failed", "connected", "disconnected"]


@attrs.frozen
class ConnectionEvent:
    """
    One event of a L{PersistentConnection}, as its C{on_event} gets it.

    @ivar kind: C{"attempting"} (an attempt starts), C{"failed"} (it
        failed), C{"connected"} (it succeeded) or C{"disconnected"} (the
        connection ended).
    @ivar where: where it connects.
    @ivar reason: why the attempt failed or the connection ended (such as
        C{ConnectionRefusedError}, L{ConnectTimeoutError}, C{ConnectionDone},
        L{BufferAgeLimitError}); C{None} for the other kinds.
    @ivar connection: C{(socket, reader, writer)} for C{"connected"} and
        C{"disconnected"}; C{None} for the other kinds.
    """

    kind: Literal["attempting", "failed", "connected", "disconnected"]
    where: WhereToConnect
    reason: BaseException | None = None
    connection: tuple[Socket, Reader, Writer] | None = None


@implementer(IStreamClientEndpoint)
class _Attempts:
    """ClientService's endpoint: each connect is one attempt of C{owner}'s."""

    def __init__(self, owner: PersistentConnection) -> None:
        self._owner = owner

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        return self._owner._connect(factory)

    def __repr__(self) -> str:  # as ClientService's "Scheduling retry" line shows it
        return f"<twisted_tcp persistent connection to {self._owner.where}>"


def _checked_policy(
    policy: Callable[[int], float] | None, where: WhereToConnect
) -> Callable[[int], float]:
    """
    C{policy} (or Twisted's L{backoffPolicy}) with each delay checked: one
    that is not a finite number of seconds, 0 or more (or a raise) is
    replaced by the default policy's for that attempt, and the first such
    is logged as an error.  Delays are rounded to the millisecond.
    """
    default = backoffPolicy()
    given = default if policy is None else policy
    warned = False

    def checked(attempt: int) -> float:
        nonlocal warned
        failure = None
        try:
            delay: Any = given(attempt)
            ok = (
                isinstance(delay, (int, float))
                and not isinstance(delay, bool)
                and math.isfinite(delay)
                and delay >= 0
            )
        except Exception:
            failure, ok = Failure(), False
        if ok:
            return round(float(delay), 3)
        replaced = round(default(attempt), 3)
        if not warned:
            warned = True
            what = "raised" if failure else f"returned {delay!r:.80}, not seconds (0 or more)"
            _log.emit(
                LogLevel.error,
                "Persistent connection to {where}: retry_policy({attempt}) {what}; waiting "
                "{replaced} s instead, as the default policy does (logged once)",
                where=str(where),
                attempt=attempt,
                what=what,
                replaced=replaced,
                **({} if failure is None else {"log_failure": failure}),
            )
        return replaced

    return checked


class PersistentConnection:
    """
    One connection kept up by L{persistent_connection}: made again after
    every failed attempt or lost connection, until L{close}.
    """

    def __init__(
        self,
        where: WhereToConnect,
        settings: Settings,
        retry_policy: Callable[[int], float] | None,
        on_event: Callable[[ConnectionEvent], object] | None,
        reactor: Any,
    ) -> None:
        self._where = where
        self._settings = settings
        self._on_event = on_event
        self._reactor = reactor
        self._current: _Triple | None = None
        self._closed = False
        self._close_finished: OneShot[None] = OneShot()
        self._queue: deque[tuple[Callable[..., object], tuple[Any, ...]]] = deque()
        self._draining: Any = None  # the delayed call that drains the queue
        self._waiters: list[list[Any]] = []  # connected() not yet answered
        self._failures = 0  # attempts that failed, in all
        # What ClientService holds for a connection: a bare protocol (the
        # Connection reads), told when it is made and lost.
        held = Factory.forProtocol(Protocol)
        held.noisy = False
        self._service = ClientService(
            _Attempts(self),
            held,
            retryPolicy=_checked_policy(retry_policy, where),
            clock=reactor,
        )
        self._service.startService()

    @property
    def where(self) -> WhereToConnect:
        """Where it connects."""
        return self._where

    @property
    def is_closed(self) -> bool:
        """Whether L{close} was called."""
        return self._closed

    @property
    def current_connection(self) -> tuple[Socket, Reader, Writer] | None:
        """
        C{(socket, reader, writer)} of the connection now open, or C{None}
        (also while it closes: its writer is closed).
        """
        current = self._current
        return None if current is None or current[2].is_closed else current

    @property
    def close_finished(self) -> Deferred[None]:
        """A Deferred that fires once L{close} is done."""
        return self._close_finished.wait()

    def connected(
        self, fail_after_failures: int | None = None
    ) -> Deferred[tuple[Socket, Reader, Writer]]:
        """
        The connection now open, or else the next one made.

        @param fail_after_failures: fail after this many attempts in a row
            have failed (counted from this call on), with the last one's
            error; C{None} to wait for as long as it takes.
        @return: a Deferred that fires, in a later turn of the reactor, with
            C{(socket, reader, writer)}; or fails with the attempt's error
            (above), or with C{CancelledError} naming the address once
            L{close} is called.  Cancelling it leaves the connection alone.
        @raise TypeError: if C{fail_after_failures} is not an int or None.
        @raise ValueError: if it is less than 1.
        """
        check_count("fail_after_failures", fail_after_failures, none="wait for ever")
        # Kept here, not in ClientService's whenConnected, whose waiters
        # cannot be cancelled: a waiter is [its Deferred, the failure count
        # at which it fails (or None)].
        limit = None if fail_after_failures is None else self._failures + fail_after_failures
        waiter: list[Any] = []
        result: Deferred[_Triple] = Deferred(lambda _: self._forget(waiter))
        waiter += [result, limit]
        self._waiters.append(waiter)
        self._soon(self._answer)
        return result

    def close(self) -> Deferred[None]:
        """
        Stop: no more attempts; an attempt under way is abandoned (its
        socket closed); the connection now open, if any, is closed after its
        writer has flushed (as C{writer.close()} does, for at most 30
        s).  Idempotent.

        @return: a Deferred that fires once the connection is closed and
            nothing more is under way (the same as L{close_finished}).
        """
        if not self._closed:
            self._closed = True
            current = self.current_connection
            if current is not None:
                current[2].close()
            # Fired after the events queued until then (the last disconnected).
            self._service.stopService().addBoth(lambda _: self._soon(self._stopped))
        return self._close_finished.wait()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self.current_connection else "down"
        return f"<PersistentConnection to {self._where} {state}>"

    # -- the endpoint's side ---------------------------------------------------

    def _connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        """One attempt, for ClientService (maybe inside a transition: nothing of the user's)."""
        self._emit("attempting")
        try:
            attempt = _attempt(self._where, self._settings, self._settings, None, self._reactor)
        except Exception:
            attempt = fail()
        made = attempt.addCallback(self._made, factory)
        return made.addErrback(self._failed)  # type: ignore[no-any-return]

    def _made(self, connection: Connection, factory: IProtocolFactory) -> IProtocol:
        if connection.closed:
            raise ConnectionLost(f"the connection to {self._where} ended as it was made")
        assert connection.reader is not None and connection.writer is not None
        triple = (Socket(connection), connection.reader, connection.writer)
        protocol = factory.buildProtocol(connection.transport.getPeer())
        assert protocol is not None
        protocol.makeConnection(connection.transport)
        self._current = triple
        self._emit("connected", connection=triple)
        self._soon(self._answer)
        connection.call_when_lost(lambda: self._soon(self._lost, connection, protocol, triple))
        # A peer that ended its stream will not answer again: close ours
        # too (after what was written is flushed), and make a new one.
        connection.close_when_peer_ends()
        return protocol

    def _failed(self, reason: Failure) -> Failure:
        if not (self._closed and reason.check(CancelledError)):
            self._emit("failed", reason=reason.value)
            self._failures += 1
            self._soon(self._give_up, reason, self._failures)
        return reason

    def _forget(self, waiter: list[Any]) -> None:
        """A connected() was cancelled: forget it."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _answer(self) -> None:
        """Give the connection now open, if any, to every connected() waiting."""
        current = self.current_connection
        if self._closed or current is not None:
            self._settle(lambda limit: True, self._closed_error() if self._closed else current)

    def _give_up(self, reason: Failure, failures: int) -> None:
        """Fail the connected() whose fail_after_failures is reached at C{failures}."""
        self._settle(lambda limit: limit is not None and limit <= failures, reason)

    def _settle(self, chosen: Callable[[int | None], bool], outcome: Any) -> None:
        """Fire the connected() waiters that are C{chosen} (by their limit) with C{outcome}."""
        settled = [waiter for waiter in self._waiters if chosen(waiter[1])]
        self._waiters = [waiter for waiter in self._waiters if not chosen(waiter[1])]
        for result, _ in settled:
            if not result.called:  # (one cancelled by the callbacks of another)
                if isinstance(outcome, (Failure, BaseException)):
                    result.errback(outcome)
                else:
                    result.callback(outcome)

    def _lost(self, connection: Connection, protocol: IProtocol, triple: _Triple) -> None:
        """The connection was lost (a turn ago): say so, then tell ClientService."""
        if self._current is triple:
            self._current = None
        reason = connection._lost_reason or Failure(ConnectionDone())
        try:
            error = triple[2].error
            self._emit("disconnected", reason=error or reason.value, connection=triple)
        finally:
            protocol.connectionLost(reason)

    def _stopped(self) -> None:
        self._current = None
        self._answer()
        self._close_finished.fire(None)

    def _closed_error(self) -> CancelledError:
        return CancelledError(f"the persistent connection to {self._where} was closed")

    # -- events, and the queue of what runs in a later turn --------------------

    def _emit(
        self,
        kind: _Kind,
        reason: BaseException | None = None,
        connection: _Triple | None = None,
    ) -> None:
        """Log the event now, and queue it for C{on_event}."""
        fields = {}
        if reason is not None:
            fields["reason"] = f"{type(reason).__name__}: {reason}"
        if kind == "connected":  # (a closed socket has no address)
            assert connection is not None
            fields["peer"] = show_address(connection[0].peer_address)
            fields["local"] = show_address(connection[0].local_address)
        text = "Persistent connection to {where}: " + _SAY[kind]
        _log.info(text, where=str(self._where), **fields)
        if self._on_event is not None:
            self._soon(self._deliver, ConnectionEvent(kind, self._where, reason, connection))

    def _deliver(self, event: ConnectionEvent) -> None:
        assert self._on_event is not None
        try:
            self._on_event(event)
        except Exception:
            _log.failure(
                "Persistent connection to {where}: on_event failed on the {kind} event",
                where=str(self._where),
                kind=event.kind,
            )

    def _soon(self, call: Callable[..., object], *args: Any) -> None:
        """Call C{call(*args)} in a later turn, after what was queued before."""
        self._queue.append((call, args))
        if self._draining is None:
            self._draining = self._reactor.callLater(0, self._drain)

    def _drain(self) -> None:
        try:
            while self._queue:
                call, args = self._queue.popleft()
                try:
                    call(*args)
                except Exception:
                    _log.failure(
                        "Persistent connection to {where}: internal error", where=str(self._where)
                    )
        finally:
            self._draining = None


def persistent_connection(
    where: WhereToConnect,
    *,
    timeout: float | None = DEFAULTS.timeout,
    reader_buffer_size: int = DEFAULTS.reader_buffer_size,
    buffer_age_limit: float | None = DEFAULTS.buffer_age_limit,
    max_line_length: int = DEFAULTS.max_line_length,
    retry_policy: Callable[[int], float] | None = None,
    on_event: Callable[[ConnectionEvent], object] | None = None,
    reactor: Any = None,
) -> PersistentConnection:
    """
    Keep one connection to C{where} up: start connecting now, and whenever
    an attempt fails or the connection is lost, wait and try again, until
    L{PersistentConnection.close}.  Each attempt is as L{connect}'s; each
    event is logged (at info level) and given to C{on_event}.

    @param timeout: seconds for each attempt (DNS and the TLS handshake
        included), or C{None} for no deadline; a late one fails with
        L{ConnectTimeoutError}, and is retried.
    @param reader_buffer_size: as L{connect}'s, for each connection.
    @param buffer_age_limit: as L{connect}'s, for each connection.
    @param max_line_length: as L{connect}'s, for each connection.
    @param retry_policy: given the number of attempts in a row that failed
        (1 after the first failure, and 1 again after a connection is lost),
        the seconds to wait before the next one; by default Twisted's
        L{backoffPolicy}: 1.5 s, growing 1.5 times each time up to 60 s,
        plus 0 to 1 s at random.  A delay that is not a finite number of
        seconds, 0 or more, is logged and replaced by the default's.
    @param on_event: called with each L{ConnectionEvent}, in order, each in
        a later turn of the reactor than it happened (a connection it gets
        may be closed already); an exception it raises is logged.
    @param reactor: the reactor; the global one if C{None}.
    @return: the L{PersistentConnection}, already connecting.
    @raise TypeError: for an argument of the wrong type.
    @raise ValueError: for a limit out of range, NaN or infinity.
    """
    if not isinstance(where, WhereToConnect):
        raise TypeError(
            "where must be made by to_host_and_port(), to_file() or to_endpoint(), "
            f"not {type(where).__name__}: {where!r:.80}"
        )
    settings = settings_with(
        timeout=timeout,
        reader_buffer_size=reader_buffer_size,
        buffer_age_limit=buffer_age_limit,
        max_line_length=max_line_length,
    )
    for name, value in (("retry_policy", retry_policy), ("on_event", on_event)):
        if value is not None and not callable(value):
            raise TypeError(
                f"{name} must be callable or None, not {type(value).__name__}: {value!r:.80}"
            )
    return PersistentConnection(where, settings, retry_policy, on_event, default_reactor(reactor))


__all__ = ["ConnectionEvent", "PersistentConnection", "persistent_connection"]
