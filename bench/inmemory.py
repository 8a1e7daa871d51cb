"""
The Python cost of twisted_tcp's server path, with no socket, no kernel and
no second process: lines are handed to the protocol by hand over Twisted's
StringTransport, so that what is measured is what twisted_tcp (and the
Twisted protocol machinery it uses) costs, steady enough to compare two
versions of the code where the socket benchmarks (run.py) are too noisy.

    python bench/inmemory.py                 # us per message and per connection
    python bench/inmemory.py --rounds 9      # more rounds (the best is kept)

Per message: a 64-byte line echoed by an ``async for line in reader.lines()``
handler (and by one over ``reader.line_batches()``, as twisted_tcp.examples.echo
is) on an open connection, one line a chunk, then 16 lines a chunk (as
pipelined requests arrive).  Per connection: accept, one line, its echo,
the peer's end of the stream, the handler's end, the close.  The baseline is
a raw Twisted ``LineReceiver`` echo doing the same on the same transport.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable
from typing import Any

from _common import use_repo_package

use_repo_package()

from twisted.internet import reactor  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.protocol import connectionDone  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.protocols.basic import LineReceiver  # noqa: E402

import twisted_tcp  # noqa: E402
from twisted_tcp import _server  # noqa: E402

LINE = b"x" * 64 + b"\n"
ADDRESS = IPv4Address("TCP", "127.0.0.1", 5000)


class SocketLikeTransport(StringTransport):
    """
    A StringTransport that says how many bytes it holds, as Twisted's socket
    transports do (none: here they leave at once).
    """

    dataBuffer = b""
    offset = 0
    _tempDataLen = 0


class RawEcho(LineReceiver):
    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)


async def echo(address: Any, reader: twisted_tcp.Reader, writer: twisted_tcp.Writer) -> None:
    async for line in reader.lines():
        writer.write_line(line)


async def echo_batches(
    address: Any, reader: twisted_tcp.Reader, writer: twisted_tcp.Writer
) -> None:
    """The echo of twisted_tcp.examples.echo: lines taken in batches."""
    async for batch in reader.line_batches():
        for line in batch:
            writer.write_line(line)


def twisted_tcp_protocols(handler: Any = None) -> Callable[[], Any]:
    limits: dict[str, Any]
    if hasattr(twisted_tcp, "DEFAULTS"):
        limits = {"settings": twisted_tcp.DEFAULTS}
    else:  # a version from before Settings (to compare with): its own arguments
        from twisted_tcp._connection import StreamOptions  # type: ignore[attr-defined]

        limits = {"max_connections": 10000, "options": StreamOptions(), "idle_timeout": None}
    server = _server.Server(
        twisted_tcp.on_port(0),
        handler or echo,
        on_handler_error="log",
        reactor=reactor,
        **limits,
    )
    factory = _server._ServerFactory(server)
    return lambda: factory.buildProtocol(ADDRESS)


def per_message(make: Callable[[], Any], count: int, batch: int = 1) -> float:
    """Seconds per line, C{batch} lines arriving in each chunk."""
    protocol = make()
    transport = SocketLikeTransport(hostAddress=ADDRESS, peerAddress=ADDRESS)
    protocol.makeConnection(transport)
    received = protocol.dataReceived
    chunk = LINE * batch
    start = time.perf_counter()
    for _ in range(count // batch):
        received(chunk)
        if transport.io.tell() > 1 << 20:
            transport.clear()
    return (time.perf_counter() - start) / (count // batch * batch)


def per_connection(make: Callable[[], Any], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        protocol = make()
        protocol.makeConnection(SocketLikeTransport(hostAddress=ADDRESS, peerAddress=ADDRESS))
        protocol.dataReceived(LINE)
        if hasattr(protocol, "readConnectionLost"):
            protocol.readConnectionLost()
        protocol.connectionLost(connectionDone)
    return (time.perf_counter() - start) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (the best is kept)")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=20_000)
    args = parser.parse_args()
    gc.disable()  # a collection in the middle of a round is noise, not cost
    rows = []
    versions = [("raw Twisted", RawEcho), ("twisted_tcp", twisted_tcp_protocols())]
    if hasattr(twisted_tcp.Reader, "line_batches"):  # (not in a version to compare with)
        versions.append(("twisted_tcp, line_batches()", twisted_tcp_protocols(echo_batches)))
    for name, make in versions:
        per_message(make, 2_000)
        per_connection(make, 2_000)
        message = min(per_message(make, args.messages) for _ in range(args.rounds))
        pipelined = min(per_message(make, args.messages, 16) for _ in range(args.rounds))
        connection = min(per_connection(make, args.connections) for _ in range(args.rounds))
        rows.append((name, message, pipelined, connection))
    print("| implementation | us per message | us per line, 16 a chunk | us per connection |")
    print("| --- | ---: | ---: | ---: |")
    for name, *costs in rows:
        print(f"| {name} | " + " | ".join(f"{cost * 1e6:.2f}" for cost in costs) + " |")
    raw = rows[0][1:]
    for name, *ours in rows[1:]:
        print(
            f"| raw ÷ {name} (time) | "
            + " | ".join(f"{a / b:.2f}x" for a, b in zip(raw, ours, strict=True))
            + " |"
        )


if __name__ == "__main__":
    main()
