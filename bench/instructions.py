"""
The CPU instructions that a served connection, a served message and a
client connection cost, on real sockets over 127.0.0.1: twisted_tcp against
a raw Twisted protocol and asyncio streams doing the same, counted by
valgrind's callgrind in the process measured (the peer runs outside
valgrind).

    python bench/instructions.py                  # about 4 minutes on 2 cores
    python bench/instructions.py --connections 400 --messages 2000

Each count is taken twice, for N and 2N units, and the difference divided
by N: what starting the interpreter, importing and listening cost drops
out.  Counts repeat within about 0.1 % from run to run, where the socket
benchmarks (run.py) move by tens of percent on a shared VM, so this is the
one to judge a change of a connection's or a message's cost by; it counts
everything the process runs, Twisted's reactor and the kernel's system
calls' user-space side included, but not the time spent waiting.

- ``served_connection``: the server accepts a connection, reads one 64-byte
  line, echoes it, sees the peer's end of the stream and closes; the peer is
  a plain blocking socket, one connection after the other.
- ``served_message``: one connection, one line echoed per round trip.
- ``client_connection``: the client connects, writes one line, reads its
  echo and closes (twisted_tcp: ``with_connection``; raw Twisted:
  ``connectTCP`` with a ``LineReceiver``; asyncio: ``open_connection``, then
  ``close`` and ``wait_closed``), against a raw Twisted echo server.

It needs valgrind (Debian: ``apt-get install valgrind``); twisted_tcp is
imported from this checkout.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LINE = b"x" * 64 + b"\n"
IMPLS = ("twisted", "twisted_tcp", "asyncio")
WORKLOADS = ("served_connection", "served_message", "client_connection")


# -- what runs in the measured process ------------------------------------------


def serve(impl: str, ends: int, port_file: str) -> None:
    """Serve a line echo until C{ends} connections have ended, then stop."""
    if impl == "asyncio":
        serve_asyncio(ends, port_file)
        return
    from twisted.internet import reactor

    ended = [0]

    def one_ended() -> None:
        ended[0] += 1
        if ended[0] == ends:
            reactor.callLater(0, reactor.stop)  # type: ignore[attr-defined]

    def listening(port: int) -> None:
        Path(port_file).write_text(str(port))

    if impl == "twisted":
        from twisted.internet.protocol import Factory
        from twisted.protocols.basic import LineReceiver

        class Echo(LineReceiver):
            delimiter = b"\n"

            def lineReceived(self, line: bytes) -> None:
                self.sendLine(line)

            def connectionLost(self, reason: object = None) -> None:
                one_ended()

        factory = Factory.forProtocol(Echo)
        factory.noisy = False
        listening(reactor.listenTCP(0, factory, interface="127.0.0.1").getHost().port)  # type: ignore[attr-defined]
    else:
        sys.path.insert(0, str(HERE.parent))
        import twisted_tcp

        async def echo(
            address: object, reader: twisted_tcp.Reader, writer: twisted_tcp.Writer
        ) -> None:
            try:
                async for line in reader.lines():
                    writer.write_line(line)
            finally:
                one_ended()

        twisted_tcp.Server.create(
            twisted_tcp.on_port(0, interface="127.0.0.1"), echo, reactor=reactor
        ).addCallback(lambda server: listening(server.listening_on))
    reactor.run()  # type: ignore[attr-defined]


def serve_asyncio(ends: int, port_file: str) -> None:
    """As L{serve}, with asyncio streams (as bench/impl_asyncio.py's echo)."""
    import asyncio

    async def main() -> None:
        done = asyncio.get_running_loop().create_future()
        ended = 0

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal ended
            try:
                async for line in reader:
                    writer.write(line)
            finally:
                writer.close()
                ended += 1
                if ended == ends:
                    done.set_result(None)

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        Path(port_file).write_text(str(server.sockets[0].getsockname()[1]))
        await done
        server.close()

    asyncio.run(main())


def connect(impl: str, count: int, port: int) -> None:
    """Make C{count} client connections one after the other, each one line echoed."""
    if impl == "asyncio":
        import asyncio

        async def all_of_them() -> None:
            for _ in range(count):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(LINE)
                await reader.readline()
                writer.close()
                await writer.wait_closed()

        asyncio.run(all_of_them())
        return
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    if impl == "twisted":
        from twisted.internet.protocol import ClientFactory
        from twisted.protocols.basic import LineReceiver

        class OneLine(LineReceiver):
            delimiter = b"\n"

            def connectionMade(self) -> None:
                self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
                self.sendLine(LINE[:-1])

            def lineReceived(self, line: bytes) -> None:
                self.transport.loseConnection()  # type: ignore[union-attr]

            def connectionLost(self, reason: object = None) -> None:
                self.factory.lost.callback(None)  # type: ignore[attr-defined]

        async def one() -> None:
            factory = ClientFactory.forProtocol(OneLine)
            factory.noisy = False
            factory.lost = Deferred()  # type: ignore[attr-defined]
            reactor.connectTCP("127.0.0.1", port, factory)  # type: ignore[attr-defined]
            await factory.lost  # type: ignore[attr-defined]
    else:
        sys.path.insert(0, str(HERE.parent))
        import twisted_tcp

        where = twisted_tcp.to_host_and_port("127.0.0.1", port)

        async def one_line(
            sock: object, reader: twisted_tcp.Reader, writer: twisted_tcp.Writer
        ) -> None:
            writer.write_line(LINE[:-1])
            await reader.read_line()

        async def one() -> None:
            await twisted_tcp.with_connection(where, one_line, timeout=10, reactor=reactor)

    async def all_of_them() -> None:
        for _ in range(count):
            await one()

    def run() -> None:
        done = Deferred.fromCoroutine(all_of_them())
        done.addErrback(lambda failure: print(failure.getTraceback(), file=sys.stderr))
        done.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(run)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


# -- the peers, outside valgrind -------------------------------------------------


def read_line(s: socket.socket) -> bytes:
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed before echoing the line")
        got += chunk
    return got


def end(s: socket.socket) -> None:
    """Half-close, wait for the server's close, close."""
    s.shutdown(socket.SHUT_WR)
    while s.recv(4096):
        pass
    s.close()


def plain_client(port: int, connections: int, messages: int) -> None:
    if messages:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(messages):
            s.sendall(LINE)
            read_line(s)
        end(s)
        return
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.sendall(LINE)
        read_line(s)
        end(s)


# -- the driver ----------------------------------------------------------------------


def callgrind(args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONHASHSEED="0")
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def collected(process: subprocess.Popen[str], timeout: float) -> int:
    _, err = process.communicate(timeout=timeout)
    found = re.search(r"Collected : (\d+)", err)
    if process.returncode != 0 or found is None:
        raise RuntimeError(
            f"the measured process failed (exit {process.returncode}):\n{err[-3000:]}"
        )
    return int(found.group(1))


def wait_for_port(port_file: Path, process: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 120  # valgrind starts the interpreter slowly
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text():
            return int(port_file.read_text())
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{process.communicate()[1][-3000:]}")
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server did not listen within 120 s")


def count_served(impl: str, connections: int, messages: int, scratch: Path) -> int:
    port_file = scratch / "port"
    port_file.unlink(missing_ok=True)
    ends = 1 if messages else connections
    server = callgrind([__file__, "--serve", impl, str(ends), str(port_file)])
    try:
        plain_client(wait_for_port(port_file, server), connections, messages)
        return collected(server, 600)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def count_client(impl: str, connections: int, scratch: Path) -> int:
    port_file = scratch / "port"
    port_file.unlink(missing_ok=True)
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", "twisted", "0", str(port_file)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = wait_for_port(port_file, server)
        return collected(
            callgrind([__file__, "--connect", impl, str(connections), str(port)]), 600
        )
    finally:
        server.kill()
        server.wait()


def per_unit(workload: str, impl: str, n: int, scratch: Path) -> float:
    """Instructions per unit: the count for 2n units less the count for n, over n."""
    counts = []
    for units in (n, 2 * n):
        if workload == "served_connection":
            counts.append(count_served(impl, units, 0, scratch))
        elif workload == "served_message":
            counts.append(count_served(impl, 0, units, scratch))
        else:
            counts.append(count_client(impl, units, scratch))
    return (counts[1] - counts[0]) / n


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--connect":
        connect(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=200, help="N for the connection rows")
    parser.add_argument("--messages", type=int, default=1000, help="N for the message row")
    parser.add_argument("--only", help="comma-separated workloads (default: all)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    workloads = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        raise SystemExit(f"unknown workloads: {', '.join(sorted(unknown))}")
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"tt-instructions-{os.getpid()}"
    scratch.mkdir()
    try:
        print(
            "| workload | twisted | twisted_tcp | asyncio "
            "| twisted ÷ twisted_tcp | asyncio ÷ twisted_tcp |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for workload in workloads:
            n = args.messages if workload == "served_message" else args.connections
            raw, ours, aio = (per_unit(workload, impl, n, scratch) for impl in IMPLS)
            print(
                f"| {workload} | {raw:,.0f} | {ours:,.0f} | {aio:,.0f} "
                f"| {raw / ours:.2f}x | {aio / ours:.2f}x |",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
