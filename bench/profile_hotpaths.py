#!/usr/bin/env python3
"""
Profile twisted_tcp's hot paths with cProfile: where the time of one process
goes, in twisted_tcp's own code, in Twisted's, in system calls and in the
rest.

    python bench/profile_hotpaths.py                       # all four below
    python bench/profile_hotpaths.py --side server --workload pipelined --count 200000
    python bench/profile_hotpaths.py --side client --workload conc_conns   # client_conc_conns
    python bench/profile_hotpaths.py --impl twisted        # the raw Twisted baseline
    python bench/profile_hotpaths.py --tls                 # client side over TLS (tls_* rows)
    python bench/profile_hotpaths.py --tls --workload bulk_send --impl twisted

--side client: this process is the client (twisted_tcp.connect, Reader and
Writer), against the raw Twisted echo server in a worker process.
--side server: this process is the twisted_tcp Server (echo handler), driven
by the load generator in a worker process.  Only this process is profiled;
the other one runs at full speed on the other core.
--tls: the client side over TLS, as the tls_pingpong and tls_bulk workloads
(a test PKI is made in a temporary directory for the run); with
--workload bulk_send (client side only), --count is MiB sent.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import use_repo_package  # noqa: E402

use_repo_package()

import _tls  # noqa: E402
import impl_twisted  # noqa: E402
import impl_twisted_tcp  # noqa: E402
from run import Worker  # noqa: E402

SYSCALLS = ("send", "recv", "poll", "accept", "connect", "close", "setsockopt", "shutdown")


def category(func: tuple[str, int, str]) -> str:
    filename, _, name = func
    path = filename.replace("\\", "/")
    if "/twisted_tcp/" in path:
        return "twisted_tcp"
    if "/twisted/" in path or "/zope/" in path:
        return "Twisted (and zope)"
    if path.startswith(HERE):
        return "benchmark client code"
    if filename == "~":
        if any(f"'{call}'" in name or f".{call}" in name for call in SYSCALLS):
            return "system calls (socket, epoll)"
        return "builtins (bytes, list, ...)"
    return "other Python (stdlib)"


def summarize(stats: pstats.Stats, work: int, unit: str, top: int) -> None:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    by_cat: dict[str, float] = {}
    for func, entry in raw.items():
        by_cat[category(func)] = by_cat.get(category(func), 0.0) + entry[2]
    print(
        f"  total profiled time {total:.3f} s for {work:,} {unit} "
        f"({total / work * 1e6:.2f} us per {unit[:-1]}, profiler overhead included)"
    )
    for name, t in sorted(by_cat.items(), key=lambda kv: -kv[1]):
        print(f"    {name:<32} {t:7.3f} s  {t / total:6.1%}")
    print(f"  top {top} functions by own time (calls per {unit[:-1]}, own us per {unit[:-1]}):")
    rows = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    for func, (_cc, nc, tt, ct, _callers) in rows:
        filename, line, name = func
        if filename == "~":
            where = name
        else:
            short = (
                os.path.relpath(filename, os.path.dirname(HERE))
                if filename.startswith(os.path.dirname(HERE))
                else filename.split("site-packages/")[-1]
            )
            where = f"{short}:{line}({name})"
        print(
            f"    {tt / total:6.1%} own {ct / total:6.1%} cum  {nc / work:6.2f}/op "
            f"{tt / work * 1e6:6.2f} us  {where}"
        )


def params_for(workload: str, count: int) -> dict[str, int]:
    if workload == "bulk_send":
        return {"total": count * CHUNK}
    if workload in ("pingpong", "seq_conns"):
        return {"count": count}
    if workload == "conc_conns":
        return {"clients": min(200, count), "per_client": max(1, count // 200)}
    return {"count": count, "batch": 256, "window": 2048}


CHUNK = 64 * 1024  # bulk_send: the work is counted in 64 KiB writes
UNITS = {
    "bulk_send": "64 KiB writes",
    "pingpong": "round trips",
    "pipelined": "lines",
    "seq_conns": "connections",
    "conc_conns": "connections",
}


def profile_client(
    impl: Any, workload: str, count: int, top: int, logdir: str, tls: bool = False
) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred

    tls_dir = None
    if tls:
        tls_dir = os.path.join(logdir, "tls")
        _tls.make_pki(tls_dir)
        os.environ[_tls.ENV] = tls_dir  # for this process's client
    server = Worker(["server", "fixed"], logdir, tls_dir=tls_dir)
    try:
        name = "sink" if workload == "bulk_send" else "echo"
        port = server.wait_ready(30)["ports"][("tls_" if tls else "") + name]
        extra = {"tls": 1} if tls else {}
        profiler = cProfile.Profile()

        async def go() -> dict[str, Any]:
            await impl.client(
                reactor, workload, port, {**params_for(workload, max(1, count // 5)), **extra}
            )
            profiler.enable()
            try:
                return await impl.client(
                    reactor, workload, port, {**params_for(workload, count), **extra}
                )
            finally:
                profiler.disable()

        result: dict[str, Any] = {}

        def done(r: Any) -> None:
            result["r"] = r
            reactor.stop()

        reactor.callWhenRunning(lambda: ensureDeferred(go()).addBoth(done))
        reactor.run()
        r = result["r"]
        if not isinstance(r, dict):
            r.raiseException()
        work = r["work"] // CHUNK if workload == "bulk_send" else r["work"]
        print(f"  measured under the profiler: {work / r['elapsed']:,.0f} {UNITS[workload]} per s")
        summarize(pstats.Stats(profiler), work, UNITS[workload], top)
    finally:
        server.close()


def profile_server(impl_name: str, workload: str, count: int, top: int, logdir: str) -> None:
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.threads import deferToThread

    loadgen = Worker(["loadgen"], logdir)
    try:
        loadgen.wait_ready(30)
        profiler = cProfile.Profile()

        async def go() -> dict[str, Any]:
            if impl_name == "twisted":
                port = impl_twisted.listen(reactor, impl_twisted.LineEcho, 1024)
            else:
                port = await impl_twisted_tcp.serve(reactor, 1024)

            def command(n: int) -> dict[str, Any]:
                return {"workload": workload, "port": port, "params": params_for(workload, n)}

            await deferToThread(loadgen.request, command(max(1, count // 5)), 120)
            profiler.enable()
            try:
                return await deferToThread(loadgen.request, command(count), 120)  # type: ignore[no-any-return]
            finally:
                profiler.disable()

        result: dict[str, Any] = {}

        def done(r: Any) -> None:
            result["r"] = r
            reactor.stop()

        reactor.callWhenRunning(lambda: ensureDeferred(go()).addBoth(done))
        reactor.run()
        r = result["r"]
        if not isinstance(r, dict):
            r.raiseException()
        if not r.get("ok"):
            raise SystemExit(r.get("error"))
        print(f"  measured under the profiler: {r['work'] / r['elapsed']:,.0f} per s")
        summarize(pstats.Stats(profiler), r["work"], UNITS[workload], top)
    finally:
        loadgen.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--side", choices=["client", "server"])
    p.add_argument(
        "--workload",
        choices=["pingpong", "pipelined", "bulk_send", "seq_conns", "conc_conns"],
        help="bulk_send is client side only",
    )
    p.add_argument(
        "--tls", action="store_true", help="over TLS (client side only), as the tls_* workloads"
    )
    p.add_argument("--impl", choices=["twisted_tcp", "twisted"], default="twisted_tcp")
    p.add_argument("--count", type=int, help="round trips or lines (default 20,000 / 200,000)")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    if not args.side or not args.workload:
        # Each run needs a fresh reactor: run every combination in a child process.
        import subprocess

        sides = ["client"] if args.tls else ["client", "server"]
        workloads = ["pingpong", "bulk_send"] if args.tls else ["pingpong", "pipelined"]
        for side in [args.side] if args.side else sides:
            for workload in [args.workload] if args.workload else workloads:
                cmd = [
                    sys.executable,
                    __file__,
                    "--side",
                    side,
                    "--workload",
                    workload,
                    "--impl",
                    args.impl,
                    "--top",
                    str(args.top),
                ]
                if args.count:
                    cmd += ["--count", str(args.count)]
                if args.tls:
                    cmd.append("--tls")
                subprocess.run(cmd, check=True)
        return
    if args.side == "server" and (args.tls or args.workload == "bulk_send"):
        raise SystemExit("--tls and bulk_send are client side only")
    count = (
        args.count
        or {
            "pingpong": 20_000,
            "pipelined": 200_000,
            "bulk_send": 512,
            "seq_conns": 5_000,
            "conc_conns": 4_000,
        }[args.workload]
    )
    what = f"{count:,} MiB" if args.workload == "bulk_send" else f"{count:,}"
    print(
        f"\n== {args.impl} {args.side}, {args.workload}{' over TLS' if args.tls else ''}, {what}"
    )
    impl = impl_twisted_tcp if args.impl == "twisted_tcp" else impl_twisted
    with tempfile.TemporaryDirectory(prefix="twisted-tcp-profile-") as logdir:
        if args.side == "client":
            count = count * (1 << 20) // CHUNK if args.workload == "bulk_send" else count
            profile_client(impl, args.workload, count, args.top, logdir, args.tls)
        else:
            profile_server(args.impl, args.workload, count, args.top, logdir)


if __name__ == "__main__":
    main()
