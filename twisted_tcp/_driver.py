"""
The lean driver: runs a handler (or C{with_connection}'s C{f}) and tells a
callback how it ended.

A coroutine (an C{async def} handler) is run by a L{Driver}, a small
trampoline of C{send} and C{throw}: each Deferred it awaits gets one
callback, which resumes the coroutine directly.  There is no Deferred for
the handler itself, and no pass through Twisted's C{_inlineCallbacks},
which costs several times more per resume.  What users rely on stays: a
handler awaits any Deferred or coroutine; it is cancelled where it waits
(L{Driver.cancel_await}); its context variables are those of a copy of the context it was started
in, as with C{ensureDeferred}; and its failure's traceback ends at its own
line.  A handler decorated with C{@inlineCallbacks}, or a plain function,
returns a Deferred or a value, which is waited for or taken as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextvars import Context, copy_context
from types import CoroutineType
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ._reader import ReadDeferred, Reader

Done = Callable[[Any], object]
"""Told how a handler ended: its result, or a L{Failure}."""


class Driver:
    """
    Runs one coroutine to its end, then calls L{driven_ended} with its
    result or its L{Failure}.

    A base class with no state of its own: a subclass keeps C{_coroutine},
    C{_context} and C{_waiting} (slots, or its instance dict) and says what
    the end means.  What runs one handler per connection is thus the
    connection itself (the server's), or the object that already waits for
    C{f} (C{with_connection}'s), not one more object per connection, with
    a bound method for its end, for the garbage collector to track.
    """

    if not TYPE_CHECKING:  # (mypy would refuse the subclasses' state on the base)
        __slots__ = ()

    _coroutine: Coroutine[Any, Any, Any]
    _context: Context
    _waiting: Deferred[Any] | Reader | None  # what the coroutine awaits

    def drive(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Start running C{coroutine}, at once, as C{ensureDeferred} does."""
        self._coroutine = coroutine
        self._context = copy_context()
        self.resume(None, None)

    def driven_ended(self, result: object) -> None:
        """The coroutine returned C{result}, or failed (a L{Failure})."""
        raise NotImplementedError

    def cancel_await(self) -> None:
        """
        Cancel what the coroutine awaits: it gets C{CancelledError} there
        (unless what it awaits fires otherwise), and may catch it.
        """
        waiting = self._waiting
        if isinstance(waiting, Reader):  # a line of its lines()
            waiting._cancel_lines()
        elif waiting is not None:
            waiting.cancel()

    def resume(self, value: object, error: Failure | None) -> None:
        """
        Resume the coroutine where it awaits (the read it awaits ended, or
        it starts): send it C{value}, or raise C{error} there; then run it
        until it awaits something that has not ended, or ends.
        """
        self._waiting = None
        coroutine = self._coroutine
        while True:
            try:
                if error is None:
                    awaited = self._context.run(coroutine.send, value)
                else:
                    awaited = self._context.run(error.throwExceptionIntoGenerator, coroutine)
            except StopIteration as stop:
                self.driven_ended(stop.value)
                return
            except BaseException:
                self.driven_ended(Failure())
                return
            kind = type(awaited)
            if isinstance(awaited, Reader) or (kind is ReadDeferred and not awaited.tapped):
                # A line of lines() (of a Reader subclass's too), or a read
                # with no callbacks: the reader resumes us directly.
                awaited._task = self
                self._waiting = awaited
                return
            if kind is Deferred or isinstance(awaited, Deferred):
                # Never fired yet (an await of a fired one does not yield),
                # unless paused: either way, its callback resumes us.
                self._waiting = awaited
                awaited.addBoth(self._resume)
                return
            value = None
            error = Failure(
                TypeError(
                    f"a twisted_tcp handler awaited {awaited!r:.80}, which is not a "
                    "Deferred nor a coroutine: wrap an asyncio future with "
                    "Deferred.fromFuture"
                )
            )

    def _resume(self, result: object) -> None:
        # A value is read by the awaited Deferred's __await__ itself, from
        # inside this callback; a failure is raised into the coroutine, as
        # Twisted's own driver does.  Returning None consumes either, so that
        # a failure is not also logged as unhandled.
        self.resume(None, result if isinstance(result, Failure) else None)


class Task(Driver):
    """A L{Driver} that tells a callback, C{done}, how its coroutine ended."""

    __slots__ = ("_context", "_coroutine", "_done", "_waiting")

    def __init__(self, done: Done) -> None:
        self._done = done
        self._waiting = None

    def driven_ended(self, result: object) -> None:
        self._done(result)

    cancel = Driver.cancel_await


def run_on(driver: Driver, f: Callable[..., Any], args: tuple[Any, ...]) -> Deferred[Any] | None:
    """
    Call C{f(*args)} and call C{driver.driven_ended} once with how it
    ended: its value, or a L{Failure} (for an exception, raised at once or
    later).  A coroutine is run by C{driver}; a Deferred is waited for;
    anything else is the value.

    @return: the Deferred C{f} returned, to cancel while it runs; else
        C{None} (a coroutine is cancelled where it waits by
        L{Driver.cancel_await}).
    """
    try:
        result = f(*args)
    except BaseException:
        driver.driven_ended(Failure())
        return None
    if type(result) is CoroutineType:
        driver.drive(result)
        return None
    if isinstance(result, Deferred):
        result.addBoth(driver.driven_ended)
        return result
    if isinstance(result, Coroutine):  # another kind of coroutine object
        driver.drive(result)
        return None
    driver.driven_ended(result)
    return None


def run(f: Callable[..., Any], args: tuple[Any, ...], done: Done) -> Task | Deferred[Any] | None:
    """
    L{run_on} with a L{Task} that calls C{done} with how C{f} ended.

    @return: what can be cancelled while C{f} runs (the L{Task}, or the
        Deferred it returned), or C{None} if it has already ended.
    """
    task = Task(done)
    returned = run_on(task, f, args)
    if returned is not None:
        return returned
    return task if task._waiting is not None else None


__all__ = ["Done", "Driver", "Task", "run", "run_on"]
