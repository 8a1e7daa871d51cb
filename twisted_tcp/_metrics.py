"""
C{twistd tcpserver --metrics ENDPOINT}: the server's L{ServerStats} served
over HTTP in Prometheus's text format, through C{prometheus_client} (the
C{metrics} extra: C{pip install 'twisted_tcp[metrics]'}).

The page is made in the reactor's thread, from the stats of the moment
(C{prometheus_client}'s own Twisted resource would run it in a thread of the
reactor's pool, where reading a running server is not safe).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.logger import Logger

from ._connect import default_reactor
from ._service import ListenError, cannot_listen
from ._settings import DEFAULTS
from ._stats import ServerStats
from ._where import WhereToListen, show_address

if TYPE_CHECKING:
    from twisted.internet.interfaces import IListeningPort

_log = Logger(namespace="twisted_tcp._twistd")

EXTRA_NEEDED = "--metrics needs the prometheus_client package: pip install 'twisted_tcp[metrics]'"

# (name, help) of each metric, in the order they are served.
_GAUGES = {
    "connections": ("twisted_tcp_connections", "Connections served now (each holds a slot)."),
    "parked": ("twisted_tcp_connections_parked", "Connections waiting for a slot now."),
    "handshakes": ("twisted_tcp_tls_handshakes", "TLS handshakes under way now."),
}
_COUNTERS = {
    "accepted": ("twisted_tcp_connections_accepted", "Connections accepted."),
    "refused_per_peer": (
        "twisted_tcp_connections_refused_per_peer",
        "Connections closed at once: their peer had max_connections_per_peer.",
    ),
    "bytes_received": ("twisted_tcp_received_bytes", "Bytes received by handlers."),
    "bytes_sent": ("twisted_tcp_sent_bytes", "Bytes written by handlers."),
    "handler_errors": (
        "twisted_tcp_handler_errors",
        "Handlers that failed, and connections closed by their writer's error.",
    ),
}


def check_available() -> None:
    """
    @raise ImportError: naming the extra to install, if C{prometheus_client}
        is missing.
    """
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ImportError(EXTRA_NEEDED) from None


class _Collector:
    """A C{prometheus_client} collector of the stats that C{stats()} gives (None: none yet)."""

    def __init__(self, stats: Callable[[], ServerStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        stats = self._stats() or ServerStats()
        for field, (name, text) in _GAUGES.items():
            yield GaugeMetricFamily(name, text, value=getattr(stats, field))
        for field, (name, text) in _COUNTERS.items():
            yield CounterMetricFamily(name, text, value=getattr(stats, field))
        durations = stats.handler_seconds
        bounds = [f"{bound:g}" for bound in durations.bounds]
        buckets = list(zip(bounds, durations.counts, strict=True))
        yield HistogramMetricFamily(
            "twisted_tcp_handler_duration_seconds",
            "How long handlers ran, in seconds.",
            buckets=[*buckets, ("+Inf", durations.count)],
            sum_value=durations.total,
        )


def metrics_page(
    stats: Callable[[], ServerStats | None], accept: str | None = None
) -> tuple[bytes, str]:
    """
    The text of C{stats()} in the format that C{accept} (an HTTP Accept
    header) asks for, Prometheus's or OpenMetrics', and its content type.
    """
    from prometheus_client.exposition import choose_encoder
    from prometheus_client.registry import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(stats))  # type: ignore[arg-type]
    encode, content_type = choose_encoder(accept or "")
    return encode(registry), content_type


class MetricsService(Service):
    """
    Serves C{stats()} (the server's, or the sum of its workers') at every
    path of C{where}, over HTTP, in Prometheus's text format.
    """

    name = "metrics"
    port: IListeningPort | None = None
    _listening = False  # listen() was called (an endpoint may listen later)

    def __init__(
        self,
        where: WhereToListen,
        stats: Callable[[], ServerStats | None],
        reactor: Any = None,
    ) -> None:
        self.where = where
        self.stats = stats
        self._reactor = reactor

    def privilegedStartService(self) -> None:
        """Listen, as twistd starts the service (before it drops privileges)."""
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        """Start; listen now if C{privilegedStartService} did not."""
        Service.startService(self)
        if not self._listening:
            self._listen()

    def _listen(self) -> None:
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        stats = self.stats

        class Page(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                accept = request.getHeader(b"accept")
                body, content_type = metrics_page(stats, accept and accept.decode("latin-1"))
                request.setHeader(b"Content-Type", content_type.encode("ascii"))
                return body

        site = Site(Page())
        site.noisy = False  # no "Starting factory" line
        site.log = lambda request: None  # type: ignore[method-assign]  # no line per scrape
        site.logPrefix = lambda: "twisted_tcp metrics"  # type: ignore[method-assign]
        self._listening = True
        reactor = self._reactor = default_reactor(self._reactor)
        failed: list[ListenError] = []

        def listening(port: IListeningPort) -> None:
            self.port = port
            _log.info(
                "metrics (Prometheus) on {address}",
                address=show_address(port.getHost()),
            )

        starting = True

        def cannot(reason: Any) -> None:
            message = cannot_listen(f"{self.where} (--metrics)", reason)
            if starting:
                failed.append(ListenError(message))  # raised below: twistd exits with it
            else:  # an endpoint that failed later: stop, as the server's own does
                _log.critical("{message}; stopping", message=message)
                reactor.stop()

        self.where.listen(reactor, DEFAULTS.backlog, site).addCallbacks(listening, cannot)
        starting = False
        if failed:
            raise failed[0]

    def stopService(self) -> Any:
        """Stop listening."""
        Service.stopService(self)
        self._listening = False
        port, self.port = self.port, None
        return None if port is None else port.stopListening()


__all__ = ["EXTRA_NEEDED", "MetricsService", "check_available", "metrics_page"]
