"""
An echo server with a low descriptor limit, for the accept-error test.

Usage: python low_fd_server.py LIMIT [PATH].  Listens on a TCP port, or on
the Unix socket PATH; prints "PORT n" (or "PATH p") once listening, and logs
to stdout.
"""

import resource
import sys

from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver

import twisted_tcp
from twisted_tcp.examples.echo import handle


def main() -> None:
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])

    path = sys.argv[2] if len(sys.argv) > 2 else None

    def listening(server: twisted_tcp.Server) -> None:
        print(f"{'PATH' if path else 'PORT'} {server.listening_on}", flush=True)

    def start() -> None:
        where: twisted_tcp.WhereToListen = (
            twisted_tcp.on_file(path) if path else twisted_tcp.on_port(0, interface="127.0.0.1")
        )
        twisted_tcp.Server.create(where, handle).addCallback(listening)

    reactor.callWhenRunning(start)
    reactor.run()


if __name__ == "__main__":
    main()
