"""
One benchmark process, started and driven by run.py over its stdin/stdout:

    worker.py server KIND     KIND: fixed, twisted, twisted_tcp, before, asyncio, uvloop
    worker.py client IMPL     IMPL: twisted, twisted_tcp, before, asyncio, uvloop
    worker.py loadgen

Each prints one JSON line when ready (a server: the ports it listens on: the
line echo, and -- all but the fixed one -- the RESP and HTTP servers of the
real-client workloads; when run.py made a test PKI for the TLS workloads
and named its directory in C{BENCH_TLS_DIR}, the fixed one also a TLS sink
and a TLS byte echo, and the others a TLS line echo).
A client or the load generator then reads one JSON command per line,
C{{"workload": ..., "port": ..., "params": {...}}}, runs it and answers one
JSON line, C{{"ok": true, "work": n, "elapsed": seconds}} or C{{"ok": false,
"error": ...}}.  C{before} is C{twisted_tcp} imported from the tree that
C{BENCH_PACKAGE_TREE} names (run.py's C{--before}).  Every worker exits when
its stdin closes, so none outlives the harness.  Each raises its limit on
open files (the soft limit, up to the hard one) for the idle-connections
workload.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
import traceback
from typing import Any

from _common import reply

BACKLOG = 1024  # the same listen backlog for every server


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)).strip()


# -- Twisted processes (raw Twisted and twisted_tcp) -------------------------------


def twisted_main(role: str, kind: str) -> None:
    import impl_twisted
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, ensureDeferred
    from twisted.internet.stdio import StandardIO
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )
    from twisted.protocols.basic import LineReceiver
    from twisted.python.failure import Failure

    # Warnings and errors only (not every factory starting and stopping), to stderr.
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stderr),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    reactor_name = type(reactor).__name__
    if kind == "twisted_tcp":
        import impl_twisted_tcp

        impl: Any = impl_twisted_tcp
    else:
        impl = impl_twisted

    class Control(LineReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 1 << 20

        def __init__(self, ready: dict[str, Any]) -> None:
            self.ready = ready

        def connectionMade(self) -> None:
            self.transport.write(reply(self.ready))

        def lineReceived(self, line: bytes) -> None:
            cmd = json.loads(line)
            gc.collect()
            d: Deferred[Any] = ensureDeferred(
                impl.client(reactor, cmd["workload"], cmd["port"], cmd["params"])
            )

            def failed(f: Failure) -> dict[str, Any]:
                return {"ok": False, "error": _error_text(f.value)}

            d.addCallbacks(lambda result: {"ok": True, **result}, failed)
            d.addCallback(lambda answer: self.transport.write(reply(answer)))

        def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
            if reactor.running:
                reactor.stop()

    async def start() -> None:
        ready: dict[str, Any] = {"ready": True, "reactor": reactor_name}
        if kind == "twisted_tcp":  # where it came from (run.py checks that of --before)
            ready["package"] = os.path.dirname(os.path.abspath(impl.twisted_tcp.__file__))
        if role == "server":
            if kind == "fixed":
                ready["ports"] = {
                    "sink": impl_twisted.listen(reactor, impl_twisted.Sink, BACKLOG),
                    "source": impl_twisted.listen(reactor, impl_twisted.Source, BACKLOG),
                    "echo": impl_twisted.listen(reactor, impl_twisted.ByteEcho, BACKLOG),
                }
                if os.environ.get("BENCH_TLS_DIR"):  # the tls_* workloads are measured
                    ready["ports"]["tls_sink"] = impl_twisted.listen_tls(
                        reactor, impl_twisted.Sink, BACKLOG
                    )
                    ready["ports"]["tls_echo"] = impl_twisted.listen_tls(
                        reactor, impl_twisted.ByteEcho, BACKLOG
                    )
            elif kind == "twisted":
                ready["ports"] = {
                    "echo": impl_twisted.listen(reactor, impl_twisted.LineEcho, BACKLOG),
                    "resp": impl_twisted.listen(reactor, impl_twisted.RespPing, BACKLOG),
                    "http": impl_twisted.listen(reactor, impl_twisted.HttpHello, BACKLOG),
                }
                if os.environ.get("BENCH_TLS_DIR"):  # the tls_* workloads are measured
                    ready["ports"]["tls_echo"] = impl_twisted.listen_tls(
                        reactor, impl_twisted.LineEcho, BACKLOG
                    )
            else:
                ready["ports"] = await impl.serve_all(
                    reactor, BACKLOG, tls=bool(os.environ.get("BENCH_TLS_DIR"))
                )
        StandardIO(Control(ready), reactor=reactor)

    def start_failed(f: Failure) -> None:
        sys.stderr.write(f.getTraceback())
        reactor.stop()

    reactor.callWhenRunning(lambda: ensureDeferred(start()).addErrback(start_failed))
    reactor.run()


# -- asyncio and uvloop -----------------------------------------------------------


def _new_loop(kind: str) -> Any:
    import asyncio

    if kind == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def _answer(obj: dict[str, Any]) -> None:
    sys.stdout.buffer.write(reply(obj))
    sys.stdout.buffer.flush()


def _serve_commands(run: Any) -> None:
    """Read commands from stdin until it closes; answer each."""
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            return
        cmd = json.loads(line)
        gc.collect()
        try:
            result = run(cmd["workload"], cmd["port"], cmd["params"])
        except Exception as exc:
            _answer({"ok": False, "error": _error_text(exc)})
        else:
            _answer({"ok": True, **result})


def asyncio_main(role: str, kind: str) -> None:
    import impl_asyncio

    loop = _new_loop(kind)
    loop_name = type(loop).__module__ + "." + type(loop).__name__
    if role == "client":
        _answer({"ready": True, "loop": loop_name})
        _serve_commands(
            lambda workload, port, params: loop.run_until_complete(
                impl_asyncio.client(workload, port, params)
            )
        )
        loop.close()
        return
    servers, ports = loop.run_until_complete(
        impl_asyncio.serve(BACKLOG, tls=bool(os.environ.get("BENCH_TLS_DIR")))
    )
    stdin_closed = loop.create_future()

    def on_stdin() -> None:
        if not os.read(0, 4096) and not stdin_closed.done():
            stdin_closed.set_result(None)

    loop.add_reader(0, on_stdin)
    _answer({"ready": True, "loop": loop_name, "ports": ports})
    loop.run_until_complete(stdin_closed)
    loop.remove_reader(0)
    for server in servers:
        server.close()
    loop.close()


def loadgen_main() -> None:
    import loadgen

    def terminated(signum: int, frame: object) -> None:
        # Unwind, so that a benchmark tool the load generator is running is
        # killed (loadgen.run_tool), and the sockets it holds are closed.
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminated)
    _answer({"ready": True})
    _serve_commands(loadgen.run)


def raise_open_files_limit() -> None:
    """The soft limit on open files, up to the hard limit (this process and its children only)."""
    try:
        import resource
    except ImportError:  # not Unix
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            sys.stderr.write(f"cannot raise the open files limit to {hard}: {exc}\n")


def main(argv: list[str]) -> None:
    raise_open_files_limit()
    cpu = os.environ.get("BENCH_CPU")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})
    role = argv[1]
    kind = argv[2] if len(argv) > 2 else ""
    if role == "loadgen":
        loadgen_main()
    elif kind in ("asyncio", "uvloop"):
        asyncio_main(role, kind)
    elif kind in ("fixed", "twisted", "twisted_tcp"):
        twisted_main(role, kind)
    elif kind == "before":  # twisted_tcp, imported from the tree BENCH_PACKAGE_TREE names
        twisted_main(role, "twisted_tcp")
    else:
        raise SystemExit(f"usage: worker.py server|client KIND, or worker.py loadgen (not {argv})")


if __name__ == "__main__":
    main(sys.argv)
