"""
Tests for L{twisted_tcp.persistent_connection}: real sockets on 127.0.0.1
and a Unix socket under C{tmp_path}, with fast retries
(C{retry_policy=lambda n: 0.01}); a L{Clock} and fake endpoints for the
retry timing itself.  Every wait is bounded, every persistent connection is
closed, and the autouse C{no_leaks} fixture checks that nothing (descriptor,
reader/writer, timer) is left behind.
"""

from __future__ import annotations

import math
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import error, reactor
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface import implementer

import twisted_tcp as tt
from twisted_tcp._persistent import _checked_policy

from .conftest import (
    LOCAL,
    PENDING,
    logged_errors,
    open_fds,
    outcome,
    serving,
    sleep,
    until,
    where_of,
    within,
)
from .test_connect import Unresponsive

FAST = {"retry_policy": lambda n: 0.01}


# -- helpers -------------------------------------------------------------------


class Events:
    """An C{on_event} that records every event."""

    def __init__(self) -> None:
        self.seen: list[tt.ConnectionEvent] = []

    def __call__(self, event: tt.ConnectionEvent) -> None:
        self.seen.append(event)

    @property
    def kinds(self) -> list[str]:
        return [e.kind for e in self.seen]

    def of(self, kind: str) -> list[tt.ConnectionEvent]:
        return [e for e in self.seen if e.kind == kind]

    async def until(self, kind: str, count: int = 1) -> None:
        await until(lambda: len(self.of(kind)) >= count)


@asynccontextmanager
async def persistent(
    where: tt.WhereToConnect, **kwargs: Any
) -> AsyncIterator[tuple[tt.PersistentConnection, Events]]:
    """A persistent connection recording its events, closed on exit."""
    events = Events()
    pc = tt.persistent_connection(where, on_event=events, **kwargs)
    try:
        yield pc, events
    finally:
        await within(pc.close())


@contextmanager
def log_lines() -> Iterator[list[str]]:
    """Every log line (formatted) while active."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)


class Served:
    """
    A server handler that counts its connections and echoes lines; on
    C{quit} it ends the connection (cleanly), on C{reset} it aborts it.
    """

    def __init__(self) -> None:
        self.accepted = 0
        self.eofs = 0

    async def __call__(self, address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        self.accepted += 1
        async for line in reader.lines():
            if line == b"quit":
                return
            if line == b"reset":
                writer.abort()
                return
            writer.write_line(line)
        self.eofs += 1


class Mute(Served):
    """
    A server handler that counts its connections, reads all and answers
    nothing. (Echoing, as L{Served} does, could answer a TLS ClientHello
    whose random bytes hold newlines, and so fail the client's handshake.)
    """

    async def __call__(self, address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        self.accepted += 1
        while await reader.read():
            pass
        self.eofs += 1


def refused_port() -> socket.socket:
    """A socket bound on 127.0.0.1 and not listening: connecting to its port is refused."""
    probe = socket.socket()
    probe.bind((LOCAL, 0))
    return probe


async def echoes(triple: tuple[tt.Socket, tt.Reader, tt.Writer], line: bytes) -> bool:
    _sock, reader, writer = triple
    writer.write_line(line)
    return bool(await within(reader.read_line()) == line)


# -- connecting and reconnecting -----------------------------------------------


@pytest_twisted.ensureDeferred
async def test_connects_and_gives_a_working_connection() -> None:
    served = Served()
    async with serving(served) as server:
        async with persistent(where_of(server), **FAST) as (pc, events):
            sock, reader, writer = triple = await within(pc.connected())
            assert isinstance(sock, tt.Socket) and isinstance(reader, tt.Reader)
            assert isinstance(writer, tt.Writer)
            assert sock.peer_address.port == server.listening_on  # type: ignore[attr-defined]
            assert await echoes(triple, b"hello")
            assert pc.current_connection == triple
            assert await within(pc.connected()) == triple  # the current one, again
            assert pc.where == where_of(server) and not pc.is_closed
            assert repr(pc) == f"<PersistentConnection to {LOCAL}:{server.listening_on} connected>"
        assert pc.is_closed and pc.current_connection is None
        assert repr(pc).endswith(" closed>")
        # close() fired after the last event was given
        assert events.kinds == ["attempting", "connected", "disconnected"]
        assert events.seen[1].connection == triple == events.seen[2].connection
        assert isinstance(events.seen[2].reason, error.ConnectionDone)
        assert all(e.where == pc.where for e in events.seen)
        await until(lambda: served.eofs == 1)  # the server saw the end of the stream
        assert served.accepted == 1


@pytest_twisted.ensureDeferred
async def test_reconnects_after_the_server_closes() -> None:
    served = Served()
    async with serving(served) as server:
        async with persistent(where_of(server), **FAST) as (pc, events):
            first = await within(pc.connected())
            first[2].write_line(b"echoed")
            first[2].write_line(b"quit")
            # The server ends the connection: the link closes ours, by itself, and
            # what the server sent before its end stays readable.
            await events.until("connected", 2)
            assert first[0].is_closed and first[2].is_closed
            assert await within(first[1].read_line()) == b"echoed"
            assert await within(first[1].read_line()) is None
            second = await within(pc.connected())
            assert second[0] is not first[0] and first[0].is_closed
            assert await echoes(second, b"again")
            assert events.kinds == [
                "attempting", "connected", "disconnected", "attempting", "connected",
            ]  # fmt: skip
            assert events.of("disconnected")[0].connection == first
            assert pc.current_connection == second
        assert served.accepted == 2


@pytest_twisted.ensureDeferred
async def test_reconnects_after_a_reset_without_the_user_doing_anything() -> None:
    served = Served()
    async with serving(served) as server:
        async with persistent(where_of(server), **FAST) as (pc, events):
            first = await within(pc.connected())
            first[2].write_line(b"reset")
            await events.until("connected", 2)
            assert first[0].is_closed
            disconnected = events.of("disconnected")[0]
            assert isinstance(disconnected.reason, error.ConnectionLost)
            second = await within(pc.connected())
            assert second != first and await echoes(second, b"fine")


@pytest_twisted.ensureDeferred
async def test_refused_then_the_server_starts_listening() -> None:
    probe = refused_port()
    port = probe.getsockname()[1]
    where = tt.to_host_and_port(LOCAL, port)
    with log_lines() as lines:
        async with persistent(where, **FAST) as (pc, events):
            await events.until("failed", 2)
            connecting = pc.connected()
            for event in events.of("failed"):
                assert isinstance(event.reason, error.ConnectionRefusedError)
                assert f"{LOCAL}:{port}" in str(event.reason)
                assert event.connection is None
            assert pc.current_connection is None
            assert repr(pc) == f"<PersistentConnection to {LOCAL}:{port} down>"
            probe.close()
            async with serving(Served(), tt.on_port(port, interface=LOCAL)):
                assert await echoes(await within(connecting), b"at last")
                await within(pc.close())
    kinds = events.kinds
    assert kinds[:4] == ["attempting", "failed", "attempting", "failed"]
    assert kinds[-3:] == ["attempting", "connected", "disconnected"]
    assert set(kinds[:-3]) == {"attempting", "failed"}
    prefix = f"Persistent connection to {LOCAL}:{port}: "
    assert prefix + "connecting" in lines
    assert any(
        line.startswith(prefix + "attempt failed: ConnectionRefusedError: ") for line in lines
    )
    assert (
        f"Scheduling retry 1 to connect <twisted_tcp persistent connection to {LOCAL}:{port}> "
        "in 0.01 seconds." in lines
    )
    assert any(line.startswith(prefix + f"connected to {LOCAL}:{port} from ") for line in lines)
    assert prefix + "disconnected: ConnectionDone: Connection was closed cleanly." in lines


@pytest_twisted.ensureDeferred
async def test_fail_after_failures() -> None:
    probe = refused_port()
    try:
        async with persistent(tt.to_host_and_port(*probe.getsockname()), **FAST) as (pc, events):
            with pytest.raises(error.ConnectionRefusedError):
                await within(pc.connected(fail_after_failures=2))
            assert events.kinds[:4] == ["attempting", "failed", "attempting", "failed"]
            # Counted from the call on:
            failed = len(events.of("failed"))
            with pytest.raises(error.ConnectionRefusedError):
                await within(pc.connected(fail_after_failures=1))
            assert len(events.of("failed")) == failed + 1
            waiting = pc.connected()  # without a limit: until close
        with pytest.raises(CancelledError, match=r"persistent connection to 127\.0\.0\.1:\d+"):
            await within(waiting)
    finally:
        probe.close()


@pytest_twisted.ensureDeferred
async def test_unix_socket(tmp_path: Any) -> None:
    path = str(tmp_path / "server.sock")
    served = Served()
    async with serving(served, tt.on_file(path)):
        async with persistent(tt.to_file(path), **FAST) as (pc, events):
            first = await within(pc.connected())
            assert await echoes(first, b"over unix")
            first[2].write_line(b"quit")
            assert await within(first[1].read_line()) is None
            await within(first[2].close())
            assert await echoes(await within(pc.connected()), b"and again")
            assert str(events.seen[0].where) == f"unix:{path}"
    assert served.accepted == 2


@pytest_twisted.ensureDeferred
async def test_the_limits_apply_to_each_connection() -> None:
    async with serving(Served()) as server:
        async with persistent(where_of(server), max_line_length=4, **FAST) as (pc, _events):
            _sock, reader, writer = await within(pc.connected())
            writer.write_line(b"too long")
            with pytest.raises(tt.LineTooLongError):
                await within(reader.read_line())


# -- closing -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_close_while_connected() -> None:
    served = Served()
    async with serving(served) as server:
        async with persistent(where_of(server), **FAST) as (pc, events):
            sock, _reader, writer = await within(pc.connected())
            writer.write_line(b"last words")  # flushed before the close
            closing = pc.close()
            assert pc.is_closed and pc.close_finished is not closing
            await within(closing)
            assert sock.is_closed
            await within(pc.close_finished)
            assert outcome(pc.close()) is None  # idempotent
            with pytest.raises(CancelledError, match=r"127\.0\.0\.1"):
                await within(pc.connected())
            await until(lambda: served.eofs == 1)  # the peer saw the end of the stream
            await sleep(0.2)
            assert served.accepted == 1  # no more attempts
            assert events.kinds == ["attempting", "connected", "disconnected"]


@pytest_twisted.ensureDeferred
async def test_close_during_an_attempt_that_hangs() -> None:
    peer = Unresponsive()
    try:
        async with persistent(peer.where, timeout=WAIT_LONG, **FAST) as (pc, events):
            waiting = pc.connected()
            await events.until("attempting")
            await within(pc.close(), 3)  # abandoned at once, its socket closed
            with pytest.raises(CancelledError):
                await within(waiting)
        assert events.kinds == ["attempting"]  # no "failed" for the abandoned attempt
    finally:
        peer.close()


WAIT_LONG = 60.0


@pytest_twisted.ensureDeferred
async def test_close_during_a_tls_handshake_that_hangs() -> None:
    pytest.importorskip("OpenSSL")
    served = Mute()  # plain TCP: the client's handshake never completes
    async with serving(served) as server:
        where = tt.to_host_and_port(LOCAL, server.listening_on, tls=True)
        async with persistent(where, timeout=WAIT_LONG, **FAST) as (pc, events):
            await until(lambda: served.accepted == 1)
            await sleep(0.05)
            await within(pc.close(), 3)
        assert events.kinds == ["attempting"]
        await until(lambda: server.num_connections == 0)
        assert served.accepted == 1


@pytest_twisted.ensureDeferred
async def test_close_while_waiting_to_retry() -> None:
    probe = refused_port()
    try:
        events = Events()
        pc = tt.persistent_connection(
            tt.to_host_and_port(*probe.getsockname()), retry_policy=lambda n: 30, on_event=events
        )
        await events.until("failed")
        await within(pc.close(), 3)  # the retry's timer is cancelled (no_leaks checks)
        assert events.kinds == ["attempting", "failed"]
    finally:
        probe.close()


@pytest_twisted.ensureDeferred
async def test_close_from_a_callback_of_connected() -> None:
    """ClientService alone raises RuntimeError here (its state machine is re-entered)."""
    async with serving(Served()) as server:
        with logged_errors() as errors:
            pc = tt.persistent_connection(where_of(server), **FAST)
            closing: list[Deferred[None]] = []
            again: list[Any] = []

            def got(triple: Any) -> Any:
                again.append(pc.connected())  # re-asking is as safe
                closing.append(pc.close())
                return triple

            triple = await within(pc.connected().addCallback(got))
            await within(closing[0])
            assert triple[0].is_closed
            with pytest.raises(CancelledError):
                await within(again[0])
        assert errors == []


@pytest_twisted.ensureDeferred
async def test_close_from_on_event() -> None:
    async with serving(Served()) as server:
        with logged_errors() as errors:
            kinds: list[str] = []
            pc: tt.PersistentConnection

            def on_event(event: tt.ConnectionEvent) -> None:
                kinds.append(event.kind)
                if event.kind == "connected":
                    pc.close()

            pc = tt.persistent_connection(where_of(server), on_event=on_event, **FAST)
            await within(pc.close_finished)
        assert kinds == ["attempting", "connected", "disconnected"]
        assert errors == []


@pytest_twisted.ensureDeferred
async def test_cancelling_connected_leaves_the_connection_alone() -> None:
    probe = refused_port()
    try:
        async with persistent(tt.to_host_and_port(*probe.getsockname()), **FAST) as (pc, events):
            waiting = pc.connected()
            waiting.cancel()
            with pytest.raises(CancelledError):
                await within(waiting)
            count = len(events.of("attempting"))
            await events.until("attempting", count + 1)  # still trying
            # A cancelled wait holds nothing (ClientService's whenConnected would
            # keep each one until the next connection).
            for _ in range(1000):
                pc.connected().cancel()
            late = pc.connected(fail_after_failures=1).addTimeout(0.01, reactor)
            with pytest.raises(Exception):  # noqa: B017 (refused or timed out)
                await within(late)
            assert pc._waiters == []
    finally:
        probe.close()


# -- failures, timeouts, callbacks ---------------------------------------------


@pytest_twisted.ensureDeferred
async def test_each_attempt_has_its_timeout() -> None:
    peer = Unresponsive()
    try:
        async with persistent(peer.where, timeout=0.2, **FAST) as (_pc, events):
            await events.until("failed")
            reason = events.of("failed")[0].reason
            assert isinstance(reason, tt.ConnectTimeoutError)
            assert str(reason) == f"connecting to {peer.where} did not complete within 0.2 s"
            await events.until("attempting", 2)  # and it tries again
    finally:
        peer.close()


@pytest_twisted.ensureDeferred
async def test_an_on_event_that_raises_is_logged_and_reconnecting_goes_on() -> None:
    served = Served()

    def on_event(event: tt.ConnectionEvent) -> None:
        if event.kind == "connected" and not event.connection[2].is_closed:  # type: ignore[index]
            event.connection[2].write_line(b"reset")  # type: ignore[index]
        raise ValueError(f"broken on {event.kind}")

    async with serving(served) as server:
        with logged_errors() as errors:
            pc = tt.persistent_connection(where_of(server), on_event=on_event, **FAST)
            try:
                await until(lambda: served.accepted >= 3)
            finally:
                await within(pc.close())
        texts = [formatEvent(e) for e in errors]
        assert any("on_event failed on the connected event" in t for t in texts), texts
        assert all("broken on" in str(e["log_failure"].value) for e in errors), texts


@pytest_twisted.ensureDeferred
async def test_fifty_reconnects_leave_no_descriptor() -> None:
    served = Served()
    async with serving(served) as server:
        before = open_fds()
        events = Events()
        pc = tt.persistent_connection(where_of(server), on_event=events, retry_policy=lambda n: 0)
        try:
            for n in range(50):
                triple = await within(pc.connected())
                triple[2].write_line(b"reset")
                await events.until("disconnected", n + 1)
        finally:
            await within(pc.close())
        await until(lambda: server.num_connections == 0)
        await until(lambda: open_fds() <= before)
        assert served.accepted >= 50


# -- arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "kind", "name"),
    [
        ({"where": "127.0.0.1:9000"}, TypeError, "where"),
        ({"where": None}, TypeError, "where"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"timeout": math.nan}, ValueError, "timeout"),
        ({"timeout": math.inf}, ValueError, "timeout"),
        ({"timeout": "5"}, TypeError, "timeout"),
        ({"timeout": True}, TypeError, "timeout"),
        ({"reader_buffer_size": 0}, ValueError, "reader_buffer_size"),
        ({"reader_buffer_size": True}, TypeError, "reader_buffer_size"),
        ({"buffer_age_limit": -1.0}, ValueError, "buffer_age_limit"),
        ({"max_line_length": 1.5}, TypeError, "max_line_length"),
        ({"max_line_length": None}, TypeError, "max_line_length"),
        ({"retry_policy": 5}, TypeError, "retry_policy"),
        ({"on_event": "log"}, TypeError, "on_event"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], kind: type[Exception], name: str) -> None:
    arguments: dict[str, Any] = {"where": tt.to_host_and_port(LOCAL, 9)}
    arguments.update(kwargs)
    where = arguments.pop("where")
    with pytest.raises(kind, match=name):
        tt.persistent_connection(where, reactor=Clock(), **arguments)


@pytest.mark.parametrize(
    ("value", "kind"),
    [(0, ValueError), (-1, ValueError), (True, TypeError), (1.0, TypeError), ("2", TypeError)],
)
def test_bad_fail_after_failures(value: Any, kind: type[Exception]) -> None:
    clock = Clock()
    pc = tt.persistent_connection(tt.to_endpoint(Hanging()), timeout=None, reactor=clock)
    with pytest.raises(kind, match="fail_after_failures"):
        pc.connected(fail_after_failures=value)
    pc.close()
    clock.advance(0)
    assert outcome(pc.close_finished) is None


# -- the retry timing, on a Clock ----------------------------------------------


@implementer(IStreamClientEndpoint)
class Refusing:
    """An endpoint whose every attempt is refused at once."""

    def __init__(self) -> None:
        self.attempts = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        self.attempts += 1
        return fail(error.ConnectionRefusedError("fake"))


@implementer(IStreamClientEndpoint)
class Hanging:
    """An endpoint whose attempts never end, unless cancelled."""

    def __init__(self) -> None:
        self.cancelled = 0

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        def cancel(d: Deferred[Any]) -> None:
            self.cancelled += 1

        return Deferred(cancel)


def test_default_policy_is_twisted_backoff() -> None:
    policy = _checked_policy(None, tt.to_host_and_port(LOCAL, 9))
    for attempt in range(1, 40):
        least = min(1.5**attempt, 60.0)
        for _ in range(20):
            assert least - 0.0005 <= policy(attempt) <= least + 1.0005


def test_retry_timing_on_a_clock() -> None:
    clock = Clock()
    endpoint = Refusing()
    asked: list[int] = []

    def policy(attempt: int) -> float:
        asked.append(attempt)
        return 5.0 * attempt

    events = Events()
    pc = tt.persistent_connection(
        tt.to_endpoint(endpoint), timeout=None, retry_policy=policy, on_event=events,
        reactor=clock,
    )  # fmt: skip
    assert endpoint.attempts == 1 and asked == [1]
    clock.advance(0)  # the events are given in a later turn
    assert events.kinds == ["attempting", "failed"]
    assert isinstance(events.seen[1].reason, error.ConnectionRefusedError)
    clock.advance(4.9)
    assert endpoint.attempts == 1
    clock.advance(0.1)
    assert endpoint.attempts == 2 and asked == [1, 2]
    clock.advance(10)
    assert endpoint.attempts == 3 and asked == [1, 2, 3]
    # Closing while waiting cancels the timer.
    closing = pc.close()
    clock.advance(0)
    assert outcome(closing) is None
    assert clock.getDelayedCalls() == []
    assert endpoint.attempts == 3


def test_close_cancels_an_attempt_on_a_clock() -> None:
    clock = Clock()
    endpoint = Hanging()
    events = Events()
    pc = tt.persistent_connection(
        tt.to_endpoint(endpoint), timeout=None, on_event=events, reactor=clock
    )
    waiting = pc.connected()
    closing = pc.close()
    assert endpoint.cancelled == 1
    assert outcome(closing) is PENDING  # a later turn
    clock.advance(0)
    assert outcome(closing) is None
    assert events.kinds == ["attempting"]
    failure = outcome(waiting)
    assert failure.check(CancelledError) and "was closed" in str(failure.value)
    assert clock.getDelayedCalls() == []


@pytest.mark.parametrize("bad", [-1, math.nan, math.inf, "1", True, None, "raise"], ids=repr)
def test_a_bad_retry_policy_value_is_logged_once_and_replaced(bad: Any) -> None:
    clock = Clock()

    def policy(attempt: int) -> Any:
        if bad == "raise":
            raise ZeroDivisionError("no policy today")
        return bad

    with logged_errors() as errors:
        pc = tt.persistent_connection(
            tt.to_endpoint(Refusing()), timeout=None, retry_policy=policy, reactor=clock
        )
        for attempt in (1, 2):
            [call] = [c for c in clock.getDelayedCalls() if c.getTime() > clock.seconds()]
            delay = call.getTime() - clock.seconds()
            least = min(1.5**attempt, 60.0)
            assert least - 0.001 <= delay <= least + 1.001  # the default policy's
            clock.advance(delay)
        pc.close()
        clock.advance(0)
    [logged] = errors
    text = formatEvent(logged)
    assert text.startswith("Persistent connection to ")
    assert "retry_policy(1)" in text and "the default policy" in text
    if bad == "raise":
        assert logged["log_failure"].check(ZeroDivisionError)
    else:
        assert repr(bad) in text
