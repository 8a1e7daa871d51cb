"""
Twisted endpoints as where-values: C{to_endpoint} and C{on_endpoint}
(descriptions and endpoint objects, TCP, Unix, TLS), IPv6 and names that
resolve to both families, the PROXY protocol behind C{haproxy:}, and
C{systemd:} sockets handed to a real C{twistd} subprocess.

Everything runs over real sockets on 127.0.0.1, [::1] and Unix paths in
tmp_path.  Names are resolved by a fake resolver reached through a reactor
proxy (never the global resolver, never /etc/hosts); a connect that never
fires is a stub endpoint driven by a Clock.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import socket
import struct
import subprocess
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import endpoints, error, reactor
from twisted.internet._resolver import HostResolution
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IProtocolFactory,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
    IResolutionReceiver,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

import twisted_tcp as tt
from twisted_tcp import _haproxy
from twisted_tcp._where import show_address

from .conftest import (
    LOCAL,
    PENDING,
    WAIT,
    echo,
    failure_of,
    logged_errors,
    outcome,
    raw_client,
    serving,
    sleep,
    until,
    where_of,
    within,
)
from .helpers.pki import Pki
from .processes import Process, start, subprocess_env, twistd_command

__all__ = ["start"]  # the fixture, imported for the tests below

V6 = "::1"
TELL = "tests.helpers.endpoint_handlers:tell_address"
LISTENING = re.compile(r"twisted_tcp tcpserver listening on (\S+) \(handler (\S+)\)")


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((V6, 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")


async def talk(where: tt.WhereToConnect, *lines: bytes, **kwargs: Any) -> list[bytes]:
    """Connect, send C{lines}, half-close, and return every line received."""

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> list[bytes]:
        for line in lines:
            writer.write_line(line)
        await writer.write_eof()
        return [line async for line in reader.lines()]

    return await within(tt.with_connection(where, f, timeout=WAIT, **kwargs))  # type: ignore[no-any-return]


class Recorder:
    """A handler that records its address, writes it on a line, then echoes."""

    def __init__(self) -> None:
        self.addresses: list[Any] = []

    async def __call__(self, address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        self.addresses.append(address)
        writer.write_line(show_address(address).encode())
        await echo(address, reader, writer)


# -- to_endpoint and on_endpoint: values ------------------------------------------------


@pytest.mark.parametrize(
    ("description", "kind"),
    [
        ("tcp:host=127.0.0.1:port=80", endpoints.TCP4ClientEndpoint),
        ("tcp:127.0.0.1:80", endpoints.TCP4ClientEndpoint),
        ("unix:path=/run/s.sock", endpoints.UNIXClientEndpoint),
        ("unix:/run/s.sock", endpoints.UNIXClientEndpoint),
    ],
)
def test_to_endpoint_description_round_trip(description: str, kind: type) -> None:
    """A client description is kept as given (str, repr, equality), made with the reactor given."""
    where = tt.to_endpoint(description)
    assert isinstance(where, tt.WhereToConnect)
    assert str(where) == description
    assert repr(where) == f"to_endpoint({description!r})"
    assert where == tt.to_endpoint(description)
    assert hash(where) == hash(tt.to_endpoint(description))
    memory = MemoryReactorClock()
    endpoint = where.endpoint(memory, 5.0)
    assert isinstance(endpoint, kind)
    assert endpoint._reactor is memory  # type: ignore[attr-defined]
    assert where.endpoint(memory, 5.0) is not endpoint  # a fresh one at every connect


def test_to_endpoint_description_connects_where_it_says() -> None:
    """The endpoint made from a description connects to its host and port, or its path."""
    memory = MemoryReactorClock()
    tt.to_endpoint("tcp:host=127.0.0.1:port=8080").endpoint(memory, 7.0).connect(Factory())
    host, port, *_ = memory.tcpClients[0]
    assert (host, port) == ("127.0.0.1", 8080)
    tt.to_endpoint("unix:path=/run/x.sock").endpoint(memory, 7.0).connect(Factory())
    assert memory.unixClients[0][0] == "/run/x.sock"


def test_to_endpoint_tls_description_is_made_without_a_warning() -> None:
    """Making a tls: where-value warns of nothing (and so also works with warnings as errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        where = tt.to_endpoint("tls:localhost:443")
    assert str(where) == "tls:localhost:443"


def test_to_endpoint_object_is_used_as_it_is() -> None:
    """An endpoint object is returned as given, whatever reactor the connect uses."""
    endpoint = endpoints.TCP4ClientEndpoint(MemoryReactorClock(), "127.0.0.1", 80)
    where = tt.to_endpoint(endpoint)
    assert where.endpoint(MemoryReactorClock(), 5.0) is endpoint
    assert str(where) == "TCP4ClientEndpoint endpoint"
    assert "TCP4ClientEndpoint" in repr(where)
    assert where == tt.to_endpoint(endpoint)


@pytest.mark.parametrize(
    ("description", "kind"),
    [
        ("tcp:0:interface=127.0.0.1", endpoints.TCP4ServerEndpoint),
        ("tcp:port=9000:backlog=5", endpoints.TCP4ServerEndpoint),
        (r"tcp6:0:interface=\:\:1", endpoints.TCP6ServerEndpoint),
        ("unix:/run/s.sock", endpoints.UNIXServerEndpoint),
        ("unix:address=/run/s.sock:lockfile=0", endpoints.UNIXServerEndpoint),
        ("haproxy:tcp:0:interface=127.0.0.1", endpoints.TCP4ServerEndpoint),
        ("haproxy:unix:/run/s.sock", endpoints.UNIXServerEndpoint),
    ],
)
def test_on_endpoint_description_round_trip(description: str, kind: type) -> None:
    """
    A server description is kept as given and made with the reactor given;
    under C{haproxy:}, the endpoint is the wrapped one (the PROXY header is
    read by twisted_tcp's own wrapper, in C{listen}).
    """
    where = tt.on_endpoint(description)
    assert isinstance(where, tt.WhereToListen)
    assert str(where) == description
    assert repr(where) == f"on_endpoint({description!r})"
    assert where == tt.on_endpoint(description)
    memory = MemoryReactorClock()
    endpoint = where.endpoint(memory, 50)
    assert isinstance(endpoint, kind)
    assert endpoint._reactor is memory  # type: ignore[attr-defined]


def test_on_endpoint_object_is_used_as_it_is() -> None:
    endpoint = endpoints.TCP4ServerEndpoint(MemoryReactorClock(), 0, interface=LOCAL)
    where = tt.on_endpoint(endpoint)
    assert where.endpoint(MemoryReactorClock(), 50) is endpoint
    assert str(where) == "TCP4ServerEndpoint endpoint"


@pytest.mark.parametrize(
    "description", ["nosuch:1", "tcp:host=127.0.0.1:port=80:bogus=1", "", "tcp:host=h:port=x"]
)
def test_to_endpoint_bad_description_is_a_value_error_naming_it(description: str) -> None:
    with pytest.raises(ValueError, match="not a valid client endpoint description") as info:
        tt.to_endpoint(description)
    assert repr(description) in str(info.value)


@pytest.mark.parametrize(
    "description", ["nosuch:1", "tcp:abc", "tcp:1:bogus=2", "80", "", "haproxy:nosuch:1"]
)
def test_on_endpoint_bad_description_is_a_value_error_naming_it(description: str) -> None:
    with pytest.raises(ValueError, match="not a valid server endpoint description") as info:
        tt.on_endpoint(description)
    assert repr(description) in str(info.value)


def test_systemd_without_sockets_is_a_value_error_with_a_hint() -> None:
    """This process was given no socket: a systemd: description says so when made."""
    assert "LISTEN_FDS" not in os.environ
    with pytest.raises(ValueError, match="LISTEN_FDS") as info:
        tt.on_endpoint("systemd:domain=INET:index=0")
    assert "'systemd:domain=INET:index=0'" in str(info.value)


def test_wrong_types_are_type_errors() -> None:
    client = endpoints.TCP4ClientEndpoint(MemoryReactorClock(), LOCAL, 80)
    server = endpoints.TCP4ServerEndpoint(MemoryReactorClock(), 0)
    wrong: object
    for wrong in (80, b"tcp:host=h:port=1", None, server):
        with pytest.raises(TypeError, match="IStreamClientEndpoint"):
            tt.to_endpoint(wrong)  # type: ignore[arg-type]
    for wrong in (80, b"tcp:0", None, client):
        with pytest.raises(TypeError, match="IStreamServerEndpoint"):
            tt.on_endpoint(wrong)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="where must be made by"):
        tt.connect(tt.on_endpoint("tcp:0"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="where_to_listen must be made by"):
        tt.Server.create(tt.to_endpoint("tcp:host=h:port=1"), echo)  # type: ignore[arg-type]


# -- to_endpoint and on_endpoint: real connections ------------------------------------


@pytest_twisted.ensureDeferred
async def test_tcp_descriptions_both_ways() -> None:
    """A server on a tcp: description serves a client on a tcp: description, by every connect."""
    recorder = Recorder()
    async with serving(recorder, tt.on_endpoint(f"tcp:0:interface={LOCAL}")) as server:
        port = server.listening_on
        assert isinstance(port, int) and port > 0
        where = tt.to_endpoint(f"tcp:host={LOCAL}:port={port}")
        replies = await talk(where, b"hello")
        assert replies[1:] == [b"hello"]
        assert replies[0] == f"{LOCAL}:".encode() + replies[0].rsplit(b":", 1)[1]

        sock, reader, writer = await within(tt.connect(where, timeout=WAIT))
        try:
            assert sock.peer_address == IPv4Address("TCP", LOCAL, port)
            writer.write_line(b"by connect")
            assert await within(reader.read_line()) == show_address(sock.local_address).encode()
            assert await within(reader.read_line()) == b"by connect"
        finally:
            await within(writer.close())

        raw = await within(tt.connect_sock(where, timeout=WAIT))
        try:
            reader, writer = raw.reader_writer()
            assert await within(reader.read_line()) == show_address(raw.local_address).encode()
        finally:
            await within(writer.close())
        assert len(recorder.addresses) == 3


@pytest_twisted.ensureDeferred
async def test_endpoint_objects_both_ways() -> None:
    """Endpoint objects made by the caller, for the server and the client."""
    server_endpoint = endpoints.TCP4ServerEndpoint(reactor, 0, interface=LOCAL)
    async with serving(echo, tt.on_endpoint(server_endpoint)) as server:
        port = server.listening_on
        assert isinstance(port, int)
        client_endpoint = endpoints.TCP4ClientEndpoint(reactor, LOCAL, port)
        assert await talk(tt.to_endpoint(client_endpoint), b"a", b"b") == [b"a", b"b"]
        # The same object again: an endpoint may be connected more than once.
        assert await talk(tt.to_endpoint(client_endpoint), b"c") == [b"c"]


@pytest_twisted.ensureDeferred
async def test_unix_descriptions_both_ways(tmp_path: Path) -> None:
    """
    unix: descriptions on both sides; the handler sees a Unix peer; the
    socket file and Twisted's lock file are gone once the server closes.
    """
    path = tmp_path / "s.sock"
    recorder = Recorder()
    async with serving(recorder, tt.on_endpoint(f"unix:{path}")) as server:
        assert server.listening_on == str(path)
        assert path.exists()
        for where in (tt.to_endpoint(f"unix:path={path}"), tt.to_endpoint(f"unix:{path}")):
            replies = await talk(where, b"over unix")
            assert replies[1:] == [b"over unix"]
        assert all(isinstance(a, UNIXAddress) for a in recorder.addresses)
        assert len(recorder.addresses) == 2
    assert not path.exists()
    assert not Path(f"{path}.lock").exists()


@pytest_twisted.ensureDeferred
async def test_endpoint_errors_name_the_description(tmp_path: Path) -> None:
    """A refused TCP connect and a missing Unix path fail with errors that name the description."""
    probe = socket.socket()
    probe.bind((LOCAL, 0))
    port = probe.getsockname()[1]  # bound, never listening: refused
    try:
        description = f"tcp:host={LOCAL}:port={port}"
        with pytest.raises(error.ConnectionRefusedError, match=re.escape(description)):
            await within(tt.connect(tt.to_endpoint(description), timeout=WAIT))
    finally:
        probe.close()
    description = f"unix:path={tmp_path / 'nobody.sock'}"
    with pytest.raises(error.ConnectError, match=re.escape(description)):
        await within(tt.connect(tt.to_endpoint(description), timeout=WAIT))


# -- deadline and interrupt on an endpoint that never connects --------------------------


@implementer(IStreamClientEndpoint)
class NeverConnects:
    """A client endpoint whose connect never fires, and which records its cancellation."""

    def __init__(self) -> None:
        self.attempts: list[Deferred[Any]] = []
        self.cancelled = 0

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(self._cancel)
        self.attempts.append(d)
        return d

    def _cancel(self, d: Deferred[Any]) -> None:
        self.cancelled += 1


CONNECTS: dict[str, Callable[..., Deferred[Any]]] = {
    "connect": tt.connect,
    "connect_sock": tt.connect_sock,
    "with_connection": lambda where, **kw: tt.with_connection(
        where, lambda s, r, w: pytest.fail("f called without a connection"), **kw
    ),
}


@pytest.mark.parametrize("how", sorted(CONNECTS))
def test_deadline_cancels_an_endpoint_that_never_connects(how: str) -> None:
    """The deadline cancels the endpoint's Deferred: ConnectTimeoutError naming it."""
    clock = Clock()
    stub = NeverConnects()
    d = CONNECTS[how](tt.to_endpoint(stub), timeout=5, reactor=clock)
    assert len(stub.attempts) == 1
    clock.advance(4.9)
    assert outcome(d) is PENDING
    assert stub.cancelled == 0
    clock.advance(0.1)
    err = failure_of(d, tt.ConnectTimeoutError)
    assert isinstance(err, error.TimeoutError)
    assert "NeverConnects endpoint" in str(err)
    assert stub.cancelled == 1
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize("how", sorted(CONNECTS))
def test_interrupt_cancels_an_endpoint_that_never_connects(how: str) -> None:
    """The interrupt cancels the endpoint's Deferred: ConnectInterruptedError; no timer is left."""
    clock = Clock()
    stub = NeverConnects()
    interrupt: Deferred[None] = Deferred()
    d = CONNECTS[how](tt.to_endpoint(stub), timeout=5, interrupt=interrupt, reactor=clock)
    clock.advance(1)
    assert outcome(d) is PENDING
    interrupt.callback(None)
    err = failure_of(d, tt.ConnectInterruptedError)
    assert "NeverConnects endpoint" in str(err)
    assert stub.cancelled == 1
    assert not clock.getDelayedCalls()


def test_cancel_and_no_deadline_on_an_endpoint_that_never_connects() -> None:
    """Without a deadline nothing is scheduled; cancel() cancels the endpoint's Deferred."""
    clock = Clock()
    stub = NeverConnects()
    d = tt.connect(tt.to_endpoint(stub), timeout=None, reactor=clock)
    assert not clock.getDelayedCalls()
    d.cancel()
    err = failure_of(d, CancelledError)
    assert "NeverConnects endpoint" in str(err)
    assert stub.cancelled == 1


# -- TLS through descriptions ---------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_descriptions_both_ways(pki: Pki) -> None:
    """An ssl: server description and a tls: client description with trustRoots talk."""
    server_where = tt.on_endpoint(
        f"ssl:0:interface={LOCAL}:privateKey={pki.key}:certKey={pki.cert}"
    )
    async with serving(echo, server_where) as server:
        client = tt.to_endpoint(f"tls:localhost:{server.listening_on}:trustRoots={pki.roots}")

        # No write_eof: over TLS it is a close_notify, and the server closes.
        async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> list[Any]:
            writer.write_line(b"over tls")
            writer.write_line(b"again")
            return [await reader.read_line(), await reader.read_line()]

        assert await within(tt.with_connection(client, f, timeout=WAIT)) == [
            b"over tls",
            b"again",
        ]


# -- IPv6 ---------------------------------------------------------------------------


@needs_ipv6
@pytest_twisted.ensureDeferred
async def test_ipv6_loopback_server_and_clients() -> None:
    """
    A server on ::1 (on_port and a tcp6: description) is reached by ::1,
    [::1] and a tcp6-style endpoint object; the handler sees an IPv6 peer.
    """
    recorder = Recorder()
    for where_to_listen in (
        tt.on_port(0, interface=V6),
        tt.on_endpoint(r"tcp6:0:interface=\:\:1"),
    ):
        async with serving(recorder, where_to_listen) as server:
            assert isinstance(server.listening_on_address, IPv6Address)
            assert server.listening_on_address.host == V6
            port = server.listening_on
            assert isinstance(port, int)
            for where in (
                tt.to_host_and_port(V6, port),
                tt.to_host_and_port(f"[{V6}]", port),
                tt.to_endpoint(endpoints.TCP6ClientEndpoint(reactor, V6, port)),
            ):
                replies = await talk(where, b"six")
                assert replies[1:] == [b"six"]
                assert replies[0].startswith(b"[::1]:")
    assert len(recorder.addresses) == 6
    assert all(isinstance(a, IPv6Address) and a.host == V6 for a in recorder.addresses)


@needs_ipv6
@pytest_twisted.ensureDeferred
async def test_ipv4_only_server_is_not_reached_over_ipv6() -> None:
    """A server on 127.0.0.1 is not on ::1: connecting there is refused, naming [::1]."""
    async with serving(echo) as server:
        port = server.listening_on
        assert isinstance(port, int)
        blocker = socket.socket(socket.AF_INET6)
        try:
            blocker.bind((V6, port))  # bound, not listening: nobody else answers there
        except OSError as e:
            blocker.close()
            pytest.skip(f"[::1]:{port} is taken: {e}")
        try:
            with pytest.raises(error.ConnectionRefusedError, match=re.escape(f"[::1]:{port}")):
                await within(tt.connect(tt.to_host_and_port(V6, port), timeout=WAIT))
        finally:
            blocker.close()


# -- names that resolve to both families ------------------------------------------------


@implementer(IHostnameResolver)
class TableResolver:
    """
    Resolves the names of its table to IP literals (both families allowed),
    at once; any other name goes to the real reactor's resolver.
    """

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        if hostName not in self.table:
            return reactor.nameResolver.resolveHostName(  # type: ignore[attr-defined, no-any-return]
                resolutionReceiver, hostName, portNumber, addressTypes, transportSemantics
            )
        self.asked.append(hostName)
        resolution = HostResolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)  # type: ignore[arg-type]
        for host in self.table[hostName]:
            kind = IPv6Address if ":" in host else IPv4Address
            if addressTypes is None or kind in addressTypes:
                resolutionReceiver.addressResolved(kind("TCP", host, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution  # type: ignore[return-value]


@implementer(IReactorTCP, IReactorTime, IReactorPluggableNameResolver)
class NamingReactor:
    """The real reactor, with a name resolver of our own (the global one is left alone)."""

    def __init__(self, resolver: TableResolver) -> None:
        self.nameResolver = resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        raise AssertionError("not for tests")

    def __getattr__(self, name: str) -> Any:
        return getattr(reactor, name)


@needs_ipv6
@pytest.mark.parametrize("order", [("127.0.0.1", V6), (V6, "127.0.0.1")])
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
@pytest_twisted.ensureDeferred
async def test_name_resolving_to_both_families_reaches_a_one_family_server(
    family: str, order: tuple[str, str]
) -> None:
    """
    A name that resolves to 127.0.0.1 and ::1 (either order) reaches a
    server listening on only one of them: every address is tried.  The
    other family's port is held bound but not listening, so that it is
    surely refused there.
    """
    here, other = (LOCAL, V6) if family == "ipv4" else (V6, LOCAL)
    recorder = Recorder()
    async with serving(recorder, tt.on_port(0, interface=here)) as server:
        port = server.listening_on
        assert isinstance(port, int)
        blocker = socket.socket(socket.AF_INET6 if other == V6 else socket.AF_INET)
        try:
            blocker.bind((other, port))
        except OSError as e:
            blocker.close()
            pytest.skip(f"{other} port {port} is taken: {e}")
        try:
            resolver = TableResolver({"dual.test": list(order)})
            naming = NamingReactor(resolver)
            where = tt.to_host_and_port("dual.test", port)
            assert isinstance(where.endpoint(naming, 5.0), endpoints.HostnameEndpoint)
            replies = await talk(where, b"by name", reactor=naming)
            assert replies[1:] == [b"by name"]

            sock, _, writer = await within(tt.connect(where, timeout=WAIT, reactor=naming))
            try:
                assert sock.peer_address.host == here  # type: ignore[attr-defined]
            finally:
                await within(writer.close())
        finally:
            blocker.close()
        assert resolver.asked == ["dual.test", "dual.test"]
        assert [a.host for a in recorder.addresses] == [here, here]
        kind = IPv4Address if family == "ipv4" else IPv6Address
        assert all(isinstance(a, kind) for a in recorder.addresses)


@needs_ipv6
@pytest_twisted.ensureDeferred
async def test_name_resolving_to_both_families_with_both_refused() -> None:
    """When every resolved address refuses, the error names the name and the port."""
    blockers = []
    try:
        v4 = socket.socket()
        blockers.append(v4)
        v4.bind((LOCAL, 0))
        port = v4.getsockname()[1]
        v6 = socket.socket(socket.AF_INET6)
        blockers.append(v6)
        try:
            v6.bind((V6, port))
        except OSError as e:
            pytest.skip(f"[::1]:{port} is taken: {e}")
        naming = NamingReactor(TableResolver({"dual.test": [LOCAL, V6]}))
        with pytest.raises(error.ConnectError, match=re.escape(f"dual.test:{port}")):
            await within(
                tt.connect(tt.to_host_and_port("dual.test", port), timeout=WAIT, reactor=naming)
            )
    finally:
        for s in blockers:
            s.close()


# -- the PROXY protocol ---------------------------------------------------------------

V2_PREFIX = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: str, destination: str, sport: int, dport: int) -> bytes:
    proto = "TCP6" if ":" in source else "TCP4"
    return f"PROXY {proto} {source} {destination} {sport} {dport}\r\n".encode()


def v2(
    source: str,
    destination: str,
    sport: int,
    dport: int,
    *,
    command: int = 1,
    tlvs: bytes = b"",
) -> bytes:
    """A PROXY protocol v2 header (version 2, PROXY or LOCAL command, TCP over IPv4 or IPv6)."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = 0x11 if src.version == 4 else 0x21  # AF_INET or AF_INET6, STREAM
    body = src.packed + dst.packed + struct.pack("!HH", sport, dport) + tlvs
    return V2_PREFIX + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


HAPROXY = f"haproxy:tcp:0:interface={LOCAL}"

HEADERS = {
    "v1-tcp4": (v1("203.0.113.7", "198.51.100.1", 56324, 443), "203.0.113.7:56324"),
    "v1-tcp6": (v1("2001:db8::7", "2001:db8::1", 56324, 443), "[2001:db8::7]:56324"),
    "v2-tcp4": (v2("203.0.113.7", "198.51.100.1", 56324, 443), "203.0.113.7:56324"),
    "v2-tcp6": (v2("2001:db8::7", "2001:db8::1", 1, 65535), "[2001:db8::7]:1"),
    "v2-tlvs": (
        v2("192.0.2.9", "198.51.100.1", 4000, 80, tlvs=tlv(0x02, b"example.com")),
        "192.0.2.9:4000",
    ),
}


def same_address(seen: Any, expected: str) -> bool:
    """Whether C{seen} (an IPv4/IPv6Address) is C{host:port} or C{[v6]:port}, by value."""
    host, _, port = expected.rpartition(":")
    host = host.strip("[]")
    return bool(
        ipaddress.ip_address(seen.host) == ipaddress.ip_address(host)
        and seen.port == int(port)
        and isinstance(seen, IPv6Address if ":" in host else IPv4Address)
    )


@pytest.mark.parametrize("name", sorted(HEADERS))
@pytest_twisted.ensureDeferred
async def test_proxy_header_gives_the_handler_the_client_address(name: str) -> None:
    """
    Behind haproxy:, the handler's address is the client's from the header
    (v1 TCP4/TCP6, v2 TCP4/TCP6, v2 with TLVs), and the bytes after the
    header, sent with it, reach the handler.
    """
    header, expected = HEADERS[name]
    recorder = Recorder()
    async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:

        async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> list[bytes]:
            writer.write(header + b"first\n")
            writer.write_line(b"second")
            await writer.write_eof()
            return [line async for line in reader.lines()]

        replies = await within(tt.with_connection(where_of(server), f, timeout=WAIT))
        assert replies[1:] == [b"first", b"second"]
        [address] = recorder.addresses
        assert same_address(address, expected), address
        assert replies[0] == show_address(address).encode()


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(b"PROXY UNKNOWN\r\n", id="v1-unknown"),
        pytest.param(
            b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
            id="v1-unknown-with-addresses",
        ),
        pytest.param(
            v2("203.0.113.7", "198.51.100.1", 1, 2, command=0),  # LOCAL: a health check
            id="v2-local",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_proxy_header_without_a_client_address_gives_the_real_peer(header: bytes) -> None:
    """A header that carries no client address (UNKNOWN, LOCAL): the handler sees the real peer."""
    recorder = Recorder()
    async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:

        async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> Any:
            writer.write(header + b"hi\n")
            return sock.local_address, await reader.read_line(), await reader.read_line()

        local, told, echoed = await within(tt.with_connection(where_of(server), f, timeout=WAIT))
        assert echoed == b"hi"
        assert recorder.addresses == [IPv4Address("TCP", LOCAL, local.port)]
        assert told == f"{LOCAL}:{local.port}".encode()


@pytest_twisted.ensureDeferred
async def test_proxy_v2_ipv6_address_is_in_the_usual_form() -> None:
    """A v2 IPv6 client address reaches the handler as Twisted writes it elsewhere: compressed."""
    recorder = Recorder()
    async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:
        header, _ = HEADERS["v2-tcp6"]
        replies = await talk_with_header(where_of(server), header, b"x")
        assert replies[1:] == [b"x"]
    assert recorder.addresses == [IPv6Address("TCP", "2001:db8::7", 1)]
    assert replies[0] == b"[2001:db8::7]:1"


@pytest.fixture
def chunks_read(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the chunks the PROXY wrapper's dataReceived got, in order."""
    sizes: list[int] = []
    original = _haproxy._HeaderFirst.dataReceived

    def data_received(self: Any, data: bytes) -> None:
        sizes.append(len(data))
        original(self, data)

    monkeypatch.setattr(_haproxy._HeaderFirst, "dataReceived", data_received)
    return sizes


async def send_in_pieces(s: socket.socket, pieces: list[bytes], chunks_read: list[int]) -> None:
    """Send each piece, waiting until the server has read it before the next one."""
    for piece in pieces:
        before = sum(chunks_read)
        s.sendall(piece)
        await until(lambda before=before, piece=piece: sum(chunks_read) >= before + len(piece))  # type: ignore[misc]


async def read_until_closed(s: socket.socket, seconds: float = WAIT) -> tuple[bytes, str]:
    """Read a non-blocking socket until the peer closes it: (bytes, "eof" or "reset")."""
    received = b""

    async def poll() -> str:
        nonlocal received
        while True:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                await sleep(0.005)
                continue
            except ConnectionResetError:
                return "reset"
            if not data:
                return "eof"
            received += data

    how = await within(poll(), seconds)
    return received, how


async def cut_without_a_reply(s: socket.socket, seconds: float = WAIT) -> bool:
    """
    Whether the peer closes the non-blocking socket C{s} before sending
    anything; False as soon as any byte arrives (the handler ran).
    """

    async def poll() -> bool:
        while True:
            try:
                data = s.recv(65536)
            except BlockingIOError:
                await sleep(0.005)
                continue
            except ConnectionResetError:
                return True
            return not data

    return await within(poll(), seconds)  # type: ignore[no-any-return]


async def served_through_raw_socket(
    port: int, pieces: list[bytes], chunks_read: list[int]
) -> list[bytes] | None:
    """
    Send the pieces (the header, split), each read by the server before the
    next is sent, then a line, and half-close; return the reply's lines, or
    None if the server cut the connection (a reset).
    """
    s = raw_client(port)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await send_in_pieces(s, pieces, chunks_read)
            s.sendall(b"after the header\n")
            s.shutdown(socket.SHUT_WR)
        except (ConnectionResetError, BrokenPipeError):
            return None
        received, how = await read_until_closed(s)
    finally:
        s.close()
    return received.splitlines() if how == "eof" else None


@pytest.mark.parametrize(
    "name",
    [
        "v1-tcp4",
        "v1-tcp6",
        "v2-tcp4",
        "v2-tcp6",
    ],
)
@pytest_twisted.ensureDeferred
async def test_proxy_header_in_one_byte_pieces(name: str, chunks_read: list[int]) -> None:
    """The header arriving one byte per read is still read whole; the handler gets the client."""
    header, expected = HEADERS[name]
    recorder = Recorder()
    async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:
        port = server.listening_on
        assert isinstance(port, int)
        lines = await served_through_raw_socket(
            port, [header[i : i + 1] for i in range(len(header))], chunks_read
        )
        assert lines is not None, f"cut after {len(chunks_read)} one-byte reads"
        assert chunks_read[: len(header)] == [1] * len(header)  # really one byte per read
        assert lines[1:] == [b"after the header"]
        [address] = recorder.addresses
        assert same_address(address, expected), address


@pytest.mark.parametrize("name", ["v1-tcp4", "v2-tcp4"])
@pytest_twisted.ensureDeferred
async def test_proxy_header_split_anywhere_in_two(name: str, chunks_read: list[int]) -> None:
    """The header split in two at every possible place: every client is served with its address."""
    header, expected = HEADERS[name]
    recorder = Recorder()
    async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:
        port = server.listening_on
        assert isinstance(port, int)
        failed_at = []
        for cut in range(1, len(header)):
            lines = await served_through_raw_socket(
                port, [header[:cut], header[cut:]], chunks_read
            )
            if lines is None or lines[1:] != [b"after the header"]:
                failed_at.append(cut)
        assert failed_at == []  # v2 once failed at [13, 14, 15]: a prefix shorter than 16 bytes
        assert len(recorder.addresses) == len(header) - 1
        assert all(same_address(a, expected) for a in recorder.addresses)


INVALID_HEADERS = {
    "http": b"GET / HTTP/1.0\r\n\r\n",
    "v1-bad-protocol": b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-missing-addresses": b"PROXY TCP4 1.2.3.4\r\n",
    "v1-no-crlf-too-long": b"PROXY TCP4 " + b"1" * 120,
    "v1-lowercase": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v2-bad-version": v2("1.2.3.4", "5.6.7.8", 1, 2).replace(b"\n\x21", b"\n\x11", 1),
    "v2-bad-command": v2("1.2.3.4", "5.6.7.8", 1, 2, command=0xF),
    "v2-short-addresses": V2_PREFIX + b"\x21\x11\x00\x04" + b"\x01\x02\x03\x04",
    "v2-prefix-then-garbage": V2_PREFIX[:8] + b"garbage!",
}


@pytest.mark.parametrize("name", sorted(INVALID_HEADERS))
@pytest_twisted.ensureDeferred
async def test_invalid_proxy_header_disconnects_without_the_handler(name: str) -> None:
    """
    A wrong header: the peer is disconnected, the handler never runs,
    nothing is logged as an error, and the next client is served.
    """
    recorder = Recorder()
    with logged_errors() as errors:
        async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:
            port = server.listening_on
            assert isinstance(port, int)
            s = raw_client(port)
            try:
                s.sendall(INVALID_HEADERS[name])
                assert await cut_without_a_reply(s)
            finally:
                s.close()
            assert recorder.addresses == []
            assert server.num_connections == 0

            header, expected = HEADERS["v1-tcp4"]
            replies = await talk_with_header(where_of(server), header, b"next")
            assert replies[1:] == [b"next"]
            [address] = recorder.addresses
            assert same_address(address, expected)
    assert errors == []


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 http 80\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 http\r\n",
        b"PROXY TCP4 999.1.1.1 5.6.7.8 1 80\r\n",
        b"PROXY TCP4 hello world 1 80\r\n",
        b"PROXY TCP4 2001:db8::7 5.6.7.8 1 80\r\n",
        b"PROXY TCP6 1.2.3.4 2001:db8::1 1 80\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 80\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -5 80\r\n",
    ],
    ids=[
        "port-http",
        "dport-http",
        "host-999",
        "host-name",
        "tcp4-with-v6",
        "tcp6-with-v4",
        "port-70000",
        "port-negative",
    ],
)
@pytest_twisted.ensureDeferred
async def test_proxy_v1_bad_address_or_port_is_refused_quietly(header: bytes) -> None:
    """
    A v1 header whose address or port is not one (the spec: a receiver must
    validate them) is a wrong header like any other: the peer is
    disconnected, the handler never runs, and no error is logged.
    """
    recorder = Recorder()
    with logged_errors() as errors:
        async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:
            port = server.listening_on
            assert isinstance(port, int)
            s = raw_client(port)
            try:
                s.sendall(header)
                assert await cut_without_a_reply(s)
            finally:
                s.close()
            assert recorder.addresses == []
    assert errors == []


async def talk_with_header(where: tt.WhereToConnect, header: bytes, *lines: bytes) -> list[bytes]:
    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> list[bytes]:
        writer.write(header)
        for line in lines:
            writer.write_line(line)
        await writer.write_eof()
        return [line async for line in reader.lines()]

    return await within(tt.with_connection(where, f, timeout=WAIT))  # type: ignore[no-any-return]


@pytest.mark.parametrize("sent", [b"", b"PROXY TCP4 1.2.3.4", V2_PREFIX])
@pytest_twisted.ensureDeferred
async def test_proxy_header_timeout(sent: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A peer that sends no header, or part of one, within HEADER_TIMEOUT is
    disconnected without reaching the handler; a peer that sent its header
    in time is not cut when that timeout would have passed.
    """
    monkeypatch.setattr(_haproxy, "HEADER_TIMEOUT", 0.2)
    recorder = Recorder()
    async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:
        port = server.listening_on
        assert isinstance(port, int)
        header, _ = HEADERS["v2-tcp4"]
        _, reader, writer = await within(tt.connect(where_of(server), timeout=WAIT))
        try:
            writer.write(header)
            assert await within(reader.read_line()) == b"203.0.113.7:56324"

            slow = raw_client(port)
            try:
                slow.sendall(sent)
                assert await cut_without_a_reply(slow)  # bounded by WAIT
            finally:
                slow.close()
            assert len(recorder.addresses) == 1

            # Well past the first client's header timeout: it still talks.
            writer.write_line(b"still here")
            assert await within(reader.read_line()) == b"still here"
        finally:
            await within(writer.close())


@pytest_twisted.ensureDeferred
async def test_proxy_connections_waiting_for_a_header_are_bounded(
    monkeypatch: pytest.MonkeyPatch, chunks_read: list[int]
) -> None:
    """
    Beyond MAX_WAITING connections waiting for their header, new ones are
    closed at once (one warning); once one of them sends its header, a new
    connection is taken again.
    """
    monkeypatch.setattr(_haproxy, "MAX_WAITING", 2)
    recorder = Recorder()
    header, expected = HEADERS["v1-tcp4"]
    with logged_errors() as errors:
        async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:
            port = server.listening_on
            assert isinstance(port, int)
            waiting = [raw_client(port) for _ in range(2)]
            try:
                await sleep(0.1)  # both accepted and waiting
                extra = raw_client(port)
                try:
                    assert await cut_without_a_reply(extra)
                finally:
                    extra.close()
                waiting[0].sendall(header)
                await until(lambda: len(recorder.addresses) == 1)
                lines = await served_through_raw_socket(port, [header], chunks_read)
                assert lines is not None
            finally:
                for s in waiting:
                    s.close()
    assert errors == []
    assert len(recorder.addresses) == 2
    assert all(same_address(a, expected) for a in recorder.addresses)


@pytest_twisted.ensureDeferred
async def test_proxy_half_close_before_the_header_closes_quietly() -> None:
    """A peer that half-closes before its header is complete is closed; no handler runs."""
    recorder = Recorder()
    with logged_errors() as errors:
        async with serving(recorder, tt.on_endpoint(HAPROXY)) as server:
            port = server.listening_on
            assert isinstance(port, int)
            s = raw_client(port)
            try:
                s.sendall(b"PROXY TCP4 1.2")
                s.shutdown(socket.SHUT_WR)
                received, how = await read_until_closed(s)
            finally:
                s.close()
            assert (received, how) == (b"", "eof")
            assert recorder.addresses == []
    assert errors == []


@pytest_twisted.ensureDeferred
async def test_proxy_unix_socket(tmp_path: Path) -> None:
    """haproxy:unix: works too: a balancer on a Unix socket passes the TCP client's address."""
    path = tmp_path / "lb.sock"
    recorder = Recorder()
    async with serving(recorder, tt.on_endpoint(f"haproxy:unix:{path}:lockfile=0")) as server:
        assert server.listening_on == str(path)
        header, expected = HEADERS["v1-tcp6"]
        replies = await talk_with_header(tt.to_file(path), header, b"via unix")
        assert replies[1:] == [b"via unix"]
        [address] = recorder.addresses
        assert same_address(address, expected)


@pytest_twisted.ensureDeferred
async def test_closing_the_server_closes_connections_waiting_for_their_header(
    chunks_read: list[int],
) -> None:
    """
    close(close_existing_connections=True) also closes a connection whose
    PROXY header has not arrived, and drained() does not wait for it.
    """
    recorder = Recorder()
    server = await within(tt.Server.create(tt.on_endpoint(HAPROXY), recorder))
    s = None
    try:
        port = server.listening_on
        assert isinstance(port, int)
        s = raw_client(port)
        s.sendall(b"PROXY TCP4")  # and no more
        await until(lambda: sum(chunks_read) == len(b"PROXY TCP4"))  # accepted and read
        await within(server.close(close_existing_connections=True))
        await within(server.drained())
        assert await cut_without_a_reply(s, 2.0)  # at once when right
        assert recorder.addresses == []
    finally:
        if s is not None:
            s.close()
        await within(server.close(close_existing_connections=True))


# -- twistd: systemd sockets, tcp6 and haproxy descriptions -----------------------------


class SocketProcess(Process):
    """
    A twistd given a listening socket the way systemd does: as descriptor 3,
    with LISTEN_FDS=1 and LISTEN_PID set to its own pid (a shell sets it with
    $$, then execs twistd in its place).
    """

    def __init__(
        self, args: list[str], directory: Path, listener: socket.socket, names: str | None
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        fdnames = f"LISTEN_FDNAMES={names} " if names is not None else ""
        self.args = [
            "sh",
            "-c",
            f'LISTEN_PID=$$ LISTEN_FDS=1 {fdnames}exec "$@" 3<&0 0</dev/null',
            "sh",
            *args,
        ]
        self.out_path = directory / "stdout.txt"
        self.err_path = directory / "stderr.txt"
        env = subprocess_env()
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(name, None)
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                self.args,
                cwd=directory,
                env=env,
                stdout=out,
                stderr=err,
                stdin=listener.fileno(),
            )


@pytest.fixture
def with_socket(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start twistd with a listening socket (see L{SocketProcess}); kill and reap it at the end."""
    processes: list[Process] = []

    def start_with_socket(
        listener: socket.socket, *args: str, names: str | None = "tcpserver"
    ) -> Process:
        command = [*twistd_command(), "-n", "--pidfile=", "tcpserver", *args]
        process = SocketProcess(command, tmp_path / f"systemd-{len(processes)}", listener, names)
        processes.append(process)
        return process

    try:
        yield start_with_socket
    finally:
        for process in processes:
            process.stop()


async def listening_on(process: Process) -> str:
    match = await process.wait_for(LISTENING)
    assert match.group(2) == TELL
    return match.group(1)


async def stopped(process: Process) -> None:
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == -signal.SIGTERM
    assert "Traceback" not in process.output()


@pytest.mark.parametrize("select", ["index=0", "name=tcpserver"])
@pytest_twisted.ensureDeferred
async def test_twistd_systemd_inet_socket(
    with_socket: Callable[..., Process], select: str
) -> None:
    """
    twistd --port systemd:domain=INET:... serves on the socket it was
    given: this test's listening socket, closed here once handed over.
    """
    listener = socket.socket()
    try:
        listener.bind((LOCAL, 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        process = with_socket(
            listener, "--port", f"systemd:domain=INET:{select}", "--handler", TELL
        )
    finally:
        listener.close()  # the child has its own copy
    assert await listening_on(process) == f"{LOCAL}:{port}"
    replies = await talk(tt.to_host_and_port(LOCAL, port), b"socket activated")
    assert replies[1:] == [b"socket activated"]
    assert replies[0].startswith(f"{LOCAL}:".encode())
    await stopped(process)


@pytest_twisted.ensureDeferred
async def test_twistd_systemd_without_fdnames(with_socket: Callable[..., Process]) -> None:
    """
    systemd older than 227 (and other socket-passing tools) set LISTEN_FDS
    and LISTEN_PID but no LISTEN_FDNAMES: twistd either serves the socket,
    or ends with a message that names what is missing.
    """
    listener = socket.socket()
    try:
        listener.bind((LOCAL, 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        process = with_socket(
            listener, "--port", "systemd:domain=INET:index=0", "--handler", TELL, names=None
        )
    finally:
        listener.close()

    async def listening_or_exited() -> re.Match[str] | None:
        while (match := LISTENING.search(process.output())) is None:
            if process.popen.poll() is not None:
                return None
            await sleep(0.05)
        return match

    match = await within(listening_or_exited())
    if match is None:
        assert await process.exited() == 1
        assert "LISTEN_FDNAMES" in process.output()
    else:
        assert match.group(1) == f"{LOCAL}:{port}"
        await stopped(process)


@pytest_twisted.ensureDeferred
async def test_twistd_systemd_unix_socket(
    with_socket: Callable[..., Process], tmp_path: Path
) -> None:
    """systemd:domain=UNIX:index=0: a Unix socket handed over the same way is served."""
    path = tmp_path / "activated.sock"
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(path))
        listener.listen(8)
        process = with_socket(listener, "--port", "systemd:domain=UNIX:index=0", "--handler", TELL)
    finally:
        listener.close()
    assert await listening_on(process) == f"unix:{path}"
    replies = await talk(tt.to_file(path), b"over unix")
    assert replies[1:] == [b"over unix"]
    await stopped(process)


@pytest_twisted.ensureDeferred
async def test_twistd_systemd_without_a_socket(start: Callable[..., Process]) -> None:
    """No socket passed: twistd ends with status 1 and the hint, before listening."""
    env = subprocess_env()
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    process = start(
        *twistd_command(), "-n", "--pidfile=", "tcpserver",
        "--port", "systemd:domain=INET:index=0", "--handler", TELL,
        env=env,
    )  # fmt: skip
    assert await process.exited() == 1
    output = process.output()
    assert "LISTEN_FDS" in output
    assert "listening on" not in output
    assert "Traceback" not in output


@needs_ipv6
@pytest_twisted.ensureDeferred
async def test_twistd_tcp6_description(start: Callable[..., Process]) -> None:
    r"""twistd --port tcp6:0:interface=\:\:1 listens on [::1] and serves IPv6 clients."""
    process = start(
        *twistd_command(), "-n", "--pidfile=", "tcpserver",
        "--port", r"tcp6:0:interface=\:\:1", "--handler", TELL,
    )  # fmt: skip
    address = await listening_on(process)
    assert address.startswith("[::1]:")
    port = int(address.rsplit(":", 1)[1])
    replies = await talk(tt.to_host_and_port(V6, port), b"six")
    assert replies[1:] == [b"six"]
    assert replies[0].startswith(b"[::1]:")
    await stopped(process)


@pytest_twisted.ensureDeferred
async def test_twistd_haproxy_description(start: Callable[..., Process]) -> None:
    """twistd --port haproxy:tcp:...: the handler's address is the one in the PROXY header."""
    process = start(
        *twistd_command(), "-n", "--pidfile=", "tcpserver",
        "--port", HAPROXY, "--handler", TELL,
    )  # fmt: skip
    address = await listening_on(process)
    port = int(address.rsplit(":", 1)[1])
    assert address == f"{LOCAL}:{port}"
    where = tt.to_host_and_port(LOCAL, port)
    for name in ("v1-tcp4", "v2-tcp6"):
        header, expected = HEADERS[name]
        replies = await talk_with_header(where, header, b"proxied")
        assert replies[1:] == [b"proxied"]
        host, _, shown_port = replies[0].decode().rpartition(":")
        assert same_address(
            IPv6Address("TCP", host.strip("[]"), int(shown_port))
            if host.startswith("[")
            else IPv4Address("TCP", host, int(shown_port)),
            expected,
        )
    s = raw_client(port)
    try:
        s.sendall(b"not a proxy header\r\n")
        assert await cut_without_a_reply(s)
    finally:
        s.close()
    await stopped(process)
