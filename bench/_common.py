"""
What every benchmark process shares: the lines sent, the wire formats of the
fixed servers, and how a worker talks to the harness.

Every line is 64 bytes on the wire: 63 bytes (a counter, then padding) and
C{b"\\n"}.  The counter makes a lost, duplicated or reordered line visible to
the check every client does on every line it reads back.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import socket
import struct
import sys
from types import ModuleType

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""This checkout: the repository that bench/ is in."""
PACKAGE_TREE_ENV = "BENCH_PACKAGE_TREE"
"""Names another tree to import C{twisted_tcp} from (run.py's C{--before})."""
REPO = os.environ.get(PACKAGE_TREE_ENV) or CHECKOUT
"""Where C{twisted_tcp} is imported from: L{CHECKOUT}, or the tree L{PACKAGE_TREE_ENV} names."""

HOST = "127.0.0.1"
LINE_BYTES = 64  # on the wire, b"\n" included
CHUNK = 64 * 1024  # the size of every bulk write
CHUNK_DATA = b"x" * CHUNK
BULK_HEADER = struct.Struct("!Q")  # bulk_send: the byte count, before the bytes


def two_cpus() -> tuple[int, int] | None:
    """
    The first two CPUs this process may run on (for the clients, then the
    servers, when pinned), or None where there are fewer or none to know.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    return (allowed[0], allowed[1]) if len(allowed) >= 2 else None


def use_repo_package() -> None:
    """Import C{twisted_tcp} from L{REPO} (it need not be installed)."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)


def load_example(name: str) -> ModuleType:
    """The module C{twisted_tcp.examples.NAME} of L{REPO}."""
    use_repo_package()
    return importlib.import_module(f"twisted_tcp.examples.{name}")


def line(i: int) -> bytes:
    """Line C{i} without its newline: 63 bytes."""
    return (b"%012d " % i).ljust(LINE_BYTES - 1, b".")


@functools.lru_cache(maxsize=4)
def lines(n: int) -> list[bytes]:
    """Lines 0 .. n-1 without newline (made once per size: do not change the list)."""
    return [line(i) for i in range(n)]


@functools.lru_cache(maxsize=4)
def lines_nl(n: int) -> list[bytes]:
    """Lines 0 .. n-1, each with its newline (made once per size: do not change the list)."""
    return [line(i) + b"\n" for i in range(n)]


def set_nodelay(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class CheckFailed(Exception):
    """The bytes that came back are not the ones expected."""


def check_line(got: bytes, want: bytes, index: int) -> None:
    if got != want:
        raise CheckFailed(f"line {index}: got {got[:70]!r}, want {want[:70]!r}")


def reply(obj: dict[str, object]) -> bytes:
    """One reply line of a worker to the harness."""
    return json.dumps(obj).encode() + b"\n"


def resp_reply(words: list[bytes]) -> bytes | None:
    """The reply to one command, or None for QUIT (as twisted_tcp.examples.resp_ping answers)."""
    name = words[0].upper()
    if name == b"PING":
        if len(words) == 1:
            return b"+PONG\r\n"
        if len(words) == 2:
            return b"$%d\r\n%s\r\n" % (len(words[1]), words[1])
    elif name == b"ECHO":
        if len(words) == 2:
            return b"$%d\r\n%s\r\n" % (len(words[1]), words[1])
    elif name == b"QUIT":
        return None
    else:
        return b"-ERR unknown command '%s'\r\n" % words[0][:40]
    return b"-ERR wrong number of arguments for '%s' command\r\n" % name.lower()


# The minimal HTTP/1.1 server's responses (twisted_tcp.examples.http_hello answers the same).
HTTP_BODY = b"Hello, world!\n"
HTTP_HEAD = b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
_HTTP_OK_HEAD = HTTP_HEAD % (200, b"OK", len(HTTP_BODY))
HTTP_OK = _HTTP_OK_HEAD + b"\r\n" + HTTP_BODY
HTTP_OK_CLOSE = _HTTP_OK_HEAD + b"Connection: close\r\n\r\n" + HTTP_BODY
HTTP_OK_KEEP_ALIVE = _HTTP_OK_HEAD + b"Connection: keep-alive\r\n\r\n" + HTTP_BODY


def http_error(status: int, reason: bytes) -> bytes:
    """An error response that closes the connection."""
    body = b"%d %s\n" % (status, reason)
    return HTTP_HEAD % (status, reason, len(body)) + b"Connection: close\r\n\r\n" + body


def vm_rss_kib(pid: int) -> int:
    """The resident set size of process C{pid}, in KiB (VmRSS of /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for text in f:
            if text.startswith("VmRSS:"):
                return int(text.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def fd_count(pid: int) -> int:
    """The number of files process C{pid} has open (its accepted connections among them)."""
    return len(os.listdir(f"/proc/{pid}/fd"))
