"""
Deadlines: one for connecting, one for a reply, and an interrupt that
abandons a connection attempt from outside.
"""

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

import twisted_tcp

log = Logger()


async def ask(reactor, where, question, *, connect_timeout=5.0, reply_timeout=10.0):
    """
    Send one line and return the reply line.  Connecting fails with
    ConnectTimeoutError after connect_timeout seconds (DNS included); the
    reply fails with twisted.internet.defer.TimeoutError after reply_timeout.
    """
    _sock, reader, writer = await twisted_tcp.connect(
        where, timeout=connect_timeout, reactor=reactor
    )
    try:
        writer.write_line(question)
        return await reader.read_line().addTimeout(reply_timeout, reactor)
    finally:
        await writer.close()


async def connect_patiently(reactor, where, interrupt, *, attempt_timeout=2.0, pause=0.5):
    """
    Connect to where, trying again after every failure, until it works
    (then return socket, reader and writer) or interrupt fires (then fail
    with ConnectInterruptedError, leaving no socket behind).
    """
    while True:
        try:
            return await twisted_tcp.connect(
                where, timeout=attempt_timeout, interrupt=interrupt, reactor=reactor
            )
        except (error.ConnectError, error.DNSLookupError) as e:
            # ConnectTimeoutError is a ConnectError too; ConnectInterruptedError
            # is not, so it ends the loop.
            log.info(
                "{where}: {error}; trying again in {pause} s", where=where, error=e, pause=pause
            )
        await deferLater(reactor, pause, lambda: None)


def when_shutting_down(reactor):
    """A Deferred that fires when the reactor begins to stop (Ctrl-C, SIGTERM)."""
    stopping = Deferred()
    reactor.addSystemEventTrigger("before", "shutdown", stopping.callback, None)
    return stopping
