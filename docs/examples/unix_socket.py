"""
A server on a Unix-domain socket, and a client of it: what happens to the
socket file.

    python docs/examples/unix_socket.py /tmp/demo.sock
"""

import os
import sys

from twisted.internet.error import CannotListenError
from twisted.internet.task import react

import twisted_tcp


async def echo(address, reader, writer):
    async for line in reader.lines():
        writer.write_line(line)


async def main(reactor, path):
    # A socket file left by a server that died is replaced; a live one is not.
    server = await twisted_tcp.Server.create(twisted_tcp.on_file(path), echo, reactor=reactor)
    print(f"listening on {server.listening_on}")
    try:

        async def ping(sock, reader, writer):
            writer.write_line(b"ping")
            return await reader.read_line()

        where = twisted_tcp.to_file(path)
        reply = await twisted_tcp.with_connection(where, ping, timeout=5, reactor=reactor)
        print(f"reply: {reply.decode()}")
        try:
            other = await twisted_tcp.Server.create(twisted_tcp.on_file(path), echo)
        except CannotListenError as e:
            print(f"a second server is refused: {e}")
        else:
            await other.close()
    finally:
        await server.close()
    print(f"after close, the socket file exists: {os.path.exists(path)}")


if __name__ == "__main__":
    react(main, sys.argv[1:])
