"""
asyncio streams (C{open_connection}, C{start_server}), on asyncio's own event
loop or on uvloop's: the same code for both columns.  The C{tls_*}
workloads pass an C{ssl.SSLContext} (trusting the run's CA) to
C{open_connection}, and the TLS line echo of the server-side TLS workloads
(C{tls_server_*}, C{tls_idle_conns}, C{tls_pending_handshakes}) one (with
the run's server certificate) to C{start_server}; uvloop has its own TLS
layer (in Cython), asyncio's is C{asyncio.sslproto}.
"""

from __future__ import annotations

import asyncio
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
    check_line,
    http_error,
    lines_nl,
    resp_reply,
)

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


async def _bulk_send(reader: Reader, writer: Writer, total: int) -> float:
    t0 = perf_counter()
    writer.write(BULK_HEADER.pack(total))
    remaining = total
    size = len(CHUNK_DATA)
    while remaining:
        if remaining >= size:
            writer.write(CHUNK_DATA)
            remaining -= size
        else:
            writer.write(CHUNK_DATA[:remaining])
            remaining = 0
        await writer.drain()
    ack = await reader.readline()
    elapsed = perf_counter() - t0
    if not ack.endswith(b"\n") or int(ack) != total:
        raise CheckFailed(f"sink received {ack!r} bytes, not {total}")
    return elapsed


async def _bulk_recv(reader: Reader, writer: Writer, total: int) -> float:
    t0 = perf_counter()
    writer.write(b"%d\n" % total)
    count = 0
    while True:
        data = await reader.read(65536)
        if not data:
            break
        count += len(data)
    elapsed = perf_counter() - t0
    if count != total:
        raise CheckFailed(f"received {count} bytes, not {total}")
    return elapsed


async def _pingpong(reader: Reader, writer: Writer, count: int) -> float:
    expect = lines_nl(count)
    t0 = perf_counter()
    for i in range(count):
        writer.write(expect[i])
        got = await reader.readline()
        if got != expect[i]:
            check_line(got, expect[i], i)
    return perf_counter() - t0


async def _pipelined(
    reader: Reader,
    writer: Writer,
    count: int,
    batch: int,
    window: int,
) -> float:
    expect = lines_nl(count)
    limit = window - batch
    sent = received = 0
    write = writer.write
    readline = reader.readline
    t0 = perf_counter()
    while received < count:
        if sent < count and sent - received <= limit:
            end = min(sent + batch, count)
            for k in range(sent, end):
                write(expect[k])
            sent = end
            continue
        got = await readline()
        if got != expect[received]:
            check_line(got, expect[received], received)
        received += 1
    return perf_counter() - t0


async def _open_within(port: int, seconds: float) -> tuple[Reader, Writer]:
    """C{open_connection}, failing with TimeoutError after C{seconds}."""
    if not hasattr(asyncio, "timeout"):  # Python 3.10: wait_for (a task per call)
        return await asyncio.wait_for(asyncio.open_connection(HOST, port), seconds)
    async with asyncio.timeout(seconds):
        return await asyncio.open_connection(HOST, port)


async def _one_conn(port: int, line: bytes) -> None:
    """Connect (C{open_connection}), one line round trip, close; returns once closed."""
    reader, writer = await _open_within(port, 10)
    try:
        writer.write(line)
        got = await reader.readline()
        if got != line:
            check_line(got, line, 0)
    finally:
        await _close(writer)


async def _seq_conns(port: int, count: int) -> float:
    expect = lines_nl(count)
    t0 = perf_counter()
    for i in range(count):
        await _one_conn(port, expect[i])
    return perf_counter() - t0


async def _conc_conns(port: int, clients: int, per_client: int) -> float:
    expect = lines_nl(clients)

    async def one_client(client: int) -> None:
        for _ in range(per_client):
            await _one_conn(port, expect[client])

    t0 = perf_counter()
    await asyncio.gather(*(one_client(c) for c in range(clients)))
    return perf_counter() - t0


async def client(workload: str, port: int, params: dict[str, Any]) -> dict[str, Any]:
    if workload == "seq_conns":
        return {"work": params["count"], "elapsed": await _seq_conns(port, params["count"])}
    if workload == "conc_conns":
        elapsed = await _conc_conns(port, params["clients"], params["per_client"])
        return {"work": params["clients"] * params["per_client"], "elapsed": elapsed}
    ssl_context = None
    if params.get("tls"):
        import _tls

        # The handshake is done when open_connection returns (outside the timing).
        ssl_context = _tls.ssl_client_context()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=ssl_context), 10
    )
    try:
        if workload == "bulk_send":
            work = params["total"]
            elapsed = await _bulk_send(reader, writer, work)
        elif workload == "bulk_recv":
            work = params["total"]
            elapsed = await _bulk_recv(reader, writer, work)
        elif workload == "pingpong":
            work = params["count"]
            elapsed = await _pingpong(reader, writer, work)
        elif workload == "pipelined":
            work = params["count"]
            elapsed = await _pipelined(reader, writer, work, params["batch"], params["window"])
        else:
            raise ValueError(f"unknown client workload {workload!r}")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
    return {"work": work, "elapsed": elapsed}


async def echo(reader: Reader, writer: Writer) -> None:
    """The line echo handler: the same logic as the twisted_tcp one."""
    try:
        async for line in reader:
            writer.write(line)
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass


# -- the protocol servers of the real-client workloads ----------------------------
#
# twisted_tcp.examples.resp_ping and twisted_tcp.examples.http_hello written with asyncio streams
# (readline, readexactly), the same logic line for line.

RESP_MAX_ELEMENTS = 1024
RESP_MAX_BULK = 1 << 20


class _RespError(Exception):
    pass


def _resp_number(data: bytes, limit: int, what: str) -> int:
    if data[:1] == b"-" and data[1:].isdigit() and what == "multibulk length":
        return 0
    if not data.isdigit() or len(data) > 10 or int(data) > limit:
        raise _RespError(f"invalid {what}")
    return int(data)


def _strip(line: bytes) -> bytes:
    return line[:-2] if line.endswith(b"\r\n") else line.rstrip(b"\n")


async def _resp_command(reader: Reader) -> list[bytes] | None:
    line = await reader.readline()
    if not line.endswith(b"\n"):
        return None  # the end of the stream (perhaps in the middle of a line)
    if line[:1] != b"*":
        return line.split()
    count = _resp_number(_strip(line)[1:], RESP_MAX_ELEMENTS, "multibulk length")
    words = []
    for _ in range(count):
        header = await reader.readline()
        if not header.endswith(b"\n"):
            return None
        if header[:1] != b"$":
            raise _RespError(f"expected '$', got '{header[:1].decode('latin-1')}'")
        size = _resp_number(_strip(header)[1:], RESP_MAX_BULK, "bulk length")
        data = await reader.readexactly(size + 2)
        if data[size:] != b"\r\n":
            raise _RespError("expected CRLF after a bulk string")
        words.append(data[:size])
    return words


async def resp_ping(reader: Reader, writer: Writer) -> None:
    """PING -> +PONG over RESP, inline or as an array, as twisted_tcp.examples.resp_ping."""
    try:
        while True:
            try:
                words = await _resp_command(reader)
            except _RespError as exc:
                writer.write(b"-ERR Protocol error: %s\r\n" % str(exc).encode("latin-1"))
                return
            except ValueError:  # a line over the StreamReader's limit
                writer.write(b"-ERR Protocol error: too big inline request\r\n")
                return
            if words is None:
                return
            if not words:
                continue
            reply = resp_reply(words)
            if reply is None:
                writer.write(b"+OK\r\n")
                return
            writer.write(reply)
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        await _close(writer)


HTTP_MAX_HEADERS = 100
HTTP_MAX_BODY = 1 << 20


class _HttpError(Exception):
    def __init__(self, status: int, reason: bytes) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


async def _http_response(reader: Reader) -> tuple[bytes, bool] | None:
    """Read one request; return the response and whether to keep the connection."""
    line = await reader.readline()
    if line in (b"\r\n", b"\n"):
        line = await reader.readline()
    if not line.endswith(b"\n"):
        return None
    parts = _strip(line).split(b" ")
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
        raise _HttpError(400, b"Bad Request")
    method, _, version = parts
    keep_alive = version == b"HTTP/1.1"
    length = 0
    for _ in range(HTTP_MAX_HEADERS + 1):
        line = await reader.readline()
        if not line.endswith(b"\n"):
            return None
        line = _strip(line)
        if not line:
            break
        name, colon, value = line.partition(b":")
        if not colon or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise _HttpError(400, b"Bad Request")
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
                raise _HttpError(400, b"Bad Request")
            length = int(value)
            if length > HTTP_MAX_BODY:
                raise _HttpError(413, b"Content Too Large")
        elif name == b"transfer-encoding":
            raise _HttpError(501, b"Not Implemented")
    else:
        raise _HttpError(400, b"Bad Request")
    if length:
        await reader.readexactly(length)
    if method not in (b"GET", b"HEAD"):
        body = b"405 Method Not Allowed\n"
        response = (
            HTTP_HEAD % (405, b"Method Not Allowed", len(body))
            + b"Allow: GET, HEAD\r\n"
            + (b"" if keep_alive else b"Connection: close\r\n")
            + b"\r\n"
            + body
        )
        return response, keep_alive
    if not keep_alive:
        response = HTTP_OK_CLOSE
    elif version == b"HTTP/1.1":
        response = HTTP_OK
    else:
        response = HTTP_OK_KEEP_ALIVE
    return (response if method == b"GET" else response[: -len(HTTP_BODY)]), keep_alive


async def http_hello(reader: Reader, writer: Writer) -> None:
    """A minimal HTTP/1.1 keep-alive server, as twisted_tcp.examples.http_hello."""
    try:
        while True:
            try:
                answer = await _http_response(reader)
            except _HttpError as exc:
                writer.write(http_error(exc.status, exc.reason))
                return
            except ValueError:  # a line over the StreamReader's limit
                writer.write(http_error(400, b"Bad Request"))
                return
            if answer is None:
                return
            response, keep_alive = answer
            writer.write(response)
            if not keep_alive:
                return
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        await _close(writer)


async def _close(writer: Writer) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except ConnectionError:
        pass


async def serve(
    backlog: int, tls: bool = False
) -> tuple[list[asyncio.AbstractServer], dict[str, int]]:
    """
    The echo, RESP (PING) and HTTP servers, and with C{tls} a TLS line echo
    (C{tls_echo}), and their ports by name.
    """
    servers = []
    ports = {}
    for name, handler in (("echo", echo), ("resp", resp_ping), ("http", http_hello)):
        server = await asyncio.start_server(handler, HOST, 0, backlog=backlog)
        servers.append(server)
        ports[name] = int(server.sockets[0].getsockname()[1])
    if tls:
        import _tls

        server = await asyncio.start_server(
            echo,
            HOST,
            0,
            backlog=backlog,
            ssl=_tls.ssl_server_context(),
            ssl_handshake_timeout=_tls.HANDSHAKE_TIMEOUT,
        )
        servers.append(server)
        ports["tls_echo"] = int(server.sockets[0].getsockname()[1])
    return servers, ports
