"""
C{twistd tcpserver}: its options, the loading of the handler, and the service
that runs a L{Server} and shuts it down gracefully.

The plugin file, C{twisted/plugins/twisted_tcp_plugin.py}, only names this
module: Twisted's C{ServiceMaker} imports it when twistd needs L{Options} or
L{makeService}, so a twistd that merely lists its plugins does not import it.
Nothing here imports the reactor until the service starts (twisted#3785: a
plugin that imports the reactor breaks C{twistd -r}).

The life of the service, as twistd drives it:

    1. L{Options} parses the command line and imports the handler; any error
       ends twistd with a usage message before anything listens.
    2. C{privilegedStartService} (still as root, if twistd was started as root
       with C{--uid}) listens.  If that fails, twistd exits with status 1 and
       the reason, without a traceback.
    3. One log line says where the server listens and which handler it runs.
    4. On SIGTERM or SIGINT, C{stopService} stops accepting, waits up to
       C{--shutdown-timeout} seconds for the running handlers to finish and
       their replies to be flushed, aborts whatever connections remain (a reset), and
       only then lets the reactor stop (twistd waits for its Deferred).
       twistd then ends the process with the same signal.

With C{--workers N} (N > 1), L{makeService} returns the supervisor of
L{twisted_tcp._workers} instead, which listens here and runs this service in
N worker processes.
"""

from __future__ import annotations

import importlib
import os
import sys
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
from ._where import (
    OnEndpoint,
    OnPort,
    WhereToListen,
    on_endpoint,
    on_file,
    on_port,
    show_address,
)

_log = Logger()

_HANDLER_EXAMPLE = "twisted_tcp.examples.echo:handle"


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
            f"--handler must be MODULE:FUNCTION, e.g. {_HANDLER_EXAMPLE}, not {spec!r}"
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


# -- the options --------------------------------------------------------------


def _number(option: str, text: str, *, whole: bool, none: str | None = None) -> Any:
    """
    C{text} as an int (C{whole}) or a float, or None if it is the word
    C{none}; ASCII only (Python would read other digits too).
    """
    if none is not None and text.lower() == none:
        return None
    try:
        if not text.isascii():
            raise ValueError(text)
        return int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number of seconds"
        also = f", or '{none}'" if none else ""
        raise usage.UsageError(f"--{option} must be {kind}{also}, not {text!r}") from None


def _limit(option: str, field: str, text: str, none: str | None = None) -> Any:
    """The value of C{--option}, for the L{Settings} field C{field}, checked as it checks it."""
    value = _number(option, text, whole=isinstance(getattr(DEFAULTS, field), int), none=none)
    try:
        return Settings.check(field, value, label=f"--{option}", none_as=f"'{none}'")
    except (TypeError, ValueError) as e:
        raise usage.UsageError(str(e)) from None


def _whole_number(option: str, text: str) -> int:
    """C{text} as a whole number of at least 1, in ASCII digits."""
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise usage.UsageError(f"--{option} must be a whole number of at least 1, not {text!r}")
    return int(text)


def _where_from_port(text: str) -> WhereToListen:
    if text.isascii() and text.isdigit():
        port = int(text)
        if port > 65535:
            raise usage.UsageError(f"--port must be between 0 and 65535, not {port}")
        return on_port(port)
    if ":" in text:
        try:
            return on_endpoint(text)
        except ValueError as e:
            raise usage.UsageError(f"--port: {e}") from None
    raise usage.UsageError(
        "--port must be a port number (e.g. 9000, or 0 to let the OS choose) or a Twisted "
        f"endpoint description (e.g. tcp:9000:interface=127.0.0.1), not {text!r}"
    )


class Options(usage.Options):
    """The command line of C{twistd tcpserver}."""

    synopsis = "--handler MODULE:FUNCTION (--port PORT | --file PATH) [options]"

    longdesc = (
        "Serve TCP (or Unix socket) connections with a twisted_tcp handler: for each "
        "connection, handler(address, reader, writer) is called, where reader and writer "
        "are a twisted_tcp Reader and Writer; it may return a value, a Deferred or a "
        "coroutine, and the connection is flushed and closed when it finishes. "
        "On SIGTERM or SIGINT the server stops accepting, lets running handlers finish for "
        "up to --shutdown-timeout seconds, aborts the connections that remain (the clients get "
        "a reset), and exits. "
        "With --workers N, N worker processes serve on the one listening socket; a worker "
        "that dies is restarted, SIGHUP restarts them one by one, and SIGTERM or SIGINT stop "
        "them all as above, then twistd exits with status 0. "
        f"Example: twistd -n --pidfile= tcpserver --port 9000 --handler {_HANDLER_EXAMPLE}"
    )

    optParameters = [
        [
            "port",
            None,
            None,
            "TCP port to listen on, on every IPv4 interface (0: a port chosen by the OS, "
            "logged at start), or a Twisted endpoint description such as "
            "tcp:9000:interface=127.0.0.1, tcp6:9000, unix:/run/app.sock or haproxy:tcp:9000.",
        ],
        [
            "file",
            None,
            None,
            "Path of a Unix-domain socket to listen on instead of a port (removed when the "
            "server stops).",
        ],
        [
            "tls-cert",
            None,
            None,
            "Serve TLS on --port (a port or a tcp:, tcp6:, unix: or haproxy: description) "
            "with this certificate (PEM; the server's certificate, then any intermediate "
            "ones). Needs --tls-key and twisted_tcp[tls].",
        ],
        [
            "tls-key",
            None,
            None,
            "The private key (PEM) of --tls-cert; may be the same file.",
        ],
        [
            "tls-alpn",
            None,
            None,
            "The application protocols the TLS server speaks, for ALPN, in order of "
            "preference, separated by commas (e.g. h2,http/1.1). Without it, clients that "
            "offer ALPN are served with no protocol chosen.",
        ],
        [
            "handshake-timeout",
            None,
            f"{DEFAULTS.handshake_timeout:g}",
            "Seconds a TLS client has to finish its handshake; the handler starts once it "
            "is done.",
        ],
        [
            "handler",
            None,
            None,
            "Required. The handler, as MODULE:FUNCTION, e.g. twisted_tcp.examples.echo:handle "
            "or twisted_tcp.examples.kv:handle; the module must be importable (PYTHONPATH).",
        ],
        [
            "max-connections",
            None,
            str(DEFAULTS.max_connections),
            "Most connections served at once (by each worker, with --workers); beyond, new "
            "clients wait in the backlog.",
        ],
        [
            "workers",
            None,
            "1",
            "Worker processes that accept connections on the one listening socket, each "
            "running the handler with the limits given here (--max-connections is per "
            "worker). 1: serve in the twistd process itself. Use up to one per CPU core.",
        ],
        [
            "backlog",
            None,
            None,
            f"Length of the kernel's queue of connections not yet accepted [default: "
            f"{DEFAULTS.backlog}]. With an endpoint description, use its backlog= option.",
        ],
        [
            "buffer-age-limit",
            None,
            f"{DEFAULTS.buffer_age_limit:g}",
            "Seconds that written bytes may wait unsent (the client stopped reading) before "
            "the connection is closed, or 'unlimited'.",
        ],
        [
            "idle-timeout",
            None,
            "none",
            "Seconds after which a connection that received and sent nothing is closed, or "
            "'none'. It frees the slots of clients that vanished or sit idle.",
        ],
        [
            "shutdown-timeout",
            None,
            f"{DEFAULTS.shutdown_timeout:g}",
            "Seconds that running handlers get to finish after SIGTERM or SIGINT; the "
            "connections still open then are aborted (the clients get a reset).",
        ],
    ]

    def parseOptions(self, options: Any = None) -> None:
        """
        Parse the command line.  Under twistd (as its C{tcpserver}
        subcommand), a usage error is printed as one line with the reason,
        then a pointer to C{--help}, on stderr, and twistd exits with status
        1: twistd itself would print the whole help first and the reason
        last.  Used alone, it raises L{usage.UsageError}.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            sys.stderr.write(
                f"twistd tcpserver: {e}\n"
                "Run 'twistd tcpserver --help' for the options.\n"
            )
            raise SystemExit(1) from None

    def postOptions(self) -> None:
        """Check every option and import the handler; raise UsageError on the first error."""
        port, path = self["port"], self["file"]
        if port is not None and path is not None:
            raise usage.UsageError("--port and --file exclude each other: give only one")
        if port is None and path is None:
            raise usage.UsageError(
                "give --port PORT (e.g. --port 9000) or --file PATH (a Unix socket)"
            )
        if self["handler"] is None:
            raise usage.UsageError(
                f"--handler MODULE:FUNCTION is required, e.g. --handler {_HANDLER_EXAMPLE}"
            )
        where: WhereToListen
        if port is not None:
            where = _where_from_port(port)
        else:
            try:
                where = on_file(path)
            except ValueError as e:
                raise usage.UsageError(f"--file: {e}") from None
        backlog = self["backlog"]
        if backlog is not None and not isinstance(where, OnPort) and port is not None:
            raise usage.UsageError(
                "--backlog does not apply to an endpoint description: add backlog=N to it "
                f"instead (e.g. {port}:backlog={backlog})"
            )
        self["where"] = self._with_tls(where)
        self["workers"] = _whole_number("workers", self["workers"])
        if self["workers"] > 1:
            from ._workers import check_shareable

            check_shareable(where, self["workers"])
        self["settings"] = Settings(
            max_connections=_limit("max-connections", "max_connections", self["max-connections"]),
            backlog=DEFAULTS.backlog if backlog is None else _limit("backlog", "backlog", backlog),
            buffer_age_limit=_limit(
                "buffer-age-limit", "buffer_age_limit", self["buffer-age-limit"], "unlimited"
            ),
            idle_timeout=_limit("idle-timeout", "idle_timeout", self["idle-timeout"], "none"),
            handshake_timeout=_limit(
                "handshake-timeout", "handshake_timeout", self["handshake-timeout"]
            ),
            shutdown_timeout=_limit(
                "shutdown-timeout", "shutdown_timeout", self["shutdown-timeout"]
            ),
        )
        self["handler-function"] = load_handler(self["handler"])


    def _with_tls(self, where: WhereToListen) -> WhereToListen:
        cert, key, alpn_text = self["tls-cert"], self["tls-key"], self["tls-alpn"]
        alpn = None if alpn_text is None else alpn_text.split(",")
        self["tls-alpn"] = alpn
        if cert is None and key is None:
            if alpn is None:
                return where
            if isinstance(where, OnEndpoint):
                try:
                    return on_endpoint(where.source, alpn=alpn)
                except ValueError as e:
                    raise usage.UsageError(f"--tls-alpn: {e}") from None
            raise usage.UsageError("--tls-alpn is for a TLS server: give --tls-cert and --tls-key")
        if cert is None or key is None:
            raise usage.UsageError("--tls-cert and --tls-key go together: give both")
        # Absolute: twistd may change directory (--rundir) before workers read them.
        self["tls-cert"], self["tls-key"] = cert, key = os.path.abspath(cert), os.path.abspath(key)
        try:
            if isinstance(where, OnPort):
                return on_port(where.port, interface=where.interface, tls=(cert, key), alpn=alpn)
            if isinstance(where, OnEndpoint):
                return on_endpoint(where.source, tls=(cert, key), alpn=alpn)
        except (ValueError, ImportError, TypeError) as e:
            raise usage.UsageError(f"--tls-cert/--tls-key: {e}") from None
        raise usage.UsageError("--tls-cert/--tls-key apply to --port, not to --file")


def makeService(options: Options) -> Service:
    """
    Make the service of C{twistd tcpserver} from its parsed L{Options}: a
    L{TcpServerService}, or with C{--workers} N > 1 the supervisor of N
    worker processes that each run one.
    """
    settings = options["settings"]
    if options["workers"] > 1:
        from ._workers import WorkersService

        cert, key = options["tls-cert"], options["tls-key"]
        return WorkersService(
            options["where"],
            options["handler"],
            workers=options["workers"],
            tls_files=(cert, key) if cert is not None else None,
            tls_alpn=options["tls-alpn"],
            settings=settings,
        )
    return TcpServerService(
        options["where"], options["handler-function"], options["handler"], settings=settings
    )


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
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
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

    def _listening_now(self, server: Server) -> None:
        self.server = server
        _log.info(
            "twisted_tcp tcpserver listening on {address} (handler {handler})",
            address=show_address(server.listening_on_address),
            handler=self.handler_name,
        )

    def _cannot_listen(self, failure: Failure) -> None:
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


__all__ = ["ListenError", "Options", "TcpServerService", "load_handler", "makeService"]
