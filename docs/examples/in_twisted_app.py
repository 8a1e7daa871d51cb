"""
twisted_tcp inside an ordinary Twisted application: a LineReceiver protocol
that relays each line of its client to a backend server over a connection of
its own, made with twisted_tcp.connect (a deadline, and the reactor passed
in), and sends back the backend's reply.

    python docs/examples/in_twisted_app.py BACKEND_HOST BACKEND_PORT LISTEN_PORT
"""

import sys

from twisted.internet import endpoints
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.internet.task import react
from twisted.protocols.basic import LineReceiver

import twisted_tcp


class Relay(LineReceiver):
    delimiter = b"\n"

    def connectionMade(self):
        self.backend = None
        self.pauseProducing()  # no line is handled before the backend is there
        self.connecting = twisted_tcp.connect(
            self.factory.backend, timeout=5, reactor=self.factory.reactor
        )
        self.connecting.addCallbacks(self.backend_ready, self.backend_failed)

    def backend_ready(self, connection):
        self.backend = connection
        self.resumeProducing()

    def backend_failed(self, failure):
        if failure.check(CancelledError):
            return  # our client left while we were connecting: see connectionLost
        self.sendLine(b"ERR no backend: " + str(failure.value).encode())
        self.transport.loseConnection()

    def lineReceived(self, line):
        self.pauseProducing()  # one request at a time: replies stay in order
        # Not returned: Twisted (before 26.10) takes a value returned by
        # lineReceived for a reason to drop the connection.
        self.relay(line)

    @inlineCallbacks
    def relay(self, line):
        _sock, reader, writer = self.backend
        writer.write_line(line)
        reply = yield reader.read_line()
        if reply is None:
            self.sendLine(b"ERR the backend closed the connection")
            self.transport.loseConnection()
            return
        self.sendLine(reply)
        self.resumeProducing()

    def connectionLost(self, reason):
        self.connecting.cancel()  # if still connecting: abandon the attempt
        if self.backend is not None:
            _sock, _reader, writer = self.backend
            writer.close()


class RelayFactory(Factory):
    protocol = Relay

    def __init__(self, reactor, backend):
        self.reactor = reactor
        self.backend = backend  # a twisted_tcp.to_host_and_port(...) or to_file(...)


def main(reactor, backend_host, backend_port, listen_port):
    backend = twisted_tcp.to_host_and_port(backend_host, int(backend_port))
    endpoint = endpoints.TCP4ServerEndpoint(reactor, int(listen_port))
    endpoint.listen(RelayFactory(reactor, backend))
    return Deferred()  # serve until Ctrl-C


if __name__ == "__main__":
    react(main, sys.argv[1:])
