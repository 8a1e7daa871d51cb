"""
The lean driver (twisted_tcp._driver), alone: Deferreds fired by hand, no
reactor.  What a handler relies on when it runs under it: awaiting any
Deferred or coroutine, cancellation where it waits, context variables as
with ensureDeferred, tracebacks that end at its own line, and
@inlineCallbacks or plain handlers.
"""

from __future__ import annotations

import contextvars
import traceback
from collections.abc import Generator
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, inlineCallbacks, succeed
from twisted.python.failure import Failure

from twisted_tcp._driver import Task, run

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


class Outcome:
    """The C{done} callback: records how the handler ended."""

    def __init__(self) -> None:
        self.results: list[Any] = []

    def __call__(self, result: Any) -> None:
        self.results.append(result)

    @property
    def value(self) -> Any:
        assert len(self.results) == 1, self.results
        result = self.results[0]
        assert not isinstance(result, Failure), result
        return result

    def failure(self, kind: type[BaseException]) -> Failure:
        assert len(self.results) == 1, self.results
        result = self.results[0]
        assert isinstance(result, Failure), result
        assert result.check(kind), result
        return result


def test_a_coroutine_runs_to_its_end_across_awaits() -> None:
    first: Deferred[int] = Deferred()
    second: Deferred[int] = Deferred()

    async def handler(a: int) -> int:
        x = await first
        y = await second
        return a + x + y

    done = Outcome()
    task = run(handler, (1,), done)
    assert isinstance(task, Task)
    assert done.results == []
    first.callback(10)
    assert done.results == []
    second.callback(100)
    assert done.value == 111


def test_awaits_of_fired_deferreds_and_nested_coroutines_do_not_wait() -> None:
    async def inner() -> int:
        return await succeed(2)

    async def handler() -> int:
        return await succeed(1) + await inner()

    done = Outcome()
    run(handler, (), done)
    assert done.value == 3


def test_a_failed_await_raises_where_it_awaits() -> None:
    d: Deferred[None] = Deferred()

    async def handler() -> str:
        try:
            await d
        except ValueError as e:
            return f"caught {e}"
        return "not raised"

    done = Outcome()
    run(handler, (), done)
    d.errback(ValueError("bad"))
    assert done.value == "caught bad"
    assert d.result is None  # consumed: not logged as unhandled


def handler_that_raises_on_its_own_line(d: Deferred[None]) -> Any:
    async def handler() -> None:
        await d
        raise RuntimeError("from the handler")  # the line the traceback ends at

    return handler


def test_a_failure_carries_the_handlers_traceback() -> None:
    d: Deferred[None] = Deferred()
    done = Outcome()
    run(handler_that_raises_on_its_own_line(d), (), done)
    d.callback(None)
    failure = done.failure(RuntimeError)
    frames = traceback.extract_tb(failure.getTracebackObject())
    assert frames[-1].name == "handler"
    assert (
        frames[-1].line
        == 'raise RuntimeError("from the handler")  # the line the traceback ends at'
    )


def test_cancel_raises_cancelled_error_where_it_waits() -> None:
    cancelled: list[Deferred[None]] = []
    d: Deferred[None] = Deferred(cancelled.append)

    async def handler() -> str:
        try:
            await d
        except CancelledError:
            return "cleaned up"
        return "not cancelled"

    done = Outcome()
    task = run(handler, (), done)
    assert task is not None
    task.cancel()
    assert cancelled == [d]
    assert done.value == "cleaned up"
    task.cancel()  # after the end: nothing
    assert len(done.results) == 1


def test_an_uncaught_cancel_is_the_outcome() -> None:
    async def handler() -> None:
        await Deferred()

    done = Outcome()
    task = run(handler, (), done)
    assert task is not None
    task.cancel()
    done.failure(CancelledError)


def test_context_variables_as_with_ensure_deferred() -> None:
    """Seen inside as they were at the start, kept across awaits, not leaked out."""
    d: Deferred[None] = Deferred()
    seen: list[str] = []

    async def handler() -> None:
        seen.append(var.get())
        var.set("inside")
        await d
        seen.append(var.get())

    token = var.set("outside")
    try:
        done = Outcome()
        run(handler, (), done)
        var.set("changed later")
        d.callback(None)
        assert var.get() == "changed later"
    finally:
        var.reset(token)
    assert seen == ["outside", "inside"]
    assert done.value is None


class NotADeferred:
    """An awaitable that yields something else, as an asyncio Future does."""

    def __await__(self) -> Generator[Any, None, None]:
        yield self


def test_awaiting_something_else_is_a_clear_error_in_the_handler() -> None:
    async def handler() -> None:
        await NotADeferred()

    done = Outcome()
    run(handler, (), done)
    failure = done.failure(TypeError)
    assert "Deferred.fromFuture" in str(failure.value)


def test_plain_and_inline_callbacks_handlers() -> None:
    done = Outcome()
    assert run(lambda x: x * 2, (21,), done) is None
    assert done.value == 42

    d: Deferred[int] = Deferred()

    @inlineCallbacks
    def generator_handler() -> Generator[Deferred[int], int, int]:
        value = yield d
        return value + 1

    done = Outcome()
    returned = run(generator_handler, (), done)
    assert isinstance(returned, Deferred)
    d.callback(1)
    assert done.value == 2

    done = Outcome()
    run(lambda: fail(KeyError("k")), (), done)
    done.failure(KeyError)


def test_a_synchronous_exception_is_the_outcome() -> None:
    def handler() -> None:
        raise ZeroDivisionError

    done = Outcome()
    assert run(handler, (), done) is None
    done.failure(ZeroDivisionError)


def test_a_coroutine_returned_by_a_plain_function_is_run() -> None:
    async def later() -> str:
        return "ran"

    done = Outcome()
    run(lambda: later(), (), done)
    assert done.value == "ran"


@pytest.mark.parametrize("exception", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_are_outcomes_too(exception: type[BaseException]) -> None:
    async def handler() -> None:
        raise exception

    done = Outcome()
    run(handler, (), done)
    done.failure(exception)


# -- reads resumed directly ------------------------------------------------------------


def test_lines_are_handed_to_the_task_with_no_deferred() -> None:
    from twisted_tcp import Reader

    reader = Reader(None)
    seen: list[bytes] = []

    async def handler() -> int:
        async for line in reader.lines():
            seen.append(line)
        return len(seen)

    done = Outcome()
    task = run(handler, (), done)
    assert isinstance(task, Task)
    waiter = reader._waiter
    # The reader, its own iterator of lines, is the pending read: waiting
    # for a line makes nothing.
    assert waiter is reader and waiter._task is task
    reader.data_received(b"zero\n")
    assert reader._waiter is waiter and waiter._task is task
    reader.data_received(b"one\ntw")
    assert reader._waiter is waiter  # waits for the rest of "two", still with no Deferred
    reader.data_received(b"o\nthree\n")
    assert seen == [b"zero", b"one", b"two", b"three"]
    reader.eof_received()
    assert done.value == 4


@pytest.mark.parametrize("batches", [False, True])
def test_cancelling_a_task_that_waits_for_a_line_keeps_the_bytes(batches: bool) -> None:
    from twisted_tcp import Reader

    reader = Reader(None)

    async def handler() -> str:
        try:
            async for _ in reader.line_batches() if batches else reader.lines():
                pass
        except CancelledError:
            return "cancelled"
        return "ended"

    done = Outcome()
    task = run(handler, (), done)
    assert task is not None
    reader.data_received(b"partial")
    task.cancel()
    assert done.value == "cancelled"
    assert reader._waiter is None
    reader.data_received(b" line\n")
    assert result_of(reader.read_line()) == b"partial line"


def test_lines_under_twisteds_own_driver_wait_on_a_deferred() -> None:
    """A coroutine run by ensureDeferred (inside a handler, say) reads lines too."""
    from twisted.internet.defer import ensureDeferred

    from twisted_tcp import Reader

    reader = Reader(None)

    async def consume() -> list[bytes]:
        return [line async for line in reader.lines()]

    d = ensureDeferred(consume())
    assert isinstance(reader._waiter, Deferred)
    reader.data_received(b"a\nb\n")
    reader.eof_received()
    assert result_of(d) == [b"a", b"b"]


def test_lines_under_twisteds_own_driver_can_be_cancelled_and_keep_the_bytes() -> None:
    from twisted.internet.defer import ensureDeferred

    from twisted_tcp import Reader

    reader = Reader(None)

    async def consume() -> list[bytes]:
        return [line async for line in reader.lines()]

    d = ensureDeferred(consume())
    reader.data_received(b"half a ")
    d.cancel()
    failure: list[Failure] = []
    d.addErrback(failure.append)
    assert failure and failure[0].check(CancelledError)
    assert reader._waiter is None
    reader.data_received(b"line\n")
    assert result_of(reader.read_line()) == b"half a line"


@pytest.mark.parametrize("driver", ["lean", "twisted"])
def test_a_line_too_long_is_raised_into_an_async_for(driver: str) -> None:
    from twisted.internet.defer import ensureDeferred

    from twisted_tcp import LineTooLongError, Reader

    reader = Reader(None, max_line_length=4)
    seen: list[Any] = []

    async def consume() -> list[Any]:
        while True:
            try:
                async for line in reader.lines():
                    seen.append(line)
                return seen
            except LineTooLongError:
                seen.append("too long")

    if driver == "lean":
        done = Outcome()
        run(consume, (), done)
    else:
        d = ensureDeferred(consume())
    reader.data_received(b"ok\n")
    reader.data_received(b"much too ")
    reader.data_received(b"long\nfine\n")
    reader.eof_received()
    result = done.value if driver == "lean" else result_of(d)
    assert result == [b"ok", "too long", b"fine"]


def test_read_line_awaited_is_resumed_directly_and_can_be_cancelled_from_outside() -> None:
    from twisted_tcp import Reader

    reader = Reader(None)
    reads: list[Deferred[Any]] = []

    async def handler() -> list[Any]:
        got: list[Any] = []
        d = reader.read_line()
        reads.append(d)
        got.append(await d)
        d = reader.read_line()
        reads.append(d)
        try:
            await d
        except CancelledError:
            got.append("cancelled")
        return got

    done = Outcome()
    run(handler, (), done)
    reader.data_received(b"first\n")
    assert not reads[0].called  # no callback chain
    reads[1].cancel()  # by whoever holds it, while the task awaits it
    assert done.value == [b"first", "cancelled"]
    assert not reads[1].called  # no failure left in it to log


def test_callbacks_added_to_an_awaited_read_still_run() -> None:
    from twisted_tcp import Reader

    reader = Reader(None)
    also: list[Any] = []

    async def handler() -> Any:
        d = reader.read_line()
        d.addCallback(also.append)  # before the await: the driver waits on callbacks
        return await d

    done = Outcome()
    run(handler, (), done)
    reader.data_received(b"line\n")
    assert also == [b"line"]


def result_of(d: Deferred[Any]) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert box and not isinstance(box[0], Failure), box
    return box[0]


def test_an_awaited_read_with_a_timeout_gives_its_result() -> None:
    """A read given callbacks (a timeout, say) is awaited as a Deferred, value and all."""
    from twisted.internet.task import Clock

    from twisted_tcp import Reader

    reader = Reader(None)
    clock = Clock()

    async def handler() -> Any:
        return await reader.read_line().addTimeout(5, clock)

    done = Outcome()
    run(handler, (), done)
    reader.data_received(b"in time\n")
    assert done.value == b"in time"
    assert not clock.getDelayedCalls()


def test_a_read_that_ended_before_its_await_gives_its_outcome() -> None:
    """Fired (a line, or an error) while nobody awaited it: the await gives it then."""
    import gc

    from twisted.logger import globalLogPublisher

    from twisted_tcp import LineTooLongError, Reader

    reader = Reader(None, max_line_length=4)
    early = reader.read_line()
    reader.data_received(b"ok\n")
    assert early.called
    logged: list[Any] = []
    globalLogPublisher.addObserver(logged.append)
    try:

        async def handler() -> Any:
            got = [await early]
            too_long = reader.read_line()
            reader.data_received(b"far too long\n")
            try:
                await too_long
            except LineTooLongError:
                got.append("too long")
            return got

        done = Outcome()
        run(handler, (), done)
        assert done.value == [b"ok", "too long"]
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert not [e for e in logged if e.get("isError") or "log_failure" in e]


def test_the_end_of_the_stream_under_twisteds_driver() -> None:
    from twisted.internet.defer import ensureDeferred

    from twisted_tcp import Reader

    reader = Reader(None)

    async def read_two() -> list[Any]:
        return [await reader.read_line(), await reader.read_line()]

    d = ensureDeferred(read_two())
    reader.data_received(b"last\n")
    reader.eof_received()
    assert result_of(d) == [b"last", None]
