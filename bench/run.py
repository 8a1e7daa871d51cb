#!/usr/bin/env python3
"""
The twisted_tcp benchmark: one command runs every workload against every
implementation, interleaved over several rounds, prints a table of medians
and ratios to raw Twisted, and writes it to bench/RESULTS.md.

    python bench/run.py                 # the full run (5 rounds)
    python bench/run.py --quick         # smaller amounts, 3 rounds
    python bench/run.py --only pingpong,bulk --rounds 7
    python bench/run.py --smoke --results /tmp/R.md   # a few KiB, 1 round (the smoke test)
    python bench/run.py --only workers  # twistd tcpserver --workers 1 and 2, and uvloop
    python bench/run.py --only tls      # the TLS rows: client side, server side, server memory
    python bench/run.py --only conc --before HEAD~3   # against this checkout's HEAD~3
    bench/setup.sh                      # installs redis-benchmark and wrk (Debian)

Processes: every client and every server is a worker process of its own
(bench/worker.py), started once at the beginning and driven over its
stdin/stdout; this process only starts them, sends commands and waits, so a
measurement keeps one core busy with the client and the other with the
server.  The real-client workloads run redis-benchmark and wrk (from the
load-generator process) and are skipped, with a note, where they are not
installed.  The last workload, workers_conc_conns, runs real
`twistd tcpserver --workers N` processes (N = 1 and 2) as the servers, next
to the uvloop streams server, and has a table of its own.  With --before
REF, the twisted_tcp of git revision REF (exported with git archive) is one
more implementation, "before", measured with this tree's benchmark code in
the same interleaved rounds: the way to see what a change did.  See
bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import selectors
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import _tls  # the test PKI of the TLS workloads (trustme is imported only to make it)
from _common import CHECKOUT, PACKAGE_TREE_ENV, two_cpus

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "worker.py")
DEFAULT_RESULTS = os.path.join(HERE, "RESULTS.md")

IMPLS = ["twisted", "twisted_tcp", "asyncio", "uvloop"]
IMPL_TITLES = {
    "twisted": "raw Twisted",
    "twisted_tcp": "twisted_tcp",
    "before": "twisted_tcp before",
    "asyncio": "asyncio streams",
    "uvloop": "uvloop streams",
    "twistd_w1": "twistd --workers 1",
    "twistd_w2": "twistd --workers 2",
}
BASELINE = "twisted"
BEFORE = "before"  # the implementation of --before: twisted_tcp at an older revision
MiB = 1 << 20
TLS_ENV = _tls.ENV  # names the directory of the test PKI, for the workers


@dataclass(frozen=True)
class Scale:
    name: str
    bulk_bytes: int
    pingpong: int
    pipelined: int
    batch: int
    window: int
    seq_conns: int
    clients: int
    per_client: int
    rounds: int
    timeout: float  # seconds, for one measurement
    warmup: float  # the fraction of a measurement's work run once, untimed, first
    idle: int  # idle_conns: connections held open at once
    idle_settle: float  # idle_conns (and the TLS ones): seconds waited before each RSS reading
    tls_idle: int  # tls_idle_conns: TLS connections held open at once
    tls_pending: int  # tls_pending_handshakes: connections held open, each waiting
    tls_clients: int  # tls_server_conc_conns: concurrent clients
    tls_per_client: int  # tls_server_conc_conns: sequential TLS connections of each
    redis_requests: int  # redis-benchmark -n (for each of its two PING tests)
    redis_clients: int  # redis-benchmark -c
    wrk_seconds: int  # wrk -d (whole seconds: wrk takes no less)
    wrk_conns: int  # wrk -c
    wrk_stop_after: float  # stop wrk (SIGINT: it reports) after this many seconds; 0: never


SCALES = {
    "full": Scale(
        "full",
        512 * MiB,
        20_000,
        200_000,
        256,
        2048,
        5_000,
        200,
        20,
        5,
        120.0,
        0.2,
        10_000,
        0.5,
        4_000,
        900,
        50,
        20,
        100_000,
        50,
        5,
        50,
        0,
    ),
    "quick": Scale(
        "quick",
        128 * MiB,
        5_000,
        50_000,
        256,
        2048,
        1_000,
        100,
        10,
        3,
        60.0,
        0.2,
        5_000,
        0.5,
        2_000,
        900,
        50,
        10,
        20_000,
        50,
        2,
        50,
        0,
    ),
    "smoke": Scale(
        "smoke",
        256 * 1024,
        20,
        300,
        16,
        64,
        10,
        4,
        3,
        1,
        20.0,
        0.0,
        100,
        0.05,
        50,
        50,
        4,
        3,
        2_000,
        4,
        1,
        4,
        0.25,
    ),
}
FD_MARGIN = 256  # open files a worker needs besides the idle connections
# tls_pending_handshakes stays under every server's limit on handshakes under
# way: twisted_tcp's Server closes new connections beyond 1,000
# (twisted_tcp._server.MAX_HANDSHAKES); the others have none.
assert max(s.tls_pending for s in SCALES.values()) <= 900


@dataclass(frozen=True)
class Workload:
    name: str
    side: str  # "client": the implementations are clients; "server": they are servers;
    # "both": each implementation's client against its own server
    command: str  # what the client worker or load generator runs
    port: str  # which port of the server: sink, source or echo
    unit: str
    divisor: float  # work per second / divisor = the value shown
    target: float  # the ratio to raw Twisted twisted_tcp aims for
    what: Callable[[Scale], str]
    params: Callable[[Scale, float], dict[str, Any]]
    lower_is_better: bool = False  # a cost (memory), not a rate
    fresh_server: bool = False  # measured on server processes that did nothing else before
    needs: tuple[str, ...] = ()  # programs it runs; skipped where one is missing
    tls: bool = False  # over TLS (needs the test PKI, made with trustme, and pyOpenSSL)


def _n(value: float) -> int:
    return max(1, int(value))


def _redis(pipeline: int) -> Workload:
    return Workload(
        f"redis_ping_P{pipeline}",
        "server",
        "redis_benchmark",
        "resp",
        "requests/s",
        1,
        0.75 if pipeline > 1 else 0.9,
        lambda s: (
            f"redis-benchmark -t ping -P {pipeline} -n {s.redis_requests:,} "
            f"-c {s.redis_clients}: PING inline, then as a RESP array, "
            "against a PING handler (twisted_tcp.examples.resp_ping)"
        ),
        lambda s, f: {
            "requests": _n(s.redis_requests * f),
            "clients": s.redis_clients,
            "pipeline": pipeline,
        },
        needs=("redis-benchmark",),
    )


WORKLOADS = [
    Workload(
        "bulk_send",
        "client",
        "bulk_send",
        "sink",
        "MB/s",
        1e6,
        0.9,
        lambda s: f"client sends {s.bulk_bytes / MiB:g} MiB in 64 KiB writes to a sink",
        lambda s, f: {"total": _n(s.bulk_bytes * f)},
    ),
    Workload(
        "bulk_recv",
        "client",
        "bulk_recv",
        "source",
        "MB/s",
        1e6,
        0.9,
        lambda s: f"client reads {s.bulk_bytes / MiB:g} MiB a source sends",
        lambda s, f: {"total": _n(s.bulk_bytes * f)},
    ),
    Workload(
        "client_pingpong",
        "client",
        "pingpong",
        "echo",
        "round trips/s",
        1,
        0.9,
        lambda s: f"{s.pingpong:,} round trips of a 64-byte line, one in flight",
        lambda s, f: {"count": _n(s.pingpong * f)},
    ),
    Workload(
        "client_pipelined",
        "client",
        "pipelined",
        "echo",
        "lines/s",
        1,
        0.75,
        lambda s: (
            f"{s.pipelined:,} 64-byte lines, batches of {s.batch}, at most {s.window} in flight"
        ),
        lambda s, f: {"count": _n(s.pipelined * f), "batch": s.batch, "window": s.window},
    ),
    Workload(
        "client_seq_conns",
        "client",
        "seq_conns",
        "echo",
        "conn/s",
        1,
        0.85,
        lambda s: (
            f"{s.seq_conns:,} sequential client connections: connect, one line, "
            "read its echo, close"
        ),
        lambda s, f: {"count": _n(s.seq_conns * f)},
    ),
    Workload(
        "client_conc_conns",
        "client",
        "conc_conns",
        "echo",
        "conn/s",
        1,
        0.85,
        lambda s: (
            f"{s.clients} concurrent clients x {s.per_client} sequential "
            "client connections, one line each"
        ),
        lambda s, f: {
            "clients": s.clients if f >= 1 else _n(s.clients * f),
            "per_client": s.per_client,
        },
    ),
    Workload(
        "tls_bulk",
        "client",
        "bulk_send",
        "tls_sink",
        "MB/s",
        1e6,
        0.9,
        lambda s: (
            f"as bulk_send over TLS: client sends {s.bulk_bytes / MiB:g} MiB "
            "in 64 KiB writes to a TLS sink"
        ),
        lambda s, f: {"total": _n(s.bulk_bytes * f), "tls": 1},
        tls=True,
    ),
    Workload(
        "tls_pingpong",
        "client",
        "pingpong",
        "tls_echo",
        "round trips/s",
        1,
        0.9,
        lambda s: (
            f"as client_pingpong over TLS: {s.pingpong:,} round trips of a 64-byte "
            "line, one in flight"
        ),
        lambda s, f: {"count": _n(s.pingpong * f), "tls": 1},
        tls=True,
    ),
    Workload(
        "server_pingpong",
        "server",
        "pingpong",
        "echo",
        "round trips/s",
        1,
        0.9,
        lambda s: f"{s.pingpong:,} round trips of a 64-byte line, one in flight",
        lambda s, f: {"count": _n(s.pingpong * f)},
    ),
    Workload(
        "server_pipelined",
        "server",
        "pipelined",
        "echo",
        "lines/s",
        1,
        0.75,
        lambda s: (
            f"{s.pipelined:,} 64-byte lines, batches of {s.batch}, at most {s.window} in flight"
        ),
        lambda s, f: {"count": _n(s.pipelined * f), "batch": s.batch, "window": s.window},
    ),
    Workload(
        "server_seq_conns",
        "server",
        "seq_conns",
        "echo",
        "conn/s",
        1,
        0.85,
        lambda s: f"{s.seq_conns:,} sequential connections: connect, one line, close",
        lambda s, f: {"count": _n(s.seq_conns * f)},
    ),
    Workload(
        "server_conc_conns",
        "server",
        "conc_conns",
        "echo",
        "conn/s",
        1,
        0.85,
        lambda s: f"{s.clients} concurrent clients x {s.per_client} sequential connections",
        lambda s, f: {
            "clients": s.clients if f >= 1 else _n(s.clients * f),
            "per_client": s.per_client,
        },
    ),
    Workload(
        "tls_server_pingpong",
        "server",
        "pingpong",
        "tls_echo",
        "round trips/s",
        1,
        0.9,
        lambda s: (
            f"as server_pingpong over TLS: {s.pingpong:,} round trips of a 64-byte "
            "line, one in flight, the handshake before the clock starts"
        ),
        lambda s, f: {"count": _n(s.pingpong * f), "tls": 1},
        tls=True,
    ),
    Workload(
        "tls_server_conc_conns",
        "server",
        "conc_conns",
        "tls_echo",
        "conn/s",
        1,
        0.9,
        lambda s: (
            f"as server_conc_conns over TLS: {s.tls_clients} concurrent clients x "
            f"{s.tls_per_client} sequential connections (connect, TLS handshake, one "
            "line, close), the handshakes timed"
        ),
        lambda s, f: {
            "clients": s.tls_clients if f >= 1 else _n(s.tls_clients * f),
            "per_client": s.tls_per_client,
            "tls": 1,
        },
        tls=True,
    ),
    Workload(
        "both_pingpong",
        "both",
        "pingpong",
        "echo",
        "round trips/s",
        1,
        0.9,
        lambda s: (
            f"{s.pingpong:,} round trips of a 64-byte line, one in flight, "
            "each implementation's client against its own line-echo server"
        ),
        lambda s, f: {"count": _n(s.pingpong * f)},
    ),
    Workload(
        "both_seq_conns",
        "both",
        "seq_conns",
        "echo",
        "conn/s",
        1,
        0.85,
        lambda s: (
            f"{s.seq_conns:,} sequential connections (connect, one line, close), "
            "each implementation's client against its own line-echo server"
        ),
        lambda s, f: {"count": _n(s.seq_conns * f)},
    ),
    _redis(16),
    _redis(1),
    Workload(
        "wrk_keepalive",
        "server",
        "wrk",
        "http",
        "requests/s",
        1,
        0.9,
        lambda s: (
            f"wrk -t1 -c{s.wrk_conns} -d{s.wrk_seconds}s"
            + (f" (stopped after {s.wrk_stop_after:g} s)" if s.wrk_stop_after else "")
            + ", keep-alive, against a minimal HTTP/1.1 handler (twisted_tcp.examples.http_hello)"
        ),
        lambda s, f: {
            "seconds": max(1, round(s.wrk_seconds * f)),
            "connections": s.wrk_conns,
            "threads": 1,
            "stop_after": s.wrk_stop_after,
        },
        needs=("wrk",),
    ),
    Workload(
        "idle_conns",
        "server",
        "idle_conns",
        "echo",
        "KiB RSS/conn",
        1,
        1.5,
        lambda s: (
            f"{s.idle:,} idle connections to a fresh line-echo server process "
            "(each handler waiting in a line read): its VmRSS growth / connections"
        ),
        lambda s, f: {"count": s.idle, "settle": s.idle_settle},
        lower_is_better=True,
        fresh_server=True,
    ),
    Workload(
        "tls_idle_conns",
        "server",
        "idle_conns",
        "tls_echo",
        "KiB RSS/conn",
        1,
        1.5,
        lambda s: (
            f"as idle_conns over TLS: {s.tls_idle:,} connections to a fresh TLS "
            "line-echo server process, each through its TLS 1.3 handshake and one line: "
            "its VmRSS growth / connections"
        ),
        lambda s, f: {"count": s.tls_idle, "settle": s.idle_settle, "how": "tls"},
        lower_is_better=True,
        fresh_server=True,
        tls=True,
    ),
    Workload(
        "tls_pending_handshakes",
        "server",
        "idle_conns",
        "tls_echo",
        "KiB RSS/conn",
        1,
        1.5,
        lambda s: (
            f"{s.tls_pending:,} TCP connections to a fresh TLS line-echo server process "
            "that never send a byte (each waiting for its handshake): its VmRSS growth / "
            "connections"
        ),
        lambda s, f: {"count": s.tls_pending, "settle": s.idle_settle, "how": "silent"},
        lower_is_better=True,
        fresh_server=True,
        tls=True,
    ),
]


class WorkerError(Exception):
    pass


# -- worker processes ----------------------------------------------------------


class Worker:
    """A bench/worker.py process, driven by JSON lines over its stdin/stdout."""

    def __init__(
        self,
        args: list[str],
        logdir: str,
        cpu: int | None = None,
        tls_dir: str | None = None,
        package_tree: str | None = None,
    ) -> None:
        self.args = args
        self.name = " ".join(args)
        self.log_path = os.path.join(logdir, "-".join(args) + ".log")
        self._log = open(self.log_path, "ab")  # closed in close()
        env = dict(os.environ)
        env.pop("BENCH_CPU", None)
        env.pop(TLS_ENV, None)
        env.pop(PACKAGE_TREE_ENV, None)
        if package_tree is not None:
            env[PACKAGE_TREE_ENV] = package_tree
        if cpu is not None:
            env["BENCH_CPU"] = str(cpu)
        if tls_dir is not None:
            env[TLS_ENV] = tls_dir
        self.proc = subprocess.Popen(
            [sys.executable, WORKER, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            cwd=HERE,
            env=env,
        )
        self._buf = b""
        self.ready: dict[str, Any] | None = None

    def _read_line(self, deadline: float) -> dict[str, Any]:
        stdout = self.proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WorkerError(f"{self.name}: no answer in time")
                if sel.select(left):
                    data = os.read(fd, 65536)
                    if not data:
                        raise WorkerError(
                            f"{self.name}: exited ({self.proc.poll()})" + self.log_tail()
                        )
                    self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)  # type: ignore[no-any-return]
        except ValueError:
            raise WorkerError(f"{self.name}: unreadable answer {line[:200]!r}") from None

    def wait_ready(self, timeout: float) -> dict[str, Any]:
        if self.ready is None:
            self.ready = self._read_line(time.monotonic() + timeout)
        return self.ready

    def request(self, command: dict[str, Any], timeout: float) -> dict[str, Any]:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(command).encode() + b"\n")
            stdin.flush()
        except OSError as exc:
            raise WorkerError(f"{self.name}: cannot send a command: {exc}") from None
        return self._read_line(time.monotonic() + timeout)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 1500) -> str:
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        return ("\n--- worker stderr ---\n" + text[-chars:]) if text.strip() else ""

    def close(self, grace: float = 3.0) -> None:
        """Close its stdin (it exits), then terminate and kill it if it does not."""
        proc = self.proc
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._log.close()


class Workers:
    """Every worker process of a run, started on first use and restarted after a failure."""

    def __init__(
        self,
        logdir: str,
        ready_timeout: float,
        cpus: tuple[int, int] | None,
        tls_dir: str | None = None,
        before_tree: str | None = None,
    ) -> None:
        self.logdir = logdir
        self.before_tree = before_tree  # the exported tree of --before, or None
        self.ready_timeout = ready_timeout
        self.cpus = cpus  # (the clients' CPU, the servers' CPU), or None: not pinned
        self.tls_dir = tls_dir  # the test PKI of the TLS workloads, or None: none measured
        self.workers: dict[tuple[str, ...], Worker] = {}
        self.info: dict[str, str] = {}

    def _new(self, key: tuple[str, ...]) -> Worker:
        cpu = None
        if self.cpus is not None:
            cpu = self.cpus[1] if key[0] == "server" else self.cpus[0]
        tree = self.before_tree if key[-1] == BEFORE else None
        return Worker(list(key), self.logdir, cpu, self.tls_dir, tree)

    def start(self, keys: list[tuple[str, ...]]) -> None:
        """Start these workers all at once, then wait until each is ready."""
        for key in keys:
            if key not in self.workers:
                self.workers[key] = self._new(key)
        for key in keys:
            self.get(key)

    def get(self, key: tuple[str, ...]) -> Worker:
        worker = self.workers.get(key)
        if worker is not None and not worker.alive():
            self.discard(key)
            worker = None
        if worker is None:
            worker = self.workers[key] = self._new(key)
        try:
            ready = worker.wait_ready(self.ready_timeout)
        except WorkerError:
            self.discard(key)
            raise
        if key[-1] == BEFORE and not str(ready.get("package", "")).startswith(
            str(self.before_tree)
        ):
            self.discard(key)
            raise WorkerError(
                f"{worker.name}: twisted_tcp came from {ready.get('package')}, "
                f"not from the tree of --before ({self.before_tree})"
            )
        for name in ("reactor", "loop"):
            if name in ready:
                self.info[" ".join(key)] = ready[name]
        return worker

    def discard(self, key: tuple[str, ...]) -> None:
        worker = self.workers.pop(key, None)
        if worker is not None:
            worker.close(grace=0.5)

    def close_all(self) -> None:
        for key in list(self.workers):
            self.discard(key)


# -- measuring -------------------------------------------------------------------


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    by_round: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    errors: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    details: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # workload -> why

    def add(self, workload: str, impl: str, value: float, round_: int, detail: str = "") -> None:
        self.samples.setdefault(workload, {}).setdefault(impl, []).append(value)
        self.by_round.setdefault(workload, {}).setdefault(impl, {})[round_] = value
        if detail:
            self.details.setdefault(workload, {}).setdefault(impl, []).append(detail)

    def paired_ratios(self, workload: str, impl: str, over: str = BASELINE) -> list[float]:
        """C{impl} over C{over}, round by round (measured minutes apart at most)."""
        mine = self.by_round.get(workload, {}).get(impl, {})
        base = self.by_round.get(workload, {}).get(over, {})
        return [mine[r] / base[r] for r in sorted(mine) if base.get(r)]

    def fail(self, workload: str, impl: str, error: str) -> None:
        self.errors.setdefault(workload, {}).setdefault(impl, []).append(error)

    def median(self, workload: str, impl: str) -> float | None:
        values = self.samples.get(workload, {}).get(impl)
        return statistics.median(values) if values else None


def measure(
    workers: Workers, wl: Workload, impl: str, params: dict[str, Any], timeout: float
) -> tuple[float, str]:
    """
    Run one measurement and return its value (work per second / divisor, or
    the value the client reports) and the client's detail text.
    """
    if wl.side == "client":
        server_key: tuple[str, ...] = ("server", "fixed")
        client_key: tuple[str, ...] = ("client", impl)
    elif wl.side == "both":
        server_key = ("server", impl)
        client_key = ("client", impl)
    else:
        server_key = ("server", impl)
        client_key = ("loadgen",)
    server = workers.get(server_key)
    assert server.ready is not None
    port = server.ready["ports"][wl.port]
    client = workers.get(client_key)
    if wl.side == "server":
        params = {**params, "server_pid": server.proc.pid, "timeout": timeout}
    command = {"workload": wl.command, "port": port, "params": params}
    try:
        answer = client.request(command, timeout)
    except WorkerError:
        # Timed out or died: neither it nor its server is trusted any longer.
        workers.discard(client_key)
        workers.discard(server_key)
        raise
    if not server.alive():
        workers.discard(server_key)
        raise WorkerError(f"the server ({server.name}) died" + server.log_tail())
    if not answer.get("ok"):
        raise WorkerError(str(answer.get("error")))
    detail = str(answer.get("detail", ""))
    if "value" in answer:
        return float(answer["value"]), detail
    elapsed = float(answer["elapsed"])
    if elapsed <= 0:
        raise WorkerError(f"nonsense elapsed time {elapsed}")
    return float(answer["work"]) / elapsed / wl.divisor, detail


def run_workload(
    workers: Workers,
    wl: Workload,
    impls: list[str],
    scale: Scale,
    rounds: int,
    timeout: float,
    results: Results,
    log: Callable[[str], None],
) -> None:
    params = wl.params(scale, 1.0)
    failed: set[str] = set()
    if scale.warmup > 0 and not wl.fresh_server:
        warm = wl.params(scale, scale.warmup)
        for impl in impls:
            try:
                measure(workers, wl, impl, warm, timeout)
            except WorkerError as exc:
                failed.add(impl)
                results.fail(wl.name, impl, f"warm-up: {exc}")
                log(f"{wl.name:<18} warm-up {impl:<12} FAILED: {first_line(exc)}")
    servers = [("server", impl) for impl in impls]
    for r in range(rounds):
        if wl.fresh_server:
            # New server processes, started all at once, that serve nothing
            # before this measurement.
            for key in servers:
                workers.discard(key)
            workers.start(servers)
        k = r % len(impls)
        for impl in impls[k:] + impls[:k]:
            if impl in failed:
                continue
            try:
                value, detail = measure(workers, wl, impl, params, timeout)
            except WorkerError as exc:
                results.fail(wl.name, impl, f"round {r + 1}: {exc}")
                log(f"{wl.name:<18} round {r + 1}/{rounds} {impl:<12} FAILED: {first_line(exc)}")
                continue
            results.add(wl.name, impl, value, r, detail)
            log(
                f"{wl.name:<18} round {r + 1}/{rounds} {impl:<12} {value:>14,.1f} {wl.unit}"
                + (f"  ({detail})" if detail else "")
            )
    if wl.fresh_server:
        for key in servers:  # they hold what they served; a later workload gets new ones
            workers.discard(key)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = text.splitlines()
    return lines[-1] if len(lines) > 1 and "Traceback" in text else (lines[0] if lines else "")


# -- twistd tcpserver --workers N ------------------------------------------------

WORKERS_WORKLOAD = "workers_conc_conns"
WORKER_COUNTS = (1, 2)
ECHO_HANDLER = "twisted_tcp.examples.echo:handle"
ROOT = os.path.dirname(HERE)


def workers_what(s: Scale) -> str:
    return (
        f"{s.clients} concurrent clients x {s.per_client} sequential connections (as "
        "server_conc_conns) against `twistd tcpserver --workers N` (N = 1, 2) serving "
        "twisted_tcp.examples.echo, next to the uvloop streams server (one process)"
    )


def workers_impls(uvloop: bool) -> list[str]:
    """The columns of the workers comparison: twistd with each N, then one event loop."""
    return [f"twistd_w{n}" for n in WORKER_COUNTS] + ["uvloop" if uvloop else "asyncio"]


class TwistdServer:
    """
    A real `twistd -n tcpserver --workers N` serving the line-echo example
    on a port of 127.0.0.1 (backlog 1024 and --max-connections 100000, as
    the other servers), with this checkout first on its PYTHONPATH.
    """

    LISTENING = re.compile(rb"tcpserver listening on 127\.0\.0\.1:(\d+) ")

    def __init__(self, workers: int, logdir: str) -> None:
        self.workers = workers
        self.name = f"twistd tcpserver --workers {workers}"
        self.log_path = os.path.join(logdir, f"twistd-workers-{workers}.log")
        self._log = open(self.log_path, "wb")  # closed in close()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
        env.pop("BENCH_CPU", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "tcpserver",
                "--port",
                "tcp:0:interface=127.0.0.1:backlog=1024",
                "--workers",
                str(workers),
                "--max-connections",
                "100000",
                "--handler",
                ECHO_HANDLER,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=logdir,
            env=env,
        )
        self.port: int | None = None

    def log_text(self) -> bytes:
        with open(self.log_path, "rb") as f:
            return f.read()

    def wait_ready(self, timeout: float) -> int:
        """Wait until it listens and every worker accepts; return the port."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()
            match = self.LISTENING.search(text)
            accepting = text.count(b"] twisted_tcp tcpserver listening on ")  # workers' lines
            if match and (self.workers == 1 or accepting >= self.workers):
                self.port = int(match.group(1))
                return self.port
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise WorkerError(
                    f"{self.name} did not start ({self.proc.poll()}):\n"
                    + text.decode(errors="replace")[-1500:]
                )
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, grace: float = 10.0) -> None:
        """SIGTERM (twistd stops its workers and waits for them), then SIGKILL if need be."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def run_workers_comparison(
    workers: Workers,
    impls: list[str],
    scale: Scale,
    rounds: int,
    timeout: float,
    results: Results,
    log: Callable[[str], None],
) -> None:
    """
    The conc_conns workload against `twistd tcpserver --workers N` for each
    N of WORKER_COUNTS, and against the event-loop server of impls[-1] (a
    bench worker), interleaved over the rounds as the other workloads are.
    """
    params = {"clients": scale.clients, "per_client": scale.per_client}
    servers: dict[str, TwistdServer] = {}
    try:
        for n in WORKER_COUNTS:
            servers[f"twistd_w{n}"] = TwistdServer(n, workers.logdir)
        ports = {
            impl: server.wait_ready(workers.ready_timeout) for impl, server in servers.items()
        }

        def one(impl: str, params: dict[str, int]) -> float:
            if impl in servers:
                port = ports[impl]
            else:
                server = workers.get(("server", impl))
                assert server.ready is not None
                port = server.ready["ports"]["echo"]
            loadgen = workers.get(("loadgen",))
            command = {
                "workload": "conc_conns",
                "port": port,
                "params": {**params, "timeout": timeout},
            }
            try:
                answer = loadgen.request(command, timeout)
            except WorkerError:
                workers.discard(("loadgen",))
                raise
            if impl in servers and not servers[impl].alive():
                raise WorkerError(f"{servers[impl].name} died")
            if not answer.get("ok"):
                raise WorkerError(str(answer.get("error")))
            return float(answer["work"]) / float(answer["elapsed"])

        failed: set[str] = set()
        if scale.warmup > 0:
            warm = {"clients": _n(scale.clients * scale.warmup), "per_client": scale.per_client}
            for impl in impls:
                try:
                    one(impl, warm)
                except WorkerError as exc:
                    failed.add(impl)
                    results.fail(WORKERS_WORKLOAD, impl, f"warm-up: {exc}")
                    log(f"{WORKERS_WORKLOAD:<18} warm-up {impl:<12} FAILED: {first_line(exc)}")
        for r in range(rounds):
            k = r % len(impls)
            for impl in impls[k:] + impls[:k]:
                if impl in failed:
                    continue
                try:
                    value = one(impl, params)
                except WorkerError as exc:
                    results.fail(WORKERS_WORKLOAD, impl, f"round {r + 1}: {exc}")
                    log(
                        f"{WORKERS_WORKLOAD:<18} round {r + 1}/{rounds} {impl:<12} "
                        f"FAILED: {first_line(exc)}"
                    )
                    continue
                results.add(WORKERS_WORKLOAD, impl, value, r)
                log(
                    f"{WORKERS_WORKLOAD:<18} round {r + 1}/{rounds} {impl:<12} "
                    f"{value:>14,.1f} conn/s"
                )
    except WorkerError as exc:
        for impl in impls:
            results.fail(WORKERS_WORKLOAD, impl, f"start: {exc}")
        log(f"{WORKERS_WORKLOAD:<18} FAILED: {first_line(exc)}")
    finally:
        for server in servers.values():
            server.close()


def workers_table(results: Results, impls: list[str]) -> str:
    """One row: the medians, twistd --workers 2 over --workers 1, each over the event loop."""
    loop = impls[-1]
    med = {impl: results.median(WORKERS_WORKLOAD, impl) for impl in impls}
    head = [
        "workload",
        "unit",
        *[IMPL_TITLES.get(i, i) for i in impls],
        "--workers 2 ÷ --workers 1",
        f"--workers 1 ÷ {loop}",
        f"--workers 2 ÷ {loop}",
    ]
    row = [
        WORKERS_WORKLOAD,
        "conn/s",
        *[fmt_value(med[i]) for i in impls],
        fmt_ratio(med["twistd_w2"], med["twistd_w1"]),
        fmt_ratio(med["twistd_w1"], med[loop]),
        fmt_ratio(med["twistd_w2"], med[loop]),
    ]
    rows = [head, ["---"] * 2 + ["---:"] * (len(head) - 2), row]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


# -- reporting -------------------------------------------------------------------


def fmt_value(value: float | None) -> str:
    if value is None:
        return "FAIL"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.1f}"


def fmt_ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den == 0:
        return "—"
    return f"{num / den:.2f}x"


def table(results: Results, workloads: list[Workload], impls: list[str]) -> str:
    others = [i for i in impls if i != BASELINE]
    head = ["workload", "unit", *impls]
    head += [f"{i} ÷ {BASELINE}" for i in others]
    versus_before = "twisted_tcp" in impls and BEFORE in impls
    if versus_before:
        head += [f"twisted_tcp ÷ {BEFORE}"]
    if "twisted_tcp" in impls:
        head += ["target (twisted_tcp ÷ twisted)"]
        if "asyncio" in impls:
            head += ["twisted_tcp ÷ asyncio"]
        head += ["verdict"]
    rows = [head, ["---"] * 2 + ["---:"] * (len(head) - 2)]
    for wl in workloads:
        unit = f"{wl.unit} (lower is better)" if wl.lower_is_better else wl.unit
        if wl.name in results.skipped:
            row = [wl.name, unit] + ["skipped"] * len(impls) + ["—"] * len(others)
            row += ["—"] * versus_before
            if "twisted_tcp" in impls:
                row += ["—"] * (1 + ("asyncio" in impls))
                row.append("skipped: " + results.skipped[wl.name])
            rows.append(row)
            continue
        med = {i: results.median(wl.name, i) for i in impls}
        row = [wl.name, unit] + [fmt_value(med[i]) for i in impls]
        row += [fmt_ratio(med[i], med.get(BASELINE)) for i in others]
        if versus_before:
            row.append(fmt_ratio(med["twisted_tcp"], med[BEFORE]))
        if "twisted_tcp" in impls:
            row.append(f"{'≤' if wl.lower_is_better else '≥'} {wl.target:.2f}x")
            tcp = med["twisted_tcp"]
            verdict = []
            if tcp is None:
                verdict.append("FAIL")
            else:
                base = med.get(BASELINE)
                if base and base > 0:
                    ratio = tcp / base
                    met = ratio <= wl.target if wl.lower_is_better else ratio >= wl.target
                    verdict.append(
                        "target met"
                        if met
                        else "ABOVE target"
                        if wl.lower_is_better
                        else "BELOW target"
                    )
                if "asyncio" in impls:
                    row.append(fmt_ratio(tcp, med["asyncio"]))
                    aio = med["asyncio"]
                    if aio:
                        ahead = tcp < aio if wl.lower_is_better else tcp > aio
                        verdict.append("ahead of asyncio" if ahead else "BEHIND asyncio")
            if tcp is None and "asyncio" in impls:
                row.append("—")
            row.append(", ".join(verdict))
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def spread_table(results: Results, workloads: list[Workload], impls: list[str]) -> str:
    """
    Per implementation: min-max of the samples, and (max - min) / median; and
    twisted_tcp's ratio to raw Twisted computed round by round.
    """
    paired = "twisted_tcp" in impls
    bases = [BASELINE, BEFORE] if paired and BEFORE in impls else [BASELINE]
    head = ["workload", *impls] + (
        [f"twisted_tcp ÷ {base} per round: median (min-max)" for base in bases] if paired else []
    )
    rows = [head, ["---"] + ["---:"] * (len(head) - 1)]
    for wl in workloads:
        row = [wl.name]
        if wl.name in results.skipped:
            rows.append(row + ["skipped"] * len(impls) + ["—"] * (len(bases) if paired else 0))
            continue
        for impl in impls:
            values = results.samples.get(wl.name, {}).get(impl)
            if not values:
                row.append("—")
                continue
            med = statistics.median(values)
            spread = (max(values) - min(values)) / med * 100 if med else 0.0
            row.append(f"{fmt_value(min(values))}-{fmt_value(max(values))} (±{spread / 2:.0f}%)")
        for base in bases if paired else ():
            ratios = results.paired_ratios(wl.name, "twisted_tcp", base)
            row.append(
                f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
                if ratios
                else "—"
            )
        rows.append(row)
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def samples_text(results: Results, workloads: list[Workload], impls: list[str]) -> str:
    out = []
    for wl in workloads:
        if wl.name in results.skipped:
            out.append(f"- {wl.name}: skipped ({results.skipped[wl.name]})")
            continue
        for impl in impls:
            values = results.samples.get(wl.name, {}).get(impl, [])
            errors = results.errors.get(wl.name, {}).get(impl, [])
            text = ", ".join(fmt_value(v) for v in values) or "none"
            failed = f" ({len(errors)} failed)" if errors else ""
            details = results.details.get(wl.name, {}).get(impl, [])
            more = f" — {'; '.join(details)}" if details else ""
            out.append(f"- {wl.name} / {impl}: {text}{failed}{more}")
    return "\n".join(out)


def errors_text(results: Results) -> str:
    out = []
    for wl, by_impl in results.errors.items():
        for impl, errors in by_impl.items():
            for error in errors:
                out.append(f"### {wl} / {impl}\n\n```\n{error.strip()[-3000:]}\n```")
    return "\n\n".join(out)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        nproc = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        nproc = os.cpu_count() or 0

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": str(nproc),
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "twisted": version("twisted"),
        "uvloop": version("uvloop"),
    }


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def report(
    results: Results,
    workloads: list[Workload],
    impls: list[str],
    scale: Scale,
    rounds: int,
    info: dict[str, str],
    started: str,
    load_start: str,
    load_end: str,
    command: str,
    notes: list[str],
    w_impls: list[str] | None = None,
) -> str:
    m = machine()
    described = "\n".join(f"- `{wl.name}` ({wl.side} side): {wl.what(scale)}" for wl in workloads)
    loops = "; ".join(f"{k}: {v}" for k, v in sorted(info.items()))
    parts = [
        "# twisted_tcp benchmark results",
        "",
        f"- command: `{command}`",
        f"- date: {started} (UTC)",
        f"- machine: nproc {m['nproc']}, CPU {m['cpu']}, {m['os']}",
        f"- Python {m['python']}, Twisted {m['twisted']}, uvloop {m['uvloop']}",
        f"- event loops: {loops}",
        f"- scale: {scale.name}; {rounds} round(s), interleaved, order rotated each round; "
        + (
            f"one untimed warm-up at {scale.warmup:.0%} of the work per implementation first"
            if scale.warmup > 0
            else "no warm-up"
        ),
        f"- load average (1, 5, 15 min): {load_start} at the start, {load_end} at the end",
        *[f"- note: {n}" for n in notes],
        "",
        "Medians over the rounds; higher is better, except where the unit says lower is",
        "better (idle_conns, tls_idle_conns, tls_pending_handshakes: memory per",
        "connection).  A ratio is the implementation's median over raw Twisted's.",
        "Client-side workloads: the implementations are clients, all talking to the",
        "same raw-Twisted server process.  Server-side workloads: the implementations",
        "are servers (line echo, over TLS for the tls_server_* and tls_ memory rows;",
        "RESP PING and HTTP for the redis-benchmark and wrk rows), all driven by the",
        "same load-generator process: plain sockets (with Python's ssl module over",
        "TLS), or the real client it runs.  Both-side workloads (both_*): each",
        "implementation's client talks to its own line-echo server (twisted_tcp to",
        "twisted_tcp, raw Twisted to raw Twisted, asyncio to asyncio), client and",
        "server in two processes.",
        "",
        table(results, workloads, impls),
        "",
        *(
            [
                "## Several processes: `twistd tcpserver --workers N`",
                "",
                f"{WORKERS_WORKLOAD}: {workers_what(scale)}.  Medians over the rounds; the",
                "load generator is one process, on the same machine.",
                "",
                workers_table(results, w_impls),
                "",
                *[
                    f"- {impl}: "
                    + (
                        ", ".join(
                            fmt_value(v)
                            for v in results.samples.get(WORKERS_WORKLOAD, {}).get(impl, [])
                        )
                        or "none"
                    )
                    for impl in w_impls
                ],
                "",
            ]
            if w_impls
            else []
        ),
        "## Workloads",
        "",
        described,
        "",
        "## Spread (min-max over the rounds, ± half the range as % of the median)",
        "",
        spread_table(results, workloads, impls),
        "",
        "## Every sample",
        "",
        samples_text(results, workloads, impls),
        "",
    ]
    if results.errors:
        parts += ["## Failures", "", errors_text(results), ""]
    return "\n".join(parts)


# -- main ------------------------------------------------------------------------------


def why_skipped(wl: Workload, scale: Scale) -> str | None:
    """Why this machine cannot run C{wl}, or None."""
    missing = [program for program in wl.needs if shutil.which(program) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not found: install with bench/setup.sh "
            "(Debian: apt-get install redis-tools wrk)"
        )
    if wl.tls:
        missing = [m for m in _tls.MODULES if importlib.util.find_spec(m) is None]
        if missing:
            return (
                f"{', '.join(missing)} not installed: pip install 'twisted[tls]' trustme "
                "(pyOpenSSL, service_identity, cryptography; trustme makes the test PKI)"
            )
    if wl.command == "idle_conns":
        if not os.path.exists(f"/proc/{os.getpid()}/status"):
            return "no /proc/PID/status to read the RSS from (Linux only)"
        try:
            import resource
        except ImportError:
            return "no resource module (not Unix)"
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        count = wl.params(scale, 1.0)["count"]
        need = count + FD_MARGIN
        if hard != resource.RLIM_INFINITY and hard < need:
            return (
                f"the hard limit on open files is {hard:,}, under the {need:,} a process "
                f"holding {count:,} connections needs: raise it (ulimit -Hn, "
                "LimitNOFILE=) or use --quick or --smoke"
            )
    return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Benchmark twisted_tcp against raw Twisted, asyncio streams and uvloop.",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller amounts, 3 rounds")
    size.add_argument(
        "--smoke",
        action="store_true",
        help="a few KiB and a few round trips, 1 round, no warm-up "
        "(checks that everything runs; the numbers mean nothing)",
    )
    p.add_argument("--rounds", type=int, help="rounds (default: 5, --quick 3, --smoke 1)")
    p.add_argument(
        "--only",
        help="comma-separated workload names or parts of names "
        "(e.g. bulk,server_pingpong or pingpong; a whole name "
        "takes that workload alone); default: all",
    )
    p.add_argument(
        "--impls",
        help=f"comma-separated implementations (default: {','.join(IMPLS)}; "
        "uvloop only if installed); raw twisted is always included",
    )
    p.add_argument("--no-uvloop", action="store_true", help="leave the uvloop column out")
    p.add_argument(
        "--timeout",
        type=float,
        help="seconds one measurement may take before it counts as failed "
        "(default: 120, --quick 60, --smoke 20)",
    )
    p.add_argument(
        "--results",
        help="where to write the Markdown results "
        "(default: bench/RESULTS.md; with --smoke: nowhere)",
    )
    p.add_argument("--no-results", action="store_true", help="write no results file")
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin every client (and the load generator) to one CPU and every "
        "server to another (default: the scheduler places them)",
    )
    p.add_argument(
        "--before",
        metavar="REF",
        help="also measure the twisted_tcp of git revision REF of this checkout "
        '(a column "before", and twisted_tcp\'s ratios to it), in the same rounds',
    )
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p.parse_args(argv)


def resolve_revision(ref: str) -> str:
    """The commit that C{ref} names in this checkout; exit with why if none."""
    try:
        done = subprocess.run(
            ["git", "-C", CHECKOUT, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as exc:
        raise SystemExit(f"--before {ref}: git cannot run here ({exc})") from None
    if done.returncode != 0:
        inside = subprocess.run(
            ["git", "-C", CHECKOUT, "rev-parse", "--git-dir"], capture_output=True, check=False
        )
        if inside.returncode != 0:
            raise SystemExit(f"--before {ref}: {CHECKOUT} is not a git checkout")
        raise SystemExit(f"--before {ref}: not a commit of the git checkout {CHECKOUT}")
    return done.stdout.strip()


def export_package(commit: str, dest: str) -> str:
    """
    Write the C{twisted_tcp} package of C{commit} under C{dest} (with git
    archive: no worktree, nothing left in the checkout) and return C{dest}.
    """
    os.makedirs(dest)
    archive = subprocess.run(
        ["git", "-C", CHECKOUT, "archive", "--format=tar", commit, "twisted_tcp"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise SystemExit(
            f"--before: git archive of {commit[:12]} failed: {archive.stderr.decode()[:300]}"
        )
    try:
        unpacked = subprocess.run(
            ["tar", "-x", "-C", dest], input=archive.stdout, capture_output=True, check=False
        )
    except OSError as exc:
        raise SystemExit(f"--before: tar cannot run here ({exc})") from None
    if unpacked.returncode != 0:
        raise SystemExit(f"--before: tar -x failed: {unpacked.stderr.decode()[:300]}")
    return dest


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """Let SIGTERM unwind like Ctrl-C, so that the workers are always stopped."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    scale = SCALES["smoke" if args.smoke else "quick" if args.quick else "full"]
    if args.list:
        for wl in WORKLOADS:
            skip = why_skipped(wl, scale)
            print(
                f"{wl.name:<22} {wl.side:<6} {wl.unit:<14} {wl.what(scale)}"
                + (f" [skipped here: {skip}]" if skip else "")
            )
        print(f"{WORKERS_WORKLOAD:<22} {'server':<6} {'conn/s':<14} {workers_what(scale)}")
        return 0
    rounds = args.rounds or scale.rounds
    timeout = args.timeout or scale.timeout
    if rounds < 1:
        raise SystemExit("--rounds must be at least 1")

    workloads = WORKLOADS
    run_workers = True
    if args.only:
        wanted = [w.strip() for w in args.only.split(",") if w.strip()]
        names = {wl.name for wl in WORKLOADS}
        # A whole name takes that workload alone (idle_conns, not tls_idle_conns too).
        workloads = [
            wl
            for wl in WORKLOADS
            if any(w == wl.name or (w not in names and w in wl.name) for w in wanted)
        ]
        run_workers = any(w in WORKERS_WORKLOAD for w in wanted)
        if not workloads and not run_workers:
            raise SystemExit(f"--only {args.only}: no such workload (see --list)")

    notes = []
    impls = IMPLS if not args.impls else [i.strip() for i in args.impls.split(",")]
    for impl in impls:
        if impl not in IMPLS:
            raise SystemExit(f"--impls: unknown implementation {impl!r}")
    if BASELINE not in impls:
        impls = [BASELINE, *impls]
    impls = [i for i in IMPLS if i in impls]  # a fixed column order
    before_commit = None
    if args.before:
        if "twisted_tcp" not in impls:
            raise SystemExit("--before compares with twisted_tcp: keep it in --impls")
        before_commit = resolve_revision(args.before)
        impls.insert(impls.index("twisted_tcp") + 1, BEFORE)
        notes.append(
            f"{BEFORE}: the twisted_tcp of {args.before} ({before_commit[:10]}), "
            "run by this tree's benchmark code"
        )
    if "uvloop" in impls and (args.no_uvloop or importlib.util.find_spec("uvloop") is None):
        impls.remove("uvloop")
        if not args.no_uvloop:
            notes.append("uvloop is not installed: its column is left out")
    uvloop = not args.no_uvloop and importlib.util.find_spec("uvloop") is not None
    w_impls = workers_impls(uvloop)
    if run_workers and not uvloop:
        notes.append(f"{WORKERS_WORKLOAD}: compared with asyncio streams, uvloop being left out")

    results_path = None
    if not args.no_results:
        results_path = args.results or (None if args.smoke else DEFAULT_RESULTS)

    cpus = None
    if args.pin and hasattr(os, "sched_getaffinity"):
        cpus = two_cpus()
        if cpus is not None:
            notes.append(f"clients pinned to CPU {cpus[0]}, servers to CPU {cpus[1]}")
        else:
            notes.append("one CPU only: client and server share it")
    else:
        notes.append("processes not pinned to CPUs: the scheduler places them")

    command = "python bench/run.py" + "".join(f" {shlex.quote(a)}" for a in argv)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load_start = loadavg()

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    results = Results()
    for wl in workloads:
        skip = why_skipped(wl, scale)
        if skip:
            results.skipped[wl.name] = skip
            notes.append(f"{wl.name} skipped: {skip}")
    for note in notes:
        log(f"note: {note}")
    measured = [wl for wl in workloads if wl.name not in results.skipped]
    with tempfile.TemporaryDirectory(prefix="twisted-tcp-bench-") as logdir, terminate_as_exit():
        tls_dir = None
        if any(wl.tls for wl in measured):
            # One CA and server certificate for the whole run, in the temporary
            # directory (removed at the end), named to the workers by TLS_ENV.
            tls_dir = os.path.join(logdir, "tls")
            _tls.make_pki(tls_dir)
        before_tree = None
        if before_commit is not None:
            before_tree = export_package(before_commit, os.path.join(logdir, "before"))
        workers = Workers(
            logdir, ready_timeout=30.0, cpus=cpus, tls_dir=tls_dir, before_tree=before_tree
        )
        try:
            keys: list[tuple[str, ...]] = []
            if any(wl.side == "client" for wl in measured):
                keys += [("server", "fixed")] + [("client", i) for i in impls]
            if any(wl.side == "both" for wl in measured):
                keys += [("client", i) for i in impls]
            if any(wl.side in ("server", "both") and not wl.fresh_server for wl in measured):
                keys += [("server", i) for i in impls]
            if any(wl.side == "server" for wl in measured) or run_workers:
                keys += [("loadgen",)]
            if run_workers:
                keys += [("server", w_impls[-1])]
            workers.start(list(dict.fromkeys(keys)))
            for wl in measured:
                run_workload(workers, wl, impls, scale, rounds, timeout, results, log)
            if run_workers:
                run_workers_comparison(workers, w_impls, scale, rounds, timeout, results, log)
        except WorkerError as exc:
            log(f"a worker could not start: {exc}")
            return 2
        finally:
            workers.close_all()

    text = report(
        results,
        workloads,
        impls,
        scale,
        rounds,
        workers.info,
        started,
        load_start,
        loadavg(),
        command,
        notes,
        w_impls if run_workers else None,
    )
    if workloads:
        print()
        print(table(results, workloads, impls))
        print()
        print(spread_table(results, workloads, impls))
    if run_workers:
        print()
        print(workers_table(results, w_impls))
    if results_path:
        with open(results_path, "w") as f:
            f.write(text)
        print(f"\nwritten to {results_path}")
    if results.errors:
        log(
            f"\n{sum(len(e) for d in results.errors.values() for e in d.values())} "
            "measurement(s) failed; see the failures section of the results"
        )
        if not results_path:
            log(errors_text(results))
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted; every worker process was stopped", file=sys.stderr)
        sys.exit(130)
