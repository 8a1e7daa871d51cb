"""
A worker process of C{twistd tcpserver --workers N}, which its supervisor
(L{twisted_tcp._supervisor}) runs as C{python -m twisted_tcp._worker INDEX
SETTINGS}.

A worker (L{main}) adopts the socket it was handed (L{OnSharedSocket}),
runs a L{TcpServerService} on it, says C{listening} on its control pipe, and
on SIGTERM or when its stdin closes shuts the service down gracefully, says
C{closed} once it no longer accepts, and exits with status 0.  It logs to
its stderr, one line per event, for the supervisor to log again.  It
ignores SIGINT: a Ctrl-C in a terminal reaches the whole process group, and
it is the supervisor's to act on.  L{twisted_tcp._control} describes what
passes between the two.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import FileLogObserver, Logger, globalLogBeginner
from twisted.python import usage
from twisted.python.failure import Failure

from ._control import (
    CLOSED,
    CONTROL_FD,
    LISTENING,
    LOG_NAMESPACE,
    STATS_INTERVAL,
    WORKER_FD,
    log_line,
    read_worker_argv,
    stats_line,
)
from ._service import ListenError, TcpServerService, load_handler
from ._shared_socket import OnSharedSocket
from ._tls import check_alpn, server_options

_log = Logger(namespace=LOG_NAMESPACE)


class _Control(Protocol):
    """
    The worker's end of its pipes to the supervisor: its stdin, whose
    closing (the supervisor died) calls C{stop}, and L{CONTROL_FD}, where
    it writes its control lines.
    """

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop

    def say(self, line: bytes) -> None:
        """Write the control line C{line} (once the pipes are connected; else nothing)."""
        if self.transport is not None:
            self.transport.write(line + b"\n")

    def say_at_once(self, line: bytes) -> None:
        """
        Write the control line C{line} now, not through the reactor: as the
        worker shuts down, what the pipe's transport still buffers is
        dropped.  One write of less than PIPE_BUF bytes to a pipe is whole,
        never mixed with another.
        """
        try:
            os.write(CONTROL_FD, line + b"\n")
        except OSError:  # the supervisor is gone
            pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        """Stdin closed (the supervisor died, or closed it): stop the worker."""
        self._stop()


def _install_reactor(module: str | None) -> None:
    """Install the supervisor's kind of reactor (best effort: else the default one)."""
    if not module or "twisted.internet.reactor" in sys.modules:
        return
    try:
        importlib.import_module(module).install()
    except Exception:
        pass


def main(argv: list[str]) -> int:
    """
    Run a worker: C{argv} is C{[INDEX, SETTINGS_JSON]}.  Serve on descriptor
    L{WORKER_FD} until SIGTERM or the end of stdin; return the exit status
    (0 after a graceful stop, 1 if it could not start).
    """
    index, settings = read_worker_argv(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.set_inheritable(CONTROL_FD, False)  # not for the processes the handler starts
    log_file = sys.stderr
    globalLogBeginner.beginLoggingTo(
        [FileLogObserver(log_file, log_line)], redirectStandardIO=True
    )
    _install_reactor(settings.reactor)
    from twisted.internet import reactor as global_reactor

    reactor: Any = global_reactor
    try:
        handler = load_handler(settings.handler)
        tls = (
            None
            if settings.tls_files is None
            else server_options(settings.tls_files, check_alpn(settings.tls_alpn))
        )
    except (usage.UsageError, ValueError, ImportError) as e:
        _log.critical("worker {index} cannot start: {error}", index=index, error=str(e))
        return 1
    service = TcpServerService(
        OnSharedSocket(WORKER_FD, settings.family, settings.backlog, tls),
        handler,
        settings.handler,
        settings=settings.settings,
        reactor=reactor,
    )
    status = 0
    stopping = False

    def stop() -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            # Once is enough; and Python restores the default handler as it
            # exits, so that a late SIGTERM would end the worker by it.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            reactor.stop()

    control = _Control(stop)

    def report_stats() -> None:
        stats = service.stats()
        if stats is not None:
            control.say(stats_line(stats))

    reporting = LoopingCall(report_stats)
    reporting.clock = reactor

    def report_at_end(result: object) -> object:
        """
        Say what the server counted to its end, now that it has ended (the
        handlers that ran while it stopped included), and stop reporting.
        """
        if reporting.running:
            reporting.stop()
            stats = service.stats()
            if stats is not None:
                control.say_at_once(stats_line(stats))  # the shutdown that follows would drop it
        return result

    def stop_service() -> Deferred[None] | None:
        server = service.server
        if server is not None:
            server.close_finished.addBoth(lambda _: control.say(CLOSED))
        stopped = service.stopService()
        if stopped is None:
            report_at_end(None)
            return None
        return stopped.addBoth(report_at_end)

    def start() -> None:
        nonlocal status
        signal.signal(signal.SIGTERM, lambda signum, frame: reactor.callFromThread(stop))
        try:
            service.startService()
        except ListenError as e:
            _log.critical("worker {index} cannot start: {error}", index=index, error=str(e))
            status = 1
            stop()
            return
        from twisted.internet.stdio import StandardIO

        # (On POSIX, StandardIO takes the descriptors: the type stubs know only Windows.)
        StandardIO(control, stdout=CONTROL_FD, reactor=reactor)  # type: ignore[call-arg]
        control.say(LISTENING)
        if settings.report_stats:
            reporting.start(STATS_INTERVAL)

    reactor.addSystemEventTrigger("before", "shutdown", stop_service)
    reactor.callWhenRunning(start)
    reactor.run()
    return status


if __name__ == "__main__":
    # Run as `python -m twisted_tcp._worker`: use the module under its own
    # name, not as __main__, a second copy of it.
    from twisted_tcp._worker import main as _main

    sys.exit(_main(sys.argv[1:]))


__all__ = ["main"]
