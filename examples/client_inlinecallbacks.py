"""
A client written with @inlineCallbacks: connect, send lines, print each reply.

Start a server first, e.g. the key-value example:

    twistd -n --pidfile= tcpserver --port 9000 --handler twisted_tcp.examples.kv:handle

then:

    python examples/client_inlinecallbacks.py 127.0.0.1 9000 "SET greeting hello" "GET greeting"

Each argument after the port is sent as one line, and one reply line is read
for it (the echo and kv example handlers answer every line with one line).
Without lines, a small kv session is sent.
"""

import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import react

import twisted_tcp

DEFAULT_LINES = ["SET greeting hello, world", "GET greeting", "GET nothing"]


@inlineCallbacks
def main(reactor, host, port, *lines):
    where = twisted_tcp.to_host_and_port(host, int(port))
    # connect() hands over the socket, a reader and a writer; this script
    # closes the connection itself (writer.close() flushes first).
    sock, reader, writer = yield twisted_tcp.connect(where, timeout=5)
    try:
        print(f"connected to {host}:{port} from local port {sock.local_address.port}")
        for line in lines or DEFAULT_LINES:
            writer.write_line(line.encode())
            reply = yield reader.read_line()
            if reply is None:
                print("the server closed the connection")
                break
            print(f"{line} -> {reply.decode(errors='replace')}")
    finally:
        yield writer.close()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} HOST PORT [LINE ...]")
    react(main, sys.argv[1:])
