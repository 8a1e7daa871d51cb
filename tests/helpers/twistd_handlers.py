"""
Handlers for the twistd tests (tests/test_plugin.py), which a C{twistd
tcpserver} subprocess imports as C{tests.helpers.twistd_handlers:NAME}
(the tests put the repository root on its PYTHONPATH).
"""

from __future__ import annotations

import os
import subprocess

from twisted.internet.interfaces import IAddress
from twisted.internet.task import deferLater

from twisted_tcp import Reader, Writer


async def slow_reply(address: IAddress, reader: Reader, writer: Writer) -> None:
    """
    Serve one request, C{"SECONDS WORD"}: reply C{"begin WORD"} at once,
    then, C{SECONDS} later, C{"end WORD"}, and return (the server then closes
    the connection).  A test sends SIGTERM between the two halves.
    """
    from twisted.internet import reactor

    line = await reader.read_line()
    if line is None:
        return
    seconds, _, word = line.partition(b" ")
    writer.write_line(b"begin " + word)
    await deferLater(reactor, float(seconds), lambda: None)
    writer.write_line(b"end " + word)


class _Handlers:
    slow_reply = staticmethod(slow_reply)


handlers = _Handlers()
"""For C{--handler tests.helpers.twistd_handlers:handlers.slow_reply}."""

not_callable = 42
"""Not a handler: C{--handler tests.helpers.twistd_handlers:not_callable} fails."""


async def pid_then_hold(address: IAddress, reader: Reader, writer: Writer) -> None:
    """
    Reply at once with the process id of the worker that serves the
    connection, then hold the connection until the client closes it (so
    that, with C{--max-connections 1}, the next connection must be served
    by another worker).
    """
    writer.write_line(b"%d" % os.getpid())
    await reader.contents()


async def pid_and_child_then_hold(address: IAddress, reader: Reader, writer: Writer) -> None:
    """
    Start a long C{sleep} that inherits the worker's standard descriptors
    (as a careless handler's subprocess does), reply with the worker's pid and
    the child's, then hold the connection until the client closes it.
    """
    child = subprocess.Popen(["sleep", "60"])
    writer.write_line(b"%d %d" % (os.getpid(), child.pid))
    await reader.contents()


async def child_prints(address: IAddress, reader: Reader, writer: Writer) -> None:
    """
    Run a child process that prints a line on its stdout (which it inherits
    from the worker), then reply C{done}.
    """
    import sys

    subprocess.run([sys.executable, "-c", "print('hello from a child process')"], timeout=10)
    writer.write_line(b"done")


def yields(address: IAddress, reader: Reader, writer: Writer):  # type: ignore[no-untyped-def]
    """A generator function: not a handler (its body would never run)."""
    yield writer.write_line(b"never")
