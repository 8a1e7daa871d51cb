"""
The service of C{twistd tcpserver} in one process: L{TcpServerService}
runs a L{Server} and shuts it down gracefully; with it, what every
C{tcpserver} process needs to start one: the loading of the handler
(L{load_handler}) and the error that ends twistd when it cannot listen
(L{ListenError}, worded by L{cannot_listen}).

Nothing here imports the reactor until the service starts (twisted#3785: a
plugin that imports the reactor breaks C{twistd -r}).

The life of the service, as twistd drives it (L{twisted_tcp._twistd} makes
it from the command line):

    1. C{privilegedStartService} (still as root, if twistd was started as root
       with C{--uid}) listens.  If that fails, twistd exits with status 1 and
       the reason, without a traceback.
    2. One log line says where the server listens and which handler it runs.
    3. On SIGTERM or SIGINT, C{stopService} stops accepting, waits up to
       C{--shutdown-timeout} seconds for the running handlers to finish and
       their replies to be flushed, aborts whatever connections remain (a reset), and
       only then lets the reactor stop (twistd waits for its Deferred).
       twistd then ends the process with the same signal.

With C{--workers N}, each worker process (L{twisted_tcp._worker}) runs this
service on the socket its supervisor handed down.
"""

from __future__ import annotations

import importlib
import traceback
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from ._connect import default_reactor
from ._handler import check_handler
from ._server import Handler, Server
from ._settings import DEFAULTS, Settings
from ._stats import ServerStats
from ._where import WhereToListen, show_address

# The namespace of this service's lines from before it moved out of
# twisted_tcp._twistd (the README shows it), kept so that log filters keep working.
_log = Logger(namespace="twisted_tcp._twistd")

HANDLER_EXAMPLE = "twisted_tcp.examples.echo:handle"
"""The handler that messages about C{--handler} give as an example."""


class ListenError(SystemExit, Exception):
    """
    The server could not listen (a port in use, a path it may not bind).

    It is an L{Exception}, so that twistd's start-up error handling runs (it
    removes the pid file, and tells a daemonizing parent why the child
    failed), and a L{SystemExit}, so that the interpreter then ends with
    status 1 and prints only this message instead of a traceback.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def __str__(self) -> str:
        return str(self.code)


# -- the handler --------------------------------------------------------------


def _where_it_failed(exc: BaseException) -> str:
    """The last frame of C{exc}'s traceback outside importlib, as C{" (at FILE, line N)"}."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith("<frozen ")
    ]
    if not frames or isinstance(exc, SyntaxError):  # a SyntaxError names its own place
        return ""
    return f" (at {frames[-1].filename}, line {frames[-1].lineno})"


def load_handler(spec: str) -> Handler:
    """
    Import C{spec}, a C{"module:function"} (or C{"module:object.method"})
    naming a callable C{handler(address, reader, writer)}, and return it.

    @raise usage.UsageError: with a message that says what is wrong: the
        syntax, a module that cannot be found, an error raised while the
        module was imported, a missing attribute, or an object that is not
        callable or cannot take three arguments.
    """
    module_name, colon, attribute = spec.partition(":")
    names = attribute.split(".")
    if not (
        colon
        and all(part.isidentifier() for part in module_name.split("."))
        and all(part.isidentifier() for part in names)
    ):
        raise usage.UsageError(
            f"--handler must be MODULE:FUNCTION, e.g. {HANDLER_EXAMPLE}, not {spec!r}"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise usage.UsageError(
                f"--handler {spec}: module not found: no module named {missing!r} "
                "(is its directory on PYTHONPATH, or its package installed?)"
            ) from e
        raise usage.UsageError(
            f"--handler {spec}: module {module_name!r} was found, but importing it failed: "
            f"{type(e).__name__}: {e}{_where_it_failed(e)}"
        ) from e
    except Exception as e:
        raise usage.UsageError(
            f"--handler {spec}: module {module_name!r} was found, but importing it failed: "
            f"{type(e).__name__}: {e}{_where_it_failed(e)}"
        ) from e
    handler: Any = module
    for i, name in enumerate(names):
        try:
            handler = getattr(handler, name)
        except AttributeError:
            source = getattr(module, "__file__", None) or module_name
            raise usage.UsageError(
                f"--handler {spec}: module {module_name!r} ({source}) has no attribute "
                f"{'.'.join(names[: i + 1])!r}"
            ) from None
    if not callable(handler):
        raise usage.UsageError(
            f"--handler {spec}: {attribute!r} is not callable: it is "
            f"{handler!r:.80}, of type {type(handler).__name__}"
        )
    try:
        check_handler(handler, "a handler", "handler(address, reader, writer)")
    except TypeError as e:
        raise usage.UsageError(f"--handler {spec}: {e}") from None
    return handler  # type: ignore[no-any-return]


# -- the service --------------------------------------------------------------


def cannot_listen(where: object, reason: Failure | str) -> str:
    """
    What twistd says when it cannot listen on C{where}: the reason first,
    so that it survives twistd's daemon mode, which passes a start-up
    error to the terminal cut to about 60 characters.
    """
    if isinstance(reason, Failure):
        error = reason.value
        if isinstance(error, CannotListenError):
            reason = str(error.socketError)
        else:
            reason = f"{type(error).__name__}: {error}"
    return f"twisted_tcp tcpserver: {reason}: cannot listen on {where}"


class TcpServerService(Service):
    """
    A service that runs a L{Server}: it listens when it starts (in
    C{privilegedStartService} under twistd, else in C{startService}), and its
    C{stopService} shuts the server down gracefully.

    @ivar server: the running L{Server}, or C{None} before it listens.
    @ivar settings: the server's limits, and C{shutdown_timeout}.
    """

    name = "tcpserver"
    server: Server | None = None
    _last_server: Server | None = None  # the server, also once it is stopping

    def __init__(
        self,
        where: WhereToListen,
        handler: Handler,
        handler_name: str,
        *,
        settings: Settings = DEFAULTS,
        reactor: Any = None,
    ) -> None:
        self.where = where
        self.handler = handler
        self.handler_name = handler_name
        self.settings = settings
        self._reactor = reactor
        self._listening: Deferred[None] | None = None
        self._starting = False
        self._start_error: ListenError | None = None

    def privilegedStartService(self) -> None:
        """Listen, as twistd starts the service (before it drops privileges)."""
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        """Start; listen now if C{privilegedStartService} did not."""
        Service.startService(self)
        if self._listening is None:  # not started by twistd: privilegedStartService was not called
            self._listen()

    def _listen(self) -> None:
        """
        Start listening.  Endpoints of TCP ports and Unix sockets listen at
        once: a failure to do so raises L{ListenError} here, which makes
        twistd exit with status 1 and the message.  An endpoint that listens
        later and fails stops the reactor instead.
        """
        self._reactor = default_reactor(self._reactor)
        self._start_error = None
        self._starting = True
        try:
            self._listening = Server.create(
                self.where, self.handler, settings=self.settings, reactor=self._reactor
            ).addCallbacks(self._listening_now, self._cannot_listen)
        finally:
            self._starting = False
        if self._start_error is not None:
            self._listening = None
            raise self._start_error

    def stats(self) -> ServerStats | None:
        """The L{Server.stats} of the server, also while it stops; None before it listens."""
        server = self._last_server
        return None if server is None else server.stats()

    def _listening_now(self, server: Server) -> None:
        """Keep the listening C{server}, and log where it listens."""
        self.server = self._last_server = server
        _log.info(
            "twisted_tcp tcpserver listening on {address} (handler {handler})",
            address=show_address(server.listening_on_address),
            handler=self.handler_name,
        )

    def _cannot_listen(self, failure: Failure) -> None:
        """
        Have L{_listen} raise L{ListenError}, or, after it returned, log the
        failure and stop the reactor.
        """
        message = cannot_listen(self.where, failure)
        if self._starting:
            # Raised by _listen.  twistd's log takes in stderr, where the
            # message is printed when the process exits: no need to log it.
            self._start_error = ListenError(message)
        elif not failure.check(defer.CancelledError):
            _log.critical("{message}; stopping", message=message)
            self._reactor.stop()

    def stopService(self) -> Deferred[None] | None:
        """
        Stop accepting, let the running handlers finish for at most
        C{shutdown_timeout} seconds, then abort the connections that remain.
        The Deferred fires when every connection is closed.
        """
        Service.stopService(self)
        listening, self._listening = self._listening, None
        server, self.server = self.server, None
        if server is None:
            if listening is not None:
                listening.cancel()  # an endpoint still on its way to listening
            return None
        return Deferred.fromCoroutine(self._shut_down(server))

    async def _shut_down(self, server: Server) -> None:
        """Close C{server}: stop accepting, wait for its handlers, abort what remains."""
        timeout = self.settings.shutdown_timeout
        _log.info(
            "twisted_tcp tcpserver stopping: no new connections; waiting up to {timeout:g} s "
            "for {n} connection(s) to finish",
            timeout=timeout,
            n=server.num_connections,
        )
        await server.close()
        try:
            await server.drained().addTimeout(timeout, self._reactor)
        except defer.TimeoutError:
            # One more turn of the reactor first, so that bytes a handler wrote
            # just before the deadline are handed to the kernel, not dropped.
            await deferLater(self._reactor, 0, lambda: None)
            _log.warn(
                "twisted_tcp tcpserver: closing {n} connection(s) still open after {timeout:g} s",
                n=server.num_connections,
                timeout=timeout,
            )
            await server.close(close_existing_connections=True)
        _log.info("twisted_tcp tcpserver stopped")


__all__ = ["HANDLER_EXAMPLE", "ListenError", "TcpServerService", "cannot_listen", "load_handler"]
