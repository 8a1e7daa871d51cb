"""
Where a worker of C{twistd tcpserver --workers N} listens: the socket its
supervisor made and handed down, already listening, adopted as it is.

A TCP socket is adopted with the reactor's public C{adoptStreamPort}.  A
Unix socket cannot be: Twisted's adopted Unix port would change the socket
for every process that shares it, so it is adopted by
L{twisted_tcp._twisted_private.adopt_shared_unix_socket}.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed

from ._layers import wrap_server_factory
from ._tls import ServerTLS
from ._twisted_private import adopt_shared_unix_socket
from ._where import WhereToListen

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort, IProtocolFactory


@attrs.frozen
class OnSharedSocket(WhereToListen):
    """
    The socket a worker was handed by its supervisor, already listening on
    descriptor C{fd}: adopting it neither changes it nor removes a Unix
    socket's file (the supervisor's to remove).  Listening on it closes
    C{fd}: the port holds its own duplicate.
    """

    fd: int
    family: int
    backlog: int
    tls: ServerTLS | None = None

    def __str__(self) -> str:
        return f"the socket of the supervisor (descriptor {self.fd})"

    def listen(
        self, reactor: Any, backlog: int, factory: IProtocolFactory
    ) -> Deferred[IListeningPort]:
        """
        Serve C{factory} (under TLS if C{tls}) on the socket; C{backlog} is
        not used: the supervisor's backlog stays.  The Deferred has its
        result at once: the port, or the failure to adopt the socket.
        """
        factory = wrap_server_factory(factory, reactor, tls=self.tls)
        try:
            try:
                if self.family == socket.AF_UNIX:
                    port = adopt_shared_unix_socket(reactor, self.fd, self.backlog, factory)
                else:
                    port = reactor.adoptStreamPort(self.fd, self.family, factory)
            finally:
                os.close(self.fd)
        except Exception:
            return fail()
        return succeed(port)


__all__ = ["OnSharedSocket"]
