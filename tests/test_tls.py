"""
TLS, over real sockets on 127.0.0.1: a certificate authority and a server
certificate for C{localhost} and 127.0.0.1 are made for the session
(C{trustme}: tests/helpers/pki.py, the C{pki} fixture of conftest.py); the
client trusts that authority through Twisted's C{optionsForClientTLS}.
The Reader and Writer must behave as over plain TCP: flushes,
back-pressure, the end of the stream; the deadline and the interrupt cover
the handshake; a failed handshake is a clear error.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_twisted
from cryptography import x509
from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

import twisted_tcp as tt
from twisted_tcp._tls import split_transport

from .conftest import LOCAL, WAIT, echo, logged_errors, serving, sleep, until, within
from .helpers.pki import Pki
from .processes import Process, start
from .test_lean_paths import record_writes
from .test_plugin import ECHO, listening, twistd

__all__ = ["start"]  # the fixture, imported for the tests below

MiB = 1 << 20


# -- certificates ----------------------------------------------------------------
# The test PKI (tests/helpers/pki.py, made with trustme) is the session's
# C{pki} fixture (conftest.py): an authority, a server certificate it signed
# for localhost and 127.0.0.1, and a self-signed certificate.


def tls_server_where(pki: Pki) -> tt.WhereToListen:
    return tt.on_port(0, interface=LOCAL, tls=pki.files)


def to(server: tt.Server, pki: Pki, host: str = "localhost") -> tt.WhereToConnect:
    return tt.to_host_and_port(host, server.listening_on, tls=pki.trust(host))


def certificate_options(pki: Pki, **kwargs: Any) -> Any:
    """Twisted's server TLS options for the test certificate."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from twisted.internet.ssl import CertificateOptions

    return CertificateOptions(
        privateKey=load_pem_private_key(pki.key.read_bytes(), None),  # type: ignore[arg-type]
        certificate=x509.load_pem_x509_certificate(pki.cert.read_bytes()),  # type: ignore[arg-type]
        **kwargs,
    )


def tls_1_2_where(pki: Pki) -> tt.WhereToListen:
    """
    A TLS server that will not go above TLS 1.2: capped on the options'
    context, as Twisted's lowerMaximumSecurityTo=TLSv1_2 leaves out TLS 1.2
    too before Twisted 26.4 (no version is left).
    """
    from OpenSSL import SSL

    options = certificate_options(pki)
    options.getContext().set_max_proto_version(SSL.TLS1_2_VERSION)
    return tt.on_port(0, interface=LOCAL, tls=options)


def twisted_tls_where(pki: Pki) -> tt.WhereToListen:
    """
    A TLS server behind Twisted's own TLS layer: an endpoint object, which
    listens as it is (an ssl: description gets this package's layer).
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint

    endpoint = SSL4ServerEndpoint(reactor, 0, certificate_options(pki), interface=LOCAL)
    return tt.on_endpoint(endpoint)


async def flush_outcome(writer: tt.Writer) -> Any:
    """C{"flushed"}, or the exception that C{writer.flushed()} failed with."""
    try:
        await writer.flushed()
    except Exception as e:
        return e
    return "flushed"


# -- round trips -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_round_trip(pki: Pki) -> None:
    """Lines go both ways over TLS; flushed() fires; the server saw a TLS peer."""
    seen: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        seen.append(address)
        await echo(address, reader, writer)

    async with serving(handler, tls_server_where(pki)) as server:

        async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> list[bytes | None]:
            # The writer reads what Twisted's TLS layer holds through these
            # private attributes: a Twisted that renames them must fail here.
            _, tls = split_transport(sock.transport)
            assert isinstance(tls._appSendBuffer, list)
            assert isinstance(tls._aggregator._buffer, list)
            assert tls._lostTLSConnection is False
            writer.write_line(b"hello")
            await within(writer.flushed())
            assert writer.bytes_to_write == 0
            first = await reader.read_line()
            writer.write_line(b"x" * 60_000)
            writer.write_line(b"bye")
            return [first, await reader.read_line(), await reader.read_line()]

        assert await within(tt.with_connection(to(server, pki), f)) == [
            b"hello",
            b"x" * 60_000,
            b"bye",
        ]
    assert len(seen) == 1 and seen[0].host == LOCAL


@pytest_twisted.ensureDeferred
async def test_tls_to_an_ip_address(pki: Pki) -> None:
    """The certificate names 127.0.0.1 too: TLS to the IP literal is verified against it."""
    async with serving(echo, tls_server_where(pki)) as server:
        sock, reader, writer = await within(tt.connect(to(server, pki, LOCAL)))
        try:
            writer.write_line(b"by address")
            assert await within(reader.read_line()) == b"by address"
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert sock.fileno() >= 0
        finally:
            await within(writer.close())
    assert sock.is_closed


@pytest_twisted.ensureDeferred
async def test_tls_connect_sock_then_reader_writer(pki: Pki) -> None:
    """connect_sock over TLS returns after the handshake; a reader and writer attach later."""
    async with serving(echo, tls_server_where(pki)) as server:
        sock = await within(tt.connect_sock(to(server, pki)))
        try:
            await sleep(0.05)  # bytes arriving now wait for the reader
            reader, writer = sock.reader_writer()
            writer.write_line(b"attached late")
            assert await within(reader.read_line()) == b"attached late"
        finally:
            await within(sock.close())


@pytest_twisted.ensureDeferred
async def test_tls_sixteen_mib_with_back_pressure(pki: Pki) -> None:
    """
    16 MiB over TLS arrive intact.  While the server's handler does not read,
    the client's flushed() stays pending (its bytes are held by the kernel
    and TLS buffers); it fires once the handler reads.
    """
    may_read: Deferred[None] = Deferred()
    digest: list[str] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await may_read
        h = hashlib.sha256()
        while chunk := await reader.read():
            h.update(chunk)
        digest.append(h.hexdigest())
        writer.write_line(b"got it")

    data = os.urandom(16 * MiB)
    async with serving(handler, tls_server_where(pki), reader_buffer_size=64 * 1024) as server:
        _, reader, writer = await within(tt.connect(to(server, pki)))
        try:
            for i in range(0, len(data), MiB):
                writer.write(data[i : i + MiB])
            flushed = writer.flushed()
            await sleep(0.3)
            assert not flushed.called
            assert writer.bytes_to_write > 0
            may_read.callback(None)
            await within(flushed, 30)
            assert writer.bytes_to_write == 0
            await within(writer.write_eof())
            assert await within(reader.read_line()) is None or digest
        finally:
            await within(writer.close())
        await until(lambda: digest)
    assert digest == [hashlib.sha256(data).hexdigest()]


@pytest_twisted.ensureDeferred
async def test_tls_write_eof_then_read_the_reply(pki: Pki) -> None:
    """
    Under TLS 1.3, write_eof() is a half-close, as over TCP: close_notify
    leaves after every line, the server reads them and the end of the
    stream, and its reply still reaches the client, followed by the end.
    """

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        lines = [line async for line in reader.lines()]
        writer.write_line(b"you sent %d lines, the last %s" % (len(lines), lines[-1]))
        await writer.flushed()

    async with serving(handler, tls_server_where(pki)) as server:
        _, reader, writer = await within(tt.connect(to(server, pki)))
        try:
            for i in range(1000):
                writer.write_line(b"line %d" % i)
            await within(writer.write_eof())
            assert writer.is_closed
            with pytest.raises(tt.WriterClosedError):
                writer.write(b"more")
            assert await within(reader.read_line()) == b"you sent 1000 lines, the last line 999"
            assert await within(reader.read_line()) is None
        finally:
            await within(writer.close())


@pytest_twisted.ensureDeferred
async def test_tls_bytes_after_close_notify_are_ignored(pki: Pki) -> None:
    """
    What a peer sends after its close_notify is dropped as it arrives (not
    kept in memory, not read): the server read its lines, the end, and its
    reply still arrives.
    """
    received: list[list[bytes]] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        received.append([line async for line in reader.lines()])
        await sleep(0.2)  # while the junk arrives
        writer.write_line(b"done")

    async with serving(handler, tls_server_where(pki)) as server:
        sock, reader, writer = await within(tt.connect(to(server, pki)))
        try:
            writer.write_line(b"the only line")
            await within(writer.write_eof())
            sink, _ = split_transport(sock.transport)
            for _ in range(64):
                sink.write(b"junk after close_notify " * 4096)  # under TLS: not a record
            assert await within(reader.read_line()) == b"done"
            assert await within(reader.read_line()) is None
        finally:
            await within(writer.close())
    assert received == [[b"the only line"]]


@pytest_twisted.ensureDeferred
async def test_tls_fin_without_close_notify_ends_the_connection_at_once(pki: Pki) -> None:
    """
    A peer that shuts its TCP side without a close_notify (a truncated
    stream) ends the connection at once, even with megabytes unsent to it,
    and the handler sees the connection lost.
    """
    outcome: list[Any] = []

    async def pusher(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write(b"p" * (16 * MiB))
        outcome.append(await flush_outcome(writer))

    async with serving(
        pusher, tls_server_where(pki), buffer_age_limit=10 * WAIT, close_timeout=10 * WAIT
    ) as server:
        sock, _, writer = await within(tt.connect(to(server, pki), reader_buffer_size=1024))
        try:
            sink, _ = split_transport(sock.transport)
            sink.unregisterProducer()  # the writer's: it would hold the FIN back
            sink.loseWriteConnection()  # a FIN, and no close_notify
            await until(lambda: outcome)
            assert isinstance(outcome[0], ConnectionLost)
            await until(lambda: server.num_connections == 0)
        finally:
            writer.abort()
            await within(sock.close_finished())


@pytest_twisted.ensureDeferred
async def test_tls_socket_close_lets_an_attached_producer_finish(pki: Pki) -> None:
    """
    Socket.close() with a protocol attached whose producer still writes:
    the TLS layer sends close_notify once it is done, and every byte arrives.
    """
    sizes: list[int] = []

    async def count(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        sizes.append(len(await reader.contents()))

    chunks = 64
    async with serving(count, tls_server_where(pki)) as server:
        sock = await within(tt.connect_sock(to(server, pki)))
        sender = Protocol()
        sock.attach_protocol(sender)
        producer = Trickle(sender.transport, chunks)
        sender.transport.registerProducer(producer, True)  # type: ignore[union-attr]
        closed = sock.close()
        await until(lambda: sizes)
        await within(closed)
    assert sizes == [chunks * 16384]


@implementer(IPushProducer)
class Trickle:
    """Writes one 16 KiB chunk per reactor turn, so the socket drains in between."""

    def __init__(self, transport: Any, chunks: int) -> None:
        self.transport = transport
        self.left = chunks
        self.call = reactor.callLater(0, self.step)  # type: ignore[attr-defined]

    def step(self) -> None:
        self.transport.write(b"t" * 16384)
        self.left -= 1
        if self.left:
            self.call = reactor.callLater(0.001, self.step)  # type: ignore[attr-defined]
        else:
            self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        if self.call.active():
            self.call.cancel()


@pytest_twisted.ensureDeferred
async def test_tls_server_half_closes_first(pki: Pki) -> None:
    """The server sends a banner and its end of stream; the client still answers, and is read."""
    answers: list[bytes | None] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write_line(b"say something")
        await writer.write_eof()
        answers.append(await reader.read_line())

    async with serving(handler, tls_server_where(pki)) as server:
        _, reader, writer = await within(tt.connect(to(server, pki)))
        try:
            assert await within(reader.read_line()) == b"say something"
            assert await within(reader.read_line()) is None
            writer.write_line(b"something")
            await within(writer.flushed())
        finally:
            await within(writer.close())
        await until(lambda: answers)
    assert answers == [b"something"]


@pytest_twisted.ensureDeferred
async def test_tls_replies_leave_without_twisted_buffering_them(pki: Pki) -> None:
    """
    Over our TLS layer, as on a plain socket, what a handler writes as it
    handles a line, and what with_connection's f writes as it starts, is
    encrypted and handed to the kernel in that turn: nothing reaches the
    TCP transport's buffer, and each writer knows its bytes have left.
    """
    buffered: list[bytes] = []
    drained: list[int] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        record_writes(split_transport(writer.socket.transport)[0], buffered)
        async for line in reader.lines():
            drained.append(writer.bytes_to_write)  # (the replies before, all gone)
            writer.write_line(line + b"!")
            writer.write(b"x" * 20000 + b"\n")

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> list[bytes]:
        record_writes(split_transport(sock.transport)[0], buffered)
        got = []
        for i in range(3):
            writer.write_line(b"%d" % i)
            got.append(await reader.read_line())
            drained.append(writer.bytes_to_write)
            assert await reader.read_line() == b"x" * 20000
        return got

    async with serving(handler, tls_server_where(pki)) as server:
        got = await within(tt.with_connection(to(server, pki), f))
    assert got == [b"0!", b"1!", b"2!"]
    assert drained == [0] * 6
    # Only the close_notify alerts went through a buffer (24 bytes each).
    assert all(len(data) < 100 for data in buffered), [len(data) for data in buffered]


@pytest_twisted.ensureDeferred
async def test_tls_a_write_that_an_openssl_error_drops_is_not_called_flushed(pki: Pki) -> None:
    """
    OpenSSL fails a write sent at once (the TLS session ends there): the
    bytes are not counted as sent, and flushed() fails.
    """
    from OpenSSL.SSL import Error

    class Failing:
        def __init__(self, connection: Any) -> None:
            self._connection = connection

        def send(self, data: bytes) -> int:
            raise Error([("SSL routines", "", "a test's failure")])

        def __getattr__(self, name: str) -> Any:
            return getattr(self._connection, name)

    async with serving(echo, tls_server_where(pki)) as server:
        sock, reader, writer = await within(tt.connect(to(server, pki)))
        writer.write_line(b"first")  # (the handshake's last records gone both ways)
        assert await within(reader.read_line()) == b"first"
        _, tls = split_transport(sock.transport)
        tls._tlsConnection = Failing(tls._tlsConnection)
        writer.write(b"x" * 20000)
        assert writer.bytes_to_write == 20000
        assert await within(flush_outcome(writer)) != "flushed"


@pytest_twisted.ensureDeferred
async def test_tls_bytes_to_write_after_the_kernel_took_part_of_a_write(pki: Pki) -> None:
    """
    Writes of 60,000 bytes sent at once to a peer that does not read: once
    the kernel takes only part of one, bytes_to_write counts what waits (in
    encrypted bytes, a little more than the plaintext), not the whole write.
    """
    stop: Deferred[None] = Deferred()

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await stop  # reads nothing

    async with serving(handler, tls_server_where(pki), reader_buffer_size=1024) as server:
        sock, _, writer = await within(tt.connect(to(server, pki)))
        try:
            sink, _ = split_transport(sock.transport)
            for _ in range(2000):
                writer.write(b"x" * 60000)
                held = len(sink.dataBuffer) + sink._tempDataLen
                if held:
                    break
            assert held, "the kernel took 120 MB"
            # (Once part of a write waits: not all of it, where the kernel took part.)
            assert writer.bytes_to_write <= held
        finally:
            stop.callback(None)
            writer.abort()


@pytest_twisted.ensureDeferred
async def test_tls_large_replies_to_a_peer_that_reads_late_keep_their_order(pki: Pki) -> None:
    """
    Replies the kernel cannot take at once: the rest waits in the transport,
    and the replies after it wait behind it, whole and in order.
    """

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        async for line in reader.lines():
            writer.write(line * 4096 + b"\n")

    async with serving(handler, tls_server_where(pki)) as server:
        _, reader, writer = await within(tt.connect(to(server, pki), reader_buffer_size=1024))
        try:
            for i in range(40):
                writer.write_line(b"%03d" % i)
            await sleep(0.2)  # the server replies to a peer that reads nothing meanwhile
            for i in range(40):
                assert await within(reader.read_line()) == b"%03d" % i * 4096
        finally:
            await within(writer.close())


@pytest_twisted.ensureDeferred
async def test_tls_close_flushes_then_closes(pki: Pki) -> None:
    """writer.close() flushes a large write, sends close_notify, and the connection ends."""
    sizes: list[int] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        sizes.append(len(await reader.contents()))

    async with serving(handler, tls_server_where(pki)) as server:
        sock, _, writer = await within(tt.connect(to(server, pki)))
        writer.write(b"z" * (3 * MiB))
        await within(writer.close())
        assert sock.is_closed
        await until(lambda: sizes)
    assert sizes == [3 * MiB]


@pytest_twisted.ensureDeferred
async def test_tls_peer_that_never_reads_hits_the_buffer_age_limit(pki: Pki) -> None:
    """
    A TLS client that stops reading: the server's flushed() fails with
    BufferAgeLimitError after the limit, the connection is aborted, and the
    error is reported once.
    """
    errors: list[BaseException] = []
    outcome: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write(b"y" * (16 * MiB))
        try:
            await writer.flushed()
            outcome.append("flushed")
        except Exception as e:
            outcome.append(e)
            raise

    async with serving(
        handler,
        tls_server_where(pki),
        buffer_age_limit=0.5,
        on_handler_error=lambda address, exc: errors.append(exc),
    ) as server:
        _, _, writer = await within(tt.connect(to(server, pki), reader_buffer_size=1024))
        try:
            await until(lambda: outcome)
            assert isinstance(outcome[0], tt.BufferAgeLimitError)
            assert "stopped reading" in str(outcome[0])
            await until(lambda: server.num_connections == 0)
            # The client, not reading, learns of the abort when it next writes.
        finally:
            await within(writer.close())
    assert len(errors) == 1 and isinstance(errors[0], tt.BufferAgeLimitError)


@pytest.mark.parametrize(
    ("server", "version"), [(tls_1_2_where, "TLSv1.2"), (twisted_tls_where, "TLSv1.3")]
)
@pytest.mark.parametrize("size", [20, 20000])
@pytest_twisted.ensureDeferred
async def test_tls_reply_after_the_clients_close_notify_is_not_called_flushed(
    pki: Pki, server: Callable[[Pki], tt.WhereToListen], version: str, size: int
) -> None:
    """
    Where the connection ends on the peer's close_notify — TLS 1.2, which
    requires it, and Twisted's own TLS layer under any version — the
    server's reply after the client's write_eof() is dropped, not called
    flushed, and the client reads the end of the stream: a small reply, and
    one of 16 KiB or more (which a TLS layer still open takes at once).
    """
    outcome: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        lines = [line async for line in reader.lines()]
        writer.write(b"reply to %d lines" % len(lines) + b"." * size + b"\n")
        outcome.append(await flush_outcome(writer))

    async with serving(handler, server(pki)) as listening:
        sock, reader, writer = await within(tt.connect(to(listening, pki)))
        try:
            _, tls = split_transport(sock.transport)
            assert tls.getHandle().get_protocol_version_name() == version
            writer.write_line(b"request")
            await within(writer.write_eof())
            assert await within(reader.read_line()) is None
        finally:
            await within(writer.close())
        await until(lambda: outcome)
    assert outcome != ["flushed"]


@pytest_twisted.ensureDeferred
async def test_tls_server_closes_without_waiting_for_the_peers_close_notify(pki: Pki) -> None:
    """
    A handler's reply is flushed and the connection closed once our
    close_notify has left, even with a client that never reads (and so never
    answers it): the slot is free long before close_timeout.
    """

    async def reply(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write_line(b"bye")

    async with serving(reply, tls_server_where(pki), close_timeout=10 * WAIT) as server:
        sock = await within(tt.connect_sock(to(server, pki)))
        try:
            await until(lambda: server.num_connections == 0)
        finally:
            await within(sock.close())  # nothing attached: close_notify, then the socket
        assert sock.is_closed


@pytest_twisted.ensureDeferred
async def test_tls_write_eof_not_awaited_before_the_handshake(pki: Pki) -> None:
    """
    A handler that writes a banner, calls write_eof() without waiting and
    returns, before the handshake is even done: the client still gets the
    banner, then the end of the stream.
    """

    async def banner(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write_line(b"220 hello")
        writer.write_eof()

    async with serving(banner, tls_server_where(pki)) as server:
        _, reader, writer = await within(tt.connect(to(server, pki)))
        try:
            assert await within(reader.read_line()) == b"220 hello"
            assert await within(reader.read_line()) is None
        finally:
            await within(writer.close())


@pytest_twisted.ensureDeferred
async def test_tls_ssl_client_endpoint(pki: Pki) -> None:
    """An ssl: client description (connectSSL, with a wrapper of its own) does its handshake."""
    async with serving(echo, tls_server_where(pki)) as server:
        where = tt.to_endpoint(
            f"ssl:host=localhost:port={server.listening_on}:caCertsDir={pki.roots}"
        )
        _, reader, writer = await within(tt.connect(where))
        try:
            writer.write_line(b"through connectSSL")
            assert await within(reader.read_line()) == b"through connectSSL"
        finally:
            await within(writer.close())


# -- failures ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_tls_wrong_host_name_fails_clearly(pki: Pki) -> None:
    """A certificate not valid for the name asked for: TLSHandshakeError naming it."""
    async with serving(echo, tls_server_where(pki)) as server:
        where = tt.to_host_and_port(LOCAL, server.listening_on, tls=pki.trust("wrong.example"))
        with pytest.raises(tt.TLSHandshakeError) as caught:
            await within(tt.connect(where))
        message = str(caught.value)
        assert f"tls:{LOCAL}:{server.listening_on}" in message
        assert "wrong.example" in message
        assert isinstance(caught.value, tt.TLSHandshakeError)
        await until(lambda: server.num_connections == 0)


@pytest_twisted.ensureDeferred
async def test_tls_untrusted_certificate_fails_clearly(pki: Pki) -> None:
    """tls=True checks the system's trust store, which does not hold the test authority."""
    async with serving(echo, tls_server_where(pki)) as server:
        where = tt.to_host_and_port("localhost", server.listening_on, tls=True)
        with pytest.raises(tt.TLSHandshakeError, match="certificate verify failed"):
            await within(tt.connect(where))
        # A self-signed certificate is refused the same way by a client that trusts the CA.
    where_self_signed = tt.on_port(
        0, interface=LOCAL, tls=(pki.self_signed_cert, pki.self_signed_key)
    )
    async with serving(echo, where_self_signed) as server:
        with pytest.raises(tt.TLSHandshakeError, match="certificate verify failed"):
            await within(tt.connect(to(server, pki)))


@pytest_twisted.ensureDeferred
async def test_tls_client_to_a_plain_server(pki: Pki) -> None:
    """A TLS client meeting a server that answers in plain text gets a TLSHandshakeError."""

    async def banner(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write_line(b"220 plain text service ready")
        await echo(address, reader, writer)

    async with serving(banner) as server:
        with pytest.raises(tt.TLSHandshakeError, match="handshake with tls:localhost"):
            await within(tt.connect(to(server, pki), timeout=WAIT))


@pytest_twisted.ensureDeferred
async def test_plain_client_to_a_tls_server_does_not_hurt_it(pki: Pki) -> None:
    """Plaintext to a TLS port closes that connection; the server goes on serving TLS."""
    async with serving(echo, tls_server_where(pki)) as server:
        _, reader, writer = await within(
            tt.connect(tt.to_host_and_port(LOCAL, server.listening_on))
        )
        try:
            writer.write_line(b"GET / HTTP/1.0\r\n")
            assert await within(reader.contents()) == b""
        finally:
            await within(writer.close())
        _, reader, writer = await within(tt.connect(to(server, pki)))
        writer.write_line(b"still here")
        assert await within(reader.read_line()) == b"still here"
        await within(writer.close())


class Silent(Protocol):
    """Accepts and never answers: a TLS client's handshake never completes."""

    lost: ClassVar[list[Silent]] = []

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        Silent.lost.append(self)


@pytest.mark.parametrize("how", ["timeout", "interrupt", "cancel"])
@pytest.mark.parametrize("kind", ["tls=", "tls: description"])
@pytest_twisted.ensureDeferred
async def test_tls_handshake_is_under_the_deadline(how: str, kind: str, pki: Pki) -> None:
    """
    The deadline, the interrupt and cancel() cover the handshake, with tls=
    as with a tls: endpoint description: the connection is aborted (the
    server sees it go) and the error names the address.
    """
    Silent.lost = []
    port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface=LOCAL)  # type: ignore[attr-defined]
    try:
        number = port.getHost().port
        if kind == "tls=":
            where = tt.to_host_and_port("localhost", number, tls=pki.trust())
        else:
            where = tt.to_endpoint(f"tls:localhost:{number}:trustRoots={pki.roots}")
        interrupt: Deferred[None] = Deferred()
        attempt = tt.connect(
            where,
            timeout=0.3 if how == "timeout" else WAIT,
            interrupt=interrupt if how == "interrupt" else None,
        )
        expected: type[BaseException] = tt.ConnectTimeoutError
        if how != "timeout":
            await sleep(0.2)
            if how == "interrupt":
                interrupt.callback(None)
                expected = tt.ConnectInterruptedError
            else:
                attempt.cancel()
                expected = CancelledError
        with pytest.raises(expected, match=re.escape(str(where))):
            await within(attempt)
        await until(lambda: len(Silent.lost) == 1)
    finally:
        await within(port.stopListening())


def test_tls_server_files_are_checked_when_made(pki: Pki, tmp_path: Path) -> None:
    """A missing file, a file without a certificate, a key of another certificate: ValueError."""
    with pytest.raises(ValueError, match=r"cannot read the TLS certificate file .*missing\.pem"):
        tt.on_port(0, tls=(tmp_path / "missing.pem", pki.key))
    with pytest.raises(ValueError, match="no PEM certificate"):
        tt.on_port(0, tls=(pki.key, pki.key))
    with pytest.raises(ValueError, match="does not go with the certificate"):
        tt.on_port(0, tls=(pki.cert, pki.self_signed_key))
    with pytest.raises(TypeError, match="tls must be"):
        tt.on_port(0, tls=42)
    with pytest.raises(TypeError, match="tls must be True"):
        tt.to_host_and_port("localhost", 443, tls="yes")  # type: ignore[arg-type]
    both = tmp_path / "both.pem"
    both.write_bytes(pki.cert.read_bytes() + pki.key.read_bytes())
    assert tt.on_port(443, tls=both).tls is not None
    assert str(tt.on_port(443, tls=pki.files)) == "tls:0.0.0.0:443"
    assert repr(tt.to_host_and_port("localhost", 443, tls=True)).endswith("tls=...)")


# -- twistd ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_twistd_serves_tls(start: Callable[..., Process], pki: Pki) -> None:
    """twistd tcpserver --tls-cert/--tls-key serves TLS; a client that trusts the CA talks."""
    process = twistd(
        start,
        "--port", "0",
        "--tls-cert", str(pki.cert),
        "--tls-key", str(pki.key),
        "--handler", ECHO,
    )  # fmt: skip
    address = await listening(process, ECHO)
    port = int(address.rsplit(":", 1)[1])
    where = tt.to_host_and_port("localhost", port, tls=pki.trust())

    async def f(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> bytes | None:
        writer.write_line(b"over tls")
        return await reader.read_line()

    assert await within(tt.with_connection(where, f)) == b"over tls"
    with logged_errors():
        with pytest.raises(tt.TLSHandshakeError):
            await within(tt.connect(tt.to_host_and_port("localhost", port, tls=True)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "{cert}"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "{missing}", "--tls-key", "{key}"], "cannot read the TLS certificate"),
        (["--tls-cert", "{cert}", "--tls-key", "{cert}"], "no usable PEM private key"),
    ],
)
def test_twistd_tls_option_errors(pki: Pki, tmp_path: Path, args: list[str], message: str) -> None:
    """Wrong TLS options are usage errors that say what is wrong."""
    from twisted.python import usage

    from twisted_tcp import _twistd

    values = {"cert": pki.cert, "key": pki.key, "missing": tmp_path / "missing.pem"}
    options = _twistd.Options()
    with pytest.raises(usage.UsageError, match=message):
        options.parseOptions(
            ["--port", "0", "--handler", ECHO, *(a.format(**values) for a in args)]
        )
    options = _twistd.Options()
    options.parseOptions(
        ["--port", "tcp:0", "--handler", ECHO, "--tls-cert", str(pki.cert),
         "--tls-key", str(pki.key)]
    )  # fmt: skip
    assert str(options["where"]) == "tls:tcp:0"
