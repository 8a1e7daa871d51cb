"""
Send each argument as a line to the shout server, print each reply, then
end the stream and print the server's last words.

    python docs/examples/client_inlinecallbacks.py 127.0.0.1 9000 hello world
"""

import sys

from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import react

import twisted_tcp


@inlineCallbacks
def main(reactor, host, port, *lines):
    where = twisted_tcp.to_host_and_port(host, int(port))
    _sock, reader, writer = yield twisted_tcp.connect(where, timeout=5, reactor=reactor)
    try:
        for line in lines:
            writer.write_line(line.encode())
            reply = yield reader.read_line()
            if reply is None:  # None: the end of the stream
                print("the server closed the connection")
                return
            print(f"{line} -> {reply.decode()}")
        yield writer.write_eof()  # "that is all": the server reads the end of the stream
        last = yield reader.read_line()
        if last is not None:
            print(last.decode())
    finally:
        yield writer.close()  # flushes, then closes; it never fails


if __name__ == "__main__":
    react(main, sys.argv[1:])
