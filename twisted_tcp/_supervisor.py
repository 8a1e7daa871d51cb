"""
The supervisor of C{twistd tcpserver --workers N}: one listening socket, N
worker processes (L{twisted_tcp._worker}) that accept connections on it.

The supervisor, L{WorkersService}, is the service of the twistd process:

    1. C{privilegedStartService} listens exactly as the single-process server
       does (the same addresses, checks and error messages), but never
       accepts: its port is paused at once.  It only holds the socket open,
       so that connections wait in the kernel's queue whenever no worker
       accepts, and are never refused while the supervisor runs.
    2. C{startService} starts N workers, each with the listening socket, a
       pipe as its stdin (its end is closed when the supervisor dies,
       whereupon the worker shuts down: no orphan keeps the port), a pipe
       for its control lines, and its stderr a pipe of log lines, which the
       supervisor logs again with a C{[worker I pid P]} prefix; so is
       whatever comes on its stdout (the output of a process the handler
       started, say).  L{twisted_tcp._control} describes all of these.
    3. A worker that exits is restarted after a back-off (L{FIRST_DELAY},
       doubling up to L{MAX_DELAY}; back to the first after a worker ran
       L{STABLE_AFTER} seconds), and its exit status is logged.
    4. SIGHUP restarts the workers one by one: a new worker for slot 1 is
       started, and once it accepts, the old one is stopped gracefully; then
       slot 2, and so on.  The socket stays open throughout.
    5. SIGTERM or SIGINT stop the supervisor: every worker is sent SIGTERM
       and stops accepting; once they all have, the supervisor closes its
       socket (removing a Unix socket's file), so new clients are refused;
       then each worker gets C{--shutdown-timeout} seconds to let its handlers
       finish, and one still running L{KILL_MARGIN} seconds after that is
       killed.  The process then exits with status 0: the supervisor
       handles these signals itself, so twistd does not end by re-raising
       the signal as a single-process twistd does.

Twisted's C{twisted.runner.procmon.ProcessMonitor} restarts processes with
a back-off too, but cannot run these: it spawns with no C{childFDs} (no
socket, no control pipe), with its own protocol (no control lines, log
lines logged as they come), one process per name (no old and new worker
side by side in a rolling restart), and its C{stopService} waits for no
process to end.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import endpoints
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.error import ProcessDone, ProcessTerminated, ReactorNotRunning
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure

from ._connect import default_reactor
from ._control import (
    CLOSED,
    CONTROL_FD,
    LISTENING,
    LOG_NAMESPACE,
    MAX_LINE,
    WORKER_ENVIRONMENT_VARIABLE,
    WORKER_FD,
    WorkerSettings,
    parse_log_line,
    read_stats_line,
    worker_command,
)
from ._oneshot import OneShot
from ._service import ListenError, cannot_listen
from ._settings import DEFAULTS, Settings
from ._stats import ServerStats
from ._where import OnEndpoint, OnFile, OnPort, WhereToListen, show_address

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IListeningPort

_log = Logger(namespace=LOG_NAMESPACE)

FIRST_DELAY = 0.5
"""Seconds before a worker that exited is restarted, the first time."""

MAX_DELAY = 30.0
"""The longest wait before a restart: the delay doubles up to this."""

STABLE_AFTER = 10.0
"""A worker that ran this many seconds before exiting is restarted after L{FIRST_DELAY}."""

KILL_MARGIN = 5.0
"""Seconds after C{--shutdown-timeout} that a stopping worker is killed (SIGKILL)."""

READY_TIMEOUT = 30.0
"""Seconds a new worker of a rolling restart gets to start accepting."""


def check_shareable(where: WhereToListen, workers: int) -> None:
    """
    Check that the supervisor can hand a socket listening at C{where} to
    worker processes: a TCP port, a Unix socket, or a C{tcp:}, C{tcp6:} or
    C{unix:} endpoint description.

    @raise usage.UsageError: for any other endpoint description (one that
        wraps the socket, as C{ssl:} does, or that is not a plain socket).
    """
    if isinstance(where, (OnPort, OnFile)):
        return
    if isinstance(where, OnEndpoint) and isinstance(where.source, str):
        endpoint = endpoints.serverFromString(None, where.source)
        if isinstance(
            endpoint,
            (
                endpoints.TCP4ServerEndpoint,
                endpoints.TCP6ServerEndpoint,
                endpoints.UNIXServerEndpoint,
            ),
        ):
            return
    raise usage.UsageError(
        f"--workers {workers}: the workers share one listening socket, which works with "
        "--port PORT, --file PATH and tcp:, tcp6: or unix: endpoint descriptions, "
        f"not with {where}"
    )


# -- the supervisor -----------------------------------------------------------


class _NoAccept(Factory):
    """The factory of the supervisor's own port, which is paused and never accepts."""

    noisy = False

    def buildProtocol(self, addr: object) -> None:
        return None


def _exit_text(reason: Failure) -> str:
    """How a process ended: C{"exited with status 1"} or C{"was killed by signal 9 (SIGKILL)"}."""
    error = reason.value
    if isinstance(error, ProcessTerminated) and error.signal is not None:
        try:
            name = f" ({signal.Signals(error.signal).name})"
        except ValueError:
            name = ""
        return f"was killed by signal {error.signal}{name}"
    if isinstance(error, (ProcessDone, ProcessTerminated)):
        return f"exited with status {error.exitCode}"
    return f"ended: {error}"


class _Worker(ProcessProtocol):
    """
    One worker process, seen from the supervisor: its control lines, its
    log lines (logged again with the worker's index and pid) and its end.

    @ivar listening: fires when the worker accepts connections; fails if it
        exits first.
    @ivar closed: fires when the worker no longer accepts (it said so, or it
        exited).
    @ivar ended: fires once the process has exited.
    @ivar retired: whether the worker was replaced or told to stop, so that
        its exit is expected and it is not restarted.
    @ivar promoted: whether it serves its slot (a new worker of a rolling
        restart is not promoted until it accepts).
    """

    pid: int | None = None
    stats: ServerStats | None = None  # what it last said it counted (with --metrics)
    control_ended = False  # its control pipe is closed: every line of it was read
    _bad_stats = False  # it said something else, and that was logged

    def __init__(self, supervisor: WorkersService, index: int, started_at: float) -> None:
        self.supervisor = supervisor
        self.index = index
        self.started_at = started_at
        self.listening: OneShot[None] = OneShot()
        self.closed: OneShot[None] = OneShot()
        self.ended: OneShot[None] = OneShot()
        self.retired = False
        self.promoted = False
        self.kill_timer: IDelayedCall | None = None
        self._control = b""
        self._output = {1: b"", 2: b""}  # the part of a line each has sent so far

    def __str__(self) -> str:
        return f"worker {self.index} (pid {self.pid})"

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """Act on control lines; log the worker's log and output lines."""
        if childFD == CONTROL_FD:
            self._control += data
            *lines, self._control = self._control.split(b"\n")
            self._control = self._control[:MAX_LINE]
            for line in lines:
                if line == LISTENING:
                    self.listening.fire(None)
                elif line == CLOSED:
                    self.closed.fire(None)
                else:
                    self._read_stats(line)
            return
        # stderr, the worker's log; stdout, what its children print
        text = self._output.get(childFD, b"") + data
        *lines, text = text.split(b"\n")
        if len(text) > MAX_LINE:  # no end of line in sight: log what came
            lines.append(text)
            text = b""
        self._output[childFD] = text
        for line in lines:
            self._relay(line, LogLevel.warn if childFD == 2 else LogLevel.info)

    def childConnectionLost(self, childFD: int) -> None:
        """The control pipe closed (the worker exited): its last line was read."""
        if childFD == CONTROL_FD:
            self.control_ended = True
            self.supervisor._stats_final(self)

    def _read_stats(self, line: bytes) -> None:
        """Keep the stats of a C{stats} control line; log one that cannot be read, once."""
        try:
            stats = read_stats_line(line)
            if stats is not None:
                self.stats = stats
        except (ValueError, TypeError, KeyError) as e:
            if not self._bad_stats:
                self._bad_stats = True
                _log.warn(
                    "{worker} sent stats that cannot be read ({error}); its metrics are stale",
                    worker=str(self),
                    error=f"{type(e).__name__}: {e}",
                )

    def _relay(self, line: bytes, level: LogLevel = LogLevel.warn) -> None:
        """
        Log one line of the worker's log with its index and pid; a line that
        is not a log line (early output, a crash, a child's output) at C{level}.
        """
        text = line.decode("utf-8", "replace").rstrip("\r")
        namespace = LOG_NAMESPACE
        parsed = parse_log_line(text)
        if parsed is not None:
            namespace, level, text = parsed
        Logger(namespace=namespace).emit(
            level,
            "[worker {worker} pid {worker_pid}] {line}",
            worker=self.index,
            worker_pid=self.pid,
            line=text,
        )

    def terminate(self, kill_after: float) -> None:
        """Send SIGTERM now, and SIGKILL if it still runs C{kill_after} seconds later."""
        self.retired = True
        if self.ended.fired:
            return
        self._signal("TERM")
        if self.kill_timer is None:
            self.kill_timer = self.supervisor.reactor.callLater(kill_after, self._kill)

    def _kill(self) -> None:
        """Kill the worker that outlived its time to stop, and say so."""
        self.kill_timer = None
        _log.warn(
            "{worker} still runs {seconds:g} s after SIGTERM; killing it",
            worker=str(self),
            seconds=self.supervisor.settings.shutdown_timeout + KILL_MARGIN,
        )
        self._signal("KILL")

    def _signal(self, name: str) -> None:
        """Send the signal C{name} to the worker, unless it has exited."""
        try:
            self.transport.signalProcess(name)  # type: ignore[union-attr]
        except Exception:  # it has exited, and Twisted has not reaped it yet
            pass

    def processExited(self, reason: Failure) -> None:
        """Log what the worker left unlogged, settle its Deferreds and tell the supervisor."""
        # Not processEnded, which also waits for the pipes to close: a
        # process the handler started holds them open after the worker died.
        self.transport.loseConnection()  # type: ignore[union-attr]
        for fd, text in self._output.items():
            if text:
                self._relay(text)
                self._output[fd] = b""
        if self.kill_timer is not None:
            self.kill_timer.cancel()
            self.kill_timer = None
        self.listening.fire(Failure(RuntimeError(f"{self} {_exit_text(reason)}")))
        self.closed.fire(None)
        self.ended.fire(None)
        self.supervisor._ended(self, reason)


class WorkersService(Service):
    """
    The supervisor of C{twistd tcpserver --workers N}: it listens, starts N
    worker processes that serve on its socket, restarts those that die,
    restarts them all one by one on SIGHUP, and stops them gracefully on
    SIGTERM or SIGINT (see the module's description).

    @ivar port: the supervisor's listening port (paused), or C{None} before it
        listens and after it stopped.
    """

    name = "tcpserver"
    port: IListeningPort | None = None

    def __init__(
        self,
        where: WhereToListen,
        handler_name: str,
        *,
        workers: int,
        settings: Settings = DEFAULTS,
        tls_files: tuple[str, str] | None = None,
        tls_alpn: list[str] | None = None,
        handle_signals: bool = True,
        report_stats: bool = False,
        reactor: Any = None,
    ) -> None:
        self.where = where
        self.report_stats = report_stats
        self._ended_stats = ServerStats()  # the counters of the workers that exited
        self.tls_files = tls_files
        self.tls_alpn = None if tls_alpn is None else tuple(tls_alpn)
        self.handler_name = handler_name
        self.workers = workers
        self.settings = settings
        self.handle_signals = handle_signals
        self.reactor = reactor
        self._worker_settings: WorkerSettings | None = None
        self._slots: list[_Worker | None] = [None] * workers
        self._alive: set[_Worker] = set()
        self._reporting: set[_Worker] = set()  # workers whose stats are not in _ended_stats
        self._failures = [0] * workers
        self._restart_timers: dict[int, IDelayedCall] = {}
        self._rolling: Deferred[None] | None = None
        self._roll_again = False
        self._stopping = False

    # -- starting --------------------------------------------------------------

    def privilegedStartService(self) -> None:
        """Listen, as twistd starts the service (before it drops privileges)."""
        Service.privilegedStartService(self)
        self._listen()

    def startService(self) -> None:
        """Listen if not yet done, handle the signals, and start the workers."""
        Service.startService(self)
        if self.port is None:  # not started by twistd: privilegedStartService was not called
            self._listen()
        if self.handle_signals:
            # Once the reactor runs: it installs its own handlers as it starts.
            self.reactor.callWhenRunning(self._install_signal_handlers)
        for index in range(1, self.workers + 1):
            self._start_worker(index)

    def _listen(self) -> None:
        """
        Listen as the single-process server would, and pause the port at
        once: only the workers accept.

        @raise ListenError: if it cannot listen, which makes twistd exit with
            status 1 and the message.
        """
        self.reactor = default_reactor(self.reactor)
        listening = self.where.listen(self.reactor, self.settings.backlog, _NoAccept())
        result: list[Any] = []
        listening.addBoth(result.append)
        if not result:  # every shareable kind of address listens at once
            listening.cancel()
            raise ListenError(cannot_listen(self.where, "it did not listen at once"))
        if isinstance(result[0], Failure):
            raise ListenError(cannot_listen(self.where, result[0]))
        port: Any = result[0]
        port.pauseProducing()
        self.port = port
        self._worker_settings = WorkerSettings(
            handler=self.handler_name,
            family=int(port.addressFamily),
            backlog=int(getattr(port, "backlog", self.settings.backlog)),
            settings=self.settings,
            reactor=type(self.reactor).__module__,
            tls_files=self.tls_files,
            tls_alpn=self.tls_alpn,
            report_stats=self.report_stats,
        )
        _log.info(
            "twisted_tcp tcpserver listening on {address} (handler {handler}) "
            "with {workers} worker processes",
            address=show_address(port.getHost()),
            handler=self.handler_name,
            workers=self.workers,
        )

    def _start_worker(self, index: int, *, promote: bool = True) -> _Worker:
        """Start a worker for slot C{index}; it serves the slot now if C{promote}."""
        assert self.port is not None and self._worker_settings is not None
        worker = _Worker(self, index, self.reactor.seconds())
        # The same interpreter and environment as this process: the worker
        # imports twisted_tcp and the handler as this process did.
        command = worker_command(index, self._worker_settings)
        self.reactor.spawnProcess(
            worker,
            command[0],
            command,
            env={**os.environ, WORKER_ENVIRONMENT_VARIABLE: str(index)},
            childFDs={
                0: "w",
                1: "r",
                2: "r",
                WORKER_FD: self.port.fileno(),  # type: ignore[attr-defined]
                CONTROL_FD: "r",
            },
        )
        self._alive.add(worker)
        self._reporting.add(worker)
        if promote:
            self._promote(worker)
        _log.info("{worker} started", worker=str(worker))
        return worker

    def _promote(self, worker: _Worker) -> _Worker | None:
        """Make C{worker} serve its slot; return the worker it replaces, if any."""
        index = worker.index
        timer = self._restart_timers.pop(index, None)
        if timer is not None:
            timer.cancel()
        old, self._slots[index - 1] = self._slots[index - 1], worker
        worker.promoted = True
        return old

    # -- workers that exit -----------------------------------------------------

    def stats(self) -> ServerStats:
        """
        The stats of the whole service: those the live workers said last
        (each says them every C{STATS_INTERVAL} seconds, with
        C{report_stats}), and the counters of the workers that exited.
        """
        total = self._ended_stats
        for worker in self._reporting:
            if worker.stats is not None:
                total = total.plus(worker.stats)
        return total

    def _stats_final(self, worker: _Worker) -> None:
        """
        Once C{worker} has exited and every line of its control pipe was
        read (its last stats included, which may come after its exit is
        known), keep its counters in the sum of the workers that ended.
        """
        if worker.ended.fired and worker.control_ended and worker in self._reporting:
            self._reporting.discard(worker)
            if worker.stats is not None:
                self._ended_stats = self._ended_stats.plus(worker.stats.ended())

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        """A worker exited: log it, and restart its slot if it was serving it."""
        self._alive.discard(worker)
        self._stats_final(worker)
        how = _exit_text(reason)
        index = worker.index
        if self._stopping or worker.retired or self._slots[index - 1] is not worker:
            if worker.promoted or self._stopping:
                _log.info("{worker} {how}", worker=str(worker), how=how)
            else:
                _log.warn(
                    "{worker}, started to replace worker {index}, {how} before it accepted",
                    worker=str(worker),
                    index=index,
                    how=how,
                )
            return
        self._slots[index - 1] = None
        if self.reactor.seconds() - worker.started_at >= STABLE_AFTER:
            self._failures[index - 1] = 0
        delay = min(FIRST_DELAY * 2 ** self._failures[index - 1], MAX_DELAY)
        self._failures[index - 1] += 1
        _log.warn(
            "{worker} {how}; restarting in {delay:g} s", worker=str(worker), how=how, delay=delay
        )
        self._restart_timers[index] = self.reactor.callLater(delay, self._restart, index)

    def _restart(self, index: int) -> None:
        """Start a worker for slot C{index} after its back-off, unless stopping."""
        del self._restart_timers[index]
        if not self._stopping:
            self._start_worker(index)

    # -- signals ---------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """
        Handle SIGTERM and SIGINT (stop, then exit with status 0) and SIGHUP
        (a rolling restart) here, instead of the reactor's own handlers,
        which would make twistd exit by re-raising the signal.
        """
        actions: dict[int, Callable[[int], None]] = {
            signal.SIGTERM: self._stop_signal,
            signal.SIGINT: self._stop_signal,
            signal.SIGHUP: self._restart_signal,
        }
        for signum, action in actions.items():
            signal.signal(signum, self._signal_handler(action))

    def _signal_handler(self, action: Callable[[int], None]) -> Callable[[int, Any], None]:
        """A signal handler that runs C{action(signum)} in the reactor, as Twisted's do."""

        def handler(signum: int, frame: Any) -> None:
            self.reactor.callFromThread(action, signum)

        return handler

    def _stop_signal(self, signum: int) -> None:
        """SIGTERM or SIGINT: stop the reactor, which stops this service (once)."""
        name = signal.Signals(signum).name
        if self._stopping:
            _log.info(
                "received {signal} while stopping: the workers are already stopping "
                "(SIGKILL stops everything at once)",
                signal=name,
            )
            return
        _log.info("received {signal}: stopping the workers", signal=name)
        try:
            self.reactor.stop()
        except ReactorNotRunning:  # already on its way down
            pass

    def _restart_signal(self, signum: int) -> None:
        """SIGHUP: a rolling restart."""
        self.restart_workers()

    # -- rolling restart -------------------------------------------------------

    def restart_workers(self) -> None:
        """
        Restart every worker, one at a time: start a new worker for a slot,
        and once it accepts connections stop the old one gracefully (it
        lets its handlers finish), then go to the next slot.  The listening
        socket stays open, so no client is refused meanwhile.  A restart
        asked for while one runs is done once more after it.

        If a new worker exits before it accepts (say, the new code of the
        handler fails to import), the old worker keeps its slot and the
        restart stops there.
        """
        if self._stopping:
            return
        if self._rolling is not None:
            _log.info("a rolling restart of the workers is running; another one follows it")
            self._roll_again = True
            return
        _log.info("restarting the {n} workers one by one", n=self.workers)
        self._rolling = Deferred.fromCoroutine(self._roll())

        def done(result: Failure | None) -> None:
            self._rolling = None
            if isinstance(result, Failure):
                _log.failure("the rolling restart of the workers failed", result)

        self._rolling.addBoth(done)

    async def _roll(self) -> None:
        """Replace the workers slot by slot, as L{restart_workers} says."""
        while True:
            self._roll_again = False
            for index in range(1, self.workers + 1):
                if self._stopping:
                    return
                new = self._start_worker(index, promote=False)
                try:
                    await new.listening.wait().addTimeout(READY_TIMEOUT, self.reactor)
                except Exception as e:
                    if self._stopping:
                        return
                    new.terminate(self.settings.shutdown_timeout + KILL_MARGIN)
                    _log.error(
                        "rolling restart stopped: the new worker {index} (pid {pid}) did not "
                        "start accepting ({why}); the other workers keep running",
                        index=index,
                        pid=new.pid,
                        why=str(e) or type(e).__name__,
                    )
                    return
                if self._stopping:
                    return
                old = self._promote(new)
                if old is not None:
                    old.terminate(self.settings.shutdown_timeout + KILL_MARGIN)
                    await old.closed.wait()
            if not self._roll_again:
                break
        _log.info("rolling restart done: {n} new workers", n=self.workers)

    # -- stopping --------------------------------------------------------------

    def stopService(self) -> Deferred[None] | None:
        """
        Stop every worker gracefully and close the socket; the Deferred
        fires once every worker has exited (at most C{shutdown_timeout} +
        L{KILL_MARGIN} seconds, then they are killed).
        """
        Service.stopService(self)
        if self._stopping:
            return None
        self._stopping = True
        for timer in self._restart_timers.values():
            timer.cancel()
        self._restart_timers.clear()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        """Stop the workers and the socket, as L{stopService} says."""
        workers = sorted(self._alive, key=lambda w: (w.index, w.started_at))
        _log.info(
            "twisted_tcp tcpserver stopping {n} worker(s); each lets its handlers finish for "
            "up to {timeout:g} s",
            n=len(workers),
            timeout=self.settings.shutdown_timeout,
        )
        for worker in workers:
            worker.terminate(self.settings.shutdown_timeout + KILL_MARGIN)
        # Once no worker accepts, close the socket: new clients are refused.
        await DeferredList([w.closed.wait() for w in workers])
        port, self.port = self.port, None
        if port is not None:
            await Deferred.fromCoroutine(_stop_listening(port))
        await DeferredList([w.ended.wait() for w in workers])
        if self.handle_signals:
            # Python restores the default handlers as it exits: a late
            # signal would then end the process by that signal.
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        _log.info("twisted_tcp tcpserver stopped")


async def _stop_listening(port: IListeningPort) -> None:
    """Stop C{port} listening; return once it has."""
    stopped = port.stopListening()
    if stopped is not None:
        await stopped


__all__ = [
    "FIRST_DELAY",
    "KILL_MARGIN",
    "MAX_DELAY",
    "READY_TIMEOUT",
    "STABLE_AFTER",
    "WorkersService",
    "check_shareable",
]
