"""
Shared test helpers.

Every test runs against the real reactor (pytest-twisted) on loopback
sockets.  The autouse fixture L{no_leaks} checks, after each test, that the
test left no file descriptor, reactor reader/writer or pending timer behind.
L{within} bounds every wait.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater

T = TypeVar("T")

# Twisted keeps one descriptor on /dev/null from the first listen on, to
# recover from EMFILE: open it now, so that no test is blamed for it.
tcp._reservedFD.reserve()

WAIT = 10.0  # seconds: the bound on any single wait in a test


def within(d: Any, seconds: float = WAIT) -> Deferred[Any]:
    """C{d} (a Deferred or a coroutine), failing with TimeoutError after C{seconds}."""
    if not isinstance(d, Deferred):
        d = ensureDeferred(d)
    return d.addTimeout(seconds, reactor)


def sleep(seconds: float) -> Deferred[None]:
    """A Deferred that fires after C{seconds} of real time."""
    return deferLater(reactor, seconds, lambda: None)


def open_fds() -> set[int]:
    """The file descriptors this process has open."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listdir's own descriptor, already closed
        fds.add(int(name))
    return fds


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _reactor_state() -> tuple[set[Any], set[Any], int]:
    return set(reactor.getReaders()), set(reactor.getWriters()), len(reactor.getDelayedCalls())


async def _settle(before: tuple[set[Any], set[Any], int], fds: set[int]) -> tuple[Any, ...]:
    """Let closing connections finish (at most 3 s); return what is still left."""
    for _ in range(300):
        readers, writers, calls = _reactor_state()
        extra_fds = open_fds() - fds
        if (
            readers <= before[0]
            and writers <= before[1]
            and calls <= before[2]
            and not extra_fds
        ):
            return ()
        await sleep(0.01)
    return (
        readers - before[0],
        writers - before[1],
        reactor.getDelayedCalls(),
        {fd: _describe(fd) for fd in extra_fds},
    )


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a descriptor, a reactor reader/writer or a timer behind."""
    pytest_twisted.blockon(sleep(0))  # the reactor (and its wakers) is running
    before = _reactor_state()
    fds = open_fds()
    yield
    left = pytest_twisted.blockon(ensureDeferred(_settle(before, fds)))
    assert not left, f"the test left behind (readers, writers, delayed calls, fds): {left}"
