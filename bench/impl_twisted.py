"""
Raw Twisted: the baseline.  Clients are plain C{Protocol}s, written the way a
Twisted programmer would write them by hand (no LineReceiver: a minimal line
splitter); servers are the fixed servers of the client-side workloads (sink,
source, byte echo) and a hand-written line-echo server.

Every protocol sets TCP_NODELAY, as twisted_tcp and asyncio do themselves, so
that no implementation is measured with Nagle's algorithm and another without.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from _common import BULK_HEADER, CHUNK_DATA, HOST, CheckFailed, lines, lines_nl
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

# -- clients --------------------------------------------------------------------


class _Client(Protocol):
    """A client protocol: C{done} fires with its result, C{lost} when it is closed."""

    def __init__(self) -> None:
        self.done: Deferred[Any] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

    def finish(self, result: Any) -> None:
        if not self.done.called:
            self.done.callback(result)

    def fail(self, error: BaseException | Failure) -> None:
        if not self.done.called:
            self.done.errback(error if isinstance(error, Failure) else Failure(error))
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if not self.done.called:
            self.done.errback(reason)
        self.lost.callback(None)


async def _connect(reactor: Any, port: int, proto: _Client) -> _Client:
    return await connectProtocol(TCP4ClientEndpoint(reactor, HOST, port), proto)


async def _close(proto: _Client) -> None:
    proto.transport.loseConnection()  # type: ignore[union-attr]
    await proto.lost


@implementer(IPushProducer)
class _BulkSender(_Client):
    """Sends C{total} bytes in 64 KiB writes, as a streaming producer."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.remaining = total
        self.paused = False
        self.unregistered = False
        self.ack = b""

    def start(self) -> None:
        self.t0 = perf_counter()
        self.transport.write(BULK_HEADER.pack(self.total))  # type: ignore[union-attr]
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.produce()

    def produce(self) -> None:
        write = self.transport.write  # type: ignore[union-attr]
        size = len(CHUNK_DATA)
        while not self.paused and self.remaining:
            if self.remaining >= size:
                write(CHUNK_DATA)
                self.remaining -= size
            else:
                write(CHUNK_DATA[: self.remaining])
                self.remaining = 0
        if not self.remaining and not self.unregistered:
            # Also when the last write paused us: a producer left registered
            # would keep loseConnection() from ever finishing.
            self.unregistered = True
            self.transport.unregisterProducer()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self.produce()

    def stopProducing(self) -> None:
        self.remaining = 0

    def dataReceived(self, data: bytes) -> None:
        self.ack += data
        if self.ack.endswith(b"\n"):
            elapsed = perf_counter() - self.t0
            got = int(self.ack)
            if got != self.total:
                self.fail(CheckFailed(f"sink received {got} bytes, not {self.total}"))
            else:
                self.finish(elapsed)


class _BulkReceiver(_Client):
    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.count = 0

    def start(self) -> None:
        self.t0 = perf_counter()
        self.transport.write(b"%d\n" % self.total)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.count += len(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        elapsed = perf_counter() - self.t0
        if not reason.check(ConnectionDone):
            self.done.errback(reason)
        elif self.count != self.total:
            self.done.errback(CheckFailed(f"received {self.count} bytes, not {self.total}"))
        else:
            self.done.callback(elapsed)
        self.lost.callback(None)


class _PingPong(_Client):
    """One line in flight: write it, wait for its echo, write the next."""

    def __init__(self, count: int) -> None:
        super().__init__()
        self.lines = lines_nl(count)
        self.count = count
        self.i = 0
        self.buf = b""

    def start(self) -> None:
        self.t0 = perf_counter()
        self.transport.write(self.lines[0])  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            end = buf.find(b"\n")
            if end < 0:
                break
            got = buf[: end + 1]
            buf = buf[end + 1 :]
            i = self.i
            if got != self.lines[i]:
                self.fail(CheckFailed(f"line {i}: got {got[:70]!r}"))
                return
            i += 1
            self.i = i
            if i == self.count:
                self.finish(perf_counter() - self.t0)
                return
            self.transport.write(self.lines[i])  # type: ignore[union-attr]
        self.buf = buf


class _Pipelined(_Client):
    """
    Write lines in batches, one write per line, keeping at most C{window}
    lines unanswered, while checking each echoed line.
    """

    def __init__(self, count: int, batch: int, window: int) -> None:
        super().__init__()
        self.lines = lines_nl(count)
        self.expect = lines(count)
        self.count = count
        self.batch = batch
        self.window = window
        self.sent = 0
        self.received = 0
        self.buf = b""

    def start(self) -> None:
        self.t0 = perf_counter()
        self.send_more()

    def send_more(self) -> None:
        write = self.transport.write  # type: ignore[union-attr]
        lines = self.lines
        sent = self.sent
        count = self.count
        limit = self.window - self.batch
        while sent < count and sent - self.received <= limit:
            end = min(sent + self.batch, count)
            for k in range(sent, end):
                write(lines[k])
            sent = end
        self.sent = sent

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        parts = buf.split(b"\n")
        self.buf = parts.pop()
        expect = self.expect
        i = self.received
        for part in parts:
            if part != expect[i]:
                self.fail(CheckFailed(f"line {i}: got {part[:70]!r}"))
                return
            i += 1
        self.received = i
        if i == self.count:
            self.finish(perf_counter() - self.t0)
        elif self.sent - i <= self.window - self.batch:
            self.send_more()


async def client(reactor: Any, workload: str, port: int, params: dict[str, Any]) -> dict[str, Any]:
    if workload == "bulk_send":
        proto: _Client = _BulkSender(params["total"])
        work = params["total"]
    elif workload == "bulk_recv":
        proto = _BulkReceiver(params["total"])
        work = params["total"]
    elif workload == "pingpong":
        proto = _PingPong(params["count"])
        work = params["count"]
    elif workload == "pipelined":
        proto = _Pipelined(params["count"], params["batch"], params["window"])
        work = params["count"]
    else:
        raise ValueError(f"unknown client workload {workload!r}")
    await _connect(reactor, port, proto)
    proto.start()  # type: ignore[attr-defined]
    elapsed = await proto.done
    if not proto.lost.called:
        await _close(proto)
    return {"work": work, "elapsed": elapsed}


# -- servers --------------------------------------------------------------------


class _ServerProtocol(Protocol):
    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]


class Sink(_ServerProtocol):
    """Reads an 8-byte count, then that many bytes; answers the count received."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.header = b""
        self.expected = -1
        self.count = 0

    def dataReceived(self, data: bytes) -> None:
        if self.expected < 0:
            self.header += data
            if len(self.header) < BULK_HEADER.size:
                return
            (self.expected,) = BULK_HEADER.unpack(self.header[: BULK_HEADER.size])
            data = self.header[BULK_HEADER.size :]
        self.count += len(data)
        if self.count >= self.expected:
            self.transport.write(b"%d\n" % self.count)  # type: ignore[union-attr]
            self.expected = 1 << 62  # answered once


@implementer(IPushProducer)
class Source(_ServerProtocol):
    """Reads a line holding a count, sends that many bytes in 64 KiB writes, closes."""

    def connectionMade(self) -> None:
        super().connectionMade()
        self.request = b""
        self.remaining = -1
        self.paused = False

    def dataReceived(self, data: bytes) -> None:
        if self.remaining >= 0:
            return
        self.request += data
        if b"\n" in self.request:
            self.remaining = int(self.request.split(b"\n", 1)[0])
            self.transport.registerProducer(self, True)  # type: ignore[union-attr]
            self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        write = self.transport.write  # type: ignore[union-attr]
        size = len(CHUNK_DATA)
        while not self.paused and self.remaining > 0:
            if self.remaining >= size:
                write(CHUNK_DATA)
                self.remaining -= size
            else:
                write(CHUNK_DATA[: self.remaining])
                self.remaining = 0
        if self.remaining == 0:
            self.remaining = -2  # done: never again
            self.transport.unregisterProducer()  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.remaining = -2


class ByteEcho(_ServerProtocol):
    """Writes back every byte received (the fixed server of the client-side workloads)."""

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class LineEcho(_ServerProtocol):
    """
    The raw-Twisted line echo server of the server-side workloads: split the
    received bytes into lines and write each line back, one write per line,
    as a hand-written line protocol would.
    """

    buf = b""

    def dataReceived(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
        lines = data.split(b"\n")
        self.buf = lines.pop()
        write = self.transport.write  # type: ignore[union-attr]
        for line in lines:
            write(line + b"\n")


def listen(reactor: Any, protocol: type[Protocol], backlog: int) -> int:
    port = reactor.listenTCP(0, Factory.forProtocol(protocol), backlog=backlog, interface=HOST)
    return int(port.getHost().port)
