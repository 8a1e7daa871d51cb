"""
A TLS server as real clients and proxies use it: ALPN (offered by curl,
openssl s_client, Python's ssl and our own client), the handshake before
the handler with its deadline and its bound, failed handshakes logged, an
idle TLS connection closed at idle_timeout, and the PROXY header read in
clear text before TLS (as HAProxy's C{send-proxy-v2 ssl} sends it).

The tools run as subprocesses (never a blocking socket in the reactor's
thread); a test that needs one that is not installed skips, naming it.
"""

from __future__ import annotations

import re
import shutil
import socket
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.logger import LogLevel, globalLogPublisher

import twisted_tcp as tt
from twisted_tcp import _server
from twisted_tcp._where import show_address

from .conftest import LOCAL, WAIT, echo, logged_errors, raw_client, serving, sleep, until, within
from .helpers.pki import Pki
from .processes import Process, start
from .test_endpoints import v1, v2
from .test_plugin import ECHO, listening, twistd
from .test_tls import tls_server_where, to

__all__ = ["start"]  # the fixture, imported for the tests below


def needs(tool: str) -> Any:
    return pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed")


async def run(start: Callable[..., Process], *args: str | Path, seconds: float = WAIT) -> str:
    """Run a command to its end (bounded); return its output, stdout then stderr."""
    process = start(*args)
    await process.exited(seconds)
    return process.output()


class InfoLog:
    """The text of every info-and-above log event from C{twisted_tcp}, while active."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, event: dict[str, Any]) -> None:
        from twisted.logger import formatEvent

        namespace = str(event.get("log_namespace", ""))
        if namespace.startswith("twisted_tcp") and event.get("log_level") >= LogLevel.info:
            self.lines.append(formatEvent(event))

    def __enter__(self) -> InfoLog:
        globalLogPublisher.addObserver(self)
        return self

    def __exit__(self, *exc: object) -> None:
        globalLogPublisher.removeObserver(self)

    def matching(self, pattern: str) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]


async def http_hello(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    """A tiny HTTP/1.1 server that answers with the ALPN protocol it was reached by."""
    while await reader.read_line():
        pass  # the request line and headers, up to the empty line
    body = f"alpn={writer.socket.alpn_protocol}\n".encode()
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )


def server_kinds(pki: Pki, alpn: list[str] | None) -> dict[str, tt.WhereToListen]:
    """The ways to serve TLS on a port, each with the ALPN protocols C{alpn}."""
    return {
        "on_port": tt.on_port(0, interface=LOCAL, tls=pki.files, alpn=alpn),
        "ssl: description": tt.on_endpoint(
            f"ssl:0:interface={LOCAL}:privateKey={pki.key}:certKey={pki.cert}", alpn=alpn
        ),
        "tcp: description with tls=": tt.on_endpoint(
            f"tcp:0:interface={LOCAL}", tls=pki.files, alpn=alpn
        ),
    }


KINDS = ["on_port", "ssl: description", "tcp: description with tls="]


# -- ALPN ----------------------------------------------------------------------------


@needs("curl")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("alpn", "chosen"), [(None, "None"), (["http/1.1"], "http/1.1")])
@pytest_twisted.ensureDeferred
async def test_curl_offers_alpn_and_is_served(
    start: Callable[..., Process], pki: Pki, kind: str, alpn: list[str] | None, chosen: str
) -> None:
    """
    curl offers h2 and http/1.1 over ALPN: a server that names no protocol
    serves it with none chosen (Twisted's own choice ends the handshake), one
    that speaks http/1.1 chooses it.
    """
    async with serving(http_hello, server_kinds(pki, alpn)[kind]) as server:
        url = f"https://localhost:{server.listening_on}/"
        output = await run(start, "curl", "-sS", "--max-time", str(WAIT), "--cacert", pki.ca, url)
    assert output == f"alpn={chosen}\n"


@needs("openssl")
@pytest.mark.parametrize(
    ("speaks", "offered", "expected"),
    [
        (["http/1.1", "h2"], "h2,http/1.1", "ALPN protocol: http/1.1"),
        (["h2", "http/1.1"], "http/1.1,h2", "ALPN protocol: h2"),
        (["http/1.1", "h2"], "h2", "ALPN protocol: h2"),
        (["http/1.1", "h2"], None, "No ALPN negotiated"),
        (None, "h2,http/1.1", "No ALPN negotiated"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_openssl_s_client_alpn(
    start: Callable[..., Process],
    pki: Pki,
    speaks: list[str] | None,
    offered: str | None,
    expected: str,
) -> None:
    """The server's order of preference decides among what the client offers."""
    async with serving(echo, tt.on_port(0, interface=LOCAL, tls=pki.files, alpn=speaks)) as server:
        command = ["openssl", "s_client", "-connect", f"{LOCAL}:{server.listening_on}"]
        command += ["-servername", "localhost", "-CAfile", str(pki.ca)]
        if offered is not None:
            command += ["-alpn", offered]
        output = await run(start, *command)
    assert expected in output
    assert "Verify return code: 0 (ok)" in output


@needs("openssl")
@pytest_twisted.ensureDeferred
async def test_no_protocol_in_common_fails_the_handshake_and_says_why(
    start: Callable[..., Process], pki: Pki
) -> None:
    """
    A client that offers only protocols the server does not speak gets the
    no_application_protocol alert (RFC 7301); the server logs why, once, at
    info level, and never runs the handler.
    """
    handled: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        handled.append(address)

    where = tt.on_port(0, interface=LOCAL, tls=pki.files, alpn=["http/1.1"])
    with InfoLog() as log, logged_errors() as errors:
        async with serving(handler, where) as server:
            command = ["openssl", "s_client", "-connect", f"{LOCAL}:{server.listening_on}"]
            output = await run(start, *command, "-alpn", "h2,spdy/3.1", "-CAfile", pki.ca)
            await until(lambda: log.matching("TLS handshake"))
    assert "no application protocol" in output
    assert log.matching(
        r"TLS handshake with 127\.0\.0\.1:\d+ failed: no application protocol in common: "
        r"the client offers h2, spdy/3\.1, the server speaks http/1\.1"
    )
    assert not handled and not errors


PYTHON_SSL_CLIENT = textwrap.dedent(
    """
    import socket, ssl, sys
    port, ca = int(sys.argv[1]), sys.argv[2]
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2", "http/1.1"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            print(tls.selected_alpn_protocol())
            tls.sendall(b"hello from python\\n")
            print(tls.recv(100).decode().strip())
    """
)


@pytest.mark.parametrize("kind", KINDS)
@pytest_twisted.ensureDeferred
async def test_python_ssl_client_with_alpn(
    start: Callable[..., Process], pki: Pki, kind: str
) -> None:
    """Python's ssl module (as urllib3 and requests use it) offering ALPN is served."""
    async with serving(echo, server_kinds(pki, None)[kind]) as server:
        output = await run(
            start, sys.executable, "-c", PYTHON_SSL_CLIENT, str(server.listening_on), pki.ca
        )
    assert output == "None\nhello from python\n"


@pytest_twisted.ensureDeferred
async def test_our_client_and_server_agree_on_alpn(pki: Pki) -> None:
    """Both ends see the protocol chosen: the server's first that the client offers."""
    seen: list[str | None] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        seen.append(writer.socket.alpn_protocol)
        await echo(address, reader, writer)

    where = tt.on_port(0, interface=LOCAL, tls=pki.files, alpn=["http/1.1", "h2"])
    async with serving(handler, where) as server:
        client = tt.to_host_and_port(
            "localhost", server.listening_on, tls=pki.trust(), alpn=["h2", "http/1.1"]
        )
        sock, reader, writer = await within(tt.connect(client))
        try:
            assert sock.alpn_protocol == "http/1.1"
            writer.write_line(b"ping")
            assert await within(reader.read_line()) == b"ping"
        finally:
            await within(writer.close())
        plain = tt.to_host_and_port("localhost", server.listening_on, tls=pki.trust())
        sock, reader, writer = await within(tt.connect(plain))
        assert sock.alpn_protocol is None
        await within(writer.close())
    assert seen == ["http/1.1", None]


@pytest_twisted.ensureDeferred
async def test_our_client_offering_no_common_protocol_fails_clearly(pki: Pki) -> None:
    where = tt.on_port(0, interface=LOCAL, tls=pki.files, alpn=["http/1.1"])
    async with serving(echo, where) as server:
        client = tt.to_host_and_port(
            "localhost", server.listening_on, tls=pki.trust(), alpn=["h2"]
        )
        with pytest.raises(tt.TLSHandshakeError, match="no application protocol"):
            await within(tt.connect(client))


def test_alpn_values_are_checked(pki: Pki) -> None:
    """alpn= takes a list of protocol names (str); anything else fails where it is written."""
    for bad, kind, message in [
        ("h2", TypeError, "alpn must be a list"),
        ([b"h2"], TypeError, "must be a str"),
        ([], ValueError, "at least one"),
        (["h2", "h2"], ValueError, "named twice"),
        (["h 2"], ValueError, "printable ASCII"),
        (["a,b"], ValueError, "printable ASCII"),
        (["x" * 256], ValueError, "printable ASCII"),
        (["\u00e9"], ValueError, "printable ASCII"),
        ([None], TypeError, "must be a str"),
    ]:
        with pytest.raises(kind, match=message):
            tt.on_port(0, tls=pki.files, alpn=bad)
        with pytest.raises(kind, match=message):
            tt.to_host_and_port("localhost", 443, tls=True, alpn=bad)
    with pytest.raises(ValueError, match="give tls= too"):
        tt.on_port(0, alpn=["h2"])
    with pytest.raises(ValueError, match="give tls= too"):
        tt.to_host_and_port("localhost", 443, alpn=["h2"])
    with pytest.raises(ValueError, match="give tls= too"):
        tt.on_endpoint("tcp:0", alpn=["h2"])
    with pytest.raises(ValueError, match="serves TLS already"):
        tt.on_endpoint(f"ssl:0:privateKey={pki.key}:certKey={pki.cert}", tls=pki.files)
    assert repr(tt.on_endpoint("tcp:0", tls=pki.files, alpn=["h2"])) == (
        "on_endpoint('tcp:0', tls=..., alpn=['h2'])"
    )
    assert str(tt.on_endpoint("tcp:0", tls=pki.files)) == "tls:tcp:0"


@pytest_twisted.ensureDeferred
async def test_alpn_protocol_is_none_without_tls() -> None:
    async with serving(echo) as server:
        sock, _, writer = await within(tt.connect(tt.to_host_and_port(LOCAL, server.listening_on)))
        assert sock.alpn_protocol is None
        assert writer.socket.peer_address == sock.peer_address
        await within(writer.close())


def test_a_writer_made_by_hand_has_no_socket() -> None:
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    writer = tt.Writer(StringTransport(), Clock())
    with pytest.raises(RuntimeError, match="not made by twisted_tcp"):
        writer.socket  # noqa: B018


# -- the handshake before the handler ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_silent_peer_never_reaches_the_handler_and_is_closed_at_the_deadline(
    pki: Pki,
) -> None:
    """
    A TCP peer that never starts its handshake takes no connection slot and
    runs no handler; it is closed at handshake_timeout, logged at info level
    with the peer, and not as an error.
    """
    handled: list[Any] = []

    async def banner(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        handled.append(address)
        writer.write_line(b"220 hello")
        await reader.contents()

    with InfoLog() as log, logged_errors() as errors:
        async with serving(
            banner, tls_server_where(pki), handshake_timeout=0.3, max_connections=1
        ) as server:
            silent = [raw_client(server.listening_on) for _ in range(3)]
            ports = [s.getsockname()[1] for s in silent]
            try:
                await sleep(0.1)
                assert server.num_connections == 0
                # A real client is served meanwhile: the silent ones hold no slot.
                _, reader, writer = await within(tt.connect(to(server, pki)))
                assert await within(reader.read_line()) == b"220 hello"
                await within(writer.close())
                await until(lambda: len(log.matching("not done within 0.3 s")) == 3)
                for s in silent:
                    assert await within(closed_by_peer(s))
            finally:
                for s in silent:
                    s.close()
    assert len(handled) == 1
    assert sorted(log.matching("not done within")) == sorted(
        f"TLS handshake with {LOCAL}:{port} failed: not done within 0.3 s" for port in ports
    )
    assert not errors


async def closed_by_peer(s: socket.socket) -> bool:
    """Wait (polling, bounded) until the server closed C{s}; True once it has."""
    while True:
        try:
            if s.recv(4096) == b"":
                return True
        except BlockingIOError:
            await sleep(0.01)
        except ConnectionResetError:
            return True


@pytest_twisted.ensureDeferred
async def test_handshakes_under_way_are_bounded(pki: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Beyond MAX_HANDSHAKES under way, new connections are closed at once
    (one warning); once they end, TLS clients are served again.
    """
    monkeypatch.setattr(_server, "MAX_HANDSHAKES", 2)
    warnings: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_level") == LogLevel.warn:
            warnings.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        async with serving(echo, tls_server_where(pki)) as server:
            held = [raw_client(server.listening_on) for _ in range(2)]
            refused = [raw_client(server.listening_on) for _ in range(2)]
            try:
                for s in refused:
                    assert await within(closed_by_peer(s))
                await sleep(0.05)
                for s in held:
                    with pytest.raises(BlockingIOError):
                        s.recv(1)  # still waiting for a handshake
            finally:
                for s in held + refused:
                    s.close()
            await until(lambda: not server._handshakes)
            _, reader, writer = await within(tt.connect(to(server, pki)))
            writer.write_line(b"served again")
            assert await within(reader.read_line()) == b"served again"
            await within(writer.close())
    finally:
        globalLogPublisher.removeObserver(observe)
    texts = [event["log_format"] for event in warnings]
    assert len([t for t in texts if "TLS handshakes are under way" in t]) == 1


@pytest_twisted.ensureDeferred
async def test_failed_handshakes_are_logged_with_the_reason(pki: Pki) -> None:
    """A plaintext client on the TLS port: logged at info level with why; no handler."""
    handled: list[Any] = []

    async def handler(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        handled.append(address)

    with InfoLog() as log, logged_errors() as errors:
        async with serving(handler, tls_server_where(pki)) as server:
            _, reader, writer = await within(
                tt.connect(tt.to_host_and_port(LOCAL, server.listening_on))
            )
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await within(reader.contents()) == b""
            await within(writer.close())
            s = raw_client(server.listening_on)
            s.close()
            await until(lambda: len(log.matching("TLS handshake")) == 2)
    assert re.search(r"failed: http request \(a plaintext", log.lines[0])
    assert log.matching("failed: the client closed the connection, or it was lost, before"), (
        log.lines
    )
    assert not handled and not errors


def test_failed_handshake_lines_are_budgeted() -> None:
    """At most 10 lines each 10 s; the count of the others comes with the next line."""
    from twisted.internet.task import Clock

    from twisted_tcp._logbudget import LogBudget

    clock = Clock()
    budget = LogBudget(clock, "failed TLS handshakes")
    with InfoLog() as log:
        assert [budget.allow() for _ in range(25)] == [True] * 10 + [False] * 15
        clock.advance(9.9)
        assert not budget.allow()
        assert not log.lines
        clock.advance(0.1)
        assert budget.allow()
    assert log.lines == ["16 more failed TLS handshakes were not logged (at most 10 each 10 s)"]


@pytest_twisted.ensureDeferred
async def test_idle_tls_connection_after_a_banner_is_closed_at_idle_timeout(pki: Pki) -> None:
    """
    A handler greets first (SMTP style) and its TLS client then goes silent:
    the connection closes at idle_timeout, as over TCP, and the peer's
    silence is not reported as a handler failure.
    """

    async def banner(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        writer.write_line(b"220 ready")
        async for line in reader.lines():
            writer.write_line(line)

    with logged_errors() as errors:
        async with serving(banner, tls_server_where(pki), idle_timeout=0.3) as server:
            _, reader, writer = await within(tt.connect(to(server, pki)))
            try:
                assert await within(reader.read_line()) == b"220 ready"
                assert await within(reader.read_line(), 3) is None  # closed by the server
            finally:
                await within(writer.close())
            await until(lambda: server.num_connections == 0)
    assert not errors


# -- the PROXY header before TLS --------------------------------------------------------


PROXY_THEN_TLS_CLIENT = textwrap.dedent(
    """
    import socket, ssl, sys
    port, ca, header = int(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])
    context = ssl.create_default_context(cafile=ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(header)
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"who am i\\n")
            print(tls.recv(200).decode().strip())
    """
)


async def who(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    """Answer each line with the client's address as the handler sees it."""
    async for _ in reader.lines():
        writer.write_line(show_address(address).encode())


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    "where",
    [
        lambda pki: tt.on_endpoint(f"haproxy:tcp:0:interface={LOCAL}", tls=pki.files),
        lambda pki: tt.on_endpoint(
            f"haproxy:ssl:0:interface={LOCAL}:privateKey={pki.key}:certKey={pki.cert}"
        ),
    ],
    ids=["haproxy:tcp with tls=", "haproxy:ssl"],
)
@pytest_twisted.ensureDeferred
async def test_proxy_header_before_tls(
    start: Callable[..., Process],
    pki: Pki,
    version: str,
    where: Callable[[Pki], tt.WhereToListen],
) -> None:
    """The header comes in clear text, then the handshake; the handler sees the client."""
    header = (v1 if version == "v1" else v2)("203.0.113.7", "198.51.100.1", 56324, 443)
    async with serving(who, where(pki)) as server:
        output = await run(
            start,
            sys.executable,
            "-c",
            PROXY_THEN_TLS_CLIENT,
            str(server.listening_on),
            pki.ca,
            header.hex(),
        )
    assert output == "203.0.113.7:56324\n"


HAPROXY_CONFIG = """
global
    maxconn 100
defaults
    mode tcp
    timeout connect 5s
    timeout client 10s
    timeout server 10s
frontend front
    bind 127.0.0.1:{front}
    default_backend back
backend back
    server app 127.0.0.1:{back} {options}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCAL, 0))
        return int(s.getsockname()[1])


@needs("haproxy")
@pytest.mark.parametrize(
    "options", ["send-proxy-v2 ssl verify none", "send-proxy ssl verify none", "send-proxy-v2"]
)
@pytest_twisted.ensureDeferred
async def test_behind_a_real_haproxy(
    start: Callable[..., Process], pki: Pki, tmp_path: Path, options: str
) -> None:
    """
    HAProxy in front, sending the PROXY header (v2 or v1), then TLS or not:
    the handler sees the address of the client that connected to HAProxy.
    """
    tls = pki.files if "ssl" in options else None
    async with serving(who, tt.on_endpoint(f"haproxy:tcp:0:interface={LOCAL}", tls=tls)) as server:
        front = free_port()
        config = tmp_path / "haproxy.cfg"
        config.write_text(
            HAPROXY_CONFIG.format(front=front, back=server.listening_on, options=options)
        )
        start("haproxy", "-db", "-f", config)

        async def ask() -> tuple[bytes | None, int]:
            sock, reader, writer = await tt.connect(tt.to_host_and_port(LOCAL, front), timeout=1)
            try:
                writer.write_line(b"who am i")
                return await reader.read_line(), sock.local_address.port  # type: ignore[attr-defined]
            finally:
                await writer.close()

        answer: tuple[bytes | None, int] = (None, 0)
        for _ in range(int(WAIT / 0.1)):  # until HAProxy listens
            try:
                answer = await within(ask())
                if answer[0] is not None:
                    break
            except Exception:
                pass
            await sleep(0.1)
        assert answer[0] == f"127.0.0.1:{answer[1]}".encode()


# -- twistd ------------------------------------------------------------------------------


@needs("curl")
@pytest_twisted.ensureDeferred
async def test_twistd_tls_on_a_description_with_alpn(
    start: Callable[..., Process], pki: Pki
) -> None:
    """--tls-cert with a tcp: description on one interface, --tls-alpn chosen by curl."""
    handler = "tests.test_tls_server:http_hello"
    process = twistd(
        start,
        "--port", f"tcp:0:interface={LOCAL}",
        "--tls-cert", str(pki.cert),
        "--tls-key", str(pki.key),
        "--tls-alpn", "h2,http/1.1",
        "--handshake-timeout", "5",
        "--handler", handler,
    )  # fmt: skip
    address = await listening(process, handler)
    assert address.startswith(f"{LOCAL}:")
    url = f"https://localhost:{address.rsplit(':', 1)[1]}/"
    output = await run(
        start, "curl", "-sS", "--http1.1", "--max-time", str(WAIT), "--cacert", pki.ca, url
    )
    assert output == "alpn=http/1.1\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0", "--tls-alpn", "h2"], "--tls-alpn is for a TLS server"),
        (["--port", "0", "--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-alpn", "h2,h2"],
         "named twice"),
        (["--port", "0", "--tls-cert", "{cert}", "--tls-key", "{key}", "--tls-alpn", ""],
         "printable ASCII"),
        (["--port", "ssl:0:privateKey={key}:certKey={cert}", "--tls-cert", "{cert}",
          "--tls-key", "{key}"], "serves TLS already"),
        (["--file", "{sock}", "--tls-cert", "{cert}", "--tls-key", "{key}"], "not to --file"),
        (["--port", "0", "--handshake-timeout", "0"], "--handshake-timeout must be"),
        (["--port", "0", "--handshake-timeout", "nan"], "--handshake-timeout must be"),
    ],
)  # fmt: skip
def test_twistd_tls_usage_errors(pki: Pki, tmp_path: Path, args: list[str], message: str) -> None:
    from twisted.python import usage

    from twisted_tcp import _twistd

    values = {"cert": pki.cert, "key": pki.key, "sock": tmp_path / "s.sock"}
    with pytest.raises(usage.UsageError, match=re.escape(message)):
        _twistd.Options().parseOptions(["--handler", ECHO, *(a.format(**values) for a in args)])


def test_twistd_ssl_description_takes_tls_alpn(pki: Pki) -> None:
    from twisted_tcp import _twistd

    options = _twistd.Options()
    options.parseOptions(
        ["--handler", ECHO, "--port", f"ssl:0:privateKey={pki.key}:certKey={pki.cert}",
         "--tls-alpn", "http/1.1"]
    )  # fmt: skip
    assert options["where"].alpn == (b"http/1.1",)
