"""
One timer for the waits of many writers (and of connection attempts).

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
from collections.abc import Callable
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

    __slots__ = ("__weakref__", "_clock", "_noted", "_timer", "due")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._noted: set[Swept] = set()
        self._timer: IDelayedCall | None = None
        self.due = 0.0
        """When the sweep under way was due (a late clock runs it later)."""

    def note(self, waiter: Swept) -> None:
        """C{waiter} waits: call its C{swept} within L{GRACE} seconds."""
        self._noted.add(waiter)
        if self._timer is None:
            self._timer = self._clock.callLater(GRACE, self._sweep)

    def forget(self, waiter: Swept) -> None:
        """C{waiter} waits no more: drop it now rather than hold it until the sweep."""
        self._noted.discard(waiter)

    def _sweep(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            self.due = timer.getTime()
        noted, self._noted = self._noted, set()
        for waiter in noted:
            waiter.swept()


_sweepers: weakref.WeakKeyDictionary[Any, Sweeper] = weakref.WeakKeyDictionary()


_last: list[Any] = [None, None]  # the clock asked for last, and its sweeper


def sweeper_for(clock: IReactorTime) -> Sweeper:
    """The one sweeper of C{clock}."""
    if _last[0] is clock:  # nearly always: a process has one reactor
        return _last[1]  # type: ignore[no-any-return]
    sweeper = _sweepers.get(clock)
    if sweeper is None:
        sweeper = _sweepers[clock] = Sweeper(clock)
    _last[:] = (clock, sweeper)
    return sweeper


class Deadline:
    """
    C{call(*args)} in C{seconds}, unless cancelled first: for waits that
    nearly always end long before (a connect, a close).  One longer than
    L{GRACE} gets its timer only if it is still pending then (the clock's
    sweeper notes it meanwhile), due when it would have been anyway.
    """

    __slots__ = ("_args", "_call", "_clock", "_due", "_timer", "over")

    def __init__(
        self, clock: IReactorTime, seconds: float, call: Callable[..., object], *args: object
    ) -> None:
        self._clock = clock
        self._due = clock.seconds() + seconds
        self._call = call
        self._args = args
        self.over = False
        self._timer: IDelayedCall | None = None
        if seconds > GRACE:
            sweeper_for(clock).note(self)
        else:
            self._timer = clock.callLater(seconds, call, *args)

    def swept(self) -> None:
        if not self.over:
            left = max(0.0, self._due - self._clock.seconds())
            self._timer = self._clock.callLater(left, self._call, *self._args)

    def cancel(self) -> None:
        """It is no longer pending: nothing is called, and nothing is held for it."""
        self.over = True
        timer = self._timer
        if timer is None:
            sweeper_for(self._clock).forget(self)  # (noted, if it waited longer than GRACE)
        elif timer.active():
            timer.cancel()


def is_sweep(call: Any) -> bool:
    """Whether a delayed call of a clock is a sweeper's (for tests that count timers)."""
    func = getattr(call, "func", None)
    return getattr(func, "__self__", None).__class__ is Sweeper


__all__ = ["GRACE", "Deadline", "Sweeper", "is_sweep", "sweeper_for"]
