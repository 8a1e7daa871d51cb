#!/usr/bin/env python3
"""
What Python's garbage collector costs a server under connection churn.

Raw Twisted's line echo and twisted_tcp's (the servers of run.py's
server_conc_conns), each in a fresh process of its own, serve CLIENTS
concurrent clients x PER connections from the load generator's conc_conns,
in another process.  For each it reports: the objects the collector tracks
per open, idle connection; the collections of each generation per 1,000
connections served; the time spent in the collector per connection
(measured with gc.callbacks); and the server's CPU time per connection with
the collector on and off.

    python bench/gc_cost.py                       # 200 x 50, 3 rounds
    python bench/gc_cost.py --clients 100 --per-client 20 --rounds 5 --pin

An object the collector tracks costs a connection more than its bytes: the
youngest generation is collected each time 700 more such objects were made
than freed, and objects that live across a collection move to the older
generations, whose collections go over everything the process holds.  A
server that accepts many connections in one turn of the reactor makes
objects faster than it frees them, so the more it keeps per connection, the
more often the collector runs.  No timing here is a test's threshold.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import select
import statistics
import subprocess
import sys
import time
from typing import Any

from _common import two_cpus

HERE = os.path.dirname(os.path.abspath(__file__))
IMPLS = ("twisted", "twisted_tcp")
IDLE = 200  # idle connections held open to count the objects each keeps
BACKLOG = 1024


def _helper(code: str, cpu: int | None) -> subprocess.Popen[str]:
    """A Python process running C{code} with the load generator importable."""
    prelude = f"import os, sys; sys.path.insert(0, {HERE!r}); import loadgen\n"
    if cpu is not None:
        prelude += f"os.sched_setaffinity(0, {{{cpu}}})\n"
    return subprocess.Popen(
        [sys.executable, "-c", prelude + code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def cpus() -> tuple[int, int]:
    """The CPUs of --pin: the load's, then the server's."""
    pair = two_cpus()
    if pair is None:
        raise SystemExit("--pin needs two CPUs")
    return pair


def serve(impl: str, collector: bool, clients: int, per_client: int, pin: bool) -> dict[str, Any]:
    """In this (fresh) process: listen, serve the load, and return what was measured."""
    load_cpu = None
    if pin:
        load_cpu, server_cpu = cpus()
        os.sched_setaffinity(0, {server_cpu})
    sys.path.insert(0, HERE)
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    if impl == "twisted":
        import impl_twisted

        port = impl_twisted.listen(reactor, impl_twisted.LineEcho, BACKLOG)
    else:
        import impl_twisted_tcp

        listening = ensureDeferred(impl_twisted_tcp.serve(reactor, BACKLOG))
        ports: list[int] = []
        listening.addCallback(ports.append)
        while not ports:
            reactor.iterate(0.01)  # type: ignore[attr-defined]
        port = ports[0]

    def run_until(helper: subprocess.Popen[str], line: bool = False) -> str:
        """Run the reactor until C{helper} exits or (with C{line}) prints a line."""
        assert helper.stdout is not None
        while True:
            reactor.iterate(0.001)  # type: ignore[attr-defined]
            if line and select.select([helper.stdout], [], [], 0)[0]:
                return helper.stdout.readline()
            if helper.poll() is not None:
                if helper.returncode:
                    raise SystemExit(f"the load generator failed ({helper.returncode})")
                return helper.stdout.read()

    def churn(clients: int, per_client: int) -> None:
        run_until(_helper(f"loadgen.conc_conns({port}, {clients}, {per_client})", load_cpu))

    churn(clients, 5)  # warm-up: every code path taken once, the pools filled
    # The objects tracked per idle connection: counted with IDLE open.
    gc.collect()
    before = len(gc.get_objects())
    idle = _helper(
        f"socks = loadgen.open_idle({port}, {IDLE}); print('open', flush=True); "
        "sys.stdin.read(); loadgen.close_idle(socks)",
        load_cpu,
    )
    run_until(idle, line=True)
    for _ in range(50):
        reactor.iterate(0.001)  # type: ignore[attr-defined]
    gc.collect()
    tracked = (len(gc.get_objects()) - before) / IDLE
    assert idle.stdin is not None
    idle.stdin.close()
    run_until(idle)

    counts = [0, 0, 0]
    spent = [0.0, 0.0, 0.0]  # seconds in the collections of each generation
    started = [0.0]

    def watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            counts[info["generation"]] += 1
            spent[info["generation"]] += time.perf_counter() - started[0]

    gc.collect()
    gc.callbacks.append(watch)
    if not collector:
        gc.disable()
    cpu = time.process_time()
    churn(clients, per_client)
    cpu = time.process_time() - cpu
    gc.enable()
    gc.callbacks.remove(watch)
    n = clients * per_client
    return {
        "tracked": tracked,
        "collections": [c * 1000 / n for c in counts],
        "gc_us": sum(spent) * 1e6 / n,
        "counts": counts,
        "spent": spent,
        "cpu_us": cpu * 1e6 / n,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=200)
    p.add_argument("--per-client", type=int, default=50)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pin", action="store_true", help="the load on one CPU, the server on another")
    p.add_argument("--serve", choices=IMPLS, help=argparse.SUPPRESS)
    p.add_argument("--collector", choices=("on", "off"), help=argparse.SUPPRESS)
    args = p.parse_args()
    for name in ("clients", "per_client", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.pin:
        cpus()  # (exits here, not in every server, on a machine without two)
    if args.serve:
        result = serve(args.serve, args.collector == "on", args.clients, args.per_client, args.pin)
        print(json.dumps(result))
        return
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in range(args.rounds):
        for impl in IMPLS if r % 2 == 0 else IMPLS[::-1]:
            for collector in ("on", "off"):
                command = [sys.executable, __file__, "--serve", impl, "--collector", collector]
                command += ["--clients", str(args.clients), "--per-client", str(args.per_client)]
                command += ["--pin"] * args.pin
                out = subprocess.run(command, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise SystemExit(
                        f"the {impl} server (collector {collector}) failed "
                        f"({out.returncode}):\n{out.stderr[-2000:]}"
                    )
                runs.setdefault((impl, collector), []).append(json.loads(out.stdout))
                print(f"round {r + 1}: {impl}, collector {collector}", file=sys.stderr)

    def med(impl: str, collector: str, key: str, i: int | None = None) -> float:
        values = [run[key] if i is None else run[key][i] for run in runs[(impl, collector)]]
        return statistics.median(values)

    print(
        f"\n{args.clients} concurrent clients x {args.per_client} connections, "
        f"medians of {args.rounds} rounds\n"
    )
    print(
        "| server | objects tracked per idle connection "
        "| collections per 1,000 connections (gen 0 / 1 / 2) "
        "| µs per collection (gen 0 / 1) "
        "| µs in the collector per connection | CPU µs per connection, collector on / off |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")

    def per_collection(impl: str, gen: int) -> str:
        """The mean time of one collection of C{gen}, over every round."""
        n = sum(run["counts"][gen] for run in runs[(impl, "on")])
        if not n:
            return "none"
        return f"{sum(run['spent'][gen] for run in runs[(impl, 'on')]) * 1e6 / n:.0f}"

    for impl in IMPLS:
        gens = " / ".join(f"{med(impl, 'on', 'collections', i):.1f}" for i in range(3))
        each = " / ".join(per_collection(impl, gen) for gen in (0, 1))
        print(
            f"| {impl} | {med(impl, 'on', 'tracked'):.1f} | {gens} | {each} "
            f"| {med(impl, 'on', 'gc_us'):.1f} "
            f"| {med(impl, 'on', 'cpu_us'):.1f} / {med(impl, 'off', 'cpu_us'):.1f} |"
        )


if __name__ == "__main__":
    main()
