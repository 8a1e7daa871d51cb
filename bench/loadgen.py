"""
The load generator of the server-side workloads: plain sockets, no event
loop framework, so that it is cheap and the same for every server measured.

Blocking sockets for one connection at a time (ping-pong, pipelined lines,
sequential connections); epoll over non-blocking sockets for concurrent
clients and for the idle connections.  Over TLS (ping-pong, concurrent
clients, idle connections), Python's C{ssl} module on the same sockets.
It also runs the real clients (redis-benchmark, wrk) as child processes,
and reads their rates from their output.
"""

from __future__ import annotations

import csv
import ctypes
import errno
import math
import os
import re
import select
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from time import perf_counter
from typing import Any

from _common import (
    HOST,
    LINE_BYTES,
    CheckFailed,
    check_line,
    fd_count,
    lines_nl,
    set_nodelay,
    vm_rss_kib,
)

IO_TIMEOUT = 10.0  # seconds: no single send/recv/connect waits longer


def _connect(port: int, context: ssl.SSLContext | None = None) -> socket.socket:
    """A blocking connection to C{port}; with C{context}, secured: its TLS handshake done."""
    sock = socket.create_connection((HOST, port), timeout=IO_TIMEOUT)
    set_nodelay(sock)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=HOST)
    return sock


def _tls_context() -> ssl.SSLContext:
    """This run's CA trusted, 127.0.0.1 verified, TLS 1.3 only."""
    import _tls

    context: ssl.SSLContext = _tls.ssl_client_context()  # type: ignore[assignment]
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def _close(sock: socket.socket) -> None:
    """
    Close C{sock}; over TLS, send a close_notify first (as Twisted's and
    asyncio's clients do), without waiting for the server's.
    """
    if isinstance(sock, ssl.SSLSocket):
        sock.setblocking(False)
        try:
            sock.unwrap()
        except OSError:  # SSLWantReadError: the server's close_notify is not there yet
            pass
    sock.close()


def _read_line(sock: socket.socket) -> bytes:
    data = sock.recv(4096)
    while not data.endswith(b"\n"):
        more = sock.recv(4096)
        if not more:
            raise CheckFailed(f"connection closed before the end of the line: {data[:70]!r}")
        data += more
    return data


def pingpong(port: int, count: int, tls: bool = False) -> float:
    """
    C{count} round trips of a line, one in flight, on one connection (with
    C{tls}, a TLS one, its handshake done before the clock starts).
    """
    expect = lines_nl(count)
    sock = _connect(port, _tls_context() if tls else None)
    try:
        t0 = perf_counter()
        for i in range(count):
            sock.sendall(expect[i])
            got = _read_line(sock)
            if got != expect[i]:
                check_line(got, expect[i], i)
        return perf_counter() - t0
    finally:
        _close(sock)


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


_CONNECTING, _HANDSHAKING, _ECHOING = range(3)  # how far a _Conn's set-up is


class _Conn:
    """
    A non-blocking connection being set up, registered with an epoll object:
    connect, then (over TLS) the TLS handshake, then one line round trip.
    """

    __slots__ = ("line", "number", "received", "sock", "state")

    def __init__(self, port: int, ep: select.epoll, line: bytes, number: int) -> None:
        """Start connecting to C{port}: C{line} is the line to echo, C{number} names it."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        set_nodelay(sock)
        err = sock.connect_ex((HOST, port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")
        ep.register(sock.fileno(), select.EPOLLOUT)
        self.sock = sock
        self.state = _CONNECTING
        self.received = b""
        self.line = line
        self.number = number

    def connected(self) -> None:
        """Raise if the connect failed (once the socket is writable: the connect is over)."""
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, f"connect: {errno.errorcode.get(err, err)}")

    def _send_line(self, ep: select.epoll) -> None:
        if self.sock.send(self.line) != len(self.line):
            raise CheckFailed("short send of one line")
        self.state = _ECHOING
        ep.modify(self.sock.fileno(), select.EPOLLIN)

    def advance(self, ep: select.epoll, context: ssl.SSLContext | None) -> bool:
        """
        Go on after an event of C{ep} on this connection: once connected, the
        TLS handshake (with C{context}; none if None), then the line sent;
        True once its echo has come back whole and been checked.
        """
        if self.state == _CONNECTING:
            self.connected()
            if context is None:
                self._send_line(ep)
                return False
            # The same file descriptor, so the same epoll registration; the
            # handshake starts at once, below.
            self.sock = context.wrap_socket(
                self.sock, server_hostname=HOST, do_handshake_on_connect=False
            )
            self.state = _HANDSHAKING
        if self.state == _HANDSHAKING:
            assert isinstance(self.sock, ssl.SSLSocket)
            try:
                self.sock.do_handshake()
            except ssl.SSLWantReadError:
                ep.modify(self.sock.fileno(), select.EPOLLIN)
                return False
            except ssl.SSLWantWriteError:
                ep.modify(self.sock.fileno(), select.EPOLLOUT)
                return False
            self._send_line(ep)
            return False
        try:
            data = self.sock.recv(4096)
        except ssl.SSLWantReadError:  # a TLS record with no data (a session ticket)
            return False
        if not data:
            raise CheckFailed(
                f"connection {self.number}: closed before the echo (the server may be "
                "out of file descriptors)"
            )
        self.received += data
        if not self.received.endswith(b"\n"):
            return False
        if self.received != self.line:
            check_line(self.received, self.line, self.number)
        return True


def conc_conns(port: int, clients: int, per_client: int, tls: bool = False) -> float:
    """
    C{clients} clients at once, each making C{per_client} connections one
    after the other (connect, with C{tls} the TLS handshake, one line round
    trip, close).
    """
    context = _tls_context() if tls else None
    expect = lines_nl(clients)
    ep = select.epoll()
    conns: dict[int, _Conn] = {}  # by file descriptor
    left = [per_client] * clients

    def start(client: int) -> None:
        conn = _Conn(port, ep, expect[client], client)
        conns[conn.sock.fileno()] = conn

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
                if not conn.advance(ep, context):
                    continue
                ep.unregister(fd)
                del conns[fd]
                _close(conn.sock)
                left[conn.number] -= 1
                if left[conn.number]:
                    start(conn.number)
        return perf_counter() - t0
    finally:
        for conn in conns.values():
            conn.sock.close()
        ep.close()


# -- idle connections -------------------------------------------------------------

IDLE_IN_FLIGHT = 200  # connections being opened at once (well under the backlog of 1024)
IDLE_PRIME = 20  # connections made (and closed) before the first RSS reading
_RST_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST

# How open_idle sets up each connection: "line": one line round trip; "tls":
# a TLS handshake, then one line round trip over it; "silent": nothing (a TCP
# connection that never sends a byte: to a TLS server, a pending handshake).
IDLE_HOW = ("line", "tls", "silent")


def open_idle(
    port: int, count: int, how: str = "line", context: ssl.SSLContext | None = None
) -> list[socket.socket]:
    """
    Open C{count} connections, at most L{IDLE_IN_FLIGHT} being set up at once,
    each set up as C{how} says (L{IDLE_HOW}; C{context} for "tls"); return
    them, open and idle.
    """
    expect = lines_nl(1)[0]
    ep = select.epoll()
    pending: dict[int, _Conn] = {}  # by file descriptor
    done: list[socket.socket] = []
    started = 0

    def served(fd: int) -> None:
        ep.unregister(fd)
        done.append(pending.pop(fd).sock)

    try:
        while len(done) < count:
            while started < count and len(pending) < IDLE_IN_FLIGHT:
                conn = _Conn(port, ep, expect, started)
                pending[conn.sock.fileno()] = conn
                started += 1
            events = ep.poll(IO_TIMEOUT)
            if not events:
                raise TimeoutError(
                    f"no progress for {IO_TIMEOUT} s: {len(done)} connections open, "
                    f"{len(pending)} being opened"
                )
            for fd, _ in events:
                conn = pending[fd]
                if how == "silent":
                    conn.connected()
                    served(fd)
                elif conn.advance(ep, context if how == "tls" else None):
                    served(fd)
        return done
    except BaseException:
        close_idle(done + [conn.sock for conn in pending.values()])
        raise
    finally:
        ep.close()


def _closed_by_peer(socks: list[socket.socket]) -> int:
    """How many of C{socks} the server has closed (FIN or RST), without reading them."""
    ep = select.epoll()
    try:
        for sock in socks:
            ep.register(sock.fileno(), select.EPOLLRDHUP)  # EPOLLHUP and EPOLLERR: always
        return len(ep.poll(0, len(socks)))
    finally:
        ep.close()


def close_idle(socks: list[socket.socket]) -> None:
    """Close with a RST: no TIME_WAIT left behind for thousands of connections."""
    for sock in socks:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_ON_CLOSE)
        except OSError:
            pass
        sock.close()


def idle_conns(
    port: int, count: int, server_pid: int, settle: float, how: str = "line"
) -> dict[str, Any]:
    """
    The server's RSS per idle connection: a few connections first (made and
    closed, so that what the first connection costs once is not counted),
    then its RSS, then C{count} connections opened and left idle, then its
    RSS again.  Each reading comes C{settle} seconds after the connections
    were served -- for C{how="silent"}, where nothing comes back, after the
    server's open files say that it holds them all (or, before the first
    reading, none).  A connection the server has closed by the second
    reading fails the measurement.
    """
    if how not in IDLE_HOW:
        raise ValueError(f"how must be one of {IDLE_HOW}, not {how!r}")
    context = _tls_context() if how == "tls" else None
    base = fd_count(server_pid)

    def server_holds(n: int) -> None:
        """For "silent": wait until the server holds C{n} of them (0: has closed them all)."""
        if how != "silent":
            return
        deadline = time.monotonic() + IO_TIMEOUT
        while True:
            held = fd_count(server_pid) - base
            if (held >= n) if n else (held <= 0):
                return
            if time.monotonic() > deadline:
                raise CheckFailed(
                    f"the server holds {held:,} connections, not {n:,}, after {IO_TIMEOUT:g} s"
                    + (": did it close some (a limit on pending handshakes)?" if n else "")
                )
            time.sleep(0.01)

    prime = open_idle(port, IDLE_PRIME, how, context)
    try:
        server_holds(IDLE_PRIME)
    finally:
        close_idle(prime)
    server_holds(0)
    time.sleep(settle)
    before = vm_rss_kib(server_pid)
    t0 = perf_counter()
    socks = open_idle(port, count, how, context)
    try:
        elapsed = perf_counter() - t0
        server_holds(count)
        time.sleep(settle)
        after = vm_rss_kib(server_pid)
        closed = _closed_by_peer(socks)
        versions = sorted({s.version() or "?" for s in socks if isinstance(s, ssl.SSLSocket)})
    finally:
        close_idle(socks)
    if closed:
        raise CheckFailed(
            f"the server closed {closed:,} of the {count:,} connections before its RSS was read"
        )
    what = {
        "line": "",
        "tls": f" over {', '.join(versions)}",
        "silent": " waiting for a handshake",
    }[how]
    return {
        "value": (after - before) / count,
        "work": count,
        "elapsed": elapsed,
        "detail": f"RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB with {count:,} "
        f"connections{what} (opened in {elapsed:.2f} s)",
    }


# -- real clients -------------------------------------------------------------------


_prctl = ctypes.CDLL(None).prctl if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1


def run_tool(argv: list[str], timeout: float, interrupt_after: float = 0) -> str:
    """
    Run C{argv} and return its output (stdout and stderr), killing it after
    C{timeout} seconds, or if this process is interrupted or dies.  With
    C{interrupt_after}, send it SIGINT after that many seconds, and again
    every 0.1 s until it exits (wrk then stops and reports what it measured
    so far).  It starts with SIGINT ignored, so that a SIGINT that comes
    before it has set its handler is lost rather than fatal (wrk sets one;
    the next SIGINT stops it).
    """
    parent = os.getpid()

    def preexec() -> None:  # pragma: no cover - runs in the child
        # Be killed if the load generator dies, whatever the way.
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
        if interrupt_after:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=preexec,
    )
    deadline = time.monotonic() + timeout
    try:
        if interrupt_after:
            wait = interrupt_after
            while time.monotonic() + wait < deadline:
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGINT)
                    wait = 0.1
        out, _ = proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise TimeoutError(
            f"{argv[0]} did not finish in {timeout:g} s; its output:\n"
            + out.decode(errors="replace")[-1500:]
        ) from None
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    text = out.decode(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}:\n{text[-1500:]}")
    return text


def redis_benchmark(
    port: int, requests: int, clients: int, pipeline: int, timeout: float
) -> dict[str, Any]:
    """
    C{redis-benchmark -t ping}: its PING_INLINE test (C{PING\\r\\n}) then its
    PING_MBULK test (C{*1\\r\\n$4\\r\\nPING\\r\\n}), C{requests} each.  The
    value is the requests of both over the time of both.
    """
    argv = [
        "redis-benchmark", "-h", HOST, "-p", str(port), "-t", "ping",
        "-n", str(requests), "-c", str(clients), "-P", str(pipeline), "--csv",
    ]  # fmt: skip
    text = run_tool(argv, timeout)
    rates = {}
    for row in csv.reader(line for line in text.splitlines() if line.startswith('"')):
        if len(row) >= 2 and row[0] in ("PING_INLINE", "PING_MBULK"):
            rates[row[0]] = float(row[1])
    if set(rates) != {"PING_INLINE", "PING_MBULK"} or not all(rates.values()):
        raise RuntimeError(f"no PING_INLINE and PING_MBULK rates in:\n{text[-1500:]}")
    if not all(map(math.isfinite, rates.values())):
        # It times a test in whole milliseconds: one that took less reads as infinitely fast.
        raise RuntimeError(
            f"a test was too short for redis-benchmark to time (use more "
            f"requests than {requests}):\n{text[-1500:]}"
        )
    elapsed = sum(requests / rate for rate in rates.values())
    return {
        "work": 2 * requests,
        "elapsed": elapsed,
        "detail": f"inline {rates['PING_INLINE']:,.0f}/s, array {rates['PING_MBULK']:,.0f}/s",
    }


_WRK_RATE = re.compile(r"^Requests/sec:\s*([0-9.]+)", re.M)
_WRK_COUNT = re.compile(r"^\s*([0-9]+) requests in ([0-9.]+)(us|ms|s|m)\b", re.M)
_WRK_ERRORS = re.compile(r"^\s*(Socket errors:.*|Non-2xx or 3xx responses:.*)$", re.M)


def wrk(
    port: int, seconds: int, connections: int, threads: int, stop_after: float, timeout: float
) -> dict[str, Any]:
    """
    C{wrk} with keep-alive (its default): C{GET /} on C{connections}
    connections, for C{seconds} (or C{stop_after}, if shorter and not 0).
    """
    argv = [
        "wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
        f"http://{HOST}:{port}/",
    ]  # fmt: skip
    text = run_tool(argv, timeout, stop_after)
    errors = _WRK_ERRORS.findall(text)
    if errors:
        raise CheckFailed(f"wrk reported errors: {'; '.join(errors)}\n{text[-1500:]}")
    rate = _WRK_RATE.search(text)
    count = _WRK_COUNT.search(text)
    if not rate or not count or not float(rate.group(1)) or not int(count.group(1)):
        raise RuntimeError(f"no request rate in wrk's output:\n{text[-1500:]}")
    return {
        "value": float(rate.group(1)),
        "work": int(count.group(1)),
        "elapsed": 1.0,
        "detail": f"{int(count.group(1)):,} requests in {count.group(2)}{count.group(3)}",
    }


def run(workload: str, port: int, params: dict[str, Any]) -> dict[str, Any]:
    tls = bool(params.get("tls"))
    if workload == "pingpong":
        return {"work": params["count"], "elapsed": pingpong(port, params["count"], tls)}
    if workload == "pipelined":
        elapsed = pipelined(port, params["count"], params["batch"], params["window"])
        return {"work": params["count"], "elapsed": elapsed}
    if workload == "seq_conns":
        return {"work": params["count"], "elapsed": seq_conns(port, params["count"])}
    if workload == "conc_conns":
        elapsed = conc_conns(port, params["clients"], params["per_client"], tls)
        return {"work": params["clients"] * params["per_client"], "elapsed": elapsed}
    if workload == "idle_conns":
        return idle_conns(
            port,
            params["count"],
            params["server_pid"],
            params["settle"],
            params.get("how", "line"),
        )
    tool_timeout = max(1.0, params["timeout"] - 3.0)  # under the harness's own timeout
    if workload == "redis_benchmark":
        return redis_benchmark(
            port, params["requests"], params["clients"], params["pipeline"], tool_timeout
        )
    if workload == "wrk":
        return wrk(
            port,
            params["seconds"],
            params["connections"],
            params["threads"],
            params["stop_after"],
            tool_timeout,
        )
    raise ValueError(f"unknown load-generator workload {workload!r}")
