"""
twisted_tcp, used as its documentation says a user would: clients from
C{twisted_tcp.with_connection} with C{async def} code over the Reader and
Writer (as the tutorial's client), and
a C{Server} whose handler is the line echo of C{twisted_tcp.examples.echo}
(over TLS, for the C{tls_*} workloads, C{to_host_and_port(..., tls=...)}, and
C{on_port(..., tls=(certificate, key))} for the TLS line echo);
for the real-client workloads, C{Server}s running the handlers of
twisted_tcp.examples.resp_ping and twisted_tcp.examples.http_hello, as they are shipped.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from _common import (
    BULK_HEADER,
    CHUNK_DATA,
    HOST,
    CheckFailed,
    check_line,
    lines,
    load_example,
    use_repo_package,
)

use_repo_package()

import twisted_tcp  # noqa: E402

FLUSH_EVERY = 1 << 20  # bulk_send: wait for flushed() whenever this much is unflushed
# More than idle_conns opens at once: the benchmark measures serving, not the limit.
MAX_CONNECTIONS = 100_000


async def _bulk_send(reader: Any, writer: Any, total: int) -> float:
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
        if writer.bytes_to_write >= FLUSH_EVERY:
            await writer.flushed()
    ack = await reader.read_line()
    elapsed = perf_counter() - t0
    if ack is None or int(ack) != total:
        raise CheckFailed(f"sink received {ack!r} bytes, not {total}")
    return elapsed


async def _bulk_recv(reader: Any, writer: Any, total: int) -> float:
    t0 = perf_counter()
    writer.write(b"%d\n" % total)
    count = 0
    while True:
        data = await reader.read()
        if not data:
            break
        count += len(data)
    elapsed = perf_counter() - t0
    if count != total:
        raise CheckFailed(f"received {count} bytes, not {total}")
    return elapsed


async def _pingpong(reader: Any, writer: Any, count: int) -> float:
    expect = lines(count)
    t0 = perf_counter()
    for i in range(count):
        writer.write_line(expect[i])
        got = await reader.read_line()
        if got != expect[i]:
            check_line(got, expect[i], i)
    return perf_counter() - t0


async def _pipelined(reader: Any, writer: Any, count: int, batch: int, window: int) -> float:
    """
    Read the echoes with ``async for`` over ``reader.line_batches()``, as the
    documentation says to read lines that come many at a time.
    """
    expect = lines(count)
    limit = window - batch
    sent = received = 0
    write_line = writer.write_line

    def send_more() -> None:
        nonlocal sent
        while sent < count and sent - received <= limit:
            end = min(sent + batch, count)
            for k in range(sent, end):
                write_line(expect[k])
            sent = end

    t0 = perf_counter()
    send_more()
    async for echoes in reader.line_batches():
        for got in echoes:
            if got != expect[received]:
                check_line(got, expect[received], received)
            received += 1
        if received >= count:
            break
        if sent - received <= limit:
            send_more()
    return perf_counter() - t0


async def _one_conn(reactor: Any, where: Any, line: bytes) -> None:
    """Connect, one line round trip, close (C{with_connection}); returns once closed."""

    async def one_line(sock: Any, reader: Any, writer: Any) -> None:
        writer.write_line(line)
        got = await reader.read_line()
        if got != line:
            check_line(got, line, 0)

    await twisted_tcp.with_connection(where, one_line, timeout=10, reactor=reactor)


async def _seq_conns(reactor: Any, where: Any, count: int) -> float:
    expect = lines(count)
    t0 = perf_counter()
    for i in range(count):
        await _one_conn(reactor, where, expect[i])
    return perf_counter() - t0


async def _conc_conns(reactor: Any, where: Any, clients: int, per_client: int) -> float:
    from twisted.internet.defer import Deferred, gatherResults

    expect = lines(clients)

    async def one_client(client: int) -> None:
        for _ in range(per_client):
            await _one_conn(reactor, where, expect[client])

    t0 = perf_counter()
    await gatherResults(
        [Deferred.fromCoroutine(one_client(c)) for c in range(clients)], consumeErrors=True
    )
    return perf_counter() - t0


async def client(reactor: Any, workload: str, port: int, params: dict[str, Any]) -> dict[str, Any]:
    if workload in ("seq_conns", "conc_conns"):
        # Connection rates: a connection per line, as the documentation's
        # with_connection(to_host_and_port(host, port), f) makes one.
        where = twisted_tcp.to_host_and_port(HOST, port)
        if workload == "seq_conns":
            return {
                "work": params["count"],
                "elapsed": await _seq_conns(reactor, where, params["count"]),
            }
        elapsed = await _conc_conns(reactor, where, params["clients"], params["per_client"])
        return {"work": params["clients"] * params["per_client"], "elapsed": elapsed}
    if params.get("tls"):
        import _tls

        # TLS as the documentation shows it: tls= with Twisted's client options
        # trusting the run's CA; connect returns once the handshake is done.
        where = twisted_tcp.to_host_and_port(
            HOST,
            port,
            tls=_tls.twisted_client_options(HOST),  # type: ignore[arg-type]
        )
    else:
        where = twisted_tcp.to_host_and_port(HOST, port)
    # As the tutorial's async def client: with_connection runs the function
    # with the lean driver (a read resumes it directly), then closes.

    async def run(sock: Any, reader: Any, writer: Any) -> tuple[int, float]:
        if workload == "bulk_send":
            return params["total"], await _bulk_send(reader, writer, params["total"])
        if workload == "bulk_recv":
            return params["total"], await _bulk_recv(reader, writer, params["total"])
        if workload == "pingpong":
            return params["count"], await _pingpong(reader, writer, params["count"])
        if workload == "pipelined":
            elapsed = await _pipelined(
                reader, writer, params["count"], params["batch"], params["window"]
            )
            return params["count"], elapsed
        raise ValueError(f"unknown client workload {workload!r}")

    work, elapsed = await twisted_tcp.with_connection(where, run, timeout=10, reactor=reactor)
    return {"work": work, "elapsed": elapsed}


async def echo(address: Any, reader: Any, writer: Any) -> None:
    """The line echo handler, as in C{twisted_tcp.examples.echo}."""
    async for batch in reader.line_batches():
        for line in batch:
            writer.write_line(line)
        if writer.bytes_to_write > 1 << 20:
            await writer.flushed()


async def _listen(reactor: Any, handler: Any, backlog: int, tls: bool = False) -> int:
    where = twisted_tcp.on_port(0, interface=HOST)
    options: dict[str, Any] = {}
    if tls:
        import _tls

        # As the documentation shows: tls=(certificate file, key file); the
        # handler starts once the client's handshake is done.
        pki = _tls.paths()
        where = twisted_tcp.on_port(0, interface=HOST, tls=(pki.cert, pki.key))
        options["handshake_timeout"] = _tls.HANDSHAKE_TIMEOUT
    server = await twisted_tcp.Server.create(
        where,
        handler,
        backlog=backlog,
        max_connections=MAX_CONNECTIONS,
        reactor=reactor,
        **options,
    )
    return int(server.listening_on)


async def serve(reactor: Any, backlog: int) -> int:
    """The line echo server; returns its port."""
    return await _listen(reactor, echo, backlog)


async def serve_all(reactor: Any, backlog: int, tls: bool = False) -> dict[str, int]:
    """
    The echo, RESP (PING) and HTTP servers, and with C{tls} a TLS line echo
    (C{tls_echo}); returns their ports by name.
    """
    ports = {
        "echo": await serve(reactor, backlog),
        "resp": await _listen(reactor, load_example("resp_ping").handle, backlog),
        "http": await _listen(reactor, load_example("http_hello").handle, backlog),
    }
    if tls:
        ports["tls_echo"] = await _listen(reactor, echo, backlog, tls=True)
    return ports
