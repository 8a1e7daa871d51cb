"""
asyncio streams (C{open_connection}, C{start_server}), on asyncio's own event
loop or on uvloop's: the same code for both columns.
"""

from __future__ import annotations

import asyncio
from time import perf_counter
from typing import Any

from _common import BULK_HEADER, CHUNK_DATA, HOST, CheckFailed, check_line, lines_nl

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


async def client(workload: str, port: int, params: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 10)
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


async def serve(backlog: int) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(echo, HOST, 0, backlog=backlog)
    return server, int(server.sockets[0].getsockname()[1])
