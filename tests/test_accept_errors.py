"""
Running out of file descriptors pauses accepting instead of spinning or
stopping the server: a real server process with a low descriptor limit, on a
TCP port or a Unix socket, is flooded, logs the condition once, and serves
again once connections close.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

Connect = Callable[[], socket.socket]


@pytest.fixture(params=["tcp", "unix"])
def low_fd_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[str], Connect]]:
    """A server limited to 40 descriptors, and how to connect to it."""
    path = str(tmp_path / "s.sock") if request.param == "unix" else None
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.low_fd_server", "40", *([path] if path else [])],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        address = None
        while address is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            match = re.search(r"(?:PORT|PATH) (\S+)", line)
            if match:
                address = match.group(1)
        assert address is not None, "the server did not say where it listens"

        def connect() -> socket.socket:
            if path is None:
                return socket.create_connection(("127.0.0.1", int(address)), timeout=5)
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.settimeout(5)
            client.connect(path)
            return client

        yield proc, connect
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def echo(connect: Connect, payload: bytes) -> bytes:
    with connect() as client:
        client.sendall(payload)
        return client.recv(len(payload))


def test_descriptor_exhaustion_pauses_then_serves_again(
    low_fd_server: tuple[subprocess.Popen[str], Connect],
) -> None:
    proc, connect = low_fd_server
    flood = []
    try:
        for _ in range(60):
            try:
                flood.append(connect())
            except OSError:
                break  # a Unix socket's backlog is full: flooded enough
        time.sleep(1.5)  # let the server hit EMFILE and back off at least once
        assert proc.poll() is None, "the server died when it ran out of descriptors"
    finally:
        for client in flood:
            client.close()
    # Once the flood is gone, the server serves again (it retries every second).
    deadline = time.monotonic() + 10
    reply = b""
    while time.monotonic() < deadline:
        try:
            reply = echo(connect, b"hello\n")
            if reply == b"hello\n":
                break
        except OSError:
            pass
        time.sleep(0.2)
    assert reply == b"hello\n"
    proc.terminate()
    output, _ = proc.communicate(timeout=10)
    warnings = [line for line in output.splitlines() if "cannot accept connections" in line]
    assert warnings, output[-3000:]
    assert "EMFILE" in warnings[0]
    # Logged once per episode, not once per failed accept().
    assert len(warnings) <= 3, warnings
