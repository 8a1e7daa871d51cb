"""A result that is decided once and can be waited on any number of times."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

T = TypeVar("T")


class OneShot(Generic[T]):
    """
    An event that happens once, with a value or a failure.

    Every L{wait} gets a Deferred of its own, so one waiter's callbacks never
    change what another waiter sees, and a failure nobody waits for is never
    reported as unhandled.  Nothing is allocated until someone waits: an idle
    connection holds several of these.
    """

    __slots__ = ("_fired", "_result", "_waiters")

    def __init__(self) -> None:
        self._fired = False
        self._waiters: list[Deferred[T]] | None = None
        self._result: T | Failure | None = None

    @property
    def fired(self) -> bool:
        """Whether the event has happened."""
        return self._fired

    def wait(self) -> Deferred[T]:
        """Return a Deferred that fires with the result once it is decided."""
        if self._fired:
            result = self._result
            if isinstance(result, Failure):
                return fail(result)
            return succeed(result)  # type: ignore[arg-type]
        d: Deferred[T] = Deferred(self._forget)
        if self._waiters is None:
            self._waiters = [d]
        else:
            self._waiters.append(d)
        return d

    def _forget(self, d: Deferred[T]) -> None:
        if self._waiters is not None and d in self._waiters:
            self._waiters.remove(d)

    def fire(self, result: T | Failure) -> None:
        """Decide the result (only the first call counts) and fire every waiter."""
        if self._fired:
            return
        self._fired = True
        self._result = result
        waiters, self._waiters = self._waiters, None
        for d in waiters or ():
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)


PENDING: Any = object()
"""
In a slot that holds an outcome (see L{waited}): none yet, and nobody waits
for it.
"""


def waited(slot: Any) -> tuple[Any, Deferred[Any]]:
    """
    Wait on a slot that holds an event's outcome in one attribute: L{PENDING};
    a L{OneShot}, once somebody waits; or the outcome itself (a value or a
    L{Failure}), once decided (nothing is allocated for an event that nobody
    waits for, and most never are).

    @return: the slot's new value, and a Deferred of the outcome.
    """
    if slot is PENDING:
        slot = OneShot()
    if type(slot) is OneShot:
        return slot, slot.wait()
    return slot, fail(slot) if isinstance(slot, Failure) else succeed(slot)


def decided(slot: Any, outcome: object) -> Any:
    """
    Decide the outcome of such a slot (only the first counts), firing whoever
    waits; return the slot's new value.
    """
    if slot is PENDING:
        return outcome
    if type(slot) is OneShot:
        slot.fire(outcome)
        return outcome
    return slot


def has_come(slot: Any) -> bool:
    """Whether the outcome of such a slot is decided."""
    return slot is not PENDING and type(slot) is not OneShot
