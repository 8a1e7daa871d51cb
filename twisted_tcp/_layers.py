"""
The layers between a server's socket and its protocol: the PROXY protocol
header first (read in clear text, as a load balancer sends it), then TLS.

A server endpoint made from a description listens through L{Layering}, a
stand-in for the reactor that puts these layers around whatever the
endpoint listens with.  An C{ssl:} endpoint's TLS becomes ours that way
(its C{listenSSL} is our TLS layer over C{listenTCP}), so that a TLS
server made from a description chooses ALPN protocols, half-closes under
TLS 1.3 and reads a PROXY header before TLS as one made with C{tls=} does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zope.interface import directlyProvides, providedBy

from ._tls import ServerTLS, wrap_factory

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort, IProtocolFactory


def wrap_server_factory(
    factory: IProtocolFactory,
    reactor: Any,
    *,
    tls: ServerTLS | None = None,
    proxy_header: bool = False,
) -> IProtocolFactory:
    """C{factory} behind TLS (if C{tls}), behind the PROXY header (if C{proxy_header})."""
    if tls is not None:
        factory = wrap_factory(tls, factory, client=False)
    if proxy_header:
        from ._haproxy import ProxyHeaderFactory

        factory = ProxyHeaderFactory(factory, reactor)
    return factory


class Layering:
    """
    The reactor, for a server endpoint to listen with: each C{listen*}
    method of Twisted's reactor interfaces that a stream endpoint calls gets
    the factory behind our layers.  Everything else is the reactor's.
    """

    def __init__(
        self, reactor: Any, *, tls: ServerTLS | None, alpn: tuple[bytes, ...], proxy_header: bool
    ) -> None:
        self._reactor = reactor
        self._tls = tls
        self._alpn = alpn
        self._proxy_header = proxy_header
        directlyProvides(self, providedBy(reactor))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def _wrap(self, factory: IProtocolFactory, tls: ServerTLS | None) -> IProtocolFactory:
        return wrap_server_factory(
            factory, self._reactor, tls=tls or self._tls, proxy_header=self._proxy_header
        )

    def listenTCP(
        self, port: int, factory: IProtocolFactory, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        return self._reactor.listenTCP(port, self._wrap(factory, None), backlog, interface)  # type: ignore[no-any-return]

    def listenSSL(
        self,
        port: int,
        factory: IProtocolFactory,
        contextFactory: Any,
        backlog: int = 50,
        interface: str = "",
    ) -> IListeningPort:
        tls = ServerTLS(contextFactory, self._alpn)
        return self._reactor.listenTCP(port, self._wrap(factory, tls), backlog, interface)  # type: ignore[no-any-return]

    def listenUNIX(
        self,
        address: str,
        factory: IProtocolFactory,
        backlog: int = 50,
        mode: int = 0o666,
        wantPID: bool = False,
    ) -> IListeningPort:
        return self._reactor.listenUNIX(  # type: ignore[no-any-return]
            address, self._wrap(factory, None), backlog, mode, wantPID
        )

    def adoptStreamPort(
        self, fileDescriptor: int, addressFamily: Any, factory: IProtocolFactory
    ) -> IListeningPort:
        return self._reactor.adoptStreamPort(  # type: ignore[no-any-return]
            fileDescriptor, addressFamily, self._wrap(factory, None)
        )
