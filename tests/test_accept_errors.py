"""
Running out of file descriptors pauses accepting instead of spinning or
stopping the server: a real server process with a low descriptor limit is
flooded, logs the condition once, and serves again once connections close.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def low_fd_server() -> Iterator[tuple[subprocess.Popen[str], int]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.low_fd_server", "40"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        port = None
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            match = re.search(r"PORT (\d+)", line)
            if match:
                port = int(match.group(1))
        assert port is not None, "the server did not report its port"
        yield proc, port
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def echo(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as client:
        client.sendall(payload)
        return client.recv(len(payload))


def test_descriptor_exhaustion_pauses_then_serves_again(
    low_fd_server: tuple[subprocess.Popen[str], int],
) -> None:
    proc, port = low_fd_server
    flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(60)]
    try:
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
            reply = echo(port, b"hello\n")
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
