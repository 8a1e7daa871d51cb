"""A result that is decided once and can be waited on any number of times."""

from __future__ import annotations

from typing import Generic, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

T = TypeVar("T")


class OneShot(Generic[T]):
    """
    An event that happens once, with a value or a failure.

    Every L{wait} gets a Deferred of its own, so one waiter's callbacks never
    change what another waiter sees, and a failure nobody waits for is never
    reported as unhandled.
    """

    __slots__ = ("_result", "_waiters")

    def __init__(self) -> None:
        self._waiters: list[Deferred[T]] | None = []
        self._result: T | Failure | None = None

    @property
    def fired(self) -> bool:
        """Whether the event has happened."""
        return self._waiters is None

    def wait(self) -> Deferred[T]:
        """Return a Deferred that fires with the result once it is decided."""
        waiters = self._waiters
        if waiters is None:
            result = self._result
            if isinstance(result, Failure):
                return fail(result)
            return succeed(result)  # type: ignore[arg-type]
        d: Deferred[T] = Deferred(waiters.remove)
        waiters.append(d)
        return d

    def fire(self, result: T | Failure) -> None:
        """Decide the result (only the first call counts) and fire every waiter."""
        waiters = self._waiters
        if waiters is None:
            return
        self._waiters = None
        self._result = result
        for d in tuple(waiters):
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(result)
