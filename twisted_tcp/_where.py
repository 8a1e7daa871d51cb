"""
Where to connect and where to listen: immutable values that map to Twisted
endpoints.

A value is checked when it is made, so a bad port or path fails where it was
written, not later inside the reactor.  Nothing here imports the reactor: the
endpoint methods take it as an argument.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import TYPE_CHECKING, Any, Final

import attrs
from twisted.internet import endpoints
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError

if TYPE_CHECKING:
    from twisted.internet.interfaces import (
        IListeningPort,
        IProtocolFactory,
        IStreamClientEndpoint,
        IStreamServerEndpoint,
    )


def _check_port(port: object, *, allow_zero: bool) -> int:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}: {port!r}")
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port must be between {low} and 65535, not {port}")
    return port


def _check_path(path: object) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"path must be a str, not {type(path).__name__}: {path!r}")
    if not path:
        raise ValueError("path must not be empty")
    if "\0" in path:
        raise ValueError(f"path must not contain a NUL byte: {path!r}")
    return path


def _check_host(host: object, what: str) -> str:
    if not isinstance(host, str):
        raise TypeError(f"{what} must be a str, not {type(host).__name__}: {host!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host


def _check_host_name(host: str) -> None:
    """Refuse what can be neither a host name nor an IP literal, such as C{host:port}."""
    if ":" in host and not isIPv6Address(host):
        raise ValueError(
            f"host {host!r} is neither a host name nor an IP address "
            "(give the port as its own argument)"
        )
    if any(c.isspace() or c in "[]/" or ord(c) < 32 for c in host):
        raise ValueError(f"host must be a host name or an IP address, not {host!r}")


def _show_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def show_address(address: object) -> str:
    """A short text for an address: C{host:port}, C{[v6]:port} or C{unix:path}."""
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    name = getattr(address, "name", None)
    if name is not None or type(address).__name__ == "UNIXAddress":
        if isinstance(name, bytes):
            name = name.decode("utf-8", "backslashreplace")
        return f"unix:{name or '(unnamed)'}"
    return str(address)


class WhereToConnect:
    """
    Where a client connects: made by L{to_host_and_port} or L{to_file}.
    """

    __slots__ = ()

    def endpoint(self, reactor: object, timeout: float | None) -> IStreamClientEndpoint:
        """
        Return a Twisted client endpoint for this address whose own
        per-attempt timeout is C{timeout}.
        """
        raise NotImplementedError


class WhereToListen:
    """
    Where a server listens: made by L{on_port}, L{on_file} or
    L{on_port_chosen_by_os}.
    """

    __slots__ = ()

    def endpoint(self, reactor: object, backlog: int) -> IStreamServerEndpoint:
        """Return a Twisted server endpoint for this address."""
        raise NotImplementedError

    def listen(
        self, reactor: Any, backlog: int, factory: IProtocolFactory
    ) -> Deferred[IListeningPort]:
        """Listen with C{factory}; fires with the listening port."""
        return self.endpoint(reactor, backlog).listen(factory)


@attrs.frozen(repr=False)
class HostAndPort(WhereToConnect):
    """A TCP address: a host name or an IPv4/IPv6 literal, and a port."""

    host: str
    port: int
    via_local_interface: str | None = None

    def __repr__(self) -> str:
        via = self.via_local_interface
        via = f", via_local_interface={via!r}" if via else ""
        return f"to_host_and_port({self.host!r}, {self.port}{via})"

    def __str__(self) -> str:
        return f"{_show_host(self.host)}:{self.port}"

    def endpoint(self, reactor: object, timeout: float | None) -> IStreamClientEndpoint:
        bind = (self.via_local_interface, 0) if self.via_local_interface else None
        # IP literals skip the resolver (and its thread); names get every
        # resolved address tried, IPv4 and IPv6, with Happy Eyeballs.  A
        # timeout of None (no deadline) is what Twisted's connectors take to
        # mean none, whatever the annotations say.
        if isIPAddress(self.host):
            return endpoints.TCP4ClientEndpoint(
                reactor, self.host, self.port, timeout, bind  # type: ignore[arg-type]
            )
        if isIPv6Address(self.host):
            return endpoints.TCP6ClientEndpoint(reactor, self.host, self.port, timeout, bind)
        return endpoints.HostnameEndpoint(
            reactor, self.host, self.port, timeout, bind  # type: ignore[arg-type]
        )


@attrs.frozen(repr=False)
class File(WhereToConnect):
    """A Unix-domain stream socket at a path."""

    path: str

    def __repr__(self) -> str:
        return f"to_file({self.path!r})"

    def __str__(self) -> str:
        return f"unix:{self.path}"

    def endpoint(self, reactor: object, timeout: float | None) -> IStreamClientEndpoint:
        return endpoints.UNIXClientEndpoint(reactor, self.path, timeout)


@attrs.frozen(repr=False)
class OnPort(WhereToListen):
    """Listen on a TCP port, on every interface or on one."""

    port: int
    interface: str = ""

    def __repr__(self) -> str:
        if self.port == 0 and not self.interface:
            return "on_port_chosen_by_os"
        iface = f", interface={self.interface!r}" if self.interface else ""
        return f"on_port({self.port}{iface})"

    def __str__(self) -> str:
        return f"{_show_host(self.interface or '0.0.0.0')}:{self.port}"

    def endpoint(self, reactor: object, backlog: int) -> IStreamServerEndpoint:
        if isIPv6Address(self.interface):
            return endpoints.TCP6ServerEndpoint(reactor, self.port, backlog, self.interface)
        return endpoints.TCP4ServerEndpoint(reactor, self.port, backlog, self.interface)


@attrs.frozen(repr=False)
class OnFile(WhereToListen):
    """Listen on a Unix-domain stream socket at a path."""

    path: str

    def __repr__(self) -> str:
        return f"on_file({self.path!r})"

    def __str__(self) -> str:
        return f"unix:{self.path}"

    def endpoint(self, reactor: object, backlog: int) -> IStreamServerEndpoint:
        return endpoints.UNIXServerEndpoint(reactor, self.path, backlog)

    def listen(
        self, reactor: Any, backlog: int, factory: IProtocolFactory
    ) -> Deferred[IListeningPort]:
        """
        Bind the socket here, then hand it to the reactor: a stale socket
        file (its server died without removing it) is replaced, a live
        server's path is refused, and a failed bind leaks no descriptor.
        Twisted removes the file when the port stops listening.
        """
        try:
            _claim_socket_path(self.path)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                try:
                    listener.bind(self.path)
                except OSError as e:
                    raise CannotListenError("unix", self.path, e) from None
                try:
                    listener.listen(backlog)
                    listener.setblocking(False)
                    port = reactor.adoptStreamPort(listener.fileno(), socket.AF_UNIX, factory)
                except BaseException:
                    os.unlink(self.path)
                    raise
            finally:
                listener.close()  # the reactor's port holds its own duplicate
        except Exception:
            return fail()
        return succeed(port)


def _claim_socket_path(path: str) -> None:
    """
    Make way for a Unix socket at C{path}: a socket file nobody listens on
    any more is removed; a live one is refused.

    @raise CannotListenError: if a server is listening on C{path}.
    """
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return  # not a socket, or missing: bind() reports what is wrong
    except OSError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
        return
    except OSError:
        return
    finally:
        probe.close()
    raise CannotListenError("unix", path, "another server is listening on this path")


@attrs.frozen(repr=False)
class OnEndpointDescription(WhereToListen):
    """
    Listen where a Twisted server endpoint description says, such as
    C{"tcp:9000:interface=127.0.0.1"}, C{"tcp6:9000"} or C{"unix:/run/s.sock"}
    (see L{twisted.internet.endpoints.serverFromString}).  The backlog is the
    description's own C{backlog=} option, not the server's C{backlog}.
    """

    description: str

    def __repr__(self) -> str:
        return f"on_endpoint_description({self.description!r})"

    def __str__(self) -> str:
        return self.description

    def endpoint(self, reactor: object, backlog: int) -> IStreamServerEndpoint:
        endpoint: IStreamServerEndpoint = endpoints.serverFromString(reactor, self.description)
        return endpoint


def to_host_and_port(
    host: str, port: int, *, via_local_interface: str | None = None
) -> HostAndPort:
    """
    Connect over TCP to C{host} (a name, resolved at every connect, or an IPv4
    or IPv6 literal, with or without brackets) on C{port}.

    @param via_local_interface: a local IP address to connect from.
    @raise TypeError: if C{host} is not a str or C{port} not an int.
    @raise ValueError: if C{host} is empty or C{port} is not in 1..65535.
    """
    host = _check_host(host, "host")
    if not host:
        raise ValueError("host must not be empty")
    _check_host_name(host)
    if via_local_interface is not None:
        via_local_interface = _check_host(via_local_interface, "via_local_interface")
        if not (isIPAddress(via_local_interface) or isIPv6Address(via_local_interface)):
            raise ValueError(
                f"via_local_interface must be an IP address, not {via_local_interface!r}"
            )
    return HostAndPort(host, _check_port(port, allow_zero=False), via_local_interface)


def to_file(path: str | os.PathLike[str]) -> File:
    """
    Connect to the Unix-domain stream socket at C{path}.

    @raise TypeError: if C{path} is not a str or path-like.
    @raise ValueError: if C{path} is empty or holds a NUL byte.
    """
    return File(_check_path(path))


def on_port(port: int, *, interface: str = "") -> OnPort:
    """
    Listen on TCP C{port} (0: chosen by the OS) on every IPv4 interface, or
    on C{interface} (an IPv4 or IPv6 address; C{"::"} for every IPv6 one).

    @raise TypeError: if C{port} is not an int.
    @raise ValueError: if C{port} is not in 0..65535 or C{interface} is not an
        IP address.
    """
    interface = _check_host(interface, "interface")
    if interface and not (isIPAddress(interface) or isIPv6Address(interface)):
        raise ValueError(f"interface must be an IP address or '', not {interface!r}")
    return OnPort(_check_port(port, allow_zero=True), interface)


on_port_chosen_by_os: Final[OnPort] = OnPort(0)
"""Listen on a TCP port the OS chooses, on every IPv4 interface."""


def on_file(path: str | os.PathLike[str]) -> OnFile:
    """
    Listen on a Unix-domain stream socket at C{path}.  The socket file is
    removed when the server closes.

    @raise TypeError: if C{path} is not a str or path-like.
    @raise ValueError: if C{path} is empty or holds a NUL byte.
    """
    return OnFile(_check_path(path))


def on_endpoint_description(description: str) -> OnEndpointDescription:
    """
    Listen where the Twisted server endpoint description C{description} says,
    e.g. C{"tcp:9000:interface=127.0.0.1"}: the description is parsed here,
    so a wrong one fails now, and the endpoint is made when the server starts.

    @raise TypeError: if C{description} is not a str.
    @raise ValueError: if Twisted cannot parse C{description} (an unknown
        endpoint type, a bare port number, a bad or unknown option).
    """
    if not isinstance(description, str):
        raise TypeError(
            f"description must be a str, not {type(description).__name__}: {description!r}"
        )
    try:
        # Parsing needs no reactor: the parsers only store it in the endpoint.
        endpoints.serverFromString(None, description)
    except Exception as e:
        raise ValueError(f"not a valid server endpoint description: {description!r}: {e}") from e
    return OnEndpointDescription(description)
