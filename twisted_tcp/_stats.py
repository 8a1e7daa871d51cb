"""
What a L{Server} counts (L{ServerStats}, from L{Server.stats}): plain
immutable values, which the workers of C{twistd tcpserver --workers N} send
to their supervisor as JSON and the supervisor adds up.
"""

from __future__ import annotations

import bisect
import itertools
from typing import Any

import attrs

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)
"""The upper bounds, in seconds, of the buckets of L{ServerStats.handler_seconds}."""


@attrs.frozen
class DurationHistogram:
    """
    How long handlers ran, as Prometheus counts it: C{counts[i]} handlers ran
    at most C{bounds[i]} seconds (cumulative), C{count} ran in all, for
    C{total} seconds together.
    """

    bounds: tuple[float, ...] = DURATION_BUCKETS
    counts: tuple[int, ...] = (0,) * len(DURATION_BUCKETS)
    count: int = 0
    total: float = 0.0

    def plus(self, other: DurationHistogram) -> DurationHistogram:
        """The two histograms (of the same buckets) as one."""
        return DurationHistogram(
            self.bounds,
            tuple(a + b for a, b in zip(self.counts, other.counts, strict=True)),
            self.count + other.count,
            self.total + other.total,
        )


class DurationCounter:
    """The mutable counts behind a L{DurationHistogram}, which it makes on demand."""

    __slots__ = ("per_bucket", "total")

    def __init__(self) -> None:
        self.per_bucket = [0] * (len(DURATION_BUCKETS) + 1)  # the last: above every bound
        self.total = 0.0

    def add(self, seconds: float) -> None:
        """Count one duration."""
        self.per_bucket[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds

    def histogram(self) -> DurationHistogram:
        """The counts so far."""
        counts = tuple(itertools.accumulate(self.per_bucket))
        return DurationHistogram(DURATION_BUCKETS, counts[:-1], counts[-1], self.total)


@attrs.frozen
class ServerStats:
    """
    What a L{Server} has done since it started, and what it does now.

    @ivar connections: connections served now (each holds a slot).
    @ivar parked: connections accepted at the limit, waiting for a slot.
    @ivar handshakes: TLS handshakes under way (no slot taken yet).
    @ivar accepted: connections accepted, in all.
    @ivar refused_per_peer: connections closed at once because their peer
        already had C{max_connections_per_peer}.
    @ivar bytes_received: bytes received by handlers' readers (under TLS,
        the plaintext).
    @ivar bytes_sent: bytes written by handlers (under TLS, the plaintext).
    @ivar handler_errors: handlers that failed, and connections whose
        writer failed (the peer stopped reading for C{buffer_age_limit}).
    @ivar handler_seconds: how long handlers ran, as a L{DurationHistogram}.
    """

    connections: int = 0
    parked: int = 0
    handshakes: int = 0
    accepted: int = 0
    refused_per_peer: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    handler_errors: int = 0
    handler_seconds: DurationHistogram = DurationHistogram()

    def plus(self, other: ServerStats) -> ServerStats:
        """The stats of two servers (two workers) as those of one."""
        fields = {name: getattr(self, name) + getattr(other, name) for name in _COUNTS}
        durations = self.handler_seconds.plus(other.handler_seconds)
        return ServerStats(**fields, handler_seconds=durations)

    def ended(self) -> ServerStats:
        """These stats once the server has ended: its counters, and nothing now."""
        return attrs.evolve(self, connections=0, parked=0, handshakes=0)

    def to_json(self) -> dict[str, Any]:
        """These stats as JSON-able values, which L{from_json} reads."""
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ServerStats:
        """
        Stats from what L{to_json} gave.

        @raise TypeError, ValueError: if C{value} is not such a thing.
        """
        fields = {name: int(value[name]) for name in _COUNTS}
        h = value["handler_seconds"]
        histogram = DurationHistogram(
            tuple(map(float, h["bounds"])),
            tuple(map(int, h["counts"])),
            int(h["count"]),
            float(h["total"]),
        )
        if histogram.bounds != DURATION_BUCKETS or len(histogram.counts) != len(DURATION_BUCKETS):
            raise ValueError("stats with other duration buckets")
        return cls(**fields, handler_seconds=histogram)


_COUNTS = tuple(f.name for f in attrs.fields(ServerStats) if f.type in ("int", int))

__all__ = ["DURATION_BUCKETS", "DurationCounter", "DurationHistogram", "ServerStats"]
