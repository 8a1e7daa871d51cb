"""
Keep one connection to a line server up, and ask it
something every second, across reconnects:

    python docs/examples/persistent.py 127.0.0.1 9000

Then stop the server and start it again: the client
logs each attempt, and connects again with back-off.
Two more arguments may follow the port: how many
questions (10), and the seconds between them (1).
"""

import sys

from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.task import deferLater, react
from twisted.logger import (
    globalLogBeginner,
    textFileLogObserver,
)

import twisted_tcp


async def ask(link, question, reactor, timeout=5.0):
    """
    Send a line on link's connection (waiting for one
    while it is down) and return the reply, or None if
    the server ended the connection first.
    """
    _sock, reader, writer = await link.connected()
    writer.write_line(question)
    try:
        reply = await reader.read_line().addTimeout(
            timeout, reactor
        )
    except defer.TimeoutError:
        # A late reply would answer the next question:
        # drop this connection; link makes a new one.
        writer.abort()
        raise
    # None: the server ended the connection; link
    # closes our side, and makes the next one.
    return reply


class Health:
    """An on_event that keeps what a health check shows."""

    def __init__(self):
        self.up = False
        self.connections = 0
        self.last_error = None

    def __call__(self, event):
        if event.kind == "connected":
            self.up = True
            self.connections += 1
        elif event.kind == "disconnected":
            self.up = False
        elif event.kind == "failed":
            self.last_error = event.reason


async def main(reactor, host, port, count="10", every="1"):
    health = Health()
    link = twisted_tcp.persistent_connection(
        twisted_tcp.to_host_and_port(host, int(port)),
        timeout=5,  # for each attempt
        retry_policy=backoffPolicy(maxDelay=10),
        on_event=health,
        reactor=reactor,
    )
    try:
        for n in range(int(count)):
            line = b"ping %d" % n
            try:
                reply = await ask(link, line, reactor)
            except defer.TimeoutError:
                reply = b"(no reply in time)"
            if reply is None:
                reply = b"(the server left)"
            print(line.decode(), "->", reply.decode())
            await deferLater(reactor, float(every))
    finally:
        await link.close()
    print(f"connected {health.connections} time(s)")


if __name__ == "__main__":
    globalLogBeginner.beginLoggingTo(
        [textFileLogObserver(sys.stderr)],
        redirectStandardIO=False,
    )
    react(main, sys.argv[1:])
