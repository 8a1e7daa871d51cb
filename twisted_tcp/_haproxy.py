"""
The PROXY protocol (v1 and v2), for servers behind HAProxy or another load
balancer that sends it: C{on_endpoint("haproxy:tcp:9000")}.

Twisted's own wrapper connects the server's protocol as soon as TCP connects,
before the header arrives, so the protocol's C{getPeer()} at that moment is
the load balancer's address.  This one connects the server's protocol only
once the header has been read, so the handler's C{address} is the real
client's.  A peer that sends no valid header within L{HEADER_TIMEOUT}
seconds, or sends something else, is disconnected without reaching the
server's protocol at all.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IProtocolFactory
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from ._proxy_header import NEED, InvalidHeader, ProxiedAddresses, bytes_needed, read_header
from ._where import show_address

HEADER_TIMEOUT = 30.0
"""Seconds a new connection has to send its PROXY header."""

MAX_WAITING = 1000
"""Connections that may wait for their PROXY header at once; beyond, new ones are closed."""

_log = Logger()


@implementer(IHalfCloseableProtocol)
class _HeaderFirst(ProtocolWrapper):
    _info: ProxiedAddresses | None = None
    _start: bytearray | None = None  # the header's beginning, while it comes in pieces
    _need = 0  # ... and how many bytes it must have before it is read again
    _timer: Any = None
    _waiting = False  # counted in the factory's waiting

    def _below(self) -> Any:
        return self.transport

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection, less the wrapped protocol's: that
        # waits for the header.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        factory = self.factory
        factory.registerProtocol(self)
        if factory.waiting >= MAX_WAITING:
            factory.too_many_waiting()
            transport.abortConnection()
            return
        factory.waiting += 1
        self._waiting = True
        self._timer = factory.clock.callLater(HEADER_TIMEOUT, self._too_slow)

    def _done_waiting(self) -> None:
        if self._waiting:
            self._waiting = False
            self.factory.waiting -= 1
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _too_slow(self) -> None:
        self._timer = None
        _log.info(
            "PROXY protocol: no header from {peer} within {timeout:g} s; disconnecting",
            peer=show_address(self._below().getPeer()),
            timeout=HEADER_TIMEOUT,
        )
        self._below().abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._info is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        start = self._start
        if start is not None:
            start += data  # (a bytearray: a header of 64 KiB in pieces costs no copy per piece)
            if len(start) < self._need:
                return
            data = bytes(start)
            self._start = None
        try:
            header = read_header(data)
        except InvalidHeader as e:
            self._refuse(str(e))
            return
        if header is NEED:  # a header's beginning: read it again once enough has come
            self._start = bytearray(data)
            self._need = bytes_needed(data)
            return
        assert isinstance(header, tuple)
        self._info, rest = header
        self._done_waiting()
        self.wrappedProtocol.makeConnection(self)  # type: ignore[arg-type]
        if rest and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(rest)

    def _refuse(self, why: str) -> None:
        _log.info(
            "PROXY protocol: {why} from {peer}; disconnecting",
            why=why,
            peer=show_address(self._below().getPeer()),
        )
        self._below().abortConnection()

    def getPeer(self) -> Any:
        if self._info is not None and self._info.source is not None:
            return self._info.source
        return self._below().getPeer()

    def getHost(self) -> Any:
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        return self._below().getHost()

    def readConnectionLost(self) -> None:
        if self._info is None:
            self._below().loseConnection()
            return
        halfclose = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if halfclose is not None:
            halfclose.readConnectionLost()
        else:
            self._below().loseConnection()

    def writeConnectionLost(self) -> None:
        halfclose = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if self._info is not None and halfclose is not None:
            halfclose.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._done_waiting()
        if self._info is not None:
            ProtocolWrapper.connectionLost(self, reason)
        else:
            self.factory.unregisterProtocol(self)
            self.wrappedProtocol = None  # type: ignore[assignment]


class ProxyHeaderFactory(WrappingFactory):
    """Wraps a server factory: its protocols are connected once the PROXY header is read."""

    protocol = _HeaderFirst
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, clock: Any) -> None:
        super().__init__(wrapped)
        self.clock = clock
        self.waiting = 0  # connections waiting for their header
        self._warned = False

    def too_many_waiting(self) -> None:
        """A connection is refused: L{MAX_WAITING} others wait for their header."""
        if not self._warned:
            self._warned = True
            _log.warn(
                "PROXY protocol: {n} connections are waiting for their header; closing new "
                "ones until fewer wait (logged once)",
                n=self.waiting,
            )

    def logPrefix(self) -> str:
        return f"{super().logPrefix()} (PROXY)"

    def doStop(self) -> None:
        """
        The port stopped listening: connections still waiting for their
        header never reached the server, which no longer takes any, so
        they are closed now.
        """
        for protocol in list(self.protocols):
            if isinstance(protocol, _HeaderFirst) and protocol._info is None:
                protocol._below().abortConnection()
        super().doStop()
