#!/usr/bin/env python3
"""
A soak run: does a twisted_tcp server stay flat under steady load?

    python bench/soak.py                 # 10 minutes
    python bench/soak.py --minutes 1     # a short run

One process is the server: a bench worker (bench/worker.py server
twisted_tcp), whose line echo is twisted_tcp's C{Server} with the handler the
benchmark uses (impl_twisted_tcp.echo, as twisted_tcp.examples.echo).  This
process is the load generator (asyncio streams, on 127.0.0.1): 200 clients,
most of them holding one long-lived connection each and making a round trip
of a 64-byte line every 50 ms, the rest making short connections one after
the other (connect, 3 lines, close, 100 ms pause).  Nothing grows but time:
the clients are a fixed number, each has at most one connection and one line
in flight, and every wait is bounded (10 s); the run stops by itself.

After a warm-up (10 s; a twelfth of the run when shorter), the run is cut
into intervals of the warm-up's length.  After the first ("start") and the
last ("end") it reports the server's VmRSS (/proc/PID/status), its open
descriptors (/proc/PID/fd), and the p50/p99 of the long-lived connections'
round trips during that interval; then whether RSS and descriptors are flat
(within 10%, and within 10 descriptors) and how the p99 changed.  The
descriptors are sampled every 0.5 s; as the short connections come and go,
the count that is compared is the server's descriptors minus the
connections this process held open at that moment (the median over the
interval), which is what a leak would raise.  Exit status: 0 when every
round trip succeeded, 1 when one failed or the server died.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from _common import HOST, LINE_BYTES, fd_count, line, vm_rss_kib

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "worker.py")

CLIENTS = 200
SHORT_CLIENTS = 40  # of CLIENTS: short connections; the others are long-lived
LONG_PAUSE = 0.05  # s between two round trips of a long-lived connection
SHORT_LINES = 3  # round trips per short connection
SHORT_PAUSE = 0.1  # s between two short connections of one client
IO_TIMEOUT = 10.0  # s: no connect or round trip waits longer
FD_SAMPLE = 0.5  # s between two samples of the server's descriptors
RSS_FLAT = 0.10  # RSS is flat within this fraction
FDS_FLAT = 10  # descriptors are flat within this many

T = TypeVar("T")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


@dataclass
class Interval:
    """What one interval saw."""

    latencies: list[float] = field(default_factory=list)  # s, long-lived round trips
    fd_samples: list[tuple[int, int]] = field(default_factory=list)  # (server fds, ours open)
    short_conns: int = 0
    started: float = field(default_factory=time.monotonic)


@dataclass
class Reading:
    label: str
    seconds: float  # since the load started
    rss_kib: int
    fds: int  # the server's descriptors at the reading
    fds_beyond: float  # median over the interval: server fds - connections we held open
    p50_ms: float
    p99_ms: float
    round_trips: int
    conns_per_s: float

    def text(self) -> str:
        return (
            f"{self.label:>5} (t={self.seconds:5.0f} s): RSS {self.rss_kib:,} KiB, "
            f"{self.fds} fds ({self.fds_beyond:+.0f} beyond the client's open "
            f"connections), round trip p50 {self.p50_ms:.3f} ms, p99 {self.p99_ms:.3f} ms "
            f"({self.round_trips:,} round trips, {self.conns_per_s:,.0f} short conn/s)"
        )


async def _within(awaitable: Awaitable[T], seconds: float = IO_TIMEOUT) -> T:
    """C{await awaitable}, failing with TimeoutError after C{seconds}."""
    if not hasattr(asyncio, "timeout"):  # Python 3.10: wait_for (a task per call)
        return await asyncio.wait_for(awaitable, seconds)
    async with asyncio.timeout(seconds):
        return await awaitable


class Load:
    def __init__(self, port: int, pid: int) -> None:
        self.port = port
        self.pid = pid
        self.stopping = False
        self.open_conns = 0
        self.errors: list[str] = []
        self.current = Interval()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await _within(asyncio.open_connection(HOST, self.port))
        self.open_conns += 1
        return reader, writer

    async def _close(self, writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            await writer.wait_closed()
        except ConnectionError:
            pass
        self.open_conns -= 1

    async def _round_trip(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes
    ) -> float:
        t0 = time.perf_counter()
        writer.write(data)
        got = await _within(reader.readline())
        elapsed = time.perf_counter() - t0
        if got != data:
            raise RuntimeError(f"echo {got[:70]!r}, not {data[:70]!r}")
        return elapsed

    async def long_lived(self, client: int) -> None:
        data = line(client) + b"\n"
        assert len(data) == LINE_BYTES
        reader, writer = await self._connect()
        try:
            while not self.stopping:
                self.current.latencies.append(await self._round_trip(reader, writer, data))
                await asyncio.sleep(LONG_PAUSE)
        finally:
            await self._close(writer)

    async def short(self, client: int) -> None:
        data = line(client) + b"\n"
        while not self.stopping:
            reader, writer = await self._connect()
            try:
                for _ in range(SHORT_LINES):
                    await self._round_trip(reader, writer, data)
            finally:
                await self._close(writer)
            self.current.short_conns += 1
            await asyncio.sleep(SHORT_PAUSE)

    async def guarded(self, name: str, coro: Any) -> None:
        try:
            await coro
        except Exception as exc:  # counted, and it ends the run
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            self.stopping = True

    async def sample_fds(self) -> None:
        while not self.stopping:
            try:
                self.current.fd_samples.append((fd_count(self.pid), self.open_conns))
            except OSError as exc:
                self.errors.append(f"the server is gone: {exc}")
                self.stopping = True
                return
            await asyncio.sleep(FD_SAMPLE)

    def reading(self, label: str, since: float) -> Reading:
        iv = self.current
        lat = iv.latencies or [float("nan")]
        beyond = [fds - mine for fds, mine in iv.fd_samples] or [0]
        duration = max(1e-9, time.monotonic() - iv.started)
        return Reading(
            label,
            time.monotonic() - since,
            vm_rss_kib(self.pid),
            fd_count(self.pid),
            statistics.median(beyond),
            percentile(lat, 50) * 1e3,
            percentile(lat, 99) * 1e3,
            len(iv.latencies),
            iv.short_conns / duration,
        )


async def soak(port: int, pid: int, seconds: float, clients: int, shorts: int) -> int:
    warmup = min(10.0, seconds / 12)
    load = Load(port, pid)
    t0 = time.monotonic()
    tasks = [
        asyncio.create_task(
            load.guarded(f"client {c}", load.short(c) if c < shorts else load.long_lived(c))
        )
        for c in range(clients)
    ]
    tasks.append(asyncio.create_task(load.guarded("sampler", load.sample_fds())))

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    log(
        f"soak: {clients} clients ({clients - shorts} long-lived, {shorts} short "
        f"connections) against the twisted_tcp line echo (pid {pid}, port {port}) for "
        f"{seconds:g} s; warm-up and intervals of {warmup:g} s"
    )
    readings: list[Reading] = []
    try:
        await asyncio.sleep(warmup)
        load.current = Interval()
        end = t0 + seconds
        while not load.stopping and time.monotonic() + warmup <= end + 0.5:
            await asyncio.sleep(warmup)
            if load.stopping:
                break
            r = load.reading("start" if not readings else "now", t0)
            readings.append(r)
            log(r.text())
            load.current = Interval()
    finally:
        load.stopping = True
        _done, pending = await asyncio.wait(tasks, timeout=IO_TIMEOUT + 5)
        for task in pending:
            task.cancel()
    print()
    if load.errors:
        print(f"FAILED: {len(load.errors)} error(s); the first: {load.errors[0]}")
        return 1
    if len(readings) < 2:
        print("too short a run for two readings")
        return 1
    start, last = readings[0], readings[-1]
    last.label = "end"
    rss_change = (last.rss_kib - start.rss_kib) / start.rss_kib
    fds_change = last.fds_beyond - start.fds_beyond
    p99_change = (last.p99_ms - start.p99_ms) / start.p99_ms * 100
    print(
        f"soak: {seconds:g} s, {clients} clients ({clients - shorts} long-lived, "
        f"{shorts} short connections), twisted_tcp line-echo server pid {pid}"
    )
    print(start.text())
    print(last.text())
    print(
        f"RSS: {start.rss_kib:,} -> {last.rss_kib:,} KiB ({rss_change:+.1%}): "
        + ("flat" if abs(rss_change) <= RSS_FLAT else "NOT FLAT")
        + f" (within {RSS_FLAT:.0%})"
    )
    print(
        f"fds: {start.fds} -> {last.fds}; beyond the client's connections "
        f"{start.fds_beyond:+.0f} -> {last.fds_beyond:+.0f} ({fds_change:+.0f}): "
        + ("flat" if abs(fds_change) <= FDS_FLAT else "NOT FLAT")
        + f" (within ±{FDS_FLAT})"
    )
    print(
        f"p99: {start.p99_ms:.3f} -> {last.p99_ms:.3f} ms ({p99_change:+.1f}%); "
        f"p50: {start.p50_ms:.3f} -> {last.p50_ms:.3f} ms"
    )
    return 0


def start_server() -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ)
    env.pop("BENCH_TLS_DIR", None)
    env.pop("BENCH_CPU", None)
    proc = subprocess.Popen(
        [sys.executable, WORKER, "server", "twisted_tcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=HERE,
        env=env,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline()
    if not ready:
        stop_server(proc)
        raise SystemExit(f"the server did not start ({proc.returncode})")
    return proc, int(json.loads(ready)["ports"]["echo"])


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Close its stdin (it exits), then terminate and kill it if it does not."""
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass
    try:
        proc.wait(3)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description="Soak a twisted_tcp line-echo server.")
    p.add_argument(
        "--minutes",
        type=float,
        default=10.0,
        help="how long the load runs (default 10; 1 for a short run)",
    )
    p.add_argument(
        "--clients",
        type=int,
        default=CLIENTS,
        help=f"clients at once (default {CLIENTS}, {SHORT_CLIENTS} of them "
        "making short connections)",
    )
    args = p.parse_args(argv)
    seconds = args.minutes * 60
    if seconds < 12 or args.clients < 2:
        raise SystemExit("--minutes must be at least 0.2, --clients at least 2")
    shorts = max(1, args.clients * SHORT_CLIENTS // CLIENTS)
    try:
        import resource

        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):
        pass

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminated)
    proc, port = start_server()
    try:
        status = asyncio.run(soak(port, proc.pid, seconds, args.clients, shorts))
        if proc.poll() is not None:
            print(f"the server exited ({proc.returncode})")
            status = 1
        return status
    finally:
        stop_server(proc)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        sys.exit(130)
