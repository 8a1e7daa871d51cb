"""
Tests of C{max_connections_per_peer} and of L{twisted_tcp.Server.stats}:
real sockets on 127.0.0.1 and 127.0.0.2 (two peers of one machine: Linux
routes all of 127.0.0.0/8 to the loopback), Unix sockets under C{tmp_path},
and the PROXY header behind C{haproxy:}.
"""

from __future__ import annotations

import socket
from typing import Any

import attrs
import pytest
import pytest_twisted
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, globalLogPublisher

import twisted_tcp as tt
from twisted_tcp._control import read_stats_line, stats_line
from twisted_tcp._server import _peer_key
from twisted_tcp._stats import DURATION_BUCKETS, DurationCounter, DurationHistogram, ServerStats

from .conftest import LOCAL, WAIT, echo, raw_client, serving, until, where_of, within
from .test_endpoints import HAPROXY, v1

OTHER = "127.0.0.2"


def client_from(host: str, port: int) -> socket.socket:
    """A plain socket connected from C{host} to 127.0.0.1:C{port}, then non-blocking."""
    return raw_client(port, source=host)


async def reset_or_closed(s: socket.socket) -> bool:
    """Wait until C{s} is closed by its peer (EOF or a reset); whether it was."""

    def ended() -> bool:
        try:
            return s.recv(1) == b""
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True

    await until(ended)
    return True


async def refused_from(host: str, port: int) -> bool:
    """
    Connect from C{host} to 127.0.0.1:C{port}; whether the server closed the
    connection at once (a reset, or the end of the stream).  The reset may
    come before the connect returns: that is a refusal too.
    """
    try:
        s = client_from(host, port)
    except ConnectionResetError:
        return True
    try:
        return await reset_or_closed(s)
    finally:
        s.close()


class Warnings:
    """The warnings logged while active, as text."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn and "max_connections_per_peer" in str(
            event.get("log_format")
        ):
            self.lines.append(str(event.get("peer")))

    def __enter__(self) -> Warnings:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)


async def silent(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    """A handler that waits for the end of the stream."""
    await reader.contents()


# -- max_connections_per_peer ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_peer_beyond_its_limit_is_closed_and_others_are_served() -> None:
    """
    With max_connections_per_peer=2 and max_connections=4, two silent
    sockets from 127.0.0.1 do not lock 127.0.0.2 out; a third from
    127.0.0.1 is closed at once, counted, and logged once per episode.
    """
    clients: list[socket.socket] = []
    with Warnings() as warnings:
        try:
            async with serving(silent, max_connections=4, max_connections_per_peer=2) as server:
                port = server.listening_on
                clients += [client_from(LOCAL, port), client_from(LOCAL, port)]
                await until(lambda: server.num_connections == 2)
                for _ in range(2):
                    assert await refused_from(LOCAL, port)
                assert warnings.lines == [LOCAL]  # once for the episode
                assert server.stats().refused_per_peer == 2
                other = client_from(OTHER, port)
                clients.append(other)
                await until(lambda: server.num_connections == 3)
                # One of the first leaves: 127.0.0.1 may connect again ...
                clients[0].close()
                await until(lambda: server.num_connections == 2)
                clients.append(client_from(LOCAL, port))
                await until(lambda: server.num_connections == 3)
                # ... and a new episode is logged anew.
                assert await refused_from(LOCAL, port)
                assert warnings.lines == [LOCAL, LOCAL]
                stats = server.stats()
                assert (stats.accepted, stats.refused_per_peer, stats.connections) == (7, 3, 3)
        finally:
            for s in clients:
                s.close()


async def park_one(server: tt.Server, header: bytes, clients: list[socket.socket]) -> None:
    """
    Behind haproxy: with max_connections=1, two clients accepted before
    they send their PROXY headers: the first is served, the second waits for
    a slot (parked).  Their sockets are added to C{clients}.
    """
    port = server.listening_on
    accepted = server.stats().accepted
    clients += [raw_client(port), raw_client(port)]
    await until(lambda: server.stats().accepted == accepted + 2)
    for s in clients[-2:]:
        s.sendall(header)
    await until(lambda: server.stats().parked == 1)
    assert server.stats().connections == 1


@pytest_twisted.ensureDeferred
async def test_behind_haproxy_the_limit_counts_the_address_of_the_header() -> None:
    """Under haproxy:, the peer is the client the PROXY header names, not the proxy."""
    clients: list[socket.socket] = []
    header_a = v1("203.0.113.7", "198.51.100.1", 1000, 443)
    header_b = v1("203.0.113.8", "198.51.100.1", 1000, 443)
    try:
        async with serving(silent, tt.on_endpoint(HAPROXY), max_connections_per_peer=1) as server:
            port = server.listening_on
            for header in (header_a, header_b):
                s = raw_client(port)
                clients.append(s)
                s.sendall(header)
            await until(lambda: server.num_connections == 2)
            again = raw_client(port)
            clients.append(again)
            again.sendall(header_a)
            assert await reset_or_closed(again)
            assert server.stats().refused_per_peer == 1
    finally:
        for s in clients:
            s.close()


@pytest_twisted.ensureDeferred
async def test_unix_socket_peers_have_no_per_peer_limit(tmp_path: Any) -> None:
    """Peers of a Unix socket have no address: the limit does not apply to them."""
    path = str(tmp_path / "s.sock")
    clients: list[socket.socket] = []
    try:
        async with serving(silent, tt.on_file(path), max_connections_per_peer=1) as server:
            for _ in range(3):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                clients.append(s)
                s.settimeout(WAIT)
                s.connect(path)
            await until(lambda: server.num_connections == 3)
            assert server.stats().refused_per_peer == 0
    finally:
        for s in clients:
            s.close()


@pytest.mark.parametrize(
    "address, key",
    [
        (IPv4Address("TCP", "192.0.2.1", 1), "192.0.2.1"),
        (IPv6Address("TCP", "2001:db8::1", 1), "2001:db8::1"),
        (IPv6Address("TCP", "::ffff:192.0.2.1", 1), "192.0.2.1"),
        (IPv6Address("TCP", "::ffff:c000:201", 1), "192.0.2.1"),
        (IPv6Address("TCP", "::FFFF:192.0.2.1", 1), "192.0.2.1"),
        (UNIXAddress(b"/run/x.sock"), None),
        (UNIXAddress(None), None),
    ],
)
def test_the_peer_key(address: Any, key: str | None) -> None:
    """An IPv4 address mapped into IPv6 counts as the IPv4 one; a Unix peer has none."""
    assert _peer_key(address) == key


@pytest.mark.parametrize(
    "value, error",
    [(0, ValueError), (-1, ValueError), (True, TypeError), (1.5, TypeError), ("2", TypeError)],
)
def test_max_connections_per_peer_is_checked(value: object, error: type[Exception]) -> None:
    """A count of at least 1, or None; not a bool, a float or a string."""
    with pytest.raises(error, match="max_connections_per_peer"):
        tt.Server.create(tt.on_port(0), echo, max_connections_per_peer=value)  # type: ignore[arg-type]
    assert tt.Settings(max_connections_per_peer=None).max_connections_per_peer is None


# -- stats -------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stats_count_connections_bytes_and_handlers() -> None:
    """What stats() says during a connection and after it, from a real exchange."""
    async with serving(echo) as server:
        assert server.stats() == ServerStats()
        where = where_of(server)
        seen_during: list[ServerStats] = []

        async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> None:
            writer.write_line(b"hello")
            assert await reader.read_line() == b"hello"
            seen_during.append(server.stats())

        await within(tt.with_connection(where, f, timeout=WAIT))
        await until(lambda: server.stats().handler_seconds.count == 1)
        during, after = seen_during[0], server.stats()
        assert (during.connections, during.bytes_received, during.bytes_sent) == (1, 6, 6)
        assert (after.connections, after.accepted) == (0, 1)
        assert (after.bytes_received, after.bytes_sent) == (6, 6)
        assert after.handler_errors == 0
        histogram = after.handler_seconds
        assert histogram.counts[-1] == 1 and 0 <= histogram.total < WAIT


@pytest_twisted.ensureDeferred
async def test_stats_count_handler_errors_and_parked_connections() -> None:
    """A failing handler is counted whatever the policy; so is a connection waiting for a slot."""
    gate: Deferred[None] = Deferred()

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        line = await reader.read_line()
        if line == b"fail":
            raise ValueError("as asked")
        await gate

    clients: list[socket.socket] = []
    try:
        async with serving(
            handler, tt.on_endpoint(HAPROXY), max_connections=1, on_handler_error="ignore"
        ) as server:
            failing = raw_client(server.listening_on)
            clients.append(failing)
            failing.sendall(v1("203.0.113.7", "198.51.100.1", 1000, 443) + b"fail\n")
            await until(lambda: server.stats().handler_errors == 1)
            await until(lambda: server.stats().connections == 0)
            await park_one(server, v1("203.0.113.8", "198.51.100.1", 1000, 443), clients)
            gate.callback(None)
    finally:
        for s in clients:
            s.close()


def test_duration_histogram_buckets_are_cumulative() -> None:
    """Durations land in the first bucket whose bound they do not exceed; counts add up."""
    counter = DurationCounter()
    for seconds in (0.0, 0.001, 0.002, 0.7, 1000.0):
        counter.add(seconds)
    histogram = counter.histogram()
    by_bound = dict(zip(histogram.bounds, histogram.counts, strict=True))
    assert (by_bound[0.001], by_bound[0.005], by_bound[0.5], by_bound[1.0]) == (2, 3, 3, 4)
    assert by_bound[300.0] == 4 and histogram.count == 5  # 1000 s is above every bound
    assert histogram.total == pytest.approx(1000.703)


def test_stats_add_up_and_survive_json() -> None:
    """Two workers' stats add field by field; an ended server keeps only its counters."""
    counter = DurationCounter()
    counter.add(0.02)
    a = ServerStats(connections=2, accepted=5, bytes_sent=10, handler_seconds=counter.histogram())
    b = ServerStats(connections=1, parked=3, accepted=1, handler_errors=1)
    both = a.plus(b)
    assert (both.connections, both.parked, both.accepted, both.bytes_sent) == (3, 3, 6, 10)
    assert both.handler_errors == 1 and both.handler_seconds.count == 1
    assert a.ended() == attrs.evolve(a, connections=0)
    assert ServerStats.from_json(both.to_json()) == both
    assert read_stats_line(stats_line(both)) == both  # as a worker says it to its supervisor
    assert read_stats_line(b"listening") is None
    with pytest.raises((KeyError, TypeError, ValueError)):
        ServerStats.from_json({"connections": "x"})
    bad = both.to_json()
    bad["handler_seconds"]["bounds"] = [1.0]
    with pytest.raises(ValueError, match="buckets"):
        ServerStats.from_json(bad)
    assert DurationHistogram().counts == (0,) * len(DURATION_BUCKETS)
