"""
The load generator of the server-side workloads: plain sockets, no event
loop framework, so that it is cheap and the same for every server measured.

Blocking sockets for one connection at a time (ping-pong, pipelined lines,
sequential connections); epoll over non-blocking sockets for concurrent
clients.
"""

from __future__ import annotations

import errno
import select
import socket
from time import perf_counter
from typing import Any

from _common import HOST, LINE_BYTES, CheckFailed, check_line, lines_nl, set_nodelay

IO_TIMEOUT = 10.0  # seconds: no single send/recv/connect waits longer


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    set_nodelay(sock)
    return sock


def _read_line(sock: socket.socket) -> bytes:
    data = sock.recv(4096)
    while not data.endswith(b"\n"):
        more = sock.recv(4096)
        if not more:
            raise CheckFailed(f"connection closed before the end of the line: {data[:70]!r}")
        data += more
    return data


def pingpong(port: int, count: int) -> float:
    expect = lines_nl(count)
    sock = _connect(port)
    try:
        t0 = perf_counter()
        for i in range(count):
            sock.sendall(expect[i])
            got = _read_line(sock)
            if got != expect[i]:
                check_line(got, expect[i], i)
        return perf_counter() - t0
    finally:
        sock.close()


def pipelined(port: int, count: int, batch: int, window: int) -> float:
    """Send batches of lines (one send per batch), at most C{window} lines unanswered."""
    all_lines = lines_nl(count)
    batches = [b"".join(all_lines[k : k + batch]) for k in range(0, count, batch)]
    expect = memoryview(b"".join(batches))
    total = len(expect)
    limit = (window - batch) * LINE_BYTES
    sock = _connect(port)
    try:
        t0 = perf_counter()
        sent = received = 0
        next_batch = 0
        while received < total:
            while next_batch < len(batches) and sent - received <= limit:
                data = batches[next_batch]
                sock.sendall(data)
                sent += len(data)
                next_batch += 1
            data = sock.recv(262144)
            if not data:
                raise CheckFailed(f"connection closed after {received} of {total} bytes")
            if expect[received : received + len(data)] != data:
                raise CheckFailed(f"wrong bytes at offset {received}: {data[:70]!r}")
            received += len(data)
        return perf_counter() - t0
    finally:
        sock.close()


def seq_conns(port: int, count: int) -> float:
    """C{count} connections one after the other: connect, one line round trip, close."""
    expect = lines_nl(count)
    t0 = perf_counter()
    for i in range(count):
        sock = _connect(port)
        try:
            sock.sendall(expect[i])
            got = _read_line(sock)
        finally:
            sock.close()
        if got != expect[i]:
            check_line(got, expect[i], i)
    return perf_counter() - t0


def conc_conns(port: int, clients: int, per_client: int) -> float:
    """
    C{clients} clients at once, each making C{per_client} connections one
    after the other (connect, one line round trip, close).
    """
    expect = lines_nl(clients)
    ep = select.epoll()
    conns: dict[int, list[Any]] = {}  # fd -> [socket, client, received, connected]
    left = [per_client] * clients

    def start(client: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        set_nodelay(sock)
        err = sock.connect_ex((HOST, port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
        conns[sock.fileno()] = [sock, client, b"", False]
        ep.register(sock.fileno(), select.EPOLLOUT)

    try:
        t0 = perf_counter()
        for client in range(clients):
            start(client)
        while conns:
            events = ep.poll(IO_TIMEOUT)
            if not events:
                raise TimeoutError(f"no progress for {IO_TIMEOUT} s with {len(conns)} open")
            for fd, _ in events:
                conn = conns[fd]
                sock, client = conn[0], conn[1]
                if not conn[3]:
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
                    conn[3] = True
                    if sock.send(expect[client]) != LINE_BYTES:
                        raise CheckFailed("short send of one line")
                    ep.modify(fd, select.EPOLLIN)
                    continue
                data = sock.recv(4096)
                if not data:
                    raise CheckFailed(f"client {client}: connection closed before the echo")
                conn[2] += data
                if not conn[2].endswith(b"\n"):
                    continue
                if conn[2] != expect[client]:
                    check_line(conn[2], expect[client], client)
                ep.unregister(fd)
                sock.close()
                del conns[fd]
                left[client] -= 1
                if left[client]:
                    start(client)
        return perf_counter() - t0
    finally:
        for conn in conns.values():
            conn[0].close()
        ep.close()


def run(workload: str, port: int, params: dict[str, Any]) -> dict[str, Any]:
    if workload == "pingpong":
        return {"work": params["count"], "elapsed": pingpong(port, params["count"])}
    if workload == "pipelined":
        elapsed = pipelined(port, params["count"], params["batch"], params["window"])
        return {"work": params["count"], "elapsed": elapsed}
    if workload == "seq_conns":
        return {"work": params["count"], "elapsed": seq_conns(port, params["count"])}
    if workload == "conc_conns":
        elapsed = conc_conns(port, params["clients"], params["per_client"])
        return {"work": params["clients"] * params["per_client"], "elapsed": elapsed}
    raise ValueError(f"unknown load-generator workload {workload!r}")
