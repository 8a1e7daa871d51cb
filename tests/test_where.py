"""
Where to connect and where to listen: immutable, comparable, printable values,
checked when they are made.
"""

from __future__ import annotations

import pathlib

import attrs
import pytest
from twisted.internet import endpoints
from twisted.internet.testing import MemoryReactorClock

import twisted_tcp as tt
from twisted_tcp import (
    on_file,
    on_port,
    on_port_chosen_by_os,
    to_file,
    to_host_and_port,
)

# -- immutability ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "attribute", "new"),
    [
        (to_host_and_port("example.com", 80), "host", "other.example"),
        (to_host_and_port("example.com", 80), "port", 81),
        (
            to_host_and_port("10.0.0.1", 80, via_local_interface="10.0.0.2"),
            "via_local_interface",
            "10.0.0.3",
        ),
        (to_file("/tmp/sock"), "path", "/tmp/other"),
        (on_port(8080), "port", 8081),
        (on_port(8080), "interface", "127.0.0.1"),
        (on_file("/tmp/sock"), "path", "/tmp/other"),
        (on_port_chosen_by_os, "port", 1),
    ],
)
def test_values_are_frozen(value: object, attribute: str, new: object) -> None:
    before = getattr(value, attribute)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(value, attribute, new)
    assert getattr(value, attribute) == before


@pytest.mark.parametrize(
    "value",
    [to_host_and_port("example.com", 80), to_file("/tmp/s"), on_port(1), on_file("/tmp/s")],
)
def test_values_take_no_new_attributes(value: object) -> None:
    with pytest.raises((AttributeError, attrs.exceptions.FrozenInstanceError)):
        value.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(value, "extra")


def test_kinds() -> None:
    assert isinstance(to_host_and_port("h", 1), tt.WhereToConnect)
    assert isinstance(to_file("/s"), tt.WhereToConnect)
    assert isinstance(on_port(1), tt.WhereToListen)
    assert isinstance(on_file("/s"), tt.WhereToListen)
    assert isinstance(on_port_chosen_by_os, tt.WhereToListen)
    assert not isinstance(on_port(1), tt.WhereToConnect)
    assert not isinstance(to_file("/s"), tt.WhereToListen)


# -- equality and hashing --------------------------------------------------------


def test_equal_values_are_equal_and_hash_alike() -> None:
    pairs = [
        (to_host_and_port("example.com", 80), to_host_and_port("example.com", 80)),
        (to_host_and_port("::1", 80), to_host_and_port("[::1]", 80)),
        (
            to_host_and_port("1.2.3.4", 5, via_local_interface="[::1]"),
            to_host_and_port("1.2.3.4", 5, via_local_interface="::1"),
        ),
        (to_file("/tmp/s"), to_file(pathlib.Path("/tmp/s"))),
        (on_port(0), on_port_chosen_by_os),
        (on_port(80, interface="[::]"), on_port(80, interface="::")),
        (on_file("/tmp/s"), on_file(pathlib.PurePosixPath("/tmp/s"))),
    ]
    for a, b in pairs:
        assert a == b
        assert not (a != b)
        assert hash(a) == hash(b)
        assert len({a, b}) == 1
        assert {a: 1}[b] == 1


def test_different_values_differ() -> None:
    values = [
        to_host_and_port("example.com", 80),
        to_host_and_port("example.com", 81),
        to_host_and_port("example.org", 80),
        to_host_and_port("127.0.0.1", 80),
        to_host_and_port("127.0.0.1", 80, via_local_interface="127.0.0.2"),
        to_file("/tmp/a"),
        to_file("/tmp/b"),
        on_file("/tmp/a"),
        on_port(80),
        on_port(80, interface="127.0.0.1"),
        on_port(81),
        on_port_chosen_by_os,
    ]
    for i, a in enumerate(values):
        for j, b in enumerate(values):
            assert (a == b) == (i == j), (a, b)
    assert len(set(values)) == len(values)
    # A file to connect to is not the same value as a file to listen on.
    assert to_file("/tmp/a") != on_file("/tmp/a")


# -- repr and str ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text", "shown"),
    [
        (
            to_host_and_port("example.com", 80),
            "example.com:80",
            "to_host_and_port('example.com', 80)",
        ),
        (
            to_host_and_port("127.0.0.1", 8080),
            "127.0.0.1:8080",
            "to_host_and_port('127.0.0.1', 8080)",
        ),
        (to_host_and_port("::1", 443), "[::1]:443", "to_host_and_port('::1', 443)"),
        (
            to_host_and_port("[2001:db8::1]", 443),
            "[2001:db8::1]:443",
            "to_host_and_port('2001:db8::1', 443)",
        ),
        (
            to_host_and_port("10.0.0.1", 22, via_local_interface="10.0.0.2"),
            "10.0.0.1:22",
            "to_host_and_port('10.0.0.1', 22, via_local_interface='10.0.0.2')",
        ),
        (to_file("/run/app.sock"), "unix:/run/app.sock", "to_file('/run/app.sock')"),
        (on_port(9000), "0.0.0.0:9000", "on_port(9000)"),
        (
            on_port(9000, interface="127.0.0.1"),
            "127.0.0.1:9000",
            "on_port(9000, interface='127.0.0.1')",
        ),
        (on_port(9000, interface="::"), "[::]:9000", "on_port(9000, interface='::')"),
        (on_port(0, interface="::1"), "[::1]:0", "on_port(0, interface='::1')"),
        (on_port_chosen_by_os, "0.0.0.0:0", "on_port_chosen_by_os"),
        (on_file("/run/app.sock"), "unix:/run/app.sock", "on_file('/run/app.sock')"),
    ],
)
def test_str_and_repr(value: object, text: str, shown: str) -> None:
    assert str(value) == text
    assert repr(value) == shown
    # The repr is the expression that makes the value.
    namespace = {
        "to_host_and_port": to_host_and_port,
        "to_file": to_file,
        "on_port": on_port,
        "on_file": on_file,
        "on_port_chosen_by_os": on_port_chosen_by_os,
    }
    assert eval(repr(value), namespace) == value


def test_path_like_is_stored_as_str() -> None:
    assert to_file(pathlib.Path("/tmp/x")).path == "/tmp/x"
    assert type(to_file(pathlib.Path("/tmp/x")).path) is str
    assert on_file(pathlib.Path("rel/x")).path == "rel/x"


# -- IPv6 literals -------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "host"),
    [
        ("::1", "::1"),
        ("[::1]", "::1"),
        ("2001:db8::42", "2001:db8::42"),
        ("[2001:db8::42]", "2001:db8::42"),
        ("[fe80::1%lo]", "fe80::1%lo"),
    ],
)
def test_ipv6_literals_with_and_without_brackets(given: str, host: str) -> None:
    where = to_host_and_port(given, 8080)
    assert where.host == host
    assert where.port == 8080
    assert str(where) == f"[{host}]:8080"
    endpoint = where.endpoint(MemoryReactorClock(), 5.0)
    assert isinstance(endpoint, endpoints.TCP6ClientEndpoint)


def test_ipv6_interfaces() -> None:
    assert on_port(80, interface="[::1]").interface == "::1"
    assert on_port(80, interface="::").interface == "::"
    assert to_host_and_port("::1", 1, via_local_interface="[::1]").via_local_interface == "::1"


# -- endpoints ---------------------------------------------------------------------


def test_client_endpoints() -> None:
    reactor = MemoryReactorClock()
    assert isinstance(
        to_host_and_port("127.0.0.1", 80).endpoint(reactor, 5.0), endpoints.TCP4ClientEndpoint
    )
    assert isinstance(
        to_host_and_port("localhost", 80).endpoint(reactor, 5.0), endpoints.HostnameEndpoint
    )
    assert isinstance(to_file("/tmp/s").endpoint(reactor, 5.0), endpoints.UNIXClientEndpoint)


def test_client_endpoint_connects_where_it_says() -> None:
    reactor = MemoryReactorClock()
    where = to_host_and_port("127.0.0.1", 8080, via_local_interface="127.0.0.2")
    where.endpoint(reactor, 7.0).connect(_NullFactory())
    host, port, _factory, timeout, bind = reactor.tcpClients[0]
    assert (host, port, timeout, bind) == ("127.0.0.1", 8080, 7.0, ("127.0.0.2", 0))

    to_file("/tmp/s").endpoint(reactor, 3.0).connect(_NullFactory())
    path, _factory, timeout, _pid = reactor.unixClients[0]
    assert (path, timeout) == ("/tmp/s", 3.0)


def test_server_endpoints() -> None:
    reactor = MemoryReactorClock()
    assert isinstance(on_port(80).endpoint(reactor, 10), endpoints.TCP4ServerEndpoint)
    assert isinstance(
        on_port(80, interface="127.0.0.1").endpoint(reactor, 10), endpoints.TCP4ServerEndpoint
    )
    assert isinstance(
        on_port(80, interface="::").endpoint(reactor, 10), endpoints.TCP6ServerEndpoint
    )
    assert isinstance(on_file("/tmp/s").endpoint(reactor, 10), endpoints.UNIXServerEndpoint)

    on_port(8080, interface="127.0.0.1").endpoint(reactor, 17).listen(_NullFactory())
    port, _factory, backlog, interface = reactor.tcpServers[0]
    assert (port, backlog, interface) == (8080, 17, "127.0.0.1")


class _NullFactory:
    """Enough of a protocol factory for a memory reactor."""

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass

    def buildProtocol(self, addr: object) -> None:
        return None


# -- invalid input -----------------------------------------------------------------


@pytest.mark.parametrize("port", [0, -1, 65536, 100000])
def test_to_host_and_port_rejects_port_out_of_range(port: int) -> None:
    with pytest.raises(ValueError, match=r"port must be between 1 and 65535") as info:
        to_host_and_port("example.com", port)
    assert str(port) in str(info.value)


@pytest.mark.parametrize("port", [-1, 65536, 2**40])
def test_on_port_rejects_port_out_of_range(port: int) -> None:
    with pytest.raises(ValueError, match=r"port must be between 0 and 65535") as info:
        on_port(port)
    assert str(port) in str(info.value)


def test_port_bounds_are_allowed() -> None:
    assert to_host_and_port("h", 1).port == 1
    assert to_host_and_port("h", 65535).port == 65535
    assert on_port(0).port == 0
    assert on_port(65535).port == 65535


@pytest.mark.parametrize("port", [True, False, 80.0, "80", None, b"80"])
def test_port_must_be_an_int(port: object) -> None:
    with pytest.raises(TypeError, match=r"port must be an int"):
        to_host_and_port("example.com", port)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"port must be an int"):
        on_port(port)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["", "[]"])
def test_host_must_not_be_empty(host: str) -> None:
    with pytest.raises(ValueError, match=r"host must not be empty"):
        to_host_and_port(host, 80)


@pytest.mark.parametrize("host", [None, b"example.com", 127, ("127.0.0.1", 80)])
def test_host_must_be_a_str(host: object) -> None:
    with pytest.raises(TypeError, match=r"host must be a str"):
        to_host_and_port(host, 80)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [to_file, on_file])
@pytest.mark.parametrize("path", [None, b"/tmp/s", 3, ["/tmp/s"]])
def test_path_must_be_a_str(make: object, path: object) -> None:
    with pytest.raises(TypeError, match=r"path must be a str"):
        make(path)  # type: ignore[operator]


@pytest.mark.parametrize("make", [to_file, on_file])
def test_path_must_not_be_empty(make: object) -> None:
    with pytest.raises(ValueError, match=r"path must not be empty"):
        make("")  # type: ignore[operator]


@pytest.mark.parametrize("make", [to_file, on_file])
@pytest.mark.parametrize("path", ["/tmp/a\0b", "\0", pathlib.Path("/tmp/x\0")])
def test_path_must_not_hold_nul(make: object, path: object) -> None:
    with pytest.raises(ValueError, match=r"NUL"):
        make(path)  # type: ignore[operator]


@pytest.mark.parametrize("via", ["", "localhost", "example.com", "1.2.3", "::g", "[]"])
def test_via_local_interface_must_be_an_ip_address(via: str) -> None:
    with pytest.raises(ValueError, match=r"via_local_interface must be an IP address"):
        to_host_and_port("127.0.0.1", 80, via_local_interface=via)


@pytest.mark.parametrize("via", [b"127.0.0.1", 127, ("127.0.0.1", 0)])
def test_via_local_interface_must_be_a_str(via: object) -> None:
    with pytest.raises(TypeError, match=r"via_local_interface must be a str"):
        to_host_and_port("127.0.0.1", 80, via_local_interface=via)  # type: ignore[arg-type]


@pytest.mark.parametrize("interface", ["localhost", "eth0", "1.2.3", "[]x", "::g"])
def test_interface_must_be_an_ip_address(interface: str) -> None:
    with pytest.raises(ValueError, match=r"interface must be an IP address"):
        on_port(80, interface=interface)


@pytest.mark.parametrize("interface", [None, b"127.0.0.1", 0])
def test_interface_must_be_a_str(interface: object) -> None:
    with pytest.raises(TypeError, match=r"interface must be a str"):
        on_port(80, interface=interface)  # type: ignore[arg-type]


def test_keyword_only_options() -> None:
    with pytest.raises(TypeError):
        to_host_and_port("127.0.0.1", 80, "127.0.0.2")  # type: ignore[misc]
    with pytest.raises(TypeError):
        on_port(80, "127.0.0.1")  # type: ignore[misc]


@pytest.mark.parametrize("host", ["example.com:80", "[::1", "::1]", "exa mple.com"])
def test_malformed_host_is_rejected(host: str) -> None:
    with pytest.raises(ValueError, match="host"):
        to_host_and_port(host, 80)
