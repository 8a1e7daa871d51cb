"""
Tests for C{twistd tcpserver --workers N}: real twistd subprocesses whose
workers share one listening socket (a port on 127.0.0.1, or a Unix socket),
served to real clients, with workers killed, restarted by SIGHUP and all
stopped by SIGTERM.

The handler of most tests, C{pid_then_hold}, replies with the process id of
the worker that serves the connection and holds the connection until the
client closes it.  With C{--max-connections 1} (per worker), a second
connection opened while the first is held must be served by the other
worker: that is how the tests see both workers serve, without relying on
how the kernel spreads connections.

Each test kills and reaps the twistd process (the C{start} fixture), and
then makes sure that none of its workers is left running.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredList
from twisted.python.usage import UsageError

import twisted_tcp as tt
from twisted_tcp import _twistd
from twisted_tcp._control import WORKER_MODULE
from twisted_tcp._service import TcpServerService
from twisted_tcp._supervisor import WorkersService, check_shareable

from .conftest import WAIT, sleep, until, within
from .helpers.pki import Pki
from .processes import Process, start, twistd_command
from .test_plugin import LISTENING, LOCAL, SLOW, parse, refused

__all__ = ["start"]  # the fixture, imported for the tests below

PID = "tests.helpers.twistd_handlers:pid_then_hold"
FAILS = "tests.helpers.fails_in_workers:handle"
STARTED = re.compile(r"worker (\d+) \(pid (\d+)\) started")


# -- options -------------------------------------------------------------------


def test_workers_default_to_one_and_keep_the_single_process_service() -> None:
    options = parse("--port", "0", "--handler", PID)
    assert options["workers"] == 1
    assert isinstance(_twistd.makeService(options), TcpServerService)


@pytest.mark.parametrize(
    "port", ["0", "tcp:0:interface=127.0.0.1", "tcp6:0", "unix:/tmp/w.sock:backlog=5"]
)
def test_workers_make_the_supervisor(port: str) -> None:
    options = parse("--port", port, "--handler", PID, "--workers", "3", "--max-connections", "7")
    service = _twistd.makeService(options)
    assert isinstance(service, WorkersService)
    assert service.workers == 3
    assert service.settings.max_connections == 7
    assert service.port is None  # nothing listens before the service starts


def test_workers_with_a_unix_socket() -> None:
    service = _twistd.makeService(
        parse("--file", "/tmp/w.sock", "--handler", PID, "--workers", "2")
    )
    assert isinstance(service, WorkersService)
    assert service.where == tt.on_file("/tmp/w.sock")


@pytest.mark.parametrize("count", ["0", "-2", "two", "1.5"])
def test_bad_workers(count: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse("--port", "0", "--handler", PID, "--workers", count)
    assert f"--workers must be a whole number of at least 1, not {count!r}" in str(caught.value)


def test_a_socket_that_cannot_be_shared() -> None:
    """Only plain sockets are handed to workers; anything else is a usage error."""

    class Elsewhere(tt.WhereToListen):
        def __str__(self) -> str:
            return "tls:443"

    with pytest.raises(UsageError) as caught:
        check_shareable(Elsewhere(), 2)
    assert str(caught.value) == (
        "--workers 2: the workers share one listening socket, which works with --port PORT, "
        "--file PATH and tcp:, tcp6: or unix: endpoint descriptions, not with tls:443"
    )


def test_help_explains_workers() -> None:
    usage = " ".join(_twistd.Options().getUsage().split())
    assert "--workers=" in usage
    assert "--max-connections is per worker" in usage
    assert "SIGHUP restarts them one by one" in usage


# -- twistd --workers in a subprocess ----------------------------------------


def _worker_pids(output: str) -> set[int]:
    return {int(pid) for _, pid in STARTED.findall(output)}


def _is_worker(pid: int) -> bool:
    try:
        return WORKER_MODULE.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.fixture
def twistd(start: Callable[..., Process]) -> Iterator[Callable[..., Process]]:
    """
    Start C{twistd -n tcpserver ARGS}; at the end, after the twistd process
    was killed, check that its workers stopped by themselves (their stdin
    closed), and kill any that did not.
    """
    processes: list[Process] = []

    def run(*args: str) -> Process:
        process = start(*twistd_command(), "-n", "--pidfile=", "tcpserver", *args)
        processes.append(process)
        return process

    yield run
    for process in processes:
        process.stop()
    pids = {pid for process in processes for pid in _worker_pids(process.output())}
    left = pytest_twisted.blockon(within(_gone(pids), WAIT + 5))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"workers still running after their supervisor died: {left}"


async def _gone(pids: set[int]) -> set[int]:
    """Wait (at most 10 s) for the workers C{pids} to end; return those that did not."""
    for _ in range(500):
        left = {pid for pid in pids if _is_worker(pid)}
        if not left:
            return left
        await sleep(0.02)
    return left


async def listening_on(process: Process, handler: str) -> tt.WhereToConnect:
    match = await process.wait_for(LISTENING)
    assert match.group(2) == handler
    address = match.group(1)
    if address.startswith("unix:"):
        return tt.to_file(address[len("unix:") :])
    host, port = address.rsplit(":", 1)
    return tt.to_host_and_port(host, int(port))


async def held(where: tt.WhereToConnect) -> tuple[int, tt.Writer]:
    """Connect and read the pid of the worker that serves the connection, which stays open."""
    _, reader, writer = await within(tt.connect(where, timeout=WAIT))
    try:
        line = await within(reader.read_line())
        assert line is not None, "the connection was closed before the reply"
    except BaseException:
        await within(writer.close())
        raise
    return int(line), writer


async def both_workers(where: tt.WhereToConnect) -> set[int]:
    """With --max-connections 1: the pids of two connections held at once (two workers)."""
    first, writer1 = await held(where)
    try:
        second, writer2 = await held(where)
        await within(writer2.close())
    finally:
        await within(writer1.close())
    return {first, second}


async def served_by(where: tt.WhereToConnect) -> int:
    """One whole connection: the pid of the worker that served it."""
    pid, writer = await held(where)
    await within(writer.close())
    return pid


def workers_argv(*args: str, where: str = f"tcp:0:interface={LOCAL}") -> list[str]:
    flag = "--file" if where.startswith("/") else "--port"
    return [flag, where, "--workers", "2", "--shutdown-timeout", "2", *args]


@pytest_twisted.ensureDeferred
async def test_both_workers_serve(twistd: Callable[..., Process]) -> None:
    """
    Connections are served by two worker processes (not by twistd itself),
    each with its own --max-connections; their log lines carry their index
    and pid; SIGTERM ends twistd with status 0.
    """
    process = twistd(*workers_argv("--handler", PID, "--max-connections", "1"))
    where = await listening_on(process, PID)
    pids = await both_workers(where)
    assert len(pids) == 2
    assert process.popen.pid not in pids
    assert pids == _worker_pids(process.output())
    for index, pid in STARTED.findall(process.output()):
        # Relayed from the worker's stderr, a pipe of its own: it may reach
        # twistd's log a moment after the connection was served.
        line = f"[worker {index} pid {pid}] twisted_tcp tcpserver listening on "
        await process.wait_for(re.compile(re.escape(line)))
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == 0, process.output()
    output = process.output()
    assert "Traceback" not in output
    for index, pid in STARTED.findall(output):
        assert f"worker {index} (pid {pid}) exited with status 0" in output


@pytest_twisted.ensureDeferred
async def test_a_killed_worker_is_restarted(twistd: Callable[..., Process]) -> None:
    """
    A worker killed with SIGKILL: its death is logged with the signal, the
    next connections are still served, and a new worker takes its place.
    """
    process = twistd(*workers_argv("--handler", PID, "--max-connections", "1"))
    where = await listening_on(process, PID)
    victim, survivor = sorted(await both_workers(where))
    [(index, _)] = [(i, p) for i, p in STARTED.findall(process.output()) if int(p) == victim]
    os.kill(victim, signal.SIGKILL)
    for _ in range(5):
        assert await served_by(where) != victim
    await process.wait_for(
        re.compile(
            rf"worker {index} \(pid {victim}\) was killed by signal 9 \(SIGKILL\); "
            r"restarting in 0\.5 s"
        )
    )
    await until(lambda: len(_worker_pids(process.output())) == 3)
    [replacement] = _worker_pids(process.output()) - {victim, survivor}
    await process.wait_for(re.compile(rf"\[worker {index} pid {replacement}\] .* listening on"))
    assert await both_workers(where) == {survivor, replacement}
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == 0, process.output()


@pytest_twisted.ensureDeferred
async def test_a_worker_whose_child_outlives_it_is_restarted(
    twistd: Callable[..., Process],
) -> None:
    """
    A worker killed while a process its handler started still holds the
    worker's standard descriptors: it is restarted all the same (its exit,
    not the end of its pipes, counts), and SIGTERM still ends twistd.
    """
    handler = "tests.helpers.twistd_handlers:pid_and_child_then_hold"
    process = twistd(*workers_argv("--handler", handler, "--max-connections", "1"))
    where = await listening_on(process, handler)
    _, reader, writer = await within(tt.connect(where, timeout=WAIT))
    child = 0
    try:
        reply = await within(reader.read_line())
        assert reply is not None
        victim, child = map(int, reply.split())
        os.kill(victim, signal.SIGKILL)
        await process.wait_for(re.compile(rf"\(pid {victim}\) was killed by signal 9"))
        await until(lambda: len(_worker_pids(process.output())) == 3)
        process.popen.send_signal(signal.SIGTERM)
        assert await process.exited() == 0, process.output()
    finally:
        await within(writer.close())
        if child:
            os.kill(child, signal.SIGKILL)  # an orphan now, reaped by init


@pytest_twisted.ensureDeferred
async def test_sighup_restarts_the_workers_refusing_no_connection(
    twistd: Callable[..., Process],
) -> None:
    """
    SIGHUP under a steady stream of connections: the workers are replaced
    one by one, every connection is served (none refused, none cut), and
    afterwards only new workers serve; the old ones exited cleanly.
    """
    process = twistd(*workers_argv("--handler", PID))
    where = await listening_on(process, PID)
    await served_by(where)
    old = _worker_pids(process.output())
    assert len(old) == 2
    done = re.compile(r"rolling restart done: 2 new workers")
    served: list[int] = []

    async def stream() -> None:
        while done.search(process.output()) is None:
            served.append(await served_by(where))
        for _ in range(10):
            served.append(await served_by(where))

    streams = DeferredList([within(stream(), 20) for _ in range(3)], fireOnOneErrback=True)
    await sleep(0.1)
    process.popen.send_signal(signal.SIGHUP)
    await within(streams, 25)
    new = _worker_pids(process.output()) - old
    assert len(new) == 2
    assert set(served[-10:]) <= new
    assert old <= set(served)
    for pid in old:
        await process.wait_for(re.compile(rf"worker \d \(pid {pid}\) exited with status 0"))
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == 0, process.output()


@pytest_twisted.ensureDeferred
async def test_sigterm_lets_every_reply_finish_then_exits_0(
    twistd: Callable[..., Process],
) -> None:
    """
    SIGTERM while both workers are in the middle of a reply: new clients
    are refused, both replies arrive whole, and twistd exits with status 0.
    """
    process = twistd(*workers_argv("--handler", SLOW, "--max-connections", "1"))
    where = await listening_on(process, SLOW)
    connections = []
    try:
        for word in [b"one", b"two"]:
            _, reader, writer = await within(tt.connect(where))
            connections.append((reader, writer))
            writer.write_line(b"1.5 " + word)
            assert await within(reader.read_line()) == b"begin " + word
        process.popen.send_signal(signal.SIGTERM)
        await refused(where)
        for (reader, _), word in zip(connections, [b"one", b"two"], strict=True):
            assert await within(reader.read_line()) == b"end " + word
            assert await within(reader.read_line()) is None
    finally:
        for _, writer in connections:
            await within(writer.close())
    assert await process.exited() == 0, process.output()
    output = process.output()
    assert "twisted_tcp tcpserver stopping 2 worker(s)" in output
    assert "still open after" not in output
    assert "Traceback" not in output


@pytest_twisted.ensureDeferred
async def test_unix_socket_shared_by_workers(
    twistd: Callable[..., Process], tmp_path: Path
) -> None:
    """
    --file: both workers serve the Unix socket; a rolling restart keeps its
    file and the file's mode; SIGTERM removes it.
    """
    path = tmp_path / "w.sock"
    process = twistd(*workers_argv("--handler", PID, "--max-connections", "1", where=str(path)))
    where = await listening_on(process, PID)
    assert where == tt.to_file(path)
    assert len(await both_workers(where)) == 2
    os.chmod(path, 0o600)
    process.popen.send_signal(signal.SIGHUP)
    await process.wait_for(re.compile("rolling restart done"))
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(await both_workers(where)) == 2
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == 0, process.output()
    assert not path.exists()


@pytest_twisted.ensureDeferred
async def test_a_worker_that_cannot_start_is_restarted_with_a_back_off(
    twistd: Callable[..., Process],
) -> None:
    """
    A handler that fails to import in the workers: each failure is logged
    (the worker's error, and its exit status), and the restarts slow down.
    """
    process = twistd(*workers_argv("--handler", FAILS))
    await listening_on(process, FAILS)
    await process.wait_for(
        re.compile(r"worker 1 \(pid \d+\) exited with status 1; restarting in 1 s")
    )
    output = process.output()
    assert re.search(r"worker 1 \(pid \d+\) exited with status 1; restarting in 0\.5 s", output)
    assert re.search(
        r"\[worker 1 pid \d+\] worker 1 cannot start: .*this handler fails to import", output
    )
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == 0, process.output()


@pytest_twisted.ensureDeferred
async def test_workers_stop_when_their_supervisor_dies(twistd: Callable[..., Process]) -> None:
    """twistd killed with SIGKILL: its workers see their stdin close and exit; the port closes."""
    process = twistd(*workers_argv("--handler", PID))
    where = await listening_on(process, PID)
    await served_by(where)
    await process.wait_for(re.compile(r"\[worker 2 pid \d+\] twisted_tcp tcpserver listening"))
    pids = _worker_pids(process.output())
    process.popen.kill()
    assert await process.exited() == -signal.SIGKILL
    assert not await within(_gone(pids), WAIT + 5)
    await refused(where)


@pytest_twisted.ensureDeferred
async def test_a_second_signal_while_stopping_changes_nothing(
    twistd: Callable[..., Process],
) -> None:
    """SIGINT while stopping after SIGTERM: logged, and the reply still arrives whole."""
    process = twistd(*workers_argv("--handler", SLOW))
    where = await listening_on(process, SLOW)
    _, reader, writer = await within(tt.connect(where))
    try:
        writer.write_line(b"1 word")
        assert await within(reader.read_line()) == b"begin word"
        process.popen.send_signal(signal.SIGTERM)
        await process.wait_for(re.compile("stopping 2 worker"))
        process.popen.send_signal(signal.SIGINT)
        await process.wait_for(re.compile("received SIGINT while stopping"))
        assert await within(reader.read_line()) == b"end word"
    finally:
        await within(writer.close())
    assert await process.exited() == 0, process.output()


@pytest_twisted.ensureDeferred
async def test_workers_port_in_use(twistd: Callable[..., Process]) -> None:
    """A port in use ends twistd with status 1 and the reason, before any worker starts."""
    taken = socket.socket()
    try:
        taken.bind((LOCAL, 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = twistd("--port", f"tcp:{port}:interface={LOCAL}", "--workers", "2",
                         "--handler", PID)  # fmt: skip
        assert await process.exited() == 1
    finally:
        taken.close()
    output = process.output()
    reason = "[Errno 98] Address already in use"
    assert f"{reason}: cannot listen on tcp:{port}:interface={LOCAL}" in output
    assert "started" not in output
    assert "Traceback" not in output


@pytest_twisted.ensureDeferred
async def test_workers_serve_tls(twistd: Callable[..., Process], pki: Pki) -> None:
    """
    --tls-cert/--tls-key with --workers: each worker serves TLS on the shared
    socket, choosing among the --tls-alpn protocols.
    """
    process = twistd(
        *workers_argv(
            "--handler", PID, "--max-connections", "1",
            "--tls-cert", str(pki.cert), "--tls-key", str(pki.key),
            "--tls-alpn", "x-test,h2", "--handshake-timeout", "5",
            where="0",
        )
    )  # fmt: skip
    plain = await listening_on(process, PID)
    assert isinstance(plain, tt.WhereToConnect)
    port = int(str(plain).rsplit(":", 1)[1])
    where = tt.to_host_and_port("localhost", port, tls=pki.trust())
    pids = await both_workers(where)
    assert len(pids) == 2
    assert pids == _worker_pids(process.output())
    offering = tt.to_host_and_port("localhost", port, tls=pki.trust(), alpn=["h2", "x-test"])
    sock = await within(tt.connect_sock(offering))
    assert sock.alpn_protocol == "x-test"
    await within(sock.close())
    process.popen.send_signal(signal.SIGTERM)
    assert await process.exited() == 0, process.output()
