"""
The command line of C{twistd tcpserver}: its L{Options}, and L{makeService},
which makes the service they ask for.

The plugin file, C{twisted/plugins/twisted_tcp_plugin.py}, only names this
module: Twisted's C{ServiceMaker} imports it when twistd needs L{Options} or
L{makeService}, so a twistd that merely lists its plugins does not import it.
Nothing here imports the reactor (twisted#3785: a plugin that imports the
reactor breaks C{twistd -r}).

L{Options} parses the command line, checks every option and imports the
handler; any error ends twistd with a usage message before anything
listens.  The limits it reads become one L{Settings} value,
C{options["settings"]}, which L{makeService} hands on whole: to the
L{TcpServerService} of L{twisted_tcp._service}, or with C{--workers N}
(N > 1) to the L{WorkersService} of L{twisted_tcp._supervisor}, which
listens and runs that service in N worker processes.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import attrs
from twisted.application.service import MultiService, Service
from twisted.python import usage

from ._metrics import MetricsService, check_available
from ._service import HANDLER_EXAMPLE, TcpServerService, load_handler
from ._settings import DEFAULTS, Settings
from ._supervisor import WorkersService, check_shareable
from ._where import (
    OnEndpoint,
    OnPort,
    WhereToListen,
    on_endpoint,
    on_file,
    on_port,
)

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


_LIMITS: dict[str, tuple[str, str | None]] = {
    "max-connections": ("max_connections", None),
    "max-connections-per-peer": ("max_connections_per_peer", "unlimited"),
    "backlog": ("backlog", None),
    "buffer-age-limit": ("buffer_age_limit", "unlimited"),
    "idle-timeout": ("idle_timeout", "none"),
    "handshake-timeout": ("handshake_timeout", None),
    "shutdown-timeout": ("shutdown_timeout", None),
}
"""
The options that set a limit: each names its L{Settings} field, and the word
that stands for C{None} on the command line where the field takes None.
"""


def _default(option: str) -> str:
    """The default of the limit C{--option} as the command line writes it, from L{DEFAULTS}."""
    field, none = _LIMITS[option]
    value = getattr(DEFAULTS, field)
    if value is None:
        assert none is not None
        return none
    return f"{value:g}" if isinstance(value, float) else str(value)


def _limit(option: str, text: str) -> Any:
    """The value of the limit C{--option}, checked as its L{Settings} field checks it."""
    field, none = _LIMITS[option]
    whole = str(attrs.fields_dict(Settings)[field].type).startswith("int")
    value = _number(option, text, whole=whole, none=none)
    try:
        return Settings.check(field, value, label=f"--{option}", none_as=f"'{none}'")
    except (TypeError, ValueError) as e:
        raise usage.UsageError(str(e)) from None


def _settings(options: usage.Options) -> Settings:
    """
    The L{Settings} of the limits given by C{options}: the default of each
    one not given (whose value is None).
    """
    given = {
        _LIMITS[option][0]: _limit(option, options[option])
        for option in _LIMITS
        if options[option] is not None
    }
    return Settings(**given)


def _whole_number(option: str, text: str) -> int:
    """C{text} as a whole number of at least 1, in ASCII digits."""
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        raise usage.UsageError(f"--{option} must be a whole number of at least 1, not {text!r}")
    return int(text)


def _where_from_port(text: str, option: str = "port") -> WhereToListen:
    """Where C{--port TEXT} (or C{--option}) listens: a port number or an endpoint description."""
    if text.isascii() and text.isdigit():
        port = int(text)
        if port > 65535:
            raise usage.UsageError(f"--{option} must be between 0 and 65535, not {port}")
        return on_port(port)
    if ":" in text:
        try:
            return on_endpoint(text)
        except ValueError as e:
            raise usage.UsageError(f"--{option}: {e}") from None
    raise usage.UsageError(
        f"--{option} must be a port number (e.g. 9000, or 0 to let the OS choose) or a Twisted "
        f"endpoint description (e.g. tcp:9000:interface=127.0.0.1), not {text!r}"
    )


_NON_BREAKING_HYPHEN = "\u2011"


def _unbreakable(text: str) -> str:
    """C{text} with non-breaking hyphens, which no wrapping breaks a line at."""
    return text.replace("-", _NON_BREAKING_HYPHEN)


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
        f"Example: twistd -n --pidfile= tcpserver --port 9000 --handler {HANDLER_EXAMPLE}"
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
            _default("handshake-timeout"),
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
            _default("max-connections"),
            "Most connections served at once (by each worker, with --workers); beyond, new "
            "clients wait in the backlog.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve the server's metrics over HTTP, in Prometheus's text format, on this port "
            "or endpoint description (e.g. tcp:9100:interface=127.0.0.1); with --workers, "
            "those of all the workers together. Needs twisted_tcp[metrics].",
        ],
        [
            "max-connections-per-peer",
            None,
            _default("max-connections-per-peer"),
            "Most connections from one client IP address (under haproxy:, the address the "
            "PROXY header gives), or 'unlimited'; beyond, its new connections are closed at "
            "once (by each worker, with --workers).",
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
            f"{_default('backlog')}]. With an endpoint description, use its backlog= option.",
        ],
        [
            "buffer-age-limit",
            None,
            _default("buffer-age-limit"),
            "Seconds that written bytes may wait unsent (the client stopped reading) before "
            "the connection is closed, or 'unlimited'.",
        ],
        [
            "idle-timeout",
            None,
            _default("idle-timeout"),
            "Seconds after which a connection that received and sent nothing is closed, or "
            "'none'. It frees the slots of clients that vanished or sit idle.",
        ],
        [
            "shutdown-timeout",
            None,
            _default("shutdown-timeout"),
            "Seconds that running handlers get to finish after SIGTERM or SIGINT; the "
            "connections still open then are aborted (the clients get a reset).",
        ],
    ]

    def getUsage(self, width: int | None = None) -> str:
        """
        The help text, as Twisted writes it, but with no word broken at a
        hyphen where a line wraps (Python's C{textwrap} would print
        C{--max-} and C{connections} on two lines): the hyphens are
        non-breaking while Twisted wraps the text.
        """
        docs = self.docs
        self.docs = {name: doc and _unbreakable(doc) for name, doc in docs.items()}
        self.longdesc = _unbreakable(type(self).longdesc)
        try:
            return super().getUsage(width).replace(_NON_BREAKING_HYPHEN, "-")
        finally:
            self.docs = docs
            del self.longdesc

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
                f"twistd tcpserver: {e}\nRun 'twistd tcpserver --help' for the options.\n"
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
                f"--handler MODULE:FUNCTION is required, e.g. --handler {HANDLER_EXAMPLE}"
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
            check_shareable(where, self["workers"])
        self["settings"] = _settings(self)
        self["metrics-where"] = self._metrics_where(where)
        self["handler-function"] = load_handler(self["handler"])

    def _metrics_where(self, where: WhereToListen) -> WhereToListen | None:
        """Where C{--metrics} serves, if given: not where the server listens."""
        text = self["metrics"]
        if text is None:
            return None
        metrics = _where_from_port(text, "metrics")
        if metrics == where and isinstance(where, OnPort) and where.port != 0:
            raise usage.UsageError(f"--metrics {text}: that is where the server listens")
        try:
            check_available()
        except ImportError as e:
            raise usage.UsageError(str(e)) from None
        return metrics

    def _with_tls(self, where: WhereToListen) -> WhereToListen:
        """C{where} with the TLS that C{--tls-cert}, C{--tls-key} and C{--tls-alpn} ask for."""
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
    metrics = options.get("metrics-where")
    server: WorkersService | TcpServerService
    if options["workers"] > 1:
        cert, key = options["tls-cert"], options["tls-key"]
        server = WorkersService(
            options["where"],
            options["handler"],
            workers=options["workers"],
            tls_files=(cert, key) if cert is not None else None,
            tls_alpn=options["tls-alpn"],
            settings=settings,
            report_stats=metrics is not None,
        )
    else:
        server = TcpServerService(
            options["where"], options["handler-function"], options["handler"], settings=settings
        )
    if metrics is None:
        return server
    both = MultiService()
    server.setServiceParent(both)
    MetricsService(metrics, server.stats).setServiceParent(both)
    return both


__all__ = ["Options", "makeService"]
