"""
The PROXY protocol's header (versions 1 and 2, as HAProxy's specification
describes them), read from the first bytes of a connection: no I/O, no
Twisted.  L{read_header} is given what has arrived so far and says: the
header's addresses and the bytes after it, or that more bytes are needed,
or why these bytes are not a header.

Twisted has parsers of its own, but private ones (and its v1 parser refuses
the specification's shortest form, C{PROXY UNKNOWN}), so the package reads
the header itself.
"""

from __future__ import annotations

import ipaddress
import struct

import attrs
from twisted.internet.address import IPv4Address, IPv6Address

V1_START = b"PROXY "
V1_MAX = 107
"""The longest v1 header, CRLF included."""

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED = 16
"""The bytes of a v2 header before its addresses: signature, version, family, length."""

_V2_ADDRESSES = {0x1: ("!4s4sHH", 12), 0x2: ("!16s16sHH", 36), 0x3: (None, 216)}  # by family
_V2_FAMILIES = frozenset({0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32})  # the specification's


class InvalidHeader(ValueError):
    """The first bytes of the connection are not a valid PROXY header; the text says why."""


@attrs.frozen
class ProxiedAddresses:
    """
    The addresses a PROXY header gives: the client's (C{source}) and the
    one it connected to (C{destination}); both C{None} when the header
    gives none (v1 C{UNKNOWN}, v2 C{LOCAL}, a family other than IPv4 and
    IPv6): the connection's own addresses stand then.
    """

    source: IPv4Address | IPv6Address | None = None
    destination: IPv4Address | IPv6Address | None = None


NO_ADDRESSES = ProxiedAddresses()

NEED: object = object()
"""What L{read_header} returns while the bytes could still begin a header."""


def read_header(data: bytes) -> tuple[ProxiedAddresses, bytes] | object:
    """
    Read a PROXY header at the start of C{data}: return its addresses and
    the bytes after it, or L{NEED} if C{data} is a header's beginning.

    @raise InvalidHeader: C{data} does not begin with a valid header.
    """
    if data[:6] == V1_START:
        return _read_v1(data)
    if data[:12] == V2_SIGNATURE:
        return _read_v2(data)
    if V2_SIGNATURE.startswith(data[:12]) or V1_START.startswith(data):
        return NEED
    raise InvalidHeader("not a PROXY protocol header")


def bytes_needed(data: bytes) -> int:
    """
    How many bytes to have before L{read_header} can say more than L{NEED}
    about C{data}, a header's beginning: a v2 header's whole length once its
    fixed part has come, else one more byte.
    """
    if len(data) >= V2_FIXED and data[:12] == V2_SIGNATURE:
        return V2_FIXED + _v2_length(data)
    return len(data) + 1


def _v2_length(data: bytes) -> int:
    """The length a v2 header gives of what follows its fixed part."""
    length: int = struct.unpack_from("!H", data, 14)[0]
    return length


def _read_v1(data: bytes) -> tuple[ProxiedAddresses, bytes] | object:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise InvalidHeader(f"a PROXY v1 header longer than {V1_MAX} bytes")
        return NEED
    fields = data[6:end].split(b" ")
    rest = data[end + 2 :]
    if fields[0] == b"UNKNOWN":
        return NO_ADDRESSES, rest  # whatever follows is to be ignored
    if fields[0] not in (b"TCP4", b"TCP6"):
        raise InvalidHeader(f"a PROXY v1 header for protocol {fields[0]!r:.20}")
    if len(fields) != 5:
        raise InvalidHeader("a PROXY v1 header without its two addresses and two ports")
    kind = IPv4Address if fields[0] == b"TCP4" else IPv6Address
    source, destination = (
        _address(kind, _host(kind, host), _port(port))
        for host, port in ((fields[1], fields[3]), (fields[2], fields[4]))
    )
    return ProxiedAddresses(source, destination), rest


def _host(kind: type[IPv4Address | IPv6Address], text: bytes) -> str:
    try:
        host = None if b"%" in text else ipaddress.ip_address(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        host = None
    if host is None or host.version != (4 if kind is IPv4Address else 6):
        family = "IPv4" if kind is IPv4Address else "IPv6"
        raise InvalidHeader(f"a PROXY v1 header with an invalid {family} address {text!r:.48}")
    return str(host)


def _port(text: bytes) -> int:
    # Decimal digits only, no sign, no space, no leading zero (the specification's form).
    if not text.isdigit() or len(text) > 5 or (text[:1] == b"0" and text != b"0"):
        raise InvalidHeader(f"a PROXY v1 header with an invalid port {text!r:.16}")
    port = int(text)
    if port > 65535:
        raise InvalidHeader(f"a PROXY v1 header with an invalid port {text!r:.16}")
    return port


def _read_v2(data: bytes) -> tuple[ProxiedAddresses, bytes] | object:
    if len(data) < V2_FIXED:
        return NEED
    version, command = data[12] >> 4, data[12] & 0xF
    if version != 2:
        raise InvalidHeader(f"a PROXY header of version {version} after the v2 signature")
    if command > 1:
        raise InvalidHeader(f"a PROXY v2 header with an unknown command {command}")
    family, transport = data[13] >> 4, data[13] & 0xF
    length = _v2_length(data)
    end = V2_FIXED + length
    if len(data) < end:
        return NEED
    rest = data[end:]
    if command == 0:  # LOCAL (the proxy's own health check): its addresses are ignored
        return NO_ADDRESSES, rest
    if family and family not in _V2_ADDRESSES:
        raise InvalidHeader(f"a PROXY v2 header with an unknown address family {family}")
    if data[13] not in _V2_FAMILIES:
        raise InvalidHeader(f"a PROXY v2 header with an unknown transport {transport}")
    if family == 0:  # UNSPEC: the connection's own addresses stand
        return NO_ADDRESSES, rest
    if transport != 1:
        raise InvalidHeader(f"a PROXY v2 header for a transport other than a stream ({transport})")
    layout, size = _V2_ADDRESSES[family]
    if length < size:
        raise InvalidHeader(
            f"a PROXY v2 header of {length} bytes, too short for its addresses ({size})"
        )
    if layout is None:  # AF_UNIX: no address a handler could use
        return NO_ADDRESSES, rest
    source, destination, source_port, destination_port = struct.unpack_from(layout, data, 16)
    kind = IPv4Address if family == 0x1 else IPv6Address
    return (
        ProxiedAddresses(
            _address(kind, str(ipaddress.ip_address(source)), source_port),
            _address(kind, str(ipaddress.ip_address(destination)), destination_port),
        ),
        rest,
    )


def _address(
    kind: type[IPv4Address | IPv6Address], host: str, port: int
) -> IPv4Address | IPv6Address:
    return kind("TCP", host, port)
