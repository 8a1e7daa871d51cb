"""
The PROXY header reader alone (no I/O): headers as HAProxy writes them,
every prefix of one, and bytes that are not one.  The tests with real
connections are in test_endpoints and test_tls_server.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address

from twisted_tcp._proxy_header import (
    NEED,
    NO_ADDRESSES,
    V2_SIGNATURE,
    InvalidHeader,
    ProxiedAddresses,
    bytes_needed,
    read_header,
)

ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)


def v1(source: str, destination: str, sport: int, dport: int, family: bytes) -> bytes:
    return b"PROXY %s %s %s %d %d\r\n" % (
        family,
        source.encode(),
        destination.encode(),
        sport,
        dport,
    )


def v2(command: int, family: int, addresses: bytes, extra: bytes = b"") -> bytes:
    body = addresses + extra
    return V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack("!H", len(body)) + body


def v2_inet(
    source: ipaddress._BaseAddress,
    destination: ipaddress._BaseAddress,
    sport: int,
    dport: int,
    extra: bytes = b"",
) -> bytes:
    family = 0x11 if source.version == 4 else 0x21
    return v2(
        1, family, source.packed + destination.packed + struct.pack("!HH", sport, dport), extra
    )


def expected(
    source: ipaddress._BaseAddress, destination: ipaddress._BaseAddress, sport: int, dport: int
) -> ProxiedAddresses:
    kind = IPv4Address if source.version == 4 else IPv6Address
    return ProxiedAddresses(kind("TCP", str(source), sport), kind("TCP", str(destination), dport))


@settings(max_examples=200, deadline=None)
@given(
    family=st.sampled_from([4, 6]),
    data=st.data(),
    sport=ports,
    dport=ports,
    rest=st.binary(max_size=20),
    version=st.sampled_from([1, 2]),
)
def test_headers_as_haproxy_writes_them(
    family: int, data: st.DataObject, sport: int, dport: int, rest: bytes, version: int
) -> None:
    addresses = ipv4 if family == 4 else ipv6
    source, destination = data.draw(addresses), data.draw(addresses)
    if version == 1:
        header = v1(str(source), str(destination), sport, dport, b"TCP%d" % family)
    else:
        header = v2_inet(source, destination, sport, dport, data.draw(st.binary(max_size=30)))
    assert read_header(header + rest) == (expected(source, destination, sport, dport), rest)
    # Any beginning of it asks for more, never refuses, and never for more than the header.
    for end in range(len(header)):
        assert read_header(header[:end]) is NEED
        assert end < bytes_needed(header[:end]) <= len(header)


def test_an_ipv6_address_in_the_usual_form() -> None:
    header = v1("2001:DB8:0:0:0:0:0:1", "::1", 1, 2, b"TCP6")
    info, _ = read_header(header)  # type: ignore[misc]
    assert info.source == IPv6Address("TCP", "2001:db8::1", 1)


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n",
        v2(0, 0x11, bytes(12)),  # LOCAL: a health check from the proxy itself
        v2(0, 0xFF, b""),  # LOCAL: whatever the family byte says is ignored
        v2(1, 0x00, b""),  # UNSPEC
        v2(1, 0x31, bytes(216)),  # AF_UNIX
    ],
)
def test_headers_with_no_address_a_handler_could_use(header: bytes) -> None:
    assert read_header(header + b"after") == (NO_ADDRESSES, b"after")


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
        (b"PROXY " + b"x" * 120, "longer than 107 bytes"),
        (b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "for protocol b'UDP4'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "without its two addresses and two ports"),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "without its two addresses"),
        (b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n", "invalid IPv4 address b'1.2.3.400'"),
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "invalid IPv4 address b'::1'"),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "invalid IPv6 address b'1.2.3.4'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "invalid port b'65536'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "invalid port b'01'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "invalid port b'-1'"),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 \xff 2\r\n", "invalid port"),
        (V2_SIGNATURE + b"\x10\x11\x00\x00", "version 1 after the v2 signature"),
        (v2(2, 0x11, bytes(12)), "unknown command 2"),
        (v2(1, 0x41, bytes(12)), "unknown address family 4"),
        (v2(1, 0x12, bytes(12)), "a transport other than a stream (2)"),
        (v2(1, 0x11, bytes(8)), "8 bytes, too short for its addresses (12)"),
        (v2(1, 0x21, bytes(12)), "12 bytes, too short for its addresses (36)"),
        (v2(1, 0x0F, b""), "an unknown transport 15"),
        (v2(1, 0x13, bytes(12)), "an unknown transport 3"),
        (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "invalid IPv6 address b'fe80::1%eth0'"),
    ],
)
def test_what_is_not_a_header_is_refused_with_the_reason(data: bytes, why: str) -> None:
    with pytest.raises(InvalidHeader) as info:
        read_header(data)
    assert why in str(info.value)


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=64),
        st.binary(max_size=40).map(lambda b: b"PROXY " + b),
        st.binary(max_size=60).map(lambda b: V2_SIGNATURE + b),
    )
)
def test_any_bytes_are_a_header_a_beginning_or_refused(data: bytes) -> None:
    try:
        result = read_header(data)
    except InvalidHeader:
        return
    if result is not NEED:
        info, rest = result  # type: ignore[misc]
        assert isinstance(info, ProxiedAddresses) and data.endswith(rest)


def test_a_v2_header_waits_for_all_its_bytes() -> None:
    header = v2(1, 0x11, bytes(12), extra=b"t" * 1000)  # TLVs: skipped
    assert read_header(header[:-1]) is NEED
    info, rest = read_header(header)  # type: ignore[misc]
    assert info.source == IPv4Address("TCP", "0.0.0.0", 0) and rest == b""


def test_a_v2_header_in_pieces_is_read_once_it_is_all_there() -> None:
    header = v2(1, 0x11, bytes(12), extra=b"t" * 65000)
    assert bytes_needed(header[:10]) == 11
    assert bytes_needed(header[:16]) == len(header)  # known from its fixed part
