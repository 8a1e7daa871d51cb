"""
A line echo server for the hostile-peer tests (tests/test_hostile.py), run in a
process of its own so that its memory can be read from /proc/PID/status.

Usage: python -m tests.helpers.line_server [ends|continues].  Prints "PORT n"
once listening, and logs to stdout.  Its handler echoes each line.  On a line
longer than max_line_length (the default, 64 KiB) it tells the peer
("ERROR LineTooLongError: ...") and then, with "ends" (the default),
re-raises, so that the server logs the error with the peer's address and
closes the connection; with "continues", it reads on (the reader discards the
rest of the long line, up to its newline).
"""

from __future__ import annotations

import sys

from twisted.internet import reactor
from twisted.internet.interfaces import IAddress
from twisted.logger import globalLogBeginner, textFileLogObserver

import twisted_tcp

CONTINUES = False  # set from the command line


async def handle(
    address: IAddress, reader: twisted_tcp.Reader, writer: twisted_tcp.Writer
) -> None:
    while True:
        try:
            line = await reader.read_line()
        except twisted_tcp.LineTooLongError as e:
            writer.write_line(b"ERROR LineTooLongError: " + str(e).encode())
            if CONTINUES:
                continue
            raise
        if line is None:
            return
        writer.write_line(line)


def main() -> None:
    global CONTINUES
    CONTINUES = sys.argv[1:] == ["continues"]
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])

    def listening(server: twisted_tcp.Server) -> None:
        print(f"PORT {server.listening_on}", flush=True)

    def start() -> None:
        where = twisted_tcp.on_port(0, interface="127.0.0.1")
        twisted_tcp.Server.create(where, handle).addCallback(listening)

    reactor.callWhenRunning(start)
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
