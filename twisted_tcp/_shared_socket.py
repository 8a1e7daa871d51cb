"""
Where a worker of C{twistd tcpserver --workers N} listens: the socket its
supervisor made and handed down, already listening, adopted as it is.

A TCP socket is adopted with the reactor's public C{adoptStreamPort}.  A
Unix socket cannot be: Twisted's adopted Unix port would change the socket
for every process that shares it (see L{_SharedUNIXPort}).  So this module
is the one place that builds on private names of C{twisted.internet.unix}
(C{Port._fromListeningDescriptor} and C{_preexistingSocket}).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any

import attrs
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from ._layers import wrap_server_factory
from ._tls import ServerTLS
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
                    port = _adopt_unix_socket(reactor, self.fd, self.backlog, factory)
                else:
                    port = reactor.adoptStreamPort(self.fd, self.family, factory)
            finally:
                os.close(self.fd)
        except Exception:
            return fail()
        return succeed(port)


class _SharedUNIXPort(unix.Port):  # type: ignore[misc]
    """
    An adopted Unix port that leaves the socket as the supervisor made it.

    Twisted's adopted Unix port (what C{adoptStreamPort(fd, AF_UNIX, ...)}
    makes) would, as it starts, chmod the socket's file to 0666 (undoing an
    endpoint's C{mode=}, and failing in a worker that runs as another user
    than the supervisor, under C{twistd --uid}) and listen with its own
    backlog; and as it stops, C{shutdown(2)} the socket, after which every
    process that shares it refuses connections, and remove the file.  This
    one keeps the supervisor's backlog, does not chmod, and only closes its
    own descriptor when it stops.
    """

    _shouldShutdown = False

    def startListening(self) -> None:
        """Listen on the adopted socket: as C{unix.Port} does for one, less the chmod."""
        port: Any = self
        port.factory.doStart()
        skt, port._preexistingSocket = port._preexistingSocket, None
        skt.listen(self.backlog)
        self.connected = True
        self.socket = skt
        port.fileno = skt.fileno
        self.numberAccepts = 100
        self.startReading()

    def connectionLost(self, reason: Failure) -> None:
        """Close this process's descriptor: C{tcp.Port}'s way, not C{unix.Port}'s (rm the file)."""
        tcp.Port.connectionLost(self, reason)


def _adopt_unix_socket(
    reactor: Any, fd: int, backlog: int, factory: IProtocolFactory
) -> IListeningPort:
    """
    A port that serves C{factory} on the listening Unix socket C{fd} (which
    it duplicates), made and owned by another process, listening with
    C{backlog}, the backlog that process gave it.
    """
    port = _SharedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    port.backlog = backlog
    port.startListening()
    return port  # type: ignore[no-any-return]


__all__ = ["OnSharedSocket"]
