"""
Shared test helpers.

Every test runs against the real reactor (pytest-twisted) on loopback
sockets.  The autouse fixture L{no_leaks} checks, after each test, that the
test left no file descriptor, reactor reader/writer or pending timer behind.
L{within} bounds every wait.
"""

from __future__ import annotations

import gc
import os
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure

import twisted_tcp
from twisted_tcp._sweeper import is_sweep

from .helpers.pki import Pki, make_pki

T = TypeVar("T")

# Twisted keeps one descriptor on /dev/null from the first listen on, to
# recover from EMFILE: open it now, so that no test is blamed for it.
tcp._reservedFD.reserve()

WAIT = 10.0  # seconds: the bound on any single wait in a test


def within(d: Any, seconds: float = WAIT) -> Deferred[Any]:
    """C{d} (a Deferred or a coroutine), failing with TimeoutError after C{seconds}."""
    if not isinstance(d, Deferred):
        d = ensureDeferred(d)
    return d.addTimeout(seconds, reactor)


def sleep(seconds: float) -> Deferred[None]:
    """A Deferred that fires after C{seconds} of real time."""
    return deferLater(reactor, seconds, lambda: None)


async def until(predicate: Callable[[], object], seconds: float = WAIT) -> None:
    """Wait (polling) until C{predicate()} is true, for at most C{seconds}."""

    async def poll() -> None:
        while not predicate():
            await sleep(0.005)

    await within(poll(), seconds)


async def read_to_end(s: socket.socket) -> bytes:
    """Read a non-blocking socket until the end of stream (or a reset)."""

    async def read() -> bytes:
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                await sleep(0.005)
                continue
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    return await within(read())  # type: ignore[no-any-return]


async def read_exactly(s: socket.socket, n: int) -> bytes:
    """Read exactly C{n} bytes from a non-blocking socket (failing if it ends first)."""

    async def read() -> bytes:
        data = b""
        while len(data) < n:
            try:
                chunk = s.recv(n - len(data))
            except BlockingIOError:
                await sleep(0.002)
                continue
            assert chunk, "closed early"
            data += chunk
        return data

    return await within(read())  # type: ignore[no-any-return]


PENDING = object()
"""What L{outcome} returns for a Deferred that has not fired."""


def outcome(d: Deferred[Any]) -> Any:
    """The result of C{d} (a Failure if it failed), or L{PENDING}; consumes failures."""
    box: list[Any] = []

    def grab(result: Any) -> Any:
        box.append(result)
        return result

    d.addBoth(grab)
    if not box:
        return PENDING
    result = box[0]
    d.addErrback(lambda _: None)
    return result


def result_of(d: Deferred[Any]) -> Any:
    """The result of C{d}, which must have fired; its failure is raised."""
    result = outcome(d)
    assert result is not PENDING, "the Deferred has not fired"
    if isinstance(result, Failure):
        result.raiseException()
    return result


def failure_of(d: Deferred[Any], kind: type[BaseException]) -> BaseException:
    """The exception C{d} failed with, which must be a C{kind}."""
    result = outcome(d)
    assert result is not PENDING, "the Deferred has not fired"
    assert isinstance(result, Failure), f"expected a failure, got {result!r}"
    assert result.check(kind), result
    return result.value


def is_error(event: dict[str, Any]) -> bool:
    """Whether a log event is an error (a failure, or error level and above)."""
    return bool(
        event.get("isError")
        or "log_failure" in event
        or event.get("log_level") in (LogLevel.error, LogLevel.critical)
    )


@contextmanager
def logged_errors() -> Iterator[list[dict[str, Any]]]:
    """Collect every error-level log event (failures included) while active."""
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if is_error(event):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        gc.collect()  # so that an unhandled error in a lost Deferred is logged now
        globalLogPublisher.removeObserver(observe)


def open_fds() -> set[int]:
    """The file descriptors this process has open."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listdir's own descriptor, already closed
        fds.add(int(name))
    return fds


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """
    The session's test PKI (tests/helpers/pki.py, made with trustme): an
    authority, a server certificate it signed for localhost and 127.0.0.1,
    and a self-signed certificate that nobody trusts.
    """
    return make_pki(tmp_path_factory.mktemp("pki"))


# -- servers and clients on loopback -------------------------------------------

LOCAL = "127.0.0.1"


def where_of(server: twisted_tcp.Server, host: str = LOCAL) -> twisted_tcp.WhereToConnect:
    """Where to connect to C{server}, listening on a port of C{host}."""
    return twisted_tcp.to_host_and_port(host, server.listening_on)


@asynccontextmanager
async def serving(
    handler: Callable[..., Any],
    where: twisted_tcp.WhereToListen | None = None,
    **kwargs: Any,
) -> AsyncIterator[twisted_tcp.Server]:
    """A running server (on 127.0.0.1 by default), closed with its connections and drained."""
    if where is None:
        where = twisted_tcp.on_port(0, interface=LOCAL)
    server = await within(twisted_tcp.Server.create(where, handler, **kwargs))
    try:
        yield server
    finally:
        await within(server.close(close_existing_connections=True))
        await within(server.drained())


async def echo(address: Any, reader: twisted_tcp.Reader, writer: twisted_tcp.Writer) -> None:
    """A line echo handler."""
    async for line in reader.lines():
        writer.write_line(line)


async def chat(where: twisted_tcp.WhereToConnect, lines: list[bytes]) -> list[bytes | None]:
    """Send each line and read one line back after each; then close."""

    async def f(
        sock: twisted_tcp.Socket, reader: twisted_tcp.Reader, writer: twisted_tcp.Writer
    ) -> list[bytes | None]:
        replies = []
        for line in lines:
            writer.write_line(line)
            replies.append(await reader.read_line())
        return replies

    return await within(twisted_tcp.with_connection(where, f, timeout=WAIT))  # type: ignore[no-any-return]


async def echo_in_batches(batches: int, size: int, backlog: int) -> int:
    """
    Serve C{batches} rounds of C{size} concurrent one-line echo connections
    with a fresh server, checking every reply; return how many handlers ran.
    """
    served = 0

    async def handler(
        address: Any, reader: twisted_tcp.Reader, writer: twisted_tcp.Writer
    ) -> None:
        nonlocal served
        served += 1
        await echo(address, reader, writer)

    async with serving(handler, backlog=backlog) as server:
        where = where_of(server)
        for batch in range(batches):
            results = await within(
                DeferredList(
                    [
                        Deferred.fromCoroutine(chat(where, [b"%d-%d" % (batch, i)]))
                        for i in range(size)
                    ],
                    consumeErrors=True,
                )
            )
            assert list(results) == [(True, [b"%d-%d" % (batch, i)]) for i in range(size)]
        await until(lambda: server.num_connections == 0)
    return served


def raw_client(
    port: int, host: str = LOCAL, rcvbuf: int | None = None, source: str | None = None
) -> socket.socket:
    """
    A plain socket connected to a server (the connect completes in the
    kernel's backlog, without the reactor), from the address C{source} if
    given, then made non-blocking.
    """
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if source is not None:
            s.bind((source, 0))
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.settimeout(WAIT)
        s.connect((host, port))
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def reset(s: socket.socket) -> None:
    """Close C{s} with SO_LINGER 0: the peer gets a RST."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _timers() -> list[Any]:
    """
    The reactor's pending delayed calls, but the writers' sweeper: one timer
    for all of the process's writers, which holds nothing open and ends by
    itself within a second (twisted_tcp._sweeper).
    """
    return [call for call in reactor.getDelayedCalls() if not is_sweep(call)]


def _reactor_state() -> tuple[set[Any], set[Any], int]:
    return set(reactor.getReaders()), set(reactor.getWriters()), len(_timers())


async def _settle(before: tuple[set[Any], set[Any], int], fds: set[int]) -> tuple[Any, ...]:
    """Let closing connections finish (at most 3 s); return what is still left."""
    for _ in range(300):
        readers, writers, calls = _reactor_state()
        extra_fds = open_fds() - fds
        if readers <= before[0] and writers <= before[1] and calls <= before[2] and not extra_fds:
            return ()
        await sleep(0.01)
    return (
        readers - before[0],
        writers - before[1],
        _timers(),
        {fd: _describe(fd) for fd in extra_fds},
    )


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a descriptor, a reactor reader/writer or a timer behind."""
    pytest_twisted.blockon(sleep(0))  # the reactor (and its wakers) is running
    before = _reactor_state()
    fds = open_fds()
    yield
    left = pytest_twisted.blockon(ensureDeferred(_settle(before, fds)))
    assert not left, f"the test left behind (readers, writers, delayed calls, fds): {left}"
