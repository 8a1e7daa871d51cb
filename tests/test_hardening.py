"""
Bad input and unusual but legitimate use: each test is one of the edge
cases that used to hang, leak or fail late, and checks that it now fails at
once with an error that says what is wrong, or works.
"""

from __future__ import annotations

import copy
import errno
import math
import os
import pickle
import re
import signal
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.logger import LogLevel, globalLogPublisher

import twisted_tcp as tt
import twisted_tcp._connect
from twisted_tcp._errors import (
    BufferAgeLimitError,
    ConnectInterruptedError,
    ConnectTimeoutError,
    IncompleteReadError,
    LineTooLongError,
    TLSHandshakeError,
)
from twisted_tcp.testing import run_handler

from .conftest import LOCAL, WAIT, echo, raw_client, reset, serving, sleep, until, within
from .processes import Process, start, twistd_command
from .test_writer import make as make_writer

__all__ = ["start"]  # the fixture, imported for the tests below

NAN, INF = math.nan, math.inf


@contextmanager
def alarm(seconds: int) -> Iterator[None]:
    """Bound a call that could block the reactor's thread: SIGALRM interrupts it."""

    def ring(signum: int, frame: Any) -> None:
        raise TimeoutError(f"blocked for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- hangs and leaks ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_listening_on_the_path_of_a_busy_server_never_blocks(tmp_path: Path) -> None:
    """
    A live server whose backlog is full holds the path: Server.create fails
    at once (it used to probe it with a blocking connect, for ever).
    """
    path = str(tmp_path / "busy.sock")
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    waiting: list[socket.socket] = []
    try:
        busy.bind(path)
        busy.listen(0)
        while True:  # fill its backlog
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            waiting.append(client)
            if client.connect_ex(path) != 0:
                break
        with alarm(5):
            attempt = tt.Server.create(tt.on_file(path), echo)
        with pytest.raises(CannotListenError, match="another server is listening"):
            await within(attempt)
        assert os.path.exists(path)  # not the stale socket of a dead server
    finally:
        for client in waiting:
            client.close()
        busy.close()


class Counted(Deferred[None]):
    """A Deferred that counts the callbacks added to it."""

    added = 0

    def addBoth(self, *args: Any, **kwargs: Any) -> Any:
        self.added += 1
        return super().addBoth(*args, **kwargs)


@pytest_twisted.ensureDeferred
async def test_connections_that_ended_are_not_held_until_the_next_sweep() -> None:
    """
    A connection's writer and its connect attempt's deadline are noted by
    the reactor's sweeper while they wait; once the connection is over they
    are dropped at once, not held (with the connection's reader, writer and
    buffers) until the sweep a second later, where every connection that
    ended meanwhile would still be alive for the garbage collector to walk.
    """
    from twisted_tcp._connection import Connection
    from twisted_tcp._sweeper import Deadline, sweeper_for

    noted = sweeper_for(reactor)._noted

    def ours() -> list[Any]:
        return [w for w in noted if isinstance(w, (tt.Writer, Deadline))]

    async def one_line(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> bytes | None:
        writer.write_line(b"ping")
        return await reader.read_line()

    before = len(ours())
    async with serving(echo) as server:
        where = tt.to_host_and_port(LOCAL, server.listening_on)
        for _ in range(20):
            assert await within(tt.with_connection(where, one_line, timeout=5)) == b"ping"
        await until(lambda: server.num_connections == 0)
        assert len(ours()) == before
    assert not [w for w in noted if isinstance(getattr(w, "_connection", None), Connection)]


@pytest_twisted.ensureDeferred
async def test_a_long_lived_interrupt_keeps_nothing_of_finished_attempts() -> None:
    """
    One interrupt Deferred (a shutdown signal, say) passed to many connects:
    once they are over it holds one callback, not one per attempt, and it
    still interrupts the attempts under way when it fires.
    """
    shutdown = Counted()
    async with serving(echo) as server:
        where = tt.to_host_and_port(LOCAL, server.listening_on)
        for _ in range(50):
            _, _, writer = await within(tt.connect(where, interrupt=shutdown))
            await within(writer.close())
            await within(tt.with_connection(where, lambda s, r, w: None, interrupt=shutdown))
        assert shutdown.added == 1
        assert not twisted_tcp._connect._interrupts._waiting[shutdown]
    silent = socket.socket()  # listens, never accepts: the attempt waits in its handshake
    try:
        silent.bind((LOCAL, 0))
        silent.listen(0)
        port = silent.getsockname()[1]
        where = tt.to_host_and_port("localhost", port, tls=True)
        attempts = [tt.connect(where, interrupt=shutdown) for _ in range(2)]
        await sleep(0.1)
        shutdown.callback(None)
        for attempt in attempts:
            with pytest.raises(ConnectInterruptedError):
                await within(attempt)
        # An interrupt that already fired stops an attempt at once.
        with pytest.raises(ConnectInterruptedError):
            await within(tt.connect(where, interrupt=shutdown))
    finally:
        silent.close()


def test_a_path_too_long_for_a_unix_socket_fails_at_once() -> None:
    for make in (tt.to_file, tt.on_file):
        with pytest.raises(ValueError, match=r"path is 200 bytes long, but .* at most 107"):
            make("s" * 200)
        make("s" * 107)


# -- values no one checked ------------------------------------------------------------


BAD_SECONDS = [
    (NAN, ValueError),
    (INF, ValueError),
    (-1, ValueError),
    (True, TypeError),
    ("1", TypeError),
    (b"1", TypeError),
]
BAD_COUNTS = [
    (NAN, TypeError),
    (INF, TypeError),
    (2.5, TypeError),
    (-1, ValueError),
    (0, ValueError),
    (True, TypeError),
    ("8", TypeError),
    (None, TypeError),
]
FIELDS = {
    "timeout": [*BAD_SECONDS, (0, ValueError)],
    "reader_buffer_size": BAD_COUNTS,
    "max_line_length": BAD_COUNTS,
    "buffer_age_limit": [*BAD_SECONDS, (0, ValueError)],
    "close_timeout": BAD_SECONDS,
    "idle_timeout": [*BAD_SECONDS, (0, ValueError)],
    "handshake_timeout": [*BAD_SECONDS, (0, ValueError), (None, TypeError)],
    "max_connections": BAD_COUNTS,
    "backlog": BAD_COUNTS,
    "shutdown_timeout": [*BAD_SECONDS, (None, TypeError)],
}
CASES = [(field, value, kind) for field, bad in FIELDS.items() for value, kind in bad]


@pytest.mark.parametrize(("field", "value", "kind"), CASES)
def test_settings_refuse_what_is_not_a_limit(field: str, value: Any, kind: type) -> None:
    with pytest.raises(kind, match=re.escape(field)):
        tt.Settings(**{field: value})


def test_settings_hold_each_default_once() -> None:
    assert tt.DEFAULTS == tt.Settings()
    assert tt.Settings(idle_timeout=5).idle_timeout == 5.0
    assert tt.Settings(buffer_age_limit=None, close_timeout=None, timeout=None).timeout is None
    assert attrs.evolve(tt.DEFAULTS, backlog=5).backlog == 5
    with pytest.raises(ValueError, match="backlog must be at least 1, not 0"):
        attrs.evolve(tt.DEFAULTS, backlog=0)
    assert tt.Settings.check("idle_timeout", 3) == 3.0
    with pytest.raises(
        ValueError, match=r"--idle-timeout must be .* or 'none' \(never\), not nan"
    ):
        tt.Settings.check("idle_timeout", NAN, label="--idle-timeout", none_as="'none'")
    assert "handshake" in tt.Settings.describe("handshake_timeout")


CONNECT_FIELDS = ["timeout", "reader_buffer_size", "max_line_length", "buffer_age_limit"]
SERVER_FIELDS = [f for f in FIELDS if f not in ("timeout", "shutdown_timeout")]


@pytest.mark.parametrize(("field", "value", "kind"), [c for c in CASES if c[0] in CONNECT_FIELDS])
def test_connect_checks_its_limits_when_called(field: str, value: Any, kind: type) -> None:
    where = tt.to_host_and_port(LOCAL, 9)
    with pytest.raises(kind, match=re.escape(field)):
        tt.connect(where, **{field: value})
    with pytest.raises(kind, match=re.escape(field)):
        tt.with_connection(where, lambda s, r, w: None, **{field: value})


@pytest.mark.parametrize(("field", "value", "kind"), [c for c in CASES if c[0] in SERVER_FIELDS])
def test_server_create_checks_its_limits_when_called(field: str, value: Any, kind: type) -> None:
    with pytest.raises(kind, match=re.escape(field)):
        tt.Server.create(tt.on_port(0, interface=LOCAL), echo, **{field: value})


def test_server_create_takes_settings_or_keywords() -> None:
    where = tt.on_port(0, interface=LOCAL)
    with pytest.raises(TypeError, match="either as settings= or as keyword arguments"):
        tt.Server.create(where, echo, settings=tt.DEFAULTS, backlog=3)
    with pytest.raises(TypeError, match="settings must be a Settings"):
        tt.Server.create(where, echo, settings={"backlog": 3})  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_server_with_settings_uses_them() -> None:
    settings = tt.Settings(max_line_length=4)
    async with serving(echo, settings=settings) as server:
        _, reader, writer = await within(
            tt.connect(tt.to_host_and_port(LOCAL, server.listening_on))
        )
        writer.write_line(b"four")
        writer.write_line(b"fives")
        assert await within(reader.read_line()) == b"four"
        assert await within(reader.read_line()) is None  # the handler failed on the long line
        await within(writer.close())


def test_connect_checks_interrupt() -> None:
    with pytest.raises(TypeError, match="interrupt must be a Deferred or None"):
        tt.connect(tt.to_host_and_port(LOCAL, 9), interrupt=5)  # type: ignore[arg-type]


def test_reader_reads_take_whole_numbers() -> None:
    reader = tt.Reader(None)
    for bad, kind in [(2.5, TypeError), (True, TypeError), ("1", TypeError), (0, ValueError)]:
        with pytest.raises(kind, match="max_bytes"):
            reader.read(bad)
    for bad, kind in [(1.0, TypeError), (None, TypeError), (-1, ValueError)]:
        with pytest.raises(kind, match="n must"):
            reader.really_read(bad)


def test_reader_writer_of_a_socket_checks_its_limits() -> None:
    from twisted_tcp._connection import Connection, Socket

    sock = Socket(Connection(Clock(), None))
    with pytest.raises(ValueError, match="max_line_length must be at least 1, not 0"):
        sock.reader_writer(max_line_length=0)
    with pytest.raises(ValueError, match="buffer_age_limit"):
        sock.reader_writer(buffer_age_limit=NAN)


@pytest.mark.parametrize("description", ["tcp:99999", "tcp6:65536", "haproxy:tcp:70000"])
def test_on_endpoint_with_a_port_out_of_range_names_it(description: str) -> None:
    with pytest.raises(ValueError, match=rf"{description!r}: the port must be between 0 and"):
        tt.on_endpoint(description)
    assert tt.on_endpoint("tcp:65535")


# -- handlers that would fail silently or late ---------------------------------------


def generator_handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> Iterator[Any]:
    yield reader.read_line()


async def async_generator_handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> Any:
    yield await reader.read_line()


class CallableGenerator:
    def __call__(self, address: Any, reader: tt.Reader, writer: tt.Writer) -> Iterator[Any]:
        yield None


def two_arguments(reader: tt.Reader, writer: tt.Writer) -> None:
    pass


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        (generator_handler, "generator_handler is a generator function"),
        (async_generator_handler, "is an async generator function"),
        (CallableGenerator(), "is a generator function"),
        (two_arguments, r"handler is called as handler\(address, reader, writer\), but two_arg"),
        (42, "handler must be callable"),
        (None, "handler must be callable"),
    ],
)
def test_handlers_that_could_never_run_are_refused(handler: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        tt.Server.create(tt.on_port(0, interface=LOCAL), handler)


def test_with_connection_refuses_an_f_that_could_never_run() -> None:
    where = tt.to_host_and_port(LOCAL, 9)
    with pytest.raises(TypeError, match=r"is a generator function.*'async def'"):
        tt.with_connection(where, generator_handler)
    with pytest.raises(TypeError, match=r"with_connection's f is called as f\(socket, reader"):
        tt.with_connection(where, two_arguments)


def test_writes_refuse_what_is_not_bytes_at_the_call() -> None:
    writer, transport, _ = make_writer()
    writer.gather()  # as while the reader hands a received chunk to the handler
    for call in (
        lambda: writer.write_line("L" * 20000),  # type: ignore[arg-type]
        lambda: writer.write_line("short"),  # type: ignore[arg-type]
        lambda: writer.write("text"),  # type: ignore[arg-type]
        lambda: writer.write(bytearray(b"x")),  # type: ignore[arg-type]
        lambda: writer.write_sequence([b"a", "b"]),  # type: ignore[list-item]
        lambda: writer.write_sequence(b"ab"),  # type: ignore[arg-type]
    ):
        with pytest.raises(TypeError, match="must be"):
            call()
    writer.write_line(b"fine")
    writer.send_gathered()
    assert transport.value() == b"fine\n"


def test_a_handler_writing_text_after_a_read_gets_the_error_there() -> None:
    """
    The TypeError reaches the handler at its write; its other replies all go
    out.  (In memory: the handler writes while the reader hands it a received
    chunk, its writes gathered, as over a socket.)
    """
    caught: list[BaseException] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        async for line in reader.lines():
            try:
                writer.write_line("L" * 20000)  # type: ignore[arg-type]
            except TypeError as e:
                caught.append(e)
            writer.write_line(line)

    run = run_handler(handler, b"".join(b"line %d\n" % i for i in range(3)))
    assert run.written == b"line 0\nline 1\nline 2\n"
    assert run.ended and run.error is None
    assert len(caught) == 3 and "encode it first" in str(caught[0])


# -- semantics ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_reader_knows_the_end_before_the_writer_says_closed() -> None:
    async with serving(echo) as server:
        sock, reader, writer = await within(
            tt.connect(tt.to_host_and_port(LOCAL, server.listening_on))
        )
        seen: list[bool] = []
        writer.close().addCallback(lambda _: seen.append(reader.at_eof))
        await within(sock.close_finished())
        assert seen == [True]
        assert sock.is_closed and reader.at_eof


@pytest_twisted.ensureDeferred
async def test_after_a_reset_the_reader_is_at_the_end_when_consumer_left_fires() -> None:
    seen: list[bool] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await writer.consumer_left()
        seen.append(reader.at_eof)

    async with serving(handler) as server:
        client = raw_client(server.listening_on)
        await until(lambda: server.num_connections == 1)
        reset(client)
        await until(lambda: seen)
    assert seen == [True]


@pytest.mark.parametrize(
    "error",
    [
        ConnectTimeoutError(tt.to_host_and_port("example.com", 80), 3.0),
        ConnectInterruptedError(tt.to_file("/run/app.sock")),
        TLSHandshakeError(tt.to_host_and_port("example.com", 443), "certificate verify failed"),
        LineTooLongError(5),
        IncompleteReadError(b"ab", 5),
        IncompleteReadError(b"ab", b"\r\n"),
        BufferAgeLimitError("198.51.100.7:99", 2.0, 10),
        tt.ReadInProgressError("a read is pending"),
        tt.WriterClosedError("closed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_errors_survive_pickle_and_copy(error: BaseException) -> None:
    for twin in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert type(twin) is type(error)
        assert str(twin) == str(error)
        assert twin.__dict__ == error.__dict__


def test_lowering_the_buffer_age_limit_takes_effect_at_once() -> None:
    writer, transport, clock = make_writer(buffer_age_limit=100.0)
    writer.write(b"x" * 10)  # never drained: the peer does not read
    clock.advance(10)
    assert transport.abort_calls == 0
    writer.buffer_age_limit = 30.0
    assert transport.abort_calls == 0  # 10 s old: within the new limit
    clock.advance(19.9)
    assert transport.abort_calls == 0
    clock.advance(0.2)
    assert transport.abort_calls == 1  # at the new limit, not the old one
    assert isinstance(writer.error, BufferAgeLimitError)


def test_lowering_the_limit_below_the_age_of_waiting_bytes_closes_now() -> None:
    writer, transport, clock = make_writer(buffer_age_limit=100.0)
    writer.write(b"x")
    clock.advance(10)
    writer.buffer_age_limit = 5
    assert transport.abort_calls == 1
    assert not clock.getDelayedCalls()
    with pytest.raises(ValueError, match="buffer_age_limit"):
        writer.buffer_age_limit = NAN


@pytest_twisted.ensureDeferred
async def test_handler_failures_are_logged_at_error_level() -> None:
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if "handler for" in str(event.get("log_format", "")):
            events.append(event)

    async def fails(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        raise RuntimeError("boom")

    globalLogPublisher.addObserver(observe)
    try:
        async with serving(fails) as server:
            _, reader, writer = await within(
                tt.connect(tt.to_host_and_port(LOCAL, server.listening_on))
            )
            assert await within(reader.read()) == b""
            await within(writer.close())
            await until(lambda: events)
    finally:
        globalLogPublisher.removeObserver(observe)
    assert [event["log_level"] for event in events] == [LogLevel.error]
    events[0]["log_failure"].trap(RuntimeError)


# -- servers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("max_connections", "bursts"), [(2, [5]), (10, [4, 14])], ids=["one burst", "two bursts"]
)
@pytest_twisted.ensureDeferred
async def test_a_server_accepts_no_more_than_its_free_slots(
    max_connections: int, bursts: list[int]
) -> None:
    """
    Clients that connect in bursts to a server with few free slots: as many
    as are free are accepted, the others stay in the kernel's backlog, where
    another process on the same socket (a worker) could take them; none is
    accepted and parked without a handler -- also after a first burst, after
    which the port raised the number it accepts per read (it is fitted to
    the free slots after each read).
    """
    held: Deferred[None] = Deferred()

    async def hold(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await held

    clients: list[socket.socket] = []
    async with serving(hold, max_connections=max_connections) as server:
        port: Any = server._port
        assert port.numberAccepts <= max_connections  # (the attribute of Twisted's ports used)
        try:
            for burst in bursts:
                clients += [raw_client(server.listening_on) for _ in range(burst)]
                served = min(len(clients), max_connections)
                await until(lambda served=served: server.num_connections == served)
                await sleep(0.1)
                assert port.numberAccepts <= max(1, max_connections - served)
                assert not server._parked
        finally:
            for client in clients:
                client.close()
            held.callback(None)


@pytest_twisted.ensureDeferred
async def test_the_backlog_of_a_unix_socket_is_the_one_given(tmp_path: Path) -> None:
    """
    With max_connections=1 held, new clients wait in the kernel's backlog:
    about backlog of them (3 here) get in, not Twisted's 50.
    """
    held: Deferred[None] = Deferred()

    async def hold(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await held

    path = str(tmp_path / "small.sock")
    waiting: list[socket.socket] = []
    async with serving(hold, tt.on_file(path), max_connections=1, backlog=3) as server:
        try:
            first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            waiting.append(first)
            first.connect(path)
            await until(lambda: server.num_connections == 1)
            await sleep(0.05)  # accepting is paused now
            for _ in range(60):
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.setblocking(False)
                waiting.append(client)
                if client.connect_ex(path) in (errno.EAGAIN, errno.ECONNREFUSED):
                    break
            queued = len(waiting) - 2  # the first, and the one refused
            assert 1 <= queued <= 5, queued
        finally:
            for client in waiting:
                client.close()
            held.callback(None)


# -- twistd ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_twistd_usage_error_is_one_line_first(start: Callable[..., Process]) -> None:
    process = start(*twistd_command(), "-n", "tcpserver", "--port", "\u00b2", "--handler", "x:y")
    assert await process.exited() == 1
    lines = process.output().splitlines()
    assert lines[0].startswith("twistd tcpserver: --port must be a port number"), lines
    assert lines[1] == "Run 'twistd tcpserver --help' for the options."
    assert len(lines) == 2, lines


@pytest_twisted.ensureDeferred
async def test_twistd_daemon_says_why_it_cannot_listen(
    start: Callable[..., Process], tmp_path: Path
) -> None:
    """Without -n, the reason reaches the terminal: twistd passes it on cut to 100 bytes."""
    taken = socket.socket()
    try:
        taken.bind((LOCAL, 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(
            *twistd_command(),
            f"--pidfile={tmp_path / 'twistd.pid'}",
            f"--logfile={tmp_path / 'twistd.log'}",
            "tcpserver",
            "--port", f"tcp:{port}:interface={LOCAL}",
            "--handler", "twisted_tcp.examples.echo:handle",
        )  # fmt: skip
        assert await process.exited() == 1
    finally:
        taken.close()
    assert "[Errno 98] Address already in use" in process.output(), process.output()


@pytest_twisted.ensureDeferred
async def test_twistd_logs_no_private_class_names(start: Callable[..., Process]) -> None:
    from .test_plugin import ECHO, listening

    process = start(
        *twistd_command(), "-n", "--pidfile=", "tcpserver", "--port", "0", "--handler", ECHO
    )
    await listening(process, ECHO)
    output = process.output()
    assert re.search(r"twisted_tcp server starting on \d+", output), output
    assert "_ServerFactory" not in output


@pytest_twisted.ensureDeferred
async def test_workers_relay_what_a_child_process_prints(start: Callable[..., Process]) -> None:
    """A worker's stdout is no longer its control channel: a child's output is logged."""
    from .test_workers import LISTENING

    handler = "tests.helpers.twistd_handlers:child_prints"
    process = start(
        *twistd_command(), "-n", "--pidfile=", "tcpserver",
        "--port", f"tcp:0:interface={LOCAL}", "--workers", "2", "--shutdown-timeout", "2",
        "--handler", handler,
    )  # fmt: skip
    match = await process.wait_for(LISTENING)
    port = int(match.group(1).rsplit(":", 1)[1])
    await process.wait_for(re.compile(r"worker 2 \(pid \d+\) started"))

    async def ask(sock: Any, reader: tt.Reader, writer: tt.Writer) -> bytes | None:
        return await reader.read_line()

    where = tt.to_host_and_port(LOCAL, port)
    assert await within(tt.with_connection(where, ask, timeout=WAIT)) == b"done"
    await process.wait_for(re.compile(r"\[worker \d pid \d+\] hello from a child process"))
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == 0


def test_twistd_refuses_a_generator_handler() -> None:
    from twisted.python.usage import UsageError

    from twisted_tcp import _twistd

    with pytest.raises(UsageError, match="yields is a generator function"):
        _twistd.Options().parseOptions(
            ["--port", "0", "--handler", "tests.helpers.twistd_handlers:yields"]
        )


@pytest_twisted.ensureDeferred
async def test_many_connects_with_one_interrupt_all_succeed() -> None:
    """The shared interrupt does not disturb concurrent attempts that succeed."""
    shutdown = Counted()
    async with serving(echo) as server:
        where = tt.to_host_and_port(LOCAL, server.listening_on)
        results = await within(
            DeferredList(
                [tt.connect(where, interrupt=shutdown) for _ in range(20)], consumeErrors=True
            )
        )
        assert all(ok for ok, _ in results)
        for _, (_, _, writer) in results:
            await within(writer.close())
    assert shutdown.added == 1
    shutdown.callback(None)
    assert reactor.running


def test_writer_close_timeout_is_checked_when_set() -> None:
    writer, _, _ = make_writer()
    writer.close_timeout = 0
    assert writer.close_timeout == 0.0
    writer.close_timeout = None
    for bad, kind in [(NAN, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError)]:
        with pytest.raises(kind, match="close_timeout"):
            writer.close_timeout = bad


@pytest_twisted.ensureDeferred
async def test_server_close_takes_a_bool() -> None:
    async with serving(echo) as server:
        with pytest.raises(TypeError, match="close_existing_connections must be a bool"):
            server.close("yes")  # type: ignore[arg-type]


@pytest_twisted.ensureDeferred
async def test_the_peers_fin_ends_a_finished_connection_in_the_same_turn() -> None:
    """
    The client sends a line, reads the echo and ends its side: the handler
    ends, and with every byte already sent the connection closes at once,
    not on the transport's next turn (no write of nothing, no extra poll).
    Twisted's socket transports hold the attributes this relies on.
    """
    transports: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        transports.append(writer.socket.transport)
        await echo(address, reader, writer)

    async with serving(handler) as server:
        client = raw_client(server.listening_on)
        try:
            client.sendall(b"hi\n")
            await until(lambda: _received(client) == b"hi\n")
            transport = transports[0]
            assert (transport.dataBuffer, transport.offset, transport._tempDataLen) == (b"", 0, 0)
            writes: list[None] = []
            real_do_write = transport.doWrite
            transport.doWrite = lambda: (writes.append(None), real_do_write())[1]
            client.shutdown(socket.SHUT_WR)
            await until(lambda: server.num_connections == 0)
            assert writes == []
            assert transport.disconnected
        finally:
            client.close()


def _received(client: socket.socket) -> bytes:
    try:
        return client.recv(100)
    except BlockingIOError:
        return b""


def test_limits_given_again_are_checked_as_the_first_time() -> None:
    """A kept Settings never lets a bool pass for the int or float it equals."""
    where = tt.to_host_and_port(LOCAL, 9)
    with pytest.raises(ValueError, match="timeout"):
        tt.connect(where, timeout=0)
    tt.connect(where, timeout=1).addErrback(lambda _: None).cancel()
    with pytest.raises(TypeError, match="timeout"):
        tt.connect(where, timeout=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="max_line_length"):
        tt.connect(where, max_line_length=[1])  # type: ignore[arg-type]


def test_a_function_handler_is_checked_without_inspect() -> None:
    """The quick check of plain functions agrees with inspect's on what it accepts."""

    async def three(a: Any, b: Any, c: Any) -> None: ...
    def star(*args: Any) -> None: ...
    def defaults(a: Any, b: Any, c: Any, d: Any = 1) -> None: ...
    def keyword_only(a: Any, b: Any, c: Any, *, d: Any) -> None: ...
    def four(a: Any, b: Any, c: Any, d: Any) -> None: ...

    from twisted_tcp._handler import check_handler

    call = "handler(address, reader, writer)"
    for ok in (three, star, defaults):
        check_handler(ok, "handler", call)
    for bad in (keyword_only, four):
        with pytest.raises(TypeError, match="cannot be"):
            check_handler(bad, "handler", call)
