"""
The public API as a type checker sees it: checked by mypy (see
pyproject.toml), never run.  A change that makes a public type vaguer
(C{Any}) or wrong fails C{mypy}.
"""

from __future__ import annotations

from typing import Literal, assert_type

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress

import twisted_tcp as tt


async def async_f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> int:
    return 1


def deferred_f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> Deferred[bytes]:
    return reader.read()


def plain_f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> str:
    return ""


def where_values() -> None:
    assert_type(tt.to_host_and_port("example.com", 80), tt.ToHostAndPort)
    assert_type(tt.to_file("/run/s.sock"), tt.ToFile)
    assert_type(tt.to_endpoint("tcp:example.com:80"), tt.ToEndpoint)
    assert_type(tt.on_port(9000), tt.OnPort)
    assert_type(tt.on_port_chosen_by_os, tt.OnPort)
    assert_type(tt.on_file("/run/s.sock"), tt.OnFile)
    assert_type(tt.on_endpoint("tcp:9000"), tt.OnEndpoint)


def connecting(where: tt.WhereToConnect) -> None:
    assert_type(tt.connect_sock(where), Deferred[tt.Socket])
    assert_type(tt.connect(where), Deferred[tuple[tt.Socket, tt.Reader, tt.Writer]])
    assert_type(tt.with_connection(where, async_f), Deferred[int])
    assert_type(tt.with_connection(where, deferred_f), Deferred[bytes])
    assert_type(tt.with_connection(where, plain_f), Deferred[str])


async def reading_and_writing(reader: tt.Reader, writer: tt.Writer) -> None:
    assert_type(await reader.read(), bytes)
    assert_type(await reader.read_line(), bytes | None)
    assert_type(await reader.really_read(4), bytes)
    assert_type(await reader.read_until(b"\0"), bytes | None)
    assert_type(await reader.contents(), bytes)
    async for line in reader.lines():
        assert_type(line, bytes)
    assert_type(writer.flushed(), Deferred[None])
    assert_type(writer.close(), Deferred[None])
    assert_type(writer.bytes_to_write, int)
    assert_type(writer.bytes_written, int)
    assert_type(reader.bytes_received, int)


async def handler(address: IAddress, reader: tt.Reader, writer: tt.Writer) -> None:
    pass


async def serving() -> None:
    server = await tt.Server.create(tt.on_port_chosen_by_os, handler)
    assert_type(server, tt.Server)
    assert_type(server.listening_on, int | str)
    stats = server.stats()
    assert_type(stats, tt.ServerStats)
    assert_type(stats.refused_per_peer, int)
    assert_type(stats.handler_seconds, tt.DurationHistogram)
    assert_type(stats.handler_seconds.counts, tuple[int, ...])


async def per_peer() -> None:
    server = await tt.Server.create(tt.on_port(0), handler, max_connections_per_peer=20)
    assert_type(server.stats().bytes_received, int)


def on_event(event: tt.ConnectionEvent) -> None:
    assert_type(event.kind, Literal["attempting", "failed", "connected", "disconnected"])
    assert_type(event.where, tt.WhereToConnect)
    assert_type(event.reason, BaseException | None)
    assert_type(event.connection, tuple[tt.Socket, tt.Reader, tt.Writer] | None)


async def persistent(where: tt.WhereToConnect) -> None:
    link = tt.persistent_connection(
        where, timeout=5, retry_policy=lambda failures: 2.0**failures, on_event=on_event
    )
    assert_type(link, tt.PersistentConnection)
    sock, reader, writer = await link.connected(fail_after_failures=3)
    assert_type(sock, tt.Socket)
    assert_type(reader, tt.Reader)
    assert_type(writer, tt.Writer)
    assert_type(link.current_connection, tuple[tt.Socket, tt.Reader, tt.Writer] | None)
    assert_type(link.close(), Deferred[None])
    assert_type(link.close_finished, Deferred[None])
    assert_type(link.is_closed, bool)
