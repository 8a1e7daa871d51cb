"""
The same client as client_inlinecallbacks.py, written with async def and
with_connection, which closes the connection for us.

    python docs/examples/client_async.py 127.0.0.1 9000 hello world
"""

import sys

from twisted.internet.task import react

import twisted_tcp


async def main(reactor, host, port, *lines):
    async def talk(sock, reader, writer):
        for line in lines:
            writer.write_line(line.encode())
        await writer.write_eof()
        return [reply.decode() async for reply in reader.lines()]

    where = twisted_tcp.to_host_and_port(host, int(port))
    replies = await twisted_tcp.with_connection(where, talk, timeout=5, reactor=reactor)
    for reply in replies:
        print(reply)


if __name__ == "__main__":
    react(main, sys.argv[1:])
