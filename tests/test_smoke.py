import pytest_twisted

import twisted_tcp as tt
from twisted_tcp.examples.echo import handle

from .conftest import within


@pytest_twisted.ensureDeferred
async def test_echo_round_trip() -> None:
    server = await within(tt.Server.create(tt.on_port(0, interface="127.0.0.1"), handle))
    try:

        async def client(sock, reader, writer):
            writer.write_line(b"hello")
            return await reader.read_line()

        where = tt.to_host_and_port("127.0.0.1", server.listening_on)
        assert await within(tt.with_connection(where, client)) == b"hello"
    finally:
        await within(server.close())
