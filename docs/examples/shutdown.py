"""
Graceful shutdown of a Server in your own application: stop accepting, let
the running handlers finish for a while, then close what remains.  As a
Twisted service, so that it stops when the application does.
"""

from twisted.application.service import Service
from twisted.internet import defer

import twisted_tcp


async def shut_down(server, reactor, timeout=10.0):
    await server.close()  # stop accepting: new clients are refused
    try:
        # Handlers finish, and their replies are flushed, or the time is up.
        await server.drained().addTimeout(timeout, reactor)
    except defer.TimeoutError:
        # Closed at once: unsent bytes are dropped and the peers get a reset.
        await server.close(close_existing_connections=True)


class ServerService(Service):
    """Serve handler on where while the service runs."""

    def __init__(self, where, handler, *, shutdown_timeout=10.0, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.where = where
        self.handler = handler
        self.shutdown_timeout = shutdown_timeout
        self.reactor = reactor
        self.server = None

    def startService(self):
        super().startService()
        starting = twisted_tcp.Server.create(self.where, self.handler, reactor=self.reactor)
        starting.addCallback(self._listening)

    def _listening(self, server):
        self.server = server

    def stopService(self):
        super().stopService()
        if self.server is None:
            return None
        server, self.server = self.server, None
        return defer.Deferred.fromCoroutine(shut_down(server, self.reactor, self.shutdown_timeout))
