"""
A handler for the endpoint tests (tests/test_endpoints.py), which a C{twistd
tcpserver} subprocess imports as
C{tests.helpers.endpoint_handlers:tell_address}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress

from twisted_tcp import Reader, Writer
from twisted_tcp._where import show_address


async def tell_address(address: IAddress, reader: Reader, writer: Writer) -> None:
    """
    Write the peer's address as the handler got it (C{host:port},
    C{[v6]:port} or C{unix:path}) on a line of its own, then echo lines
    until the end of the stream.
    """
    writer.write_line(show_address(address).encode())
    async for line in reader.lines():
        writer.write_line(line)
