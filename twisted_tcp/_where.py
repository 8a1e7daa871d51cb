"""
Where to connect and where to listen: immutable values that map to Twisted
endpoints.

A value is checked when it is made, so a bad port or path fails where it was
written, not later inside the reactor.  Nothing here imports the reactor: the
endpoint methods take it as an argument.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs
from twisted.internet import endpoints
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)

from ._layers import Layering, wrap_server_factory
from ._tls import ServerTLS, TLSClientEndpoint, check_alpn, client_creator, server_options

if TYPE_CHECKING:
    from twisted.internet.interfaces import IConnector, IListeningPort, IProtocolFactory
    from twisted.internet.protocol import ClientFactory


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
    size = len(os.fsencode(path))
    if size > _MAX_UNIX_PATH:
        raise ValueError(
            f"path is {size} bytes long, but a Unix socket's path holds at most "
            f"{_MAX_UNIX_PATH} bytes on this system: {path[:40]!r}..."
        )
    return path


# The bytes of a Unix socket's path, its final NUL excluded (sun_path).
_MAX_UNIX_PATH = 107 if sys.platform.startswith("linux") else 103


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


def _show_alpn(alpn: tuple[bytes, ...]) -> str:
    return f", alpn={[name.decode() for name in alpn]!r}" if alpn else ""


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
    Where a client connects: made by L{to_host_and_port}, L{to_file} or
    L{to_endpoint}.
    """

    __slots__ = ()

    def endpoint(self, reactor: object, timeout: float | None) -> IStreamClientEndpoint:
        """
        Return a Twisted client endpoint for this address whose own
        per-attempt timeout is C{timeout}.
        """
        raise NotImplementedError

    def connect_directly(self, reactor: Any, factory: ClientFactory) -> IConnector | None:
        """
        For an address that needs neither a name resolved nor TLS (an IP
        literal, a Unix socket), start connecting with the reactor's own
        C{connectTCP} or C{connectUNIX}, with no timeout of its own, and
        return the connector; else return C{None} (use L{endpoint}).  The
        factory's protocol is then the transport's own: an endpoint puts a
        wrapper between, called at every event of the connection.
        """
        return None


class WhereToListen:
    """
    Where a server listens: made by L{on_port}, L{on_file},
    L{on_port_chosen_by_os} or L{on_endpoint}.
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
class ToHostAndPort(WhereToConnect):
    """
    A TCP address, as L{to_host_and_port} makes it (which checks it).

    @ivar host: a host name, or an IPv4 or IPv6 literal (which skip DNS).
    @ivar port: the port, 1 to 65535.
    @ivar via_local_interface: the local address to connect from, or None.
    @ivar tls: Twisted's client TLS options (C{IOpenSSLClientConnectionCreator}),
        or None for plain TCP.
    """

    host: str
    port: int
    via_local_interface: str | None = None
    tls: Any = None

    def __repr__(self) -> str:
        via = self.via_local_interface
        via = f", via_local_interface={via!r}" if via else ""
        tls = ", tls=..." if self.tls is not None else ""
        return f"to_host_and_port({self.host!r}, {self.port}{via}{tls})"

    def __str__(self) -> str:
        address = f"{_show_host(self.host)}:{self.port}"
        return f"tls:{address}" if self.tls is not None else address

    @property
    def _bind(self) -> tuple[str, int] | None:
        """The local address to connect from, as Twisted takes it."""
        return (self.via_local_interface, 0) if self.via_local_interface else None

    def endpoint(self, reactor: object, timeout: float | None) -> IStreamClientEndpoint:
        bind = self._bind
        # IP literals skip the resolver (and its thread); names get every
        # resolved address tried, IPv4 and IPv6, with Happy Eyeballs.  A
        # timeout of None (no deadline) is what Twisted's connectors take to
        # mean none, whatever the annotations say.
        endpoint: IStreamClientEndpoint
        seconds: Any = timeout
        if isIPAddress(self.host):
            endpoint = endpoints.TCP4ClientEndpoint(reactor, self.host, self.port, seconds, bind)
        elif isIPv6Address(self.host):
            endpoint = endpoints.TCP6ClientEndpoint(reactor, self.host, self.port, seconds, bind)
        else:
            endpoint = endpoints.HostnameEndpoint(reactor, self.host, self.port, seconds, bind)
        if self.tls is not None:
            endpoint = TLSClientEndpoint(self.tls, endpoint)
        return endpoint

    def connect_directly(self, reactor: Any, factory: ClientFactory) -> IConnector | None:
        if self.tls is not None or not (isIPAddress(self.host) or isIPv6Address(self.host)):
            return None
        timeout: Any = None  # (no timer of the connector's: the caller has its deadline)
        return reactor.connectTCP(self.host, self.port, factory, timeout, self._bind)  # type: ignore[no-any-return]


@attrs.frozen(repr=False)
class ToFile(WhereToConnect):
    """
    A Unix-domain stream socket, as L{to_file} makes it.

    @ivar path: the socket's path.
    """

    path: str

    def __repr__(self) -> str:
        return f"to_file({self.path!r})"

    def __str__(self) -> str:
        return f"unix:{self.path}"

    def endpoint(self, reactor: object, timeout: float | None) -> IStreamClientEndpoint:
        return endpoints.UNIXClientEndpoint(reactor, self.path, timeout)

    def connect_directly(self, reactor: Any, factory: ClientFactory) -> IConnector | None:
        timeout: Any = None  # (no timer of the connector's: the caller has its deadline)
        return reactor.connectUNIX(self.path, factory, timeout)  # type: ignore[no-any-return]


@attrs.frozen(repr=False)
class OnPort(WhereToListen):
    """
    A TCP port to listen on, as L{on_port} makes it (which checks it).

    @ivar port: the port; 0 for one the system chooses.
    @ivar interface: the local address to listen on; C{""} for every IPv4 one.
    @ivar tls: the server's TLS (certificate, key, ALPN protocols), or None.
    """

    port: int
    interface: str = ""
    tls: ServerTLS | None = None

    def __repr__(self) -> str:
        if self.port == 0 and not self.interface and self.tls is None:
            return "on_port_chosen_by_os"
        iface = f", interface={self.interface!r}" if self.interface else ""
        tls = ", tls=..." if self.tls is not None else ""
        alpn = _show_alpn(self.tls.alpn) if self.tls is not None else ""
        return f"on_port({self.port}{iface}{tls}{alpn})"

    def __str__(self) -> str:
        address = f"{_show_host(self.interface or '0.0.0.0')}:{self.port}"
        return f"tls:{address}" if self.tls is not None else address

    def endpoint(self, reactor: object, backlog: int) -> IStreamServerEndpoint:
        if isIPv6Address(self.interface):
            return endpoints.TCP6ServerEndpoint(reactor, self.port, backlog, self.interface)
        return endpoints.TCP4ServerEndpoint(reactor, self.port, backlog, self.interface)

    def listen(
        self, reactor: Any, backlog: int, factory: IProtocolFactory
    ) -> Deferred[IListeningPort]:
        """Listen with C{factory}, behind TLS if this port has it."""
        factory = wrap_server_factory(factory, reactor, tls=self.tls)
        return self.endpoint(reactor, backlog).listen(factory)


@attrs.frozen(repr=False)
class OnFile(WhereToListen):
    """
    A Unix-domain stream socket to listen on, as L{on_file} makes it.

    @ivar path: the socket's path.
    """

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
                    # Twisted's adopted port listens again with its own
                    # backlog (50): the socket's own is this one.
                    port.socket.listen(backlog)
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
    # Never blocking: a live server whose backlog is full would keep a
    # blocking connect() (and the reactor) waiting for ever.  Non-blocking,
    # it answers at once: refused (nobody listens), or connected or
    # EAGAIN (somebody does, however busy).
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.setblocking(False)
        status = probe.connect_ex(path)
    finally:
        probe.close()
    if status == errno.ECONNREFUSED:
        os.unlink(path)
    elif status in (0, errno.EAGAIN, errno.EINPROGRESS):
        raise CannotListenError("unix", path, "another server is listening on this path")


def _describe(source: object) -> str:
    return source if isinstance(source, str) else f"{type(source).__name__} endpoint"


@attrs.frozen(repr=False)
class ToEndpoint(WhereToConnect):
    """
    Where a Twisted client endpoint, or its description (such as
    C{"tls:example.com:443"} or C{"unix:/run/s.sock"}), says to connect, as
    L{to_endpoint} makes it.

    @ivar source: the endpoint, or its description.
    """

    source: str | IStreamClientEndpoint

    def __repr__(self) -> str:
        return f"to_endpoint({self.source!r})"

    def __str__(self) -> str:
        return _describe(self.source)

    def endpoint(self, reactor: object, timeout: float | None) -> IStreamClientEndpoint:
        """
        The endpoint: an object as given (its own reactor and timeout), or
        one made from the description with C{reactor}.
        """
        if isinstance(self.source, str):
            endpoint: IStreamClientEndpoint = endpoints.clientFromString(reactor, self.source)
            return endpoint
        return self.source


@attrs.frozen(repr=False)
class OnEndpoint(WhereToListen):
    """
    Listen where a Twisted server endpoint, or its description (such as
    C{"tcp:9000:interface=127.0.0.1"}, C{"tcp6:9000"}, C{"unix:/run/s.sock"},
    C{"ssl:443:privateKey=key.pem:certKey=cert.pem"}, C{"systemd:domain=INET:index=0"}
    or C{"haproxy:tcp:9000"}; see L{endpoints.serverFromString}) says, over
    TLS if C{tls} is set, as L{on_endpoint} makes it.  The backlog is the
    endpoint's own (a description's C{backlog=} option), not the server's
    C{backlog}.

    @ivar source: the endpoint, or its description.
    @ivar tls: the TLS this package puts over the endpoint, or None.
    @ivar alpn: the ALPN protocols for an C{ssl:} description's own TLS.
    """

    source: str | IStreamServerEndpoint
    tls: ServerTLS | None = None
    alpn: tuple[bytes, ...] = ()  # for an ssl: description's own TLS

    def __repr__(self) -> str:
        alpn = _show_alpn(self.alpn or (self.tls.alpn if self.tls is not None else ()))
        tls = ", tls=..." if self.tls is not None else ""
        return f"on_endpoint({self.source!r}{tls}{alpn})"

    def __str__(self) -> str:
        return f"tls:{_describe(self.source)}" if self.tls is not None else _describe(self.source)

    def endpoint(self, reactor: object, backlog: int) -> IStreamServerEndpoint:
        if isinstance(self.source, str):
            endpoint: IStreamServerEndpoint = endpoints.serverFromString(
                reactor, self._proxied() or self.source
            )
            return endpoint
        return self.source

    def _proxied(self) -> str | None:
        """The description under C{haproxy:}, if this is one."""
        source = self.source
        if isinstance(source, str) and source.startswith("haproxy:"):
            return source[len("haproxy:") :]
        return None

    def listen(
        self, reactor: Any, backlog: int, factory: IProtocolFactory
    ) -> Deferred[IListeningPort]:
        """
        Listen with C{factory}.  Behind C{haproxy:}, a connection reaches
        the TLS layer, if any, then C{factory}'s protocol once its PROXY
        header is read, with the client's address as its peer.  An C{ssl:}
        description's TLS is this package's TLS layer (see L{Layering}).
        """
        if not isinstance(self.source, str):
            factory = wrap_server_factory(factory, reactor, tls=self.tls)
            return self.source.listen(factory)
        layering = Layering(
            reactor, tls=self.tls, alpn=self.alpn, proxy_header=self._proxied() is not None
        )
        return self.endpoint(layering, backlog).listen(factory)


def to_host_and_port(
    host: str,
    port: int,
    *,
    via_local_interface: str | None = None,
    tls: bool | IOpenSSLClientConnectionCreator | None = False,
    alpn: Sequence[str] | None = None,
) -> ToHostAndPort:
    """
    Connect over TCP to C{host} (a name, resolved at every connect, every
    address tried, IPv4 and IPv6; or an IPv4 or IPv6 literal, with or
    without brackets) on C{port}.

    @param via_local_interface: a local IP address to connect from.
    @param tls: C{True} for TLS, the server's certificate checked against
        the system's trust store and C{host}; or Twisted's client TLS options
        (C{twisted.internet.ssl.optionsForClientTLS(host, trustRoot=...)}).
        The connection is returned once the handshake has succeeded; a failed
        one is a L{TLSHandshakeError}.  Needs the C{tls} extra.
    @param alpn: with C{tls}, the application protocols to offer over ALPN,
        in order of preference, such as C{["h2", "http/1.1"]}; the one the
        server chose is L{Socket.alpn_protocol}.
    @raise TypeError: if C{host} is not a str, C{port} not an int, C{tls}
        not one of the above, or C{alpn} not a list of str.
    @raise ValueError: if C{host} is empty, C{port} is not in 1..65535, or
        C{alpn} is empty, repeats a name, or is given without C{tls}.
    @raise ImportError: if C{tls} is given and pyOpenSSL is not installed.
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
    protocols = check_alpn(alpn)
    if tls is False or tls is None:
        if protocols:
            raise ValueError("alpn= is for TLS connections: give tls= too")
        creator = None
    else:
        creator = client_creator(host, tls, protocols)
    return ToHostAndPort(host, _check_port(port, allow_zero=False), via_local_interface, creator)


def to_file(path: str | os.PathLike[str]) -> ToFile:
    """
    Connect to the Unix-domain stream socket at C{path}.

    @raise TypeError: if C{path} is not a str or path-like.
    @raise ValueError: if C{path} is empty or holds a NUL byte.
    """
    return ToFile(_check_path(path))


def on_port(
    port: int, *, interface: str = "", tls: object = None, alpn: Sequence[str] | None = None
) -> OnPort:
    """
    Listen on TCP C{port} (0: chosen by the OS) on every IPv4 interface, or
    on C{interface} (an IPv4 or IPv6 address; C{"::"} for every IPv6 one).

    @param tls: serve TLS: C{(certificate_file, key_file)} (PEM; the
        certificate file may hold intermediate certificates after the
        server's), one PEM file holding both, or a Twisted context factory
        such as C{CertificateOptions}.  Files are read now.  Needs the
        C{tls} extra.  A handler starts once the client's handshake is done
        (see L{Server.create}'s C{handshake_timeout}).
    @param alpn: with C{tls}, the application protocols this server speaks,
        in order of preference, such as C{["h2", "http/1.1"]}: the first
        that the client offers is chosen (L{Socket.alpn_protocol}), and a
        client that offers ALPN but none of these fails its handshake.
        Without it, clients that offer ALPN are served with none chosen.
    @raise TypeError: if C{port} is not an int, C{tls} not one of the above,
        or C{alpn} not a list of str.
    @raise ValueError: if C{port} is not in 0..65535, C{interface} is not an
        IP address, a TLS file cannot be read or used (the message names
        it), or C{alpn} is empty, repeats a name, or is given without C{tls}.
    @raise ImportError: if C{tls} is given and pyOpenSSL is not installed.
    """
    interface = _check_host(interface, "interface")
    if interface and not (isIPAddress(interface) or isIPv6Address(interface)):
        raise ValueError(f"interface must be an IP address or '', not {interface!r}")
    port = _check_port(port, allow_zero=True)
    return OnPort(port, interface, _server_tls(tls, alpn))


def _server_tls(tls: object, alpn: object) -> ServerTLS | None:
    protocols = check_alpn(alpn)
    if tls is None:
        if protocols:
            raise ValueError("alpn= is for TLS servers: give tls= too")
        return None
    return server_options(tls, protocols)


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


def to_endpoint(endpoint: str | IStreamClientEndpoint) -> ToEndpoint:
    """
    Connect where a Twisted client endpoint says: an object providing
    C{IStreamClientEndpoint} (used as it is, with its own reactor), or a
    description for L{endpoints.clientFromString} such as
    C{"tls:example.com:443"}, C{"tcp:host=10.0.0.1:port=80"} or
    C{"unix:path=/run/s.sock"}, parsed now and made into an endpoint at each
    connect.  The deadline and the C{interrupt} of L{connect} apply as to
    any other address.

    @raise TypeError: if C{endpoint} is neither.
    @raise ValueError: if Twisted cannot parse the description.
    """
    if isinstance(endpoint, str):
        try:
            with warnings.catch_warnings():
                # Made with no reactor, some endpoints warn (HostnameEndpoint does).
                warnings.simplefilter("ignore", DeprecationWarning)
                endpoints.clientFromString(None, endpoint)
        except Exception as e:
            raise ValueError(f"not a valid client endpoint description: {endpoint!r}: {e}") from e
    elif not IStreamClientEndpoint.providedBy(endpoint):
        raise TypeError(
            "endpoint must be a client endpoint description (str) or provide "
            f"IStreamClientEndpoint, not {type(endpoint).__name__}: {endpoint!r:.80}"
        )
    return ToEndpoint(endpoint)


def on_endpoint(
    endpoint: str | IStreamServerEndpoint,
    *,
    tls: object = None,
    alpn: Sequence[str] | None = None,
) -> OnEndpoint:
    """
    Listen where a Twisted server endpoint says: an object providing
    C{IStreamServerEndpoint}, or a description for
    L{endpoints.serverFromString} (C{tcp:}, C{tcp6:}, C{unix:}, C{ssl:},
    C{systemd:}, C{haproxy:}, ...), parsed now, so a wrong one fails here.
    Behind C{haproxy:}, the handler's address is the client's, from the
    PROXY protocol header (v1 or v2); that takes the description: an
    endpoint object made by Twisted's C{proxyEndpoint} connects the handler
    before the header, with the load balancer's address.

    @param tls: serve TLS over the endpoint, as L{on_port}'s C{tls} (beneath
        the PROXY header of a C{haproxy:} description, as HAProxy's
        C{send-proxy-v2 ssl} sends it).  An C{ssl:} description serves TLS
        already: give its certificate in the description instead.
    @param alpn: the application protocols of the TLS server (this C{tls},
        or an C{ssl:} description's), as L{on_port}'s C{alpn}.
    @raise TypeError: if C{endpoint} is neither, C{tls} not one of
        L{on_port}'s, or C{alpn} not a list of str.
    @raise ValueError: if Twisted cannot parse the description (an unknown
        endpoint type, a bare port number, a bad or unknown option, a
        C{systemd:} one without sockets passed in C{LISTEN_FDS}), if C{tls}
        is given with an C{ssl:} one, or C{alpn} without TLS.
    """
    parsed: object = None
    if isinstance(endpoint, str):
        try:
            # Parsing needs no reactor: the parsers only store it in the endpoint.
            parsed = endpoints.serverFromString(
                None, endpoint[len("haproxy:") :] if endpoint.startswith("haproxy:") else endpoint
            )
        except Exception as e:
            hint = ""
            if endpoint.startswith("systemd:") and isinstance(e, (IndexError, KeyError)):
                hint = (
                    " (no socket passed by systemd: Twisted needs LISTEN_PID, LISTEN_FDS "
                    "and LISTEN_FDNAMES, which systemd 227 and later set)"
                )
            raise ValueError(
                f"not a valid server endpoint description: {endpoint!r}: {e}{hint}"
            ) from e
    elif not IStreamServerEndpoint.providedBy(endpoint):
        raise TypeError(
            "endpoint must be a server endpoint description (str) or provide "
            f"IStreamServerEndpoint, not {type(endpoint).__name__}: {endpoint!r:.80}"
        )
    # Twisted's parsers take any port number; its ports then fail to bind with
    # an OverflowError, and leak their socket (tcp:, tcp6: and ssl: keep the
    # number as _port, which the tests check).
    port = getattr(parsed, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ValueError(
            f"not a valid server endpoint description: {endpoint!r}: the port must be "
            f"between 0 and 65535, not {port}"
        )
    if isinstance(parsed, endpoints.SSL4ServerEndpoint):
        if tls is not None:
            raise ValueError(
                f"{endpoint!r} serves TLS already: give its certificate there, or tls= with "
                "a tcp: description"
            )
        return OnEndpoint(endpoint, None, check_alpn(alpn))
    return OnEndpoint(endpoint, _server_tls(tls, alpn))
