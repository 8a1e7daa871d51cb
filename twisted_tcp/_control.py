"""
What passes between the supervisor of C{twistd tcpserver --workers N} and
each of its workers: nothing else here, so that both sides read the one
description of it.

    - The command line: C{python -m twisted_tcp._worker INDEX SETTINGS},
      where SETTINGS is a L{WorkerSettings} as JSON (L{worker_command},
      L{read_worker_argv}); the environment variable
      L{WORKER_ENVIRONMENT_VARIABLE} holds INDEX.
    - The descriptors: L{WORKER_FD} is the listening socket; L{CONTROL_FD} a
      pipe on which the worker writes the lines L{LISTENING} (it accepts),
      L{CLOSED} (it no longer accepts) and, with C{--metrics}, L{STATS}
      (what its server counted); its stdin a pipe whose end
      tells it that the supervisor died; its stderr its log, one event per
      line as L{log_line} writes it and L{parse_log_line} reads it.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import attrs
from twisted.logger import InvalidLogLevelError, LogLevel, eventAsText

from ._settings import DEFAULTS, Settings
from ._stats import ServerStats

WORKER_MODULE = "twisted_tcp._worker"
"""The module a worker process runs (C{python -m}), which names it in C{ps}."""

WORKER_FD = 3
"""The descriptor number of the listening socket in a worker."""

CONTROL_FD = 4
"""The descriptor number of the pipe of a worker's control lines (not its stdout)."""

WORKER_ENVIRONMENT_VARIABLE = "TWISTED_TCP_WORKER"
"""Set to the worker's index (1 to N) in each worker's environment."""

LISTENING = b"listening"
"""The control line a worker writes once it accepts connections."""

CLOSED = b"closed"
"""The control line a worker writes once it no longer accepts connections."""

STATS = b"stats"
"""
The start of the control line C{stats JSON} (L{stats_line}) that a worker
writes each L{STATS_INTERVAL} seconds with C{--metrics}, and once more as
it ends.
"""

STATS_INTERVAL = 1.0
"""Seconds between a worker's L{STATS} lines."""

MAX_LINE = 65536
"""The longest control or log line the supervisor buffers whole."""

LOG_NAMESPACE = "twisted_tcp._workers"
"""
The log namespace of the supervisor's and the workers' own lines, and of
what a worker prints that is not a log line.  It is the name of the module
they came from before it was split, kept so that log filters keep working.
"""


@attrs.frozen
class WorkerSettings:
    """
    Everything a worker needs besides its index and the socket: passed to
    it as one JSON argument.
    """

    handler: str
    family: int
    backlog: int
    settings: Settings = DEFAULTS
    reactor: str | None = None  # the module of the supervisor's reactor, installed first
    tls_files: tuple[str, str] | None = None  # certificate and key: each worker serves TLS
    tls_alpn: tuple[str, ...] | None = None  # the TLS server's ALPN protocols
    report_stats: bool = False  # say STATS lines (for --metrics)

    def to_json(self) -> str:
        """This, as the JSON text that L{from_json} reads."""
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkerSettings:
        """Settings from the text L{to_json} made."""
        settings = json.loads(text)
        for name in ("tls_files", "tls_alpn"):
            if settings.get(name) is not None:
                settings[name] = tuple(settings[name])
        settings["settings"] = Settings(**settings["settings"])
        return cls(**settings)


def stats_line(stats: ServerStats) -> bytes:
    """The L{STATS} control line of C{stats}, which L{read_stats_line} reads."""
    return STATS + b" " + json.dumps(stats.to_json(), separators=(",", ":")).encode()


def read_stats_line(line: bytes) -> ServerStats | None:
    """
    The stats of a control line L{stats_line} wrote, or C{None} for another
    kind of line.

    @raise ValueError, TypeError, KeyError: for a L{STATS} line that cannot
        be read.
    """
    if not line.startswith(STATS + b" "):
        return None
    return ServerStats.from_json(json.loads(line[len(STATS) + 1 :]))


def worker_command(index: int, settings: WorkerSettings) -> list[str]:
    """
    The argv of worker C{index}: this interpreter running L{WORKER_MODULE},
    so that the worker imports twisted_tcp and the handler as the
    supervisor did.
    """
    return [sys.executable, "-m", WORKER_MODULE, str(index), settings.to_json()]


def read_worker_argv(argv: list[str]) -> tuple[int, WorkerSettings]:
    """The index and the settings from the arguments L{worker_command} gave (after C{-m})."""
    return int(argv[0]), WorkerSettings.from_json(argv[1])


_LOG_LINE = re.compile(r"\[(?P<namespace>[^\]#\s]+)#(?P<level>\w+)\] (?P<text>.*)")


def log_line(event: dict[str, Any]) -> str:
    """One log event as lines C{[namespace#level] text}, which L{parse_log_line} reads."""
    level = event.get("log_level", LogLevel.info)
    namespace = event.get("log_namespace", "-")
    text = eventAsText(event, includeTimestamp=False, includeSystem=False)
    return "".join(f"[{namespace}#{level.name}] {line}\n" for line in text.splitlines() or [""])


def parse_log_line(text: str) -> tuple[str, LogLevel, str] | None:
    """
    The namespace, level and text of a line L{log_line} wrote, or C{None}
    for any other line (output before logging began, a crash, a child's).
    """
    match = _LOG_LINE.fullmatch(text)
    if match is None:
        return None
    try:
        level = LogLevel.levelWithName(match["level"])
    except InvalidLogLevelError:
        return None
    return match["namespace"], level, match["text"]


__all__ = [
    "CLOSED",
    "CONTROL_FD",
    "LISTENING",
    "LOG_NAMESPACE",
    "MAX_LINE",
    "STATS",
    "STATS_INTERVAL",
    "WORKER_ENVIRONMENT_VARIABLE",
    "WORKER_FD",
    "WORKER_MODULE",
    "WorkerSettings",
    "log_line",
    "parse_log_line",
    "read_stats_line",
    "read_worker_argv",
    "stats_line",
    "worker_command",
]
