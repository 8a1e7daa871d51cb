"""
Log what a Server did each minute, from its stats().
"""

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

log = Logger()


def log_stats(server):
    s = server.stats()
    log.info(
        "{now} connections ({parked} waiting), "
        "{accepted} accepted, {errors} handler errors, "
        "{inn} bytes in, {out} out",
        now=s.connections,
        parked=s.parked,
        accepted=s.accepted,
        errors=s.handler_errors,
        inn=s.bytes_received,
        out=s.bytes_sent,
    )


def every_minute(server, reactor=None):
    """Start logging; the returned call stop()s it."""
    call = LoopingCall(log_stats, server)
    if reactor is not None:
        call.clock = reactor
    call.start(60.0, now=False)
    return call
