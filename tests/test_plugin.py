"""
Tests for the twistd plugin (C{twistd tcpserver}): how it is found, its
options and their errors, the service in this process, and real C{twistd}
subprocesses served to real clients and stopped with signals.

The subprocesses run the twistd next to C{sys.executable}, with the
repository root first on their PYTHONPATH: that is where they find
C{twisted_tcp}, the plugin (Twisted extends C{twisted.plugins.__path__} with
every C{twisted/plugins} directory on C{sys.path}) and the test handlers of
L{tests.helpers.twistd_handlers}.  Their output goes to files under
C{tmp_path} (and C{--pidfile=} writes no pid file); every one is killed and
waited for when its test ends, whatever the outcome.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.application.service import IService, IServiceMaker
from twisted.internet import error
from twisted.plugin import IPlugin, getPlugins
from twisted.python.usage import UsageError
from zope.interface.verify import verifyObject

import twisted_tcp as tt
from twisted_tcp import _service, _twistd
from twisted_tcp._where import OnEndpoint, OnFile, OnPort, on_endpoint
from twisted_tcp.examples import echo, kv

from .conftest import WAIT, sleep, within
from .helpers.twistd_handlers import slow_reply
from .processes import Process, start, subprocess_env, twistd_command

__all__ = ["start"]  # the fixture, imported for the tests below

REPO = Path(__file__).resolve().parent.parent
LOCAL = "127.0.0.1"
ECHO = "twisted_tcp.examples.echo:handle"
KV = "twisted_tcp.examples.kv:handle"
SLOW = "tests.helpers.twistd_handlers:slow_reply"
LISTENING = re.compile(r"twisted_tcp tcpserver listening on (\S+) \(handler (\S+)\)")


# -- finding the plugin --------------------------------------------------------


def tcpserver_plugins() -> list[Any]:
    return [p for p in getPlugins(IServiceMaker) if p.tapname == "tcpserver"]


def test_plugin_is_found_once_and_provides_the_interfaces() -> None:
    """getPlugins finds one C{tcpserver} service maker, a valid IServiceMaker."""
    [maker] = tcpserver_plugins()
    assert verifyObject(IServiceMaker, maker)
    assert verifyObject(IPlugin, maker)
    assert maker.options is _twistd.Options
    assert maker.makeService is _twistd.makeService
    assert "twisted_tcp" in maker.description


def test_make_service_from_options() -> None:
    """Parsed options make a service that provides IService and holds them."""
    options = _twistd.Options()
    options.parseOptions(["--port", "tcp:0:interface=127.0.0.1", "--handler", ECHO])
    service = _twistd.makeService(options)
    assert verifyObject(IService, service)
    assert service.where == on_endpoint("tcp:0:interface=127.0.0.1")
    assert service.handler is echo.handle
    assert service.handler_name == ECHO
    assert service.server is None  # nothing listens before the service starts


def run_python(code: str, tmp_path: Path, pythonpath: list[Path]) -> str:
    """Run C{code} in a new interpreter (bounded) and return its stdout."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(map(str, pythonpath)))
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_loading_the_plugin_imports_no_reactor(tmp_path: Path) -> None:
    """
    Neither importing the plugin file nor asking for its options imports
    twisted.internet.reactor (it would break C{twistd -r}, twisted#3785).
    """
    out = run_python(
        "import sys\n"
        "from twisted.application.service import IServiceMaker\n"
        "from twisted.plugin import getPlugins\n"
        "import twisted.plugins.twisted_tcp_plugin as plugin\n"
        "[m] = [p for p in getPlugins(IServiceMaker) if p.tapname == 'tcpserver']\n"
        "m.options().parseOptions(['--port', '0', '--handler', "
        "'twisted_tcp.examples.kv:handle'])\n"
        "print(plugin.__file__)\n"
        "print('twisted.internet.reactor' in sys.modules)\n",
        tmp_path,
        [REPO],
    )
    path, imported = out.split()
    # The repository's copy, or an installed one (site-packages comes first
    # in twisted.plugins.__path__).
    assert Path(path).parts[-3:] == ("twisted", "plugins", "twisted_tcp_plugin.py")
    assert imported == "False"


def test_plugin_listed_once_when_installed_and_on_sys_path(tmp_path: Path) -> None:
    """
    With the package both installed (here: a copy of the plugin file in
    another twisted/plugins directory on sys.path) and importable from the
    repository, twistd still lists C{tcpserver} once.
    """
    installed = tmp_path / "site" / "twisted" / "plugins"
    installed.mkdir(parents=True)
    plugin = REPO / "twisted" / "plugins" / "twisted_tcp_plugin.py"
    (installed / plugin.name).write_bytes(plugin.read_bytes())
    out = run_python(
        "from twisted.application.service import IServiceMaker\n"
        "from twisted.plugin import getPlugins\n"
        "print(sum(p.tapname == 'tcpserver' for p in getPlugins(IServiceMaker)))\n",
        tmp_path,
        [tmp_path / "site", REPO],
    )
    assert out.split() == ["1"]


# -- options -------------------------------------------------------------------


def parse(*args: str) -> _twistd.Options:
    options = _twistd.Options()
    options.parseOptions(list(args))
    return options


def test_options_defaults() -> None:
    options = parse("--port", "9000", "--handler", ECHO)
    assert options["where"] == tt.on_port(9000)
    assert isinstance(options["where"], OnPort)
    assert options["handler-function"] is _service.load_handler(ECHO)
    assert options["settings"] == tt.DEFAULTS
    assert options["settings"] == tt.Settings(
        max_connections=10000,
        backlog=64,
        buffer_age_limit=120.0,
        idle_timeout=None,
        shutdown_timeout=10.0,
        handshake_timeout=30.0,
    )


def test_options_all_given() -> None:
    options = parse(
        "--file", "/tmp/x.sock",
        "--handler", KV,
        "--max-connections", "7",
        "--backlog", "3",
        "--buffer-age-limit", "2.5",
        "--idle-timeout", "30",
        "--shutdown-timeout", "0",
    )  # fmt: skip
    assert options["where"] == tt.on_file("/tmp/x.sock")
    assert isinstance(options["where"], OnFile)
    settings = options["settings"]
    assert (settings.max_connections, settings.backlog) == (7, 3)
    assert (settings.buffer_age_limit, settings.idle_timeout) == (2.5, 30.0)
    assert settings.shutdown_timeout == 0.0
    service = _twistd.makeService(options)
    assert service.settings is settings


@pytest.mark.parametrize("text", ["unlimited", "UNLIMITED"])
def test_buffer_age_limit_unlimited(text: str) -> None:
    settings = parse("--port", "0", "--handler", ECHO, "--buffer-age-limit", text)["settings"]
    assert settings.buffer_age_limit is None


@pytest.mark.parametrize(
    "port", ["tcp:0:interface=127.0.0.1", "tcp6:9000", "unix:/tmp/s.sock", "tcp:port=9:backlog=5"]
)
def test_port_as_endpoint_description(port: str) -> None:
    where = parse("--port", port, "--handler", ECHO)["where"]
    assert isinstance(where, OnEndpoint)
    assert str(where) == port


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--port", "0"], "--handler MODULE:FUNCTION is required"),
        (["--handler", ECHO], "give --port PORT"),
        (["--port", "0", "--file", "x.sock", "--handler", ECHO], "exclude each other"),
        (["--port", "abc", "--handler", ECHO], "--port must be a port number"),
        (["--port", "-1", "--handler", ECHO], "--port must be a port number"),
        (["--port", "\u00b2", "--handler", ECHO], "--port must be a port number"),
        (["--port", "\u0663", "--handler", ECHO], "--port must be a port number"),
        (["--port", "0", "--handler", ECHO, "--max-connections", "\u0663"], "--max-connections"),
        (["--port", "0", "--handler", ECHO, "--handshake-timeout", "nan"], "--handshake-timeout"),
        (["--port", "0", "--handler", ECHO, "--idle-timeout", "inf"], "or 'none' (never)"),
        (["--port", "70000", "--handler", ECHO], "between 0 and 65535, not 70000"),
        (["--port", "tcp:abc", "--handler", ECHO], "not a valid server endpoint description"),
        (["--port", "nosuch:1", "--handler", ECHO], "Unknown endpoint type"),
        (["--port", "tcp:1:bogus=2", "--handler", ECHO], "unexpected keyword argument"),
        (["--file", "", "--handler", ECHO], "--file: path must not be empty"),
        (["--port", "0", "--handler", ECHO, "--max-connections", "0"], "--max-connections must"),
        (["--port", "0", "--handler", ECHO, "--max-connections", "x"], "--max-connections must"),
        (["--port", "0", "--handler", ECHO, "--max-connections", "1.5"], "--max-connections"),
        (["--port", "0", "--handler", ECHO, "--backlog", "0"], "--backlog must"),
        (["--port", "0", "--handler", ECHO, "--backlog", "many"], "--backlog must"),
        (["--port", "tcp:0", "--handler", ECHO, "--backlog", "5"], "add backlog=N to it"),
        (["--port", "0", "--handler", ECHO, "--buffer-age-limit", "0"], "--buffer-age-limit"),
        (["--port", "0", "--handler", ECHO, "--buffer-age-limit", "-1"], "--buffer-age-limit"),
        (["--port", "0", "--handler", ECHO, "--buffer-age-limit", "soon"], "or 'unlimited'"),
        (["--port", "0", "--handler", ECHO, "--buffer-age-limit", "inf"], "--buffer-age-limit"),
        (["--port", "0", "--handler", ECHO, "--buffer-age-limit", "nan"], "--buffer-age-limit"),
        (["--port", "0", "--handler", ECHO, "--idle-timeout", "0"], "--idle-timeout"),
        (["--port", "0", "--handler", ECHO, "--idle-timeout", "later"], "or 'none'"),
        (["--port", "0", "--handler", ECHO, "--shutdown-timeout", "-1"], "--shutdown-timeout"),
        (["--port", "0", "--handler", ECHO, "--shutdown-timeout", "x"], "--shutdown-timeout"),
        (["--port", "0", "--handler", ECHO, "--nosuch", "1"], "nosuch"),
    ],
)
def test_bad_options(args: list[str], message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(*args)
    assert message in str(caught.value)


@pytest.mark.parametrize("spec", ["justamodule", "a:b:c", ":handle", "module:", "1x:handle",
                                  "mod:not-a-name", "mod.:handle", "mod handle"])  # fmt: skip
def test_handler_syntax(spec: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse("--port", "0", "--handler", spec)
    assert str(caught.value) == (f"--handler must be MODULE:FUNCTION, e.g. {ECHO}, not {spec!r}")


@pytest.mark.parametrize(
    ("spec", "missing"),
    [
        ("no_such_module_xyz:handle", "no_such_module_xyz"),
        ("no_such_package_xyz.sub:handle", "no_such_package_xyz"),
        ("twisted_tcp.no_such_module:handle", "twisted_tcp.no_such_module"),
    ],
)
def test_handler_module_not_found(spec: str, missing: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse("--port", "0", "--handler", spec)
    assert f"module not found: no module named {missing!r}" in str(caught.value)


@pytest.fixture
def handler_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str, str], str]]:
    """Write a module of handlers under tmp_path, importable; return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(source)
        written.append(name)
        return name

    yield write
    for name in written:
        sys.modules.pop(name, None)


def test_handler_module_with_a_missing_import(handler_dir: Callable[[str, str], str]) -> None:
    """An ImportError of the module's own is reported as that, not as "not found"."""
    module = handler_dir(
        "_tt_handler_bad_import",
        "import os\nimport no_such_dependency_xyz\n\ndef handle(a, r, w): pass\n",
    )
    with pytest.raises(UsageError) as caught:
        parse("--port", "0", "--handler", f"{module}:handle")
    message = str(caught.value)
    assert "not found" not in message
    assert f"module {module!r} was found, but importing it failed" in message
    assert "ModuleNotFoundError: No module named 'no_such_dependency_xyz'" in message
    assert f"{module}.py, line 2" in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("raise RuntimeError('no configuration')\n", "RuntimeError: no configuration"),
        ("raise ImportError('needs libfoo')\n", "ImportError: needs libfoo"),
        ("def handle(a, r, w)\n    pass\n", "SyntaxError"),
    ],
)
def test_handler_module_that_fails(
    handler_dir: Callable[[str, str], str], source: str, expected: str
) -> None:
    module = handler_dir("_tt_handler_failing", source)
    with pytest.raises(UsageError) as caught:
        parse("--port", "0", "--handler", f"{module}:handle")
    message = str(caught.value)
    assert f"module {module!r} was found, but importing it failed: {expected}" in message


def test_handler_attribute_missing() -> None:
    with pytest.raises(UsageError) as caught:
        parse("--port", "0", "--handler", "twisted_tcp.examples.echo:nosuch")
    message = str(caught.value)
    assert "module 'twisted_tcp.examples.echo'" in message
    assert "has no attribute 'nosuch'" in message


def test_handler_dotted_attribute_missing() -> None:
    with pytest.raises(UsageError) as caught:
        parse("--port", "0", "--handler", "twisted_tcp.examples.kv:store.nosuch")
    assert "has no attribute 'store.nosuch'" in str(caught.value)


def test_handler_not_callable() -> None:
    with pytest.raises(UsageError) as caught:
        parse("--port", "0", "--handler", "tests.helpers.twistd_handlers:not_callable")
    assert "'not_callable' is not callable: it is 42, of type int" in str(caught.value)


def test_handler_with_wrong_arguments() -> None:
    with pytest.raises(UsageError) as caught:
        parse("--port", "0", "--handler", "os.path:exists")
    message = str(caught.value)
    assert "a handler is called as handler(address, reader, writer)" in message, message
    assert "exists(path)" in message


def test_handler_dotted_attribute() -> None:
    """C{module:object.method} names a method."""
    handler = parse("--port", "0", "--handler", f"{SLOW.partition(':')[0]}:handlers.slow_reply")[
        "handler-function"
    ]
    assert handler is slow_reply


def test_help_explains_every_option() -> None:
    usage = _twistd.Options().getUsage()
    for option in [
        "--port",
        "--file",
        "--handler",
        "--max-connections",
        "--backlog",
        "--buffer-age-limit",
        "--shutdown-timeout",
    ]:
        assert option + "=" in usage
    assert "tcp:9000:interface=127.0.0.1" in usage
    assert "unlimited" in usage
    assert "SIGTERM" in usage


# -- the kv example ------------------------------------------------------------


def test_kv_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kv, "store", {})
    monkeypatch.setattr(kv, "MAX_KEYS", 2)
    session = [
        (b"GET a", b"NIL"),
        (b"SET a  two words ", b"OK"),
        (b"get a", b" two words "),
        (b"SET  a x", b"ERR usage: SET key value"),
        (b"SET b", b"ERR usage: SET key value"),
        (b"SET b ", b"OK"),
        (b"GET b", b""),
        (b"SET b 2", b"OK"),
        (b"SET c 3", b"ERR store full (2 keys)"),
        (b"SET a 1", b"OK"),
        (b"DEL a", b"1"),
        (b"DEL a", b"0"),
        (b"GET", b"ERR usage: GET key"),
        (b"GET a b", b"ERR usage: GET key"),
        (b"", b"ERR empty command"),
        (b"PING", b"ERR unknown command 'PING' (SET, GET, DEL or QUIT)"),
        (b"quit", None),
    ]
    assert [(line, kv.execute(line)) for line, _ in session] == session


# -- the service, in this process ----------------------------------------------


def service(handler: Any = None, **kwargs: Any) -> _service.TcpServerService:
    return _service.TcpServerService(
        kwargs.pop("where", tt.on_port(0, interface=LOCAL)),
        handler or echo.handle,
        "the:handler",
        settings=tt.Settings(**kwargs),
    )


def test_listen_error_when_the_port_is_in_use() -> None:
    """
    A port in use makes privilegedStartService raise L{ListenError}, an
    Exception (twistd cleans up) and a SystemExit (the process exits with
    status 1 and the message, no traceback).
    """
    taken = socket.socket()
    try:
        taken.bind((LOCAL, 0))
        taken.listen()
        port = taken.getsockname()[1]
        svc = service(where=tt.on_port(port, interface=LOCAL))
        with pytest.raises(_service.ListenError) as caught:
            svc.privilegedStartService()
    finally:
        taken.close()
    assert isinstance(caught.value, Exception)
    assert isinstance(caught.value, SystemExit)
    assert str(caught.value) == caught.value.code
    assert str(caught.value) == (
        f"twisted_tcp tcpserver: [Errno 98] Address already in use: "
        f"cannot listen on {LOCAL}:{port}"
    )
    assert svc.server is None
    assert svc.stopService() is None


@pytest_twisted.ensureDeferred
async def test_service_stops_after_running_handler_finishes() -> None:
    """stopService stops accepting at once, and fires after the handler's whole reply."""
    svc = service(slow_reply, shutdown_timeout=WAIT)
    svc.startService()  # without privilegedStartService, as `twist` does
    assert svc.server is not None
    port = svc.server.listening_on
    where = tt.to_host_and_port(LOCAL, port)
    _, reader, writer = await within(tt.connect(where))
    try:
        writer.write_line(b"1 reply")
        assert await within(reader.read_line()) == b"begin reply"
        stopped = svc.stopService()
        assert stopped is not None
        await refused(where)
        assert not stopped.called
        assert await within(reader.read_line()) == b"end reply"
        assert await within(reader.read_line()) is None
        await within(stopped)
    finally:
        await within(writer.close())


@pytest_twisted.ensureDeferred
async def test_service_closes_what_remains_after_the_shutdown_timeout() -> None:
    svc = service(shutdown_timeout=0.3)
    svc.privilegedStartService()
    svc.startService()
    assert svc.server is not None
    where = tt.to_host_and_port(LOCAL, svc.server.listening_on)
    _, reader, writer = await within(tt.connect(where))
    try:
        writer.write_line(b"ping")
        assert await within(reader.read_line()) == b"ping"
        started = time.monotonic()
        stopped = svc.stopService()
        assert stopped is not None
        await sleep(0.1)
        assert not stopped.called  # the echo handler waits for another line
        assert await within(reader.read_line()) is None
        await within(stopped)
        assert 0.25 <= time.monotonic() - started < WAIT
    finally:
        await within(writer.close())


# -- twistd in a subprocess ----------------------------------------------------


def twistd(start: Callable[..., Process], *args: str) -> Process:
    return start(*twistd_command(), "-n", "--pidfile=", "tcpserver", *args)


async def listening(process: Process, handler: str) -> str:
    match = await process.wait_for(LISTENING)
    assert match.group(2) == handler
    return match.group(1)


async def refused(where: tt.WhereToConnect) -> None:
    """Wait (bounded) until connecting to C{where} is refused."""

    async def poll() -> None:
        while True:
            try:
                _, _, writer = await tt.connect(where, timeout=1)
            except (error.ConnectionRefusedError, error.ConnectError):
                return
            await writer.close()
            await sleep(0.02)

    await within(poll())


def test_twistd_help_lists_tcpserver(start: Callable[..., Process]) -> None:
    """A twistd subprocess finds the plugin through PYTHONPATH."""
    result = subprocess.run(
        [*twistd_command(), "--help"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+tcpserver\s+Serve a twisted_tcp handler", result.stdout, re.M)


@pytest_twisted.ensureDeferred
async def test_twistd_sigterm_with_a_handler_mid_reply(start: Callable[..., Process]) -> None:
    """
    twistd serves real clients; SIGTERM while a handler is in the middle of
    its reply: new connections are refused, the reply arrives whole, and
    twistd ends with the signal, long before the shutdown timeout.
    """
    process = twistd(
        start,
        "--port", "tcp:0:interface=127.0.0.1",
        "--handler", SLOW,
        "--shutdown-timeout", str(WAIT),
    )  # fmt: skip
    address = await listening(process, SLOW)
    host, port = address.rsplit(":", 1)
    assert host == LOCAL
    where = tt.to_host_and_port(LOCAL, int(port))

    async def quick(sock: Any, reader: tt.Reader, writer: tt.Writer) -> list[bytes]:
        writer.write_line(b"0 quick")
        return [line async for line in reader.lines()]

    assert await within(tt.with_connection(where, quick)) == [b"begin quick", b"end quick"]

    _, reader, writer = await within(tt.connect(where))
    try:
        writer.write_line(b"2 slow")
        assert await within(reader.read_line()) == b"begin slow"
        started = time.monotonic()
        process.popen.send_signal(signal.SIGTERM)
        await refused(where)
        assert process.popen.poll() is None  # still finishing the reply
        assert await within(reader.read_line()) == b"end slow"
        assert await within(reader.read_line()) is None
    finally:
        await within(writer.close())
    assert await process.exited() == -signal.SIGTERM
    assert time.monotonic() - started < WAIT - 1
    output = process.output()
    assert "twisted_tcp tcpserver stopping: no new connections; waiting up to" in output
    assert "twisted_tcp tcpserver stopped" in output
    assert "still open after" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest_twisted.ensureDeferred
async def test_twistd_shutdown_timeout_closes_idle_connections(
    start: Callable[..., Process], signum: int
) -> None:
    """
    A handler that does not finish (echo, waiting for the next line) is
    given --shutdown-timeout seconds; then its connection is closed, after
    the replies it had written, and twistd ends with the signal.
    """
    process = twistd(
        start,
        "--port", "tcp:0:interface=127.0.0.1",
        "--handler", ECHO,
        "--shutdown-timeout", "0.5",
    )  # fmt: skip
    port = int((await listening(process, ECHO)).rsplit(":", 1)[1])
    _, reader, writer = await within(tt.connect(tt.to_host_and_port(LOCAL, port)))
    try:
        writer.write_line(b"one")
        writer.write_line(b"two")
        assert await within(reader.read_line()) == b"one"
        started = time.monotonic()
        process.popen.send_signal(signum)
        assert await within(reader.read_line()) == b"two"
        assert await within(reader.read_line()) is None
        assert time.monotonic() - started >= 0.4
    finally:
        await within(writer.close())
    assert await process.exited() == -signum
    assert time.monotonic() - started < WAIT - 1
    assert "closing 1 connection(s) still open after 0.5 s" in process.output()


@pytest_twisted.ensureDeferred
async def test_twistd_unix_socket(start: Callable[..., Process], tmp_path: Path) -> None:
    """--file serves on a Unix socket, whose file is gone after SIGTERM."""
    path = tmp_path / "s.sock"
    process = twistd(start, "--file", str(path), "--handler", KV)
    assert await listening(process, KV) == f"unix:{path}"
    where = tt.to_file(path)

    async def session(sock: Any, reader: tt.Reader, writer: tt.Writer) -> list[bytes]:
        for line in [b"SET k a value", b"GET k", b"GET nothing", b"NOPE", b"QUIT"]:
            writer.write_line(line)
        return [line async for line in reader.lines()]

    assert await within(tt.with_connection(where, session)) == [
        b"OK",
        b"a value",
        b"NIL",
        b"ERR unknown command 'NOPE' (SET, GET, DEL or QUIT)",
        b"BYE",
    ]
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == -signal.SIGTERM
    assert not path.exists()
    assert not (tmp_path / "s.sock.lock").exists()


@pytest_twisted.ensureDeferred
async def test_example_scripts(start: Callable[..., Process]) -> None:
    """The client examples run against twistd serving the kv example, and print the replies."""
    server = twistd(start, "--port", "tcp:0:interface=127.0.0.1", "--handler", KV)
    port = (await listening(server, KV)).rsplit(":", 1)[1]
    examples = REPO / "docs" / "examples"

    inline = start(
        sys.executable,
        str(examples / "client_inlinecallbacks.py"),
        LOCAL,
        port,
        "SET greeting hello, world",
        "GET greeting",
        "GET nothing",
    )
    assert await inline.exited() == 0, inline.output()
    assert inline.out_path.read_text().splitlines() == [
        "SET greeting hello, world -> OK",
        "GET greeting -> hello, world",
        "GET nothing -> NIL",
    ]

    coroutine = start(
        sys.executable, str(examples / "client_async.py"), LOCAL, port, "GET greeting", "DEL x"
    )
    assert await coroutine.exited() == 0, coroutine.output()
    assert coroutine.out_path.read_text().splitlines() == ["hello, world", "0"]

    server.popen.send_signal(signal.SIGTERM)
    assert await server.exited() == -signal.SIGTERM


@pytest.mark.parametrize(
    ("handler", "message"),
    [
        ("no_such_module_xyz:handle", "module not found: no module named 'no_such_module_xyz'"),
        ("twisted_tcp.examples.echo:nosuch", "has no attribute 'nosuch'"),
        ("tests.helpers.twistd_handlers:not_callable", "is not callable"),
        ("twisted_tcp.examples.echo", "--handler must be MODULE:FUNCTION"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_twistd_bad_handler(
    start: Callable[..., Process], handler: str, message: str
) -> None:
    """A wrong --handler ends twistd with status 1 and the reason, before it listens."""
    process = twistd(start, "--port", "tcp:0:interface=127.0.0.1", "--handler", handler)
    assert await process.exited() == 1
    output = process.output()
    assert message in output
    assert "listening on" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("form", ["number", "description"])
@pytest_twisted.ensureDeferred
async def test_twistd_port_in_use(start: Callable[..., Process], form: str) -> None:
    """A port in use ends twistd with status 1 and a one-line reason, no traceback."""
    taken = socket.socket()
    try:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("" if form == "number" else LOCAL, 0))
        taken.listen()
        port = taken.getsockname()[1]
        spec = str(port) if form == "number" else f"tcp:{port}:interface={LOCAL}"
        process = twistd(start, "--port", spec, "--handler", ECHO)
        assert await process.exited() == 1
    finally:
        taken.close()
    output = process.output()
    shown = f"0.0.0.0:{port}" if form == "number" else spec
    reason = "[Errno 98] Address already in use"
    assert f"twisted_tcp tcpserver: {reason}: cannot listen on {shown}" in output
    assert "listening on" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("width", [60, 79, 80, 100, 120])
def test_help_breaks_no_option_name_at_a_hyphen(width: int) -> None:
    """Every option named in the help reads whole, whatever the terminal's width."""
    usage = _twistd.Options().getUsage(width=width)
    assert "\u2011" not in usage
    for line in usage.splitlines():
        assert len(line) <= width and not line.rstrip().endswith("-"), line
    assert "(--max-connections is per worker)" in " ".join(usage.split())
