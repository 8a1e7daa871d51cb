"""
A handler module that imports in the twistd process but fails to import in
a worker of C{twistd tcpserver --workers} (whose environment names it):
the supervisor must restart it with a growing back-off, not spin.
"""

from __future__ import annotations

import os

from twisted.internet.interfaces import IAddress

from twisted_tcp import Reader, Writer

if os.environ.get("TWISTED_TCP_WORKER"):
    raise RuntimeError("this handler fails to import in every worker")


async def handle(address: IAddress, reader: Reader, writer: Writer) -> None:
    """Never runs: no worker gets this far."""
