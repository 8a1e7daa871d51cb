"""
One timer for the waits of many writers.

A writer that waits (written bytes not yet sent, a close not yet finished)
would need a timer for its limit (the buffer-age limit, the close timeout),
although nearly every wait ends within a turn or two of the reactor: the
kernel takes the bytes.  Instead, it is noted here, and a writer still
waiting L{GRACE} seconds later gets the timers of its limits then.  One
timer of the clock serves every writer noted meanwhile, and none runs while
no writer waits.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

GRACE = 1.0
"""Seconds a writer may wait before it gets timers of its own."""


class Swept(Protocol):
    def swept(self) -> None:
        """C{GRACE} seconds (or so) passed since it was noted: arm its timers if it still waits."""


class Sweeper:
    """The writers of one clock that started waiting in the last L{GRACE} seconds."""

    __slots__ = ("__weakref__", "_clock", "_noted", "_timer")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._noted: set[Swept] = set()
        self._timer: IDelayedCall | None = None

    def note(self, waiter: Swept) -> None:
        """C{waiter} waits: call its C{swept} within L{GRACE} seconds."""
        self._noted.add(waiter)
        if self._timer is None:
            self._timer = self._clock.callLater(GRACE, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        noted, self._noted = self._noted, set()
        for waiter in noted:
            waiter.swept()


_sweepers: weakref.WeakKeyDictionary[Any, Sweeper] = weakref.WeakKeyDictionary()


def sweeper_for(clock: IReactorTime) -> Sweeper:
    """The one sweeper of C{clock}."""
    sweeper = _sweepers.get(clock)
    if sweeper is None:
        sweeper = _sweepers[clock] = Sweeper(clock)
    return sweeper


def is_sweep(call: Any) -> bool:
    """Whether a delayed call of a clock is a sweeper's (for tests that count timers)."""
    func = getattr(call, "func", None)
    return getattr(func, "__self__", None).__class__ is Sweeper


__all__ = ["GRACE", "Sweeper", "is_sweep", "sweeper_for"]
