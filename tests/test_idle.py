"""The server's idle_timeout: connections that send and receive nothing are closed."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

import twisted_tcp as tt
from twisted_tcp.examples.echo import handle as echo

from .conftest import sleep, within


class ClockedReactor:
    """The real reactor for sockets, a Clock for twisted_tcp's own timers."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.callLater = clock.callLater
        self.seconds = clock.seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


@pytest_twisted.ensureDeferred
async def test_idle_connection_closed_after_timeout_measured_on_the_clock() -> None:
    clock = Clock()
    server = await within(
        tt.Server.create(
            tt.on_port(0, interface="127.0.0.1"),
            echo,
            idle_timeout=5,
            reactor=ClockedReactor(clock),
        )
    )
    sock, reader, writer = await within(
        tt.connect(tt.to_host_and_port("127.0.0.1", server.listening_on))
    )
    try:
        while server.num_connections != 1:
            await sleep(0.01)
        clock.advance(4)
        writer.write_line(b"still here")
        assert await within(reader.read_line()) == b"still here"
        clock.advance(4)  # 4 s since the last line: not idle yet
        await sleep(0.05)
        assert server.num_connections == 1
        clock.advance(1.5)  # 5.5 s since the last line
        assert await within(reader.read_line()) is None
        await within(sock.close())
        assert server.num_connections == 0
    finally:
        sock.abort()
        await within(server.close())


@pytest_twisted.ensureDeferred
async def test_idle_timeout_frees_the_slot_of_a_handler_that_never_returns() -> None:
    never: Deferred[None] = Deferred()
    started = []

    def stuck(address: object, reader: tt.Reader, writer: tt.Writer) -> Deferred[None]:
        started.append(address)
        return never

    server = await within(
        tt.Server.create(
            tt.on_port(0, interface="127.0.0.1"), stuck, idle_timeout=0.2, max_connections=1
        )
    )
    try:
        where = tt.to_host_and_port("127.0.0.1", server.listening_on)
        first, reader, _ = await within(tt.connect(where))
        assert await within(reader.read_line()) is None  # closed for idleness
        await within(first.close())
        # The only slot is free again: a second client gets a handler.
        second, reader2, _ = await within(tt.connect(where))
        while len(started) < 2:
            await sleep(0.01)
        assert await within(reader2.read_line()) is None
        await within(second.close())
        assert server.num_connections == 0
    finally:
        await within(server.close())


def test_idle_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        tt.Server.create(tt.on_port(0), echo, idle_timeout=0)


@pytest_twisted.ensureDeferred
async def test_a_long_send_is_not_idleness() -> None:
    """
    A reply that takes longer than idle_timeout to drain keeps the connection
    busy: idleness counts from when the last bytes left, not from when the
    reply was written.
    """
    clock = Clock()
    payload = b"x" * (16 << 20)

    async def big_reply(address: object, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.read_line()
        writer.write(payload)
        await reader.read_line()  # then wait, idle, for the client

    server = await within(
        tt.Server.create(
            tt.on_port(0, interface="127.0.0.1"),
            big_reply,
            idle_timeout=5,
            reactor=ClockedReactor(clock),
        )
    )
    sock, reader, writer = await within(
        tt.connect(tt.to_host_and_port("127.0.0.1", server.listening_on))
    )
    try:
        writer.write_line(b"go")
        await sleep(0.2)  # the reply fills the socket buffers; the client reads nothing yet
        for _ in range(11):  # t=11: pending all along (the check at t=10 saw it)
            clock.advance(1)
        assert server.num_connections == 1
        received = 0
        while received < len(payload):  # the client reads it all at t=11
            received += len(await within(reader.read()))
        await sleep(0.1)  # the server's buffer drains at t=11
        clock.advance(4.5)  # t=15.5: the check at t=15 finds 4 s idle
        await sleep(0.05)
        assert server.num_connections == 1
        clock.advance(1)  # t=16.5: 5.5 s idle
        assert await within(reader.read()) == b""
    finally:
        sock.abort()
        await within(server.close())
