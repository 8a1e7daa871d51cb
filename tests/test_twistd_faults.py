"""
A real C{twistd tcpserver} under faults: its process runs out of file
descriptors while flooded, and it is sent SIGTERM in the middle of a load.
"""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet import error
from twisted.internet.defer import DeferredList, ensureDeferred

import twisted_tcp as tt

from .conftest import sleep, within
from .processes import Process, start, twistd_command
from .test_plugin import LOCAL, SLOW, listening

__all__ = ["start"]  # the fixture, imported for the tests below

ECHO = "twisted_tcp.examples.echo:handle"
EMFILE_WARNING = re.compile(r"cannot accept connections \(EMFILE")


def where_of(address: str) -> tt.WhereToConnect:
    host, port = address.rsplit(":", 1)
    return tt.to_host_and_port(host, int(port))


def low_fd_twistd(start: Callable[..., Process], limit: int, *args: str) -> Process:
    """twistd, with RLIMIT_NOFILE set to C{limit} before it starts."""
    command = twistd_command()
    limiter = (
        "import os, resource, sys; "
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit})); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    if command[0] == sys.executable:  # twistd is run as "python -c ..."
        prefix = [sys.executable, "-c", limiter, sys.executable, *command[1:]]
    else:
        prefix = [sys.executable, "-c", limiter, command[0]]
    return start(*prefix, "-n", "--pidfile=", "tcpserver", *args)


async def echo_once(where: tt.WhereToConnect, line: bytes) -> bytes | None:
    async def talk(sock: Any, reader: tt.Reader, writer: tt.Writer) -> bytes | None:
        writer.write_line(line)
        return await reader.read_line()

    return await tt.with_connection(where, talk, timeout=2)  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_twistd_out_of_descriptors_pauses_logs_and_serves_again(
    start: Callable[..., Process],
) -> None:
    """
    twistd with 64 descriptors is flooded with 150 connections: it logs that
    it cannot accept (once per episode), stays up, and once the flood is
    gone it serves a new client.
    """
    process = low_fd_twistd(
        start, 64, "--port", f"tcp:0:interface={LOCAL}:backlog=256", "--handler", ECHO
    )
    where = where_of(await listening(process, ECHO))
    assert await within(echo_once(where, b"before")) == b"before"

    attempts = [tt.connect(where, timeout=5) for _ in range(150)]
    results = await within(DeferredList(attempts, consumeErrors=True), 20)
    flood = [value for ok, value in results if ok]
    try:
        await process.wait_for(EMFILE_WARNING)
        await sleep(1.5)  # at least one retry, still out of descriptors
        assert process.popen.poll() is None, process.output()
    finally:
        for sock, _, _ in flood:
            sock.abort()

    async def served_again() -> None:
        while True:
            try:
                if await echo_once(where, b"after") == b"after":
                    return
            except (error.ConnectError, error.TimeoutError, tt.ConnectTimeoutError):
                pass
            await sleep(0.2)

    await within(served_again(), 15)
    output = process.output()
    episodes = len(EMFILE_WARNING.findall(output))
    assert 1 <= episodes <= 3, output[-3000:]  # logged once per episode, not per accept
    assert "Traceback" not in output, output[-3000:]
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == -signal.SIGTERM


@pytest_twisted.ensureDeferred
async def test_twistd_sigterm_during_load_loses_no_reply(
    start: Callable[..., Process],
) -> None:
    """
    40 clients make request after request (each answered in two halves,
    0.3 s apart); SIGTERM arrives in the middle: every request that was
    accepted gets its whole reply, later connections are refused, and twistd
    ends with the signal within --shutdown-timeout.
    """
    shutdown_timeout = 5.0
    process = start(
        *twistd_command(), "-n", "--pidfile=", "tcpserver",
        "--port", f"tcp:0:interface={LOCAL}:backlog=256",
        "--handler", SLOW,
        "--shutdown-timeout", str(shutdown_timeout),
    )  # fmt: skip
    where = where_of(await listening(process, SLOW))
    stopping = False
    whole: list[int] = []
    cut: list[tuple[int, list[bytes]]] = []

    async def client(number: int) -> None:
        request = 0
        while True:
            word = b"%d-%d" % (number, request)
            try:
                _, reader, writer = await tt.connect(where, timeout=2)
            except (error.ConnectError, tt.ConnectTimeoutError):
                assert stopping, "refused before SIGTERM"
                return
            try:
                writer.write_line(b"0.3 " + word)
                lines = [line async for line in reader.lines()]
            finally:
                await writer.close()
            if lines == [b"begin " + word, b"end " + word]:
                whole.append(number)
            elif lines:  # accepted, but the reply was cut
                cut.append((number, lines))
            elif not stopping:
                cut.append((number, lines))
            request += 1
            if stopping:
                return

    clients = DeferredList(
        [ensureDeferred(client(n)) for n in range(40)],
        fireOnOneErrback=True,
        consumeErrors=True,
    )
    await sleep(1.0)
    assert whole, process.output()
    stopping = True
    signalled = time.monotonic()
    process.popen.send_signal(signal.SIGTERM)
    await within(clients, 20)
    status = await process.exited(shutdown_timeout + 5)
    assert status == -signal.SIGTERM
    assert time.monotonic() - signalled < shutdown_timeout + 2
    assert cut == [], cut
    output = process.output()
    assert "still open after" not in output
    assert "Traceback" not in output, output[-3000:]
