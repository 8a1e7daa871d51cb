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
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

HEADER_TIMEOUT = 30.0
"""Seconds a new connection has to send its PROXY header."""

_log = Logger()
_V1_START = V1Parser.PROXYSTR + b" "


@implementer(IHalfCloseableProtocol)
class _HeaderFirst(ProtocolWrapper):
    _parser: V1Parser | V2Parser | None = None
    _info: Any = None
    _start = b""
    _timer: Any = None

    def _below(self) -> Any:
        return self.transport

    def makeConnection(self, transport: Any) -> None:
        # ProtocolWrapper.makeConnection, less the wrapped protocol's: that
        # waits for the header.
        directlyProvides(self, providedBy(transport))
        Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timer = self.factory.clock.callLater(HEADER_TIMEOUT, self._too_slow)

    def _too_slow(self) -> None:
        self._timer = None
        _log.info(
            "PROXY protocol: no header from {peer} within {timeout:g} s; disconnecting",
            peer=self._below().getPeer(),
            timeout=HEADER_TIMEOUT,
        )
        self._below().abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._info is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        parser = self._parser
        if parser is None:
            data = self._start + data
            self._start = b""
            if data[:6] == _V1_START:
                parser = V1Parser()
            elif len(data) > 12 and data[:12] == V2Parser.PREFIX and data[12] & 0xF0 == 0x20:
                parser = V2Parser()
            elif len(data) <= 12 and (
                V2Parser.PREFIX.startswith(data) or _V1_START.startswith(data)
            ):
                self._start = data  # too short to tell yet
                return
            else:
                self._refuse("not a PROXY protocol header")
                return
            self._parser = parser
        try:
            info, rest = parser.feed(data)
        except InvalidProxyHeader as e:
            self._refuse(f"invalid PROXY protocol header ({type(e).__name__})")
            return
        if info is None:
            return
        self._info = info
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.wrappedProtocol.makeConnection(self)  # type: ignore[arg-type]
        if rest and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(rest)

    def _refuse(self, why: str) -> None:
        _log.info(
            "PROXY protocol: {why} from {peer}; disconnecting",
            why=why,
            peer=self._below().getPeer(),
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
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
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

    def logPrefix(self) -> str:
        return f"{super().logPrefix()} (PROXY)"
