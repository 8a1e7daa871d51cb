"""
Raw Twisted: the baseline.  Clients are plain C{Protocol}s, written the way a
Twisted programmer would write them by hand (no LineReceiver: a minimal line
splitter); servers are the fixed servers of the client-side workloads (sink,
source, byte echo) and a hand-written line-echo server.

Every protocol sets TCP_NODELAY, as twisted_tcp and asyncio do themselves, so
that no implementation is measured with Nagle's algorithm and another without.

TLS (the C{tls_*} workloads): clients connect through C{wrapClientTLS} with
C{optionsForClientTLS} trusting the run's CA, and start their clock once the
handshake is done (C{IHandshakeListener}), as twisted_tcp's C{connect} and
asyncio's C{open_connection} return only then; the fixed servers, and the
TLS line echo of the server-side TLS workloads (C{tls_server_*},
C{tls_idle_conns}, C{tls_pending_handshakes}), listen with C{listenSSL} and
C{CertificateOptions}.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from _common import (
    BULK_HEADER,
    CHUNK_DATA,
    HOST,
    HTTP_BODY,
    HTTP_HEAD,
    HTTP_OK,
    HTTP_OK_CLOSE,
    HTTP_OK_KEEP_ALIVE,
    CheckFailed,
    http_error,
    lines,
    lines_nl,
    resp_reply,
)
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

# -- clients --------------------------------------------------------------------


@implementer(IHandshakeListener)
class _Client(Protocol):
    """
    A client protocol: C{done} fires with its result, C{lost} when it is
    closed, C{secured} when its TLS handshake is done (over TLS only).
    """

    def __init__(self) -> None:
        self.done: Deferred[Any] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self.secured: Deferred[None] | None = None  # made by _connect, over TLS only

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]

    def handshakeCompleted(self) -> None:
        if self.secured is not None and not self.secured.called:
            self.secured.callback(None)

    def finish(self, result: Any) -> None:
        if not self.done.called:
            self.done.callback(result)

    def fail(self, error: BaseException | Failure) -> None:
        if not self.done.called:
            self.done.errback(error if isinstance(error, Failure) else Failure(error))
        self.transport.abortConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.secured is not None and not self.secured.called:
            self.secured.errback(reason)
        if not self.done.called:
            self.done.errback(reason)
        self.lost.callback(None)


async def _connect(reactor: Any, port: int, proto: _Client, tls: bool = False) -> _Client:
    endpoint: Any = TCP4ClientEndpoint(reactor, HOST, port)
    if not tls:
        return await connectProtocol(endpoint, proto)
    import _tls

    endpoint = wrapClientTLS(_tls.twisted_client_options(HOST), endpoint)
    proto.secured = Deferred()
    await connectProtocol(endpoint, proto)
    await proto.secured  # the handshake, outside the timing as the TCP connect is
    return proto


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


class _OneLine(_Client):
    """
    One short connection of the connection workloads: write one line, read
    its echo, close; C{done} fires once the connection is closed.
    """

    def __init__(self, line: bytes) -> None:
        super().__init__()
        self.line = line
        self.buf = b""
        self.echoed = False

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        self.transport.write(self.line)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if self.buf.endswith(b"\n"):
            if self.buf != self.line:
                self.fail(CheckFailed(f"got {self.buf[:70]!r}, want {self.line[:70]!r}"))
                return
            self.echoed = True
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.echoed:
            self.finish(None)
        elif not self.done.called:
            self.done.errback(reason)
        self.lost.callback(None)


class _OneLineFactory(ClientFactory):
    """C{reactor.connectTCP}'s factory for one L{_OneLine} connection."""

    noisy = False

    def __init__(self, line: bytes) -> None:
        self.proto = _OneLine(line)

    def buildProtocol(self, addr: Any) -> _OneLine:
        return self.proto

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.proto.done.called:
            self.proto.done.errback(reason)


def _one_conn(reactor: Any, port: int, line: bytes) -> Deferred[None]:
    """Connect (C{reactor.connectTCP}), one line round trip, close; fires once closed."""
    factory = _OneLineFactory(line)
    reactor.connectTCP(HOST, port, factory, timeout=10)
    return factory.proto.done


async def _seq_conns(reactor: Any, port: int, count: int) -> float:
    expect = lines_nl(count)
    t0 = perf_counter()
    for i in range(count):
        await _one_conn(reactor, port, expect[i])
    return perf_counter() - t0


async def _conc_conns(reactor: Any, port: int, clients: int, per_client: int) -> float:
    expect = lines_nl(clients)

    async def one_client(client: int) -> None:
        for _ in range(per_client):
            await _one_conn(reactor, port, expect[client])

    t0 = perf_counter()
    await gatherResults(
        [Deferred.fromCoroutine(one_client(c)) for c in range(clients)], consumeErrors=True
    )
    return perf_counter() - t0


async def client(reactor: Any, workload: str, port: int, params: dict[str, Any]) -> dict[str, Any]:
    if workload == "seq_conns":
        return {
            "work": params["count"],
            "elapsed": await _seq_conns(reactor, port, params["count"]),
        }
    if workload == "conc_conns":
        elapsed = await _conc_conns(reactor, port, params["clients"], params["per_client"])
        return {"work": params["clients"] * params["per_client"], "elapsed": elapsed}
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
    await _connect(reactor, port, proto, bool(params.get("tls")))
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


def listen_tls(reactor: Any, protocol: type[Protocol], backlog: int) -> int:
    """As L{listen}, over TLS with the run's server certificate (C{listenSSL})."""
    import _tls

    factory = Factory.forProtocol(protocol)
    port = reactor.listenSSL(
        0, factory, _tls.twisted_server_options(), backlog=backlog, interface=HOST
    )
    return int(port.getHost().port)


# -- the protocol servers of the real-client workloads ----------------------------
#
# The raw-Twisted twins of twisted_tcp.examples.resp_ping and twisted_tcp.examples.http_hello,
# written as a Twisted programmer would write them by hand: buffer what
# arrives, parse every complete request in it, and write each reply as soon as
# its request is parsed (one write per reply, as the twisted_tcp handlers do).

RESP_MAX_ELEMENTS = 1024
RESP_MAX_BULK = 1 << 20
RESP_MAX_BUFFER = RESP_MAX_BULK + 65536  # unparsed bytes beyond this: a protocol error


class _RespError(Exception):
    pass


def _resp_number(data: bytes, limit: int, what: str) -> int:
    if data[:1] == b"-" and data[1:].isdigit() and what == "multibulk length":
        return 0
    if not data.isdigit() or len(data) > 10 or int(data) > limit:
        raise _RespError(f"invalid {what}")
    return int(data)


def _resp_array(buf: bytes, pos: int) -> tuple[list[bytes] | None, int]:
    """The words of the array command at C{buf[pos]} (a C{*}) and where it ends, or (None, -1)."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        return None, -1
    count = _resp_number(buf[pos + 1 : eol], RESP_MAX_ELEMENTS, "multibulk length")
    p = eol + 2
    words = []
    for _ in range(count):
        eol = buf.find(b"\r\n", p)
        if eol < 0:
            return None, -1
        if buf[p : p + 1] != b"$":
            raise _RespError(f"expected '$', got '{buf[p : p + 1].decode('latin-1')}'")
        size = _resp_number(buf[p + 1 : eol], RESP_MAX_BULK, "bulk length")
        start = eol + 2
        stop = start + size
        if len(buf) < stop + 2:
            return None, -1
        if buf[stop : stop + 2] != b"\r\n":
            raise _RespError("expected CRLF after a bulk string")
        words.append(buf[start:stop])
        p = stop + 2
    return words, p


class RespPing(_ServerProtocol):
    """
    PING -> +PONG over RESP, inline (C{PING\\r\\n}) or as an array
    (C{*1\\r\\n$4\\r\\nPING\\r\\n}).
    """

    buf = b""
    done = False

    def dataReceived(self, data: bytes) -> None:
        if self.done:
            return
        buf = self.buf + data if self.buf else data
        write = self.transport.write  # type: ignore[union-attr]
        pos = 0
        size = len(buf)
        try:
            while pos < size:
                if buf[pos] == 42:  # b"*"
                    words, end = _resp_array(buf, pos)
                    if words is None:
                        break
                else:
                    eol = buf.find(b"\n", pos)
                    if eol < 0:
                        break
                    words = buf[pos:eol].split()
                    end = eol + 1
                pos = end
                if not words:
                    continue
                reply = resp_reply(words)
                if reply is None:
                    write(b"+OK\r\n")
                    self.done = True
                    self.transport.loseConnection()  # type: ignore[union-attr]
                    return
                write(reply)
            if size - pos > RESP_MAX_BUFFER:
                raise _RespError("too big request")
        except _RespError as exc:
            write(b"-ERR Protocol error: %s\r\n" % str(exc).encode("latin-1"))
            self.done = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.buf = buf[pos:] if pos < size else b""


HTTP_MAX_HEAD = 64 * 1024
HTTP_MAX_BODY = 1 << 20


class HttpHello(_ServerProtocol):
    """
    A minimal HTTP/1.1 server, as twisted_tcp.examples.http_hello: GET -> 200 with a
    short body and a Content-Length, keep-alive unless the client says
    C{Connection: close} (or is HTTP/1.0 without keep-alive).
    """

    buf = b""
    skip = 0  # bytes of a request body still to be dropped
    done = False

    def dataReceived(self, data: bytes) -> None:
        if self.done:
            return
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = data[dropped:]
        buf = self.buf + data if self.buf else data
        write = self.transport.write  # type: ignore[union-attr]
        pos = 0
        while True:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            lines = buf[pos:end].split(b"\r\n")
            pos = end + 4
            if not lines[0] and len(lines) > 1:  # one blank line before a request is allowed
                del lines[0]
            write(self._respond(lines))
            if self.done:
                self.transport.loseConnection()  # type: ignore[union-attr]
                return
            if self.skip:
                dropped = min(self.skip, len(buf) - pos)
                self.skip -= dropped
                pos += dropped
        rest = buf[pos:] if pos < len(buf) else b""
        if len(rest) > HTTP_MAX_HEAD:
            write(http_error(400, b"Bad Request"))
            self.done = True
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self.buf = rest

    def _respond(self, lines: list[bytes]) -> bytes:
        """The response to one request head; sets C{done} when the connection is to close."""
        parts = lines[0].split(b" ")
        if (
            len(parts) != 3
            or not parts[0]
            or not parts[1]
            or parts[2]
            not in (
                b"HTTP/1.1",
                b"HTTP/1.0",
            )
        ):
            self.done = True
            return http_error(400, b"Bad Request")
        method, _, version = parts
        keep_alive = version == b"HTTP/1.1"
        length = 0
        for line in lines[1:101]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
                self.done = True
                return http_error(400, b"Bad Request")
            name = name.lower()
            if name == b"connection":
                tokens = {token.strip().lower() for token in value.split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
            elif name == b"content-length":
                value = value.strip()
                if not value.isdigit() or len(value) > 18:
                    self.done = True
                    return http_error(400, b"Bad Request")
                length = int(value)
                if length > HTTP_MAX_BODY:
                    self.done = True
                    return http_error(413, b"Content Too Large")
            elif name == b"transfer-encoding":
                self.done = True
                return http_error(501, b"Not Implemented")
        if len(lines) > 101:
            self.done = True
            return http_error(400, b"Bad Request")
        self.skip = length
        if method not in (b"GET", b"HEAD"):
            self.done = not keep_alive
            body = b"405 Method Not Allowed\n"
            return (
                HTTP_HEAD % (405, b"Method Not Allowed", len(body))
                + b"Allow: GET, HEAD\r\n"
                + (b"" if keep_alive else b"Connection: close\r\n")
                + b"\r\n"
                + body
            )
        if not keep_alive:
            self.done = True
            response = HTTP_OK_CLOSE
        elif version == b"HTTP/1.1":
            response = HTTP_OK
        else:
            response = HTTP_OK_KEEP_ALIVE
        return response if method == b"GET" else response[: -len(HTTP_BODY)]
