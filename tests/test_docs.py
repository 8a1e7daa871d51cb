"""
The documentation cannot drift from the code: every example under
C{docs/examples/} is run here against real servers (sockets on 127.0.0.1 and
Unix sockets under C{tmp_path}), and the pages are built with Sphinx, warnings
being errors.

Scripts run as subprocesses whose output goes to files and which are polled,
so that the reactor of this process keeps serving them; every one is killed
and reaped when its test ends.  Every wait is bounded (L{within}, or a
subprocess timeout), and the autouse C{no_leaks} fixture checks that nothing
is left behind.
"""

from __future__ import annotations

import importlib.util
import re
import select
import signal
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, error, reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

import twisted_tcp as tt
from twisted_tcp.testing import connected_pair

from .conftest import WAIT, raw_client, read_to_end, sleep, until, within
from .processes import Process, start, subprocess_env, twistd_command

__all__ = ["start"]  # the fixture, imported for the tests below

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
LOCAL = "127.0.0.1"


# -- helpers -------------------------------------------------------------------


@cache
def example(name: str) -> ModuleType:
    """Import C{docs/examples/NAME.py} (under a name of its own)."""
    spec = importlib.util.spec_from_file_location(f"_docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@asynccontextmanager
async def serving(
    handler: Callable[..., Any], where: tt.WhereToListen | None = None, **kwargs: Any
) -> AsyncIterator[tt.Server]:
    """A server on 127.0.0.1 (or C{where}), closed with its connections and drained on exit."""
    if where is None:
        where = tt.on_port(0, interface=LOCAL)
    server = await within(tt.Server.create(where, handler, **kwargs))
    try:
        yield server
    finally:
        await within(server.close(close_existing_connections=True))
        await within(server.drained())


@asynccontextmanager
async def started(creating: Deferred[tt.Server]) -> AsyncIterator[tt.Server]:
    """A server made by an example's own C{serve()}, closed and drained on exit."""
    server = await within(creating)
    try:
        yield server
    finally:
        await within(server.close(close_existing_connections=True))
        await within(server.drained())


def where_of(server: tt.Server) -> tt.WhereToConnect:
    return tt.to_host_and_port(LOCAL, server.listening_on)  # type: ignore[arg-type]


def like_nc(port: int, data: bytes) -> bytes:
    """What C{printf DATA | nc -N 127.0.0.1 PORT} prints: send, end the stream, read to the end."""
    with socket.create_connection((LOCAL, port), timeout=WAIT) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := s.recv(4096):
            received += chunk
        return received


class Unresponsive:
    """
    A loopback listener whose accept queue is full: a new client's SYN is
    dropped, so connecting to it hangs until a deadline.
    """

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.fillers: list[socket.socket] = []
        try:
            self.listener.bind((LOCAL, 0))
            self.listener.listen(0)
            self.port = self.listener.getsockname()[1]
            for _ in range(16):
                s = socket.socket()
                self.fillers.append(s)
                s.setblocking(False)
                s.connect_ex((LOCAL, self.port))
                if not select.select([], [s], [], 0.2)[1]:
                    return  # this one hangs: the queue is full
            raise AssertionError("could not fill the accept queue")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.listener.close()


@asynccontextmanager
async def no_logged_errors() -> AsyncIterator[None]:
    """Fail if anything is logged as an error (a handler failure, say) meanwhile."""
    errors: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("isError") or "log_failure" in event:
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observe)
    assert errors == [], [formatEvent(e) for e in errors]


# -- every example is shown, and every page builds -----------------------------


def test_every_example_is_included_in_a_page() -> None:
    pages = "\n".join(p.read_text() for p in DOCS.rglob("*.rst"))
    included = set(re.findall(r"literalinclude:: +(?:\.\./)*examples/(\S+\.py)", pages))
    examples = {p.name for p in EXAMPLES.glob("*.py")}
    assert examples <= included, f"not shown in any page: {sorted(examples - included)}"
    assert included <= examples, f"included but missing: {sorted(included - examples)}"


def test_reference_covers_all_of_the_api() -> None:
    """The reference page links every public name (into pydoctor's reference)."""
    from twisted_tcp import testing

    reference = (DOCS / "reference.rst").read_text()
    role = r":(?!mod:)\w+:`(?:~|[^`<]*<)"  # :func:`~twisted_tcp.x`, :meth:`text <twisted_tcp.x>`
    linked = set(re.findall(role + r"(twisted_tcp(?:\.testing)?\.\w+)", reference))
    public = {f"twisted_tcp.{name}" for name in tt.__all__}
    public |= {f"twisted_tcp.testing.{name}" for name in testing.__all__}
    assert public - linked == set(), "not linked from docs/reference.rst"
    assert linked - public == set(), "linked from docs/reference.rst, but not public"


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The documented command: Sphinx, warnings being errors, into a temporary directory."""
    for tool in ("sphinx", "pydoctor"):
        if importlib.util.find_spec(tool) is None:
            pytest.skip(f"{tool} is not installed: pip install '.[docs]' to build the docs")
    out = tmp_path_factory.mktemp("docs") / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == "", result.stderr
    return out


def inventory(path: Path) -> dict[str, tuple[str, str]]:
    """An objects.inv: every name, with its role and its address."""
    _header, _, compressed = path.read_bytes().partition(b"compressed")
    entries = {}
    for line in zlib.decompress(compressed.partition(b"\n")[2]).decode().splitlines():
        name, role, _priority, location, _shown = line.split(" ", 4)
        entries[name] = (role, location)
    return entries


def test_docs_build_without_warnings(html: Path) -> None:
    for page in ["index", "tutorial", "reference", "twistd", "limits", "from-async"]:
        assert (html / f"{page}.html").exists(), page
    assert (html / "api" / "index.html").exists()  # pydoctor's, in place of the placeholder


def test_api_reference_documents_the_public_names(html: Path) -> None:
    """pydoctor documents each public name where the package exports it, and no constructor."""
    from twisted_tcp import testing

    documented = inventory(html / "api" / "objects.inv")
    for module in (tt, testing):
        for name in module.__all__:
            assert f"{module.__name__}.{name}" in documented, name
    # Re-exported from the private modules: documented at the package, not there.
    assert documented["twisted_tcp.connect"] == ("py:function", "index.html#connect")
    assert documented["twisted_tcp.Server"] == ("py:class", "twisted_tcp.Server.html")
    assert "twisted_tcp._connect.connect" not in documented
    assert not [name for name in documented if name.endswith(("__init__", "__new__"))]
    package = (html / "api" / "twisted_tcp.html").read_text()
    assert 'href="twisted_tcp.Server.html"' in package
    assert "connect_sock" in package and "with_connection" in package
    server = (html / "api" / "twisted_tcp.Server.html").read_text()
    assert "__init__" not in server and "Constructor:" not in server
    # Annotations link as written where the object is defined (twisted_tcp._server
    # imports WhereToListen from twisted_tcp._where), to its public page.
    assert 'href="twisted_tcp.WhereToListen.html"' in server


def test_links_to_twisted_and_python(html: Path) -> None:
    """Resolved offline, from the inventories the build writes, to the real sites."""
    twisted = "https://docs.twisted.org/en/stable/api/"
    python = "https://docs.python.org/3/library/"
    package = (html / "api" / "twisted_tcp.html").read_text()
    assert f'href="{twisted}twisted.internet.defer.Deferred.html"' in package
    assert f'href="{twisted}twisted.internet.interfaces.IStreamServerEndpoint.html"' in package
    assert f'href="{twisted}twisted.internet.endpoints.html#serverFromString"' in package
    assert f'href="{python}functions.html#float"' in package
    errors = (html / "api" / "twisted_tcp.ConnectTimeoutError.html").read_text()
    assert f'href="{twisted}twisted.internet.error.TimeoutError.html"' in errors
    assert f'href="{python}exceptions.html#TimeoutError"' in errors
    # The pages link into the API reference, and to Twisted's.
    reference = (html / "reference.html").read_text()
    assert 'href="api/twisted_tcp.Server.html"' in reference
    assert 'href="api/index.html#connect"' in reference
    assert f'href="{twisted}twisted.internet.defer.Deferred.html"' in reference
    howto = (html / "howto" / "max-connections.html").read_text()
    assert 'href="../api/twisted_tcp.Server.html#create"' in howto


def test_api_reference_links_are_not_broken(html: Path) -> None:
    api = html / "api"
    broken = set()
    for page in api.glob("*.html"):
        for target in re.findall(r'href="([^"#:]+\.html)(?:#[^"]*)?"', page.read_text()):
            if not (api / target).exists():
                broken.add(f"{page.name} -> {target}")
    assert broken == set()


def test_twistd_page_shows_the_options_as_written(html: Path) -> None:
    twistd = (html / "twistd.html").read_text()
    # Each option literally (docutils would make "--port" an en dash in text).
    assert '<span class="pre">--port</span>' in twistd
    assert "\u2013port" not in twistd and "&#8211;port" not in twistd
    # An endpoint description is code, not a link.
    assert '<span class="pre">tcp:9000:interface=127.0.0.1</span>' in twistd
    assert 'href="tcp:' not in twistd
    # The --help block: plain text, not highlighted as Python.
    assert '<div class="highlight-text notranslate">' in twistd
    # A code-block says its language, pydoctor having run in the same build
    # (its reST support replaces code-block with one that makes all Python).
    metrics = (html / "howto" / "metrics.html").read_text()
    assert '<div class="highlight-yaml notranslate">' in metrics
    assert '<div class="highlight-sh notranslate">' in metrics


def test_offline_inventories_are_complete() -> None:
    """The offline inventories list every Python and Twisted name the docstrings use."""
    if importlib.util.find_spec("pydoctor") is None:
        pytest.skip("pydoctor is not installed: pip install '.[docs]'")
    result = subprocess.run(
        [sys.executable, str(DOCS / "_support" / "make_inventories.py"), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the tutorial --------------------------------------------------------------

LISTENING = re.compile(r"twisted_tcp tcpserver listening on (\S+) \(handler (\S+)\)")


@pytest.mark.parametrize(
    ("handler", "sent", "expected"),
    [
        ("twisted_tcp.examples.echo:handle", b"hello\nworld\n", b"hello\nworld\n"),
        ("shout:handle", b"hello\nworld\n", b"HELLO\nWORLD\n2 line(s) from 127.0.0.1, bye\n"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_tutorial_twistd_and_nc(
    start: Callable[..., Process], handler: str, sent: bytes, expected: bytes
) -> None:
    """The tutorial's twistd command lines, talked to as C{nc -N} does."""
    process = start(
        *twistd_command(), "-n", "--pidfile=", "tcpserver",
        "--port", "tcp:0:interface=127.0.0.1", "--handler", handler,
        env=subprocess_env(EXAMPLES),
    )  # fmt: skip
    match = await process.wait_for(LISTENING)
    assert match.group(2) == handler
    port = int(match.group(1).rsplit(":", 1)[1])
    assert like_nc(port, sent) == expected  # blocking: the server is another process
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited(WAIT * 2) == -signal.SIGTERM
    assert "Traceback" not in process.output()


@pytest_twisted.ensureDeferred
async def test_tutorial_client_scripts(start: Callable[..., Process]) -> None:
    """Both client scripts, run as the tutorial says, against the shout handler."""
    async with no_logged_errors(), serving(example("shout").handle) as server:
        port = str(server.listening_on)
        inline = start(sys.executable, EXAMPLES / "client_inlinecallbacks.py", LOCAL, port,
                       "hello", "quiet please")  # fmt: skip
        coroutine = start(sys.executable, EXAMPLES / "client_async.py", LOCAL, port,
                          "hello", "quiet please")  # fmt: skip
        assert await inline.exited(WAIT * 2) == 0, inline.output()
        assert await coroutine.exited(WAIT * 2) == 0, coroutine.output()
    assert inline.stdout.splitlines() == [
        "hello -> HELLO",
        "quiet please -> QUIET PLEASE",
        "2 line(s) from 127.0.0.1, bye",
    ]
    assert coroutine.stdout.splitlines() == [
        "HELLO",
        "QUIET PLEASE",
        "2 line(s) from 127.0.0.1, bye",
    ]


@pytest_twisted.ensureDeferred
async def test_tutorial_client_sees_the_server_close(start: Callable[..., Process]) -> None:
    async with serving(example("shout").handle) as server:
        client = start(sys.executable, EXAMPLES / "client_inlinecallbacks.py", LOCAL,
                       str(server.listening_on), "a", "quit", "b")  # fmt: skip
        assert await client.exited(WAIT * 2) == 0, client.output()
    assert client.stdout.splitlines() == [
        "a -> A",
        "quit -> 1 line(s) from 127.0.0.1, bye",
        "the server closed the connection",
    ]


@pytest_twisted.ensureDeferred
async def test_relay_inside_a_twisted_application() -> None:
    """The LineReceiver relays each line to the backend with twisted_tcp.connect."""
    app = example("in_twisted_app")
    async with no_logged_errors(), serving(example("shout").handle) as backend:
        port = reactor.listenTCP(0, app.RelayFactory(reactor, where_of(backend)), interface=LOCAL)
        try:
            where = tt.to_host_and_port(LOCAL, port.getHost().port)
            _sock, reader, writer = await within(tt.connect(where, timeout=WAIT))
            try:
                writer.write(b"one\ntwo\nthree\n")  # pipelined: the replies stay in order
                assert [await within(reader.read_line()) for _ in range(3)] == [
                    b"ONE",
                    b"TWO",
                    b"THREE",
                ]
                assert backend.num_connections == 1  # one backend connection per client
                writer.write_line(b"quit")
                assert await within(reader.read_line()) == b"3 line(s) from 127.0.0.1, bye"
                writer.write_line(b"more")
                assert await within(reader.read_line()) == (
                    b"ERR the backend closed the connection"
                )
                assert await within(reader.read_line()) is None
            finally:
                await within(writer.close())
            # A client that leaves closes its backend connection.
            _sock, reader, writer = await within(tt.connect(where, timeout=WAIT))
            writer.write_line(b"x")
            assert await within(reader.read_line()) == b"X"
            await within(writer.close())
            while backend.num_connections:
                await within(sleep(0.01))
        finally:
            await within(port.stopListening())


@pytest_twisted.ensureDeferred
async def test_relay_without_a_backend() -> None:
    app = example("in_twisted_app")
    probe = socket.socket()
    probe.bind((LOCAL, 0))
    nobody = tt.to_host_and_port(LOCAL, probe.getsockname()[1])  # bound, not listening
    try:
        port = reactor.listenTCP(0, app.RelayFactory(reactor, nobody), interface=LOCAL)
        try:
            where = tt.to_host_and_port(LOCAL, port.getHost().port)
            _sock, reader, writer = await within(tt.connect(where, timeout=WAIT))
            try:
                reply = await within(reader.read_line())
                assert reply is not None and reply.startswith(b"ERR no backend: ")
                assert b"refused" in reply and str(nobody).encode() in reply
                assert await within(reader.read_line()) is None
            finally:
                await within(writer.close())
        finally:
            await within(port.stopListening())
    finally:
        probe.close()


# -- how-to: deadlines ---------------------------------------------------------


async def silent(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    """Reads and never answers."""
    async for _line in reader.lines():
        pass


@pytest_twisted.ensureDeferred
async def test_deadlines_ask() -> None:
    ask = example("deadlines").ask
    async with serving(example("shout").handle) as server:
        assert await within(ask(reactor, where_of(server), b"anyone?")) == b"ANYONE?"
    async with serving(silent) as server:
        started = time.monotonic()
        with pytest.raises(defer.TimeoutError):
            await within(ask(reactor, where_of(server), b"anyone?", reply_timeout=0.3))
        assert 0.25 < time.monotonic() - started < WAIT
    peer = Unresponsive()
    try:
        where = tt.to_host_and_port(LOCAL, peer.port)
        started = time.monotonic()
        with pytest.raises(tt.ConnectTimeoutError) as info:
            await within(ask(reactor, where, b"anyone?", connect_timeout=0.3))
        assert 0.25 < time.monotonic() - started < WAIT
        assert str(info.value) == (
            f"connecting to {LOCAL}:{peer.port} did not complete within 0.3 s"
        )
    finally:
        peer.close()


@pytest_twisted.ensureDeferred
async def test_deadlines_connect_patiently(tmp_path: Path) -> None:
    deadlines = example("deadlines")
    path = str(tmp_path / "later.sock")
    interrupt: Deferred[None] = Deferred()
    connecting = Deferred.fromCoroutine(
        deadlines.connect_patiently(reactor, tt.to_file(path), interrupt, pause=0.05)
    )
    await sleep(0.3)
    assert not connecting.called  # no server yet: it keeps trying
    async with serving(example("shout").handle, tt.on_file(path)):
        _sock, reader, writer = await within(connecting)
        try:
            writer.write_line(b"at last")
            assert await within(reader.read_line()) == b"AT LAST"
        finally:
            await within(writer.close())


@pytest_twisted.ensureDeferred
async def test_deadlines_interrupted() -> None:
    deadlines = example("deadlines")
    peer = Unresponsive()
    try:
        where = tt.to_host_and_port(LOCAL, peer.port)
        interrupt: Deferred[None] = Deferred()
        connecting = Deferred.fromCoroutine(
            deadlines.connect_patiently(reactor, where, interrupt, attempt_timeout=0.2, pause=0.05)
        )
        await sleep(0.5)  # a few attempts time out meanwhile
        interrupt.callback(None)
        with pytest.raises(tt.ConnectInterruptedError):
            await within(connecting)
    finally:
        peer.close()


def test_deadlines_when_shutting_down() -> None:
    triggers: list[tuple[Any, ...]] = []

    class Reactor:
        def addSystemEventTrigger(self, *args: Any) -> None:
            triggers.append(args)

    stopping = example("deadlines").when_shutting_down(Reactor())
    [(phase, event, fire, value)] = triggers
    assert (phase, event) == ("before", "shutdown")
    assert not stopping.called
    fire(value)
    assert stopping.called


# -- how-to: lines from untrusted peers ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_line_limits_tolerant() -> None:
    limits = example("line_limits")
    assert limits.MAX_LINE == 1024

    async def talk(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> list[bytes]:
        writer.write(b"x" * 1000)
        await sleep(0.05)
        writer.write(b"x" * 4000)  # the line is now too long, and still going on
        await sleep(0.05)
        writer.write(b"x" * 4000 + b"\n" + b"y" * 1024 + b"\r\nshort\nlast")
        await writer.write_eof()
        return [line async for line in reader.lines()]

    async with no_logged_errors(), started(limits.serve(tt.on_port(0, interface=LOCAL))) as s:
        replies = await within(tt.with_connection(where_of(s), talk))
    assert replies == [b"ERR line longer than 1024 bytes, ignored", b"OK 1024", b"OK 5", b"OK 4"]


@pytest_twisted.ensureDeferred
async def test_line_limits_strict() -> None:
    limits = example("line_limits")

    async def talk(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> list[bytes]:
        writer.write(b"fine\n" + b"z" * 2000 + b"\nnever read\n")
        return [line async for line in reader.lines()]

    where = tt.on_port(0, interface=LOCAL)
    async with no_logged_errors(), started(limits.serve(where, limits.handle_strict)) as s:
        replies = await within(tt.with_connection(where_of(s), talk))
    assert replies == [b"OK 4", b"ERR line too long, goodbye"]


# -- how-to: parsing one chunk at a time ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_netstrings_as_they_arrive() -> None:
    ns = example("netstrings")

    async def talk(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> bytes:
        writer.write(b"5:hel")
        await sleep(0.05)  # the start of a netstring, alone
        writer.write(b"lo,3:abc,0:,9:never rea")
        return await reader.contents()

    async with no_logged_errors(), serving(ns.handle) as server:
        assert await within(tt.with_connection(where_of(server), talk)) == b"5:HELLO,3:ABC,0:,"


def test_netstrings_a_peer_that_does_not_read_is_not_read() -> None:
    ns = example("netstrings")
    pair = connected_pair(settings=tt.Settings(reader_buffer_size=1024))
    handling = ensureDeferred(ns.handle(None, pair.server.reader, pair.server.writer))
    text = b"x" * 10_000
    for _ in range(200):  # 2 MB, to a client that reads 1 KiB and stops
        pair.client.writer.write(b"%d:%s," % (len(text), text))
        pair.flush()  # (one netstring per delivery, as a socket's reads are bounded)
    # The server waits for its replies to leave, and stops reading.
    assert pair.server.writer.bytes_to_write <= ns.HIGH_WATER + len(text) + 10
    assert pair.client.writer.bytes_to_write > 1_000_000  # still at the client's end
    assert pair.server.reader.bytes_buffered <= 2 * len(text)
    pair.client.writer.abort()
    pair.flush()
    ended: list[Any] = []
    handling.addBoth(ended.append)  # (the failure of the flush it awaited, consumed)
    assert isinstance(ended[0], Failure) and ended[0].check(error.ConnectionLost), ended


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        (b"2:ok,65537:", b"2:OK,ERR bad length b'65537'"),
        (b"x" * 7, b"ERR a length, then ':' was expected"),  # before any ':' comes
        (b"3:abc;", b"ERR ',' was expected after the text"),
        (b"2:ok,6:cut sh", b"2:OK,"),  # the peer left in the middle of one
    ],
)
@pytest_twisted.ensureDeferred
async def test_netstrings_bad_or_cut(sent: bytes, answer: bytes) -> None:
    async with no_logged_errors(), serving(example("netstrings").handle) as server:
        s = raw_client(server.listening_on)  # type: ignore[arg-type]
        try:
            s.sendall(sent)
            s.shutdown(socket.SHUT_WR)
            assert await read_to_end(s) == answer
        finally:
            s.close()


# -- how-to: back-pressure -----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_backpressure(monkeypatch: pytest.MonkeyPatch) -> None:
    bp = example("backpressure")
    most = [0]
    waits = [0]
    write_line, flushed = tt.Writer.write_line, tt.Writer.flushed

    def measured_write_line(self: tt.Writer, line: bytes) -> None:
        write_line(self, line)
        most[0] = max(most[0], self.bytes_to_write)

    def counted_flushed(self: tt.Writer) -> Deferred[None]:
        waits[0] += 1
        return flushed(self)

    monkeypatch.setattr(tt.Writer, "write_line", measured_write_line)
    monkeypatch.setattr(tt.Writer, "flushed", counted_flushed)
    n = 200_000
    async with no_logged_errors(), serving(bp.numbers) as server:
        assert await within(bp.count_slowly(reactor, where_of(server), n), WAIT * 3) == n
    assert waits[0] > 5, "the handler never waited for its peer"
    assert most[0] <= bp.HIGH_WATER + 20  # never more than one line above the mark


@pytest_twisted.ensureDeferred
async def test_backpressure_bad_request() -> None:
    async def talk(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> list[bytes]:
        writer.write_line(b"lots")
        return [line async for line in reader.lines()]

    async with serving(example("backpressure").numbers) as server:
        assert await within(tt.with_connection(where_of(server), talk)) == [b"ERR send a count"]


# -- how-to: max_connections and idle_timeout ----------------------------------


@pytest_twisted.ensureDeferred
async def test_limited_max_connections() -> None:
    limited = example("limited")
    where = tt.on_port(0, interface=LOCAL)
    async with started(limited.serve(where, max_connections=2, reactor=reactor)) as server:
        assert server.max_connections == 2
        clients = [await within(tt.connect(where_of(server))) for _ in range(3)]
        try:
            first, second, third = (reader for _sock, reader, _writer in clients)
            assert await within(first.read_line()) == b"welcome"
            assert await within(second.read_line()) == b"welcome"
            # The third is connected (the kernel's backlog), but not served.
            with pytest.raises(defer.TimeoutError):
                await third.read_line().addTimeout(0.3, reactor)
            assert server.num_connections == 2
            await within(clients[0][2].close())
            assert await within(third.read_line()) == b"welcome"  # the freed slot is its
            clients[2][2].write_line(b"hi")
            assert await within(third.read_line()) == b"hi"
        finally:
            for _sock, _reader, writer in clients:
                await within(writer.close())


@pytest_twisted.ensureDeferred
async def test_limited_idle_timeout() -> None:
    limited = example("limited")
    where = tt.on_port(0, interface=LOCAL)
    async with started(limited.serve(where, idle_timeout=0.5, reactor=reactor)) as server:
        _sock, reader, writer = await within(tt.connect(where_of(server)))
        try:
            assert await within(reader.read_line()) == b"welcome"
            started_at = time.monotonic()
            for _ in range(4):  # activity keeps the connection open
                await sleep(0.1)
                writer.write_line(b"still here")
                assert await within(reader.read_line()) == b"still here"
            assert await within(reader.read_line()) is None  # then closed for idleness
            assert time.monotonic() - started_at > 0.85
        finally:
            await within(writer.close())


# -- how-to: per-peer limits, stats -------------------------------------------


@pytest_twisted.ensureDeferred
async def test_per_peer_limit() -> None:
    """20 connections from 127.0.0.1 are served, the 21st is closed; 127.0.0.2 is served."""
    from .test_per_peer_and_stats import client_from, refused_from

    per_peer = example("per_peer")
    clients: list[socket.socket] = []
    try:
        async with started(per_peer.serve(tt.on_port(0, interface=LOCAL))) as server:
            port = server.listening_on
            clients += [client_from(LOCAL, port) for _ in range(20)]
            await until(lambda: server.num_connections == 20)
            assert await refused_from(LOCAL, port)
            assert per_peer.refused(server) == 1
            other = tt.to_host_and_port(LOCAL, port, via_local_interface="127.0.0.2")
            _, reader, writer = await within(tt.connect(other, timeout=WAIT))
            try:
                assert await within(reader.read_line()) == b"welcome"
            finally:
                await within(writer.close())
    finally:
        for s in clients:
            s.close()


@pytest_twisted.ensureDeferred
async def test_stats_log() -> None:
    """Each minute (on a Clock), one line with the server's counts."""
    from twisted.internet.task import Clock

    stats_log = example("stats_log")
    clock = Clock()
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == stats_log.log.namespace:
            lines.append(formatEvent(event))

    async with serving(echo_lines) as server:
        await within(tt.with_connection(where_of(server), say_hello, timeout=WAIT))
        await until(lambda: server.num_connections == 0)
        globalLogPublisher.addObserver(observe)
        try:
            call = stats_log.every_minute(server, reactor=clock)
            clock.advance(59)
            assert lines == []
            clock.advance(1)
            call.stop()
        finally:
            globalLogPublisher.removeObserver(observe)
    assert lines == ["0 connections (0 waiting), 1 accepted, 0 handler errors, 6 bytes in, 6 out"]


async def echo_lines(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    async for line in reader.lines():
        writer.write_line(line)


async def say_hello(sock: tt.Socket, reader: tt.Reader, writer: tt.Writer) -> None:
    writer.write_line(b"hello")
    assert await reader.read_line() == b"hello"


# -- how-to: Unix sockets ------------------------------------------------------


@pytest.mark.parametrize("stale", [False, True], ids=["fresh", "stale-file"])
@pytest_twisted.ensureDeferred
async def test_unix_socket_script(
    start: Callable[..., Process], tmp_path: Path, stale: bool
) -> None:
    path = tmp_path / "demo.sock"
    if stale:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
            dead.bind(str(path))  # what a server that died leaves behind
    script = start(sys.executable, EXAMPLES / "unix_socket.py", path)
    assert await script.exited(WAIT * 2) == 0, script.output()
    assert script.stdout.splitlines() == [
        f"listening on {path}",
        "reply: ping",
        f"a second server is refused: Couldn't listen on unix:{path}: "
        "another server is listening on this path.",
        "after close, the socket file exists: False",
    ]
    assert not path.exists()


# -- how-to: graceful shutdown -------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_shutdown_lets_running_handlers_finish() -> None:
    shutdown = example("shutdown")

    async def slow(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        line = await reader.read_line()
        writer.write_line(b"working on " + (line or b""))
        await sleep(0.3)
        writer.write_line(b"done")

    service = shutdown.ServerService(tt.on_port(0, interface=LOCAL), slow, reactor=reactor)
    service.startService()
    where = where_of(service.server)
    _sock, reader, writer = await within(tt.connect(where))
    try:
        writer.write_line(b"job")
        assert await within(reader.read_line()) == b"working on job"
        stopping = service.stopService()
        with pytest.raises(error.ConnectionRefusedError):
            await within(tt.connect(where))
        assert not stopping.called
        assert await within(reader.read_line()) == b"done"
        assert await within(reader.read_line()) is None
        await within(stopping)
    finally:
        await within(writer.close())


@pytest_twisted.ensureDeferred
async def test_shutdown_closes_what_remains_after_the_timeout() -> None:
    shutdown = example("shutdown")
    service = shutdown.ServerService(
        tt.on_port(0, interface=LOCAL), example("shout").handle, shutdown_timeout=0.3,
        reactor=reactor,
    )  # fmt: skip
    service.startService()
    _sock, reader, writer = await within(tt.connect(where_of(service.server)))
    try:
        writer.write_line(b"hi")
        assert await within(reader.read_line()) == b"HI"
        started_at = time.monotonic()
        await within(service.stopService())
        assert time.monotonic() - started_at >= 0.25
        assert await within(reader.read_line()) is None
    finally:
        await within(writer.close())
    assert service.stopService() is None  # stopping twice is harmless


# -- how-to: persistent connections --------------------------------------------


@pytest_twisted.ensureDeferred
async def test_persistent_ask_across_reconnects() -> None:
    persistent = example("persistent")
    health = persistent.Health()
    async with serving(example("shout").handle) as server:
        link = tt.persistent_connection(
            where_of(server), retry_policy=lambda n: 0.01, on_event=health
        )
        try:
            ask = persistent.ask
            assert await within(ask(link, b"hello", reactor)) == b"HELLO"
            assert health.up and health.connections == 1
            first = link.current_connection
            # The server ends the connection: the link closes our side...
            assert await within(ask(link, b"quit", reactor)) == b"1 line(s) from 127.0.0.1, bye"
            # ...so the next question goes over a new connection (unless it was
            # sent before the server's end came: then it has no reply).
            reply = await within(ask(link, b"again", reactor))
            if reply is None:
                reply = await within(ask(link, b"again", reactor))
            assert reply == b"AGAIN"
            assert first is not None and first[0].is_closed
            assert health.connections == 2 and link.current_connection != first
        finally:
            await within(link.close())
    assert not health.up and health.last_error is None


@pytest_twisted.ensureDeferred
async def test_persistent_ask_drops_a_connection_whose_reply_is_late() -> None:
    persistent = example("persistent")
    health = persistent.Health()
    async with serving(silent) as server:
        link = tt.persistent_connection(
            where_of(server), retry_policy=lambda n: 0.01, on_event=health
        )
        try:
            with pytest.raises(defer.TimeoutError):
                await within(persistent.ask(link, b"anyone?", reactor, timeout=0.2))
            await until(lambda: health.connections >= 2)  # aborted, and made again
        finally:
            await within(link.close())


def test_persistent_health_records_failures() -> None:
    persistent = example("persistent")
    health = persistent.Health()
    where = tt.to_host_and_port(LOCAL, 9)
    refused = error.ConnectionRefusedError("no")
    for event in [
        tt.ConnectionEvent("attempting", where),
        tt.ConnectionEvent("failed", where, refused),
    ]:
        health(event)
    assert not health.up and health.last_error is refused and health.connections == 0


@pytest_twisted.ensureDeferred
async def test_persistent_script_across_a_server_restart(start: Callable[..., Process]) -> None:
    answered = [0]

    async def counting(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        async for line in reader.lines():
            answered[0] += 1
            writer.write_line(line.upper())

    async with serving(counting) as server:
        port = server.listening_on
        script = start(sys.executable, EXAMPLES / "persistent.py", LOCAL, str(port), "6", "0.2")
        await until(lambda: answered[0] >= 2)
    # The server went (its connection aborted), and comes back on the same port.
    async with serving(counting, tt.on_port(port, interface=LOCAL)):  # type: ignore[arg-type]
        assert await script.exited(WAIT * 2) == 0, script.output()
    lines = script.stdout.splitlines()
    assert len(lines) == 7 and lines[-1] == "connected 2 time(s)", lines
    for n, line in enumerate(lines[:6]):
        assert line in (f"ping {n} -> PING {n}", f"ping {n} -> (the server left)"), lines
    assert lines[5] == "ping 5 -> PING 5"
    log = script.err_path.read_text()
    where = f"{LOCAL}:{port}"
    assert f"Persistent connection to {where}: connected to {where} from " in log
    assert f"Persistent connection to {where}: disconnected: " in log
    assert f"Scheduling retry 1 to connect <twisted_tcp persistent connection to {where}>" in log
    assert "Traceback" not in log


# -- how-to: testing your handler ----------------------------------------------


def test_the_handler_tests_pass() -> None:
    """The how-to's test file, run with pytest as a user would run it."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_shout.py",
            "test_shout_in_memory.py",
        ],
        cwd=EXAMPLES,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b5 passed\b", result.stdout), result.stdout
