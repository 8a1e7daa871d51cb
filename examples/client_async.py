"""
A client written with async def: send lines over one connection with
with_connection, then print every reply.

Start a server first, e.g. the line-echo example:

    twistd -n --pidfile= tcpserver --port 9000 --handler twisted_tcp.examples.echo:handle

then:

    python examples/client_async.py 127.0.0.1 9000 hello "how are you"

Every argument after the port is sent as one line (without any, a default
greeting), the end of the stream is sent, and the replies are read until the
server closes the connection.  with_connection closes the connection after
talk() returns, and returns what talk() returned.
"""

import sys

from twisted.internet.defer import Deferred
from twisted.internet.task import react

import twisted_tcp


async def talk(sock, reader, writer, lines):
    for line in lines:
        writer.write_line(line.encode())
    await writer.write_eof()  # "that is all": the handler reads the end of the stream
    return [line async for line in reader.lines()]


async def main(reactor, host, port, *lines):
    where = twisted_tcp.to_host_and_port(host, int(port))
    lines = lines or ("hello, world",)
    replies = await twisted_tcp.with_connection(
        where, lambda sock, reader, writer: talk(sock, reader, writer, lines), timeout=5
    )
    print(f"sent {len(lines)} line(s) to {host}:{port}, got {len(replies)} back:")
    for reply in replies:
        print(reply.decode(errors="replace"))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(f"usage: {sys.argv[0]} HOST PORT [LINE ...]")
    react(lambda reactor, *args: Deferred.fromCoroutine(main(reactor, *args)), sys.argv[1:])
