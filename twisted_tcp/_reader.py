"""
The Reader: a pull-style reader over the bytes a connection receives.

Bytes arrive pushed, as chunks, through L{Reader.data_received}; the user pulls
them with one read at a time, each returning a Deferred.  The bytes wait in a
L{RecordBuffer}, which splits them into records (no I/O, no Deferreds); the
Reader adds the pending read and flow control.  Memory stays bounded: above
C{buffer_size} unread bytes the transport stops reading (the peer's TCP window
fills up), and C{read_line}/C{read_until} fail on a record longer than
C{max_line_length} instead of buffering it.
"""

from __future__ import annotations

import types
from collections.abc import AsyncIterator, Callable, Generator
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure

from ._buffer import NEED, Need, RecordBuffer, Stop
from ._errors import ReadInProgressError
from ._settings import DEFAULTS, check_count
from ._twisted_private import made_without_init

DEFAULT_READ_SIZE = 64 * 1024


class Reader:
    """
    Reads from one connection.  Every method returns a cancellable Deferred;
    cancelling a pending read loses no byte, and the next read sees them all.

    At most one read is pending at a time: starting a second one fails at
    once with L{ReadInProgressError}.  The end of the stream, whether the
    peer closed or the connection was lost, is seen only after every byte
    received before it has been read.

    @ivar buffer_size: above this many unread bytes the transport stops
        reading until the user reads (unless a pending read needs more).
    """

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_op",
        "_op_arg",
        "_paused",
        "_producer",
        "_received",
        "_task",
        "_waiter",
        "buffer_size",
    )

    def __init__(
        self,
        producer: IPushProducer | None,
        buffer_size: int = DEFAULTS.reader_buffer_size,
        max_line_length: int = DEFAULTS.max_line_length,
    ) -> None:
        if type(buffer_size) is not int or buffer_size < 1:  # (a call saved per connection)
            check_count("reader_buffer_size", buffer_size)  # raises, but for an int subclass
        self._buffer = RecordBuffer(max_line_length)
        self._producer = producer
        self.buffer_size = buffer_size
        self._paused = False
        self._received = 0
        self._waiter: ReadDeferred | Reader | None = None  # the pending read
        # The pending read: a request of RecordBuffer's, called with the
        # buffer and its argument (not a bound method, made at each read).
        self._op: Callable[[RecordBuffer, Any], Any] | None = None
        self._op_arg: Any = None
        # The task awaiting a line of the reader's own iterator (lines()).
        self._task: Any = None

    # -- what the user calls -------------------------------------------------

    @property
    def max_line_length(self) -> int:
        """
        The longest line (or C{read_until} record), delimiter excluded, that
        C{read_line} and C{read_until} return.
        """
        return self._buffer.max_line_length

    @property
    def bytes_buffered(self) -> int:
        """The number of received bytes not yet read."""
        return self._buffer.size

    @property
    def bytes_received(self) -> int:
        """
        The number of bytes received so far (under TLS, the plaintext), read
        or not, the parts of overlong lines that were dropped included.
        """
        return self._received

    @property
    def at_eof(self) -> bool:
        """Whether the stream has ended and every byte of it has been read."""
        return self._buffer.eof and not self._buffer.size

    def read(self, max_bytes: int = DEFAULT_READ_SIZE) -> Deferred[bytes]:
        """
        Read at least one and at most C{max_bytes} bytes, as soon as any are
        there; C{b""} at the end of the stream.

        @raise TypeError: if C{max_bytes} is not an int.
        @raise ValueError: if it is less than 1.
        """
        if type(max_bytes) is not int or max_bytes < 1:
            check_count("max_bytes", max_bytes)  # raises, but for an int subclass
        return self._start(RecordBuffer.take_some, max_bytes)

    def read_line(self) -> Deferred[bytes | None]:
        """
        Read a line and return it without its C{b"\\n"} or C{b"\\r\\n"};
        C{None} at the end of the stream.  A last line without a newline is
        returned as it is.  A line longer than C{max_line_length} fails with
        L{LineTooLongError}; its bytes are discarded, and the next read
        starts after it.
        """
        if self._waiter is None and self._buffer.size:
            line = self._buffer.line_now()  # the fast path: a whole line buffered
            if line is not None:
                if self._paused:
                    self._update_flow()
                # (What _fired does, inlined: this is the path of every line read.)
                d = _Fired() if Deferred.debug else _new_fired()
                d.called = True
                d.result = line
                return d
        return self._start(_take_line, None)

    def read_lines(self) -> Deferred[list[bytes] | None]:
        """
        Read whole lines that are there now, at least one (waiting for it):
        a list of lines, each as L{read_line} returns it; C{None} at the end
        of the stream.  They are split from the bytes received in
        one go, so this costs less per line than L{read_line} where lines
        come many at a time (pipelined requests).  A list holds at most
        about 8 KiB of lines (or a single longer line): the lines after
        them, and any still arriving, are the next read's.  A line longer than
        C{max_line_length} ends the list before it, and the next read fails
        with L{LineTooLongError}.
        """
        return self._start(_take_lines, None)

    def read_until(self, delimiter: bytes, keep_delimiter: bool = False) -> Deferred[bytes | None]:
        """
        Read up to C{delimiter} and return those bytes, with the delimiter
        only if C{keep_delimiter}; C{None} at the end of the stream.  Fails
        with L{IncompleteReadError} (with the bytes read) if the stream ends
        in the middle of a record, and with L{LineTooLongError} if the record
        is longer than C{max_line_length}.

        @raise TypeError: if C{delimiter} is not bytes, or C{keep_delimiter}
            not a bool.
        @raise ValueError: if C{delimiter} is empty.
        """
        if not isinstance(keep_delimiter, bool):
            raise TypeError(f"keep_delimiter must be a bool, not {keep_delimiter!r:.80}")
        if not isinstance(delimiter, bytes):
            raise TypeError(
                f"delimiter must be bytes, not {type(delimiter).__name__}: {delimiter!r:.80}"
            )
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        return self._start(RecordBuffer.take_until, (delimiter, keep_delimiter))

    def really_read(self, n: int) -> Deferred[bytes]:
        """
        Read exactly C{n} bytes.  Fails with L{IncompleteReadError}, carrying
        the bytes read, if the stream ends first.  The C{n} bytes are buffered
        in memory whatever C{buffer_size} says.

        @raise TypeError: if C{n} is not an int.
        @raise ValueError: if it is negative.
        """
        if type(n) is not int or n < 0:
            check_count("n", n, least=0)  # raises, but for an int subclass
        buffer = self._buffer
        if self._waiter is None and buffer.size >= n:  # the fast path: all of it buffered
            data = buffer.take_now(n)
            if self._paused:
                self._update_flow()
            return _fired(data)
        return self._start(RecordBuffer.take_exactly, n)

    def read_one_chunk_at_a_time(
        self, handle_chunk: Callable[[bytes], int | Need | Stop]
    ) -> Deferred[Any]:
        """
        Give the bytes to C{handle_chunk} as they arrive, until it stops:
        a parser of a protocol's messages, called once per chunk received
        instead of a read per field, the cheapest way to read messages that
        come many at a time (requests a client pipelines).

        C{handle_chunk(data)} is called with every unread byte, as one bytes
        object: at once if any are buffered, then each time more arrive
        (what it left, followed by the new bytes), and once more at the end
        of the stream if it left any (but for a L{Need} not met).  It
        returns one of:

          - the number of bytes it consumed, from the front of C{data}
            (from 0 to C{len(data)}): it is called again when more arrive;
          - L{Need}C{(consumed, at_least)}: the same, but it is called again
            only once at least C{at_least} bytes are there after the
            consumed ones (the length of a message it has begun, say);
          - L{Stop}C{(consumed, value)}: the read ends with C{value}, and
            the bytes after the first C{consumed} are the next read's.

        Consume every whole message in C{data} in one call: the bytes left
        are copied when more arrive.  The returned Deferred fires with the
        L{Stop}'s C{value}.  At the end of the stream it fires with C{None}
        if every byte was consumed (L{at_eof} then says so), and fails with
        L{IncompleteReadError}, whose C{partial} holds the bytes left, if
        not.  What C{handle_chunk} raises fails the read, and the bytes of
        that call stay unread.  Inside C{handle_chunk}, writing is allowed,
        and another read of this reader fails with L{ReadInProgressError}.
        A read cancelled from inside C{handle_chunk} (cancelling the task
        that awaits it) ends cancelled, whatever C{handle_chunk} then
        returns or raises; the bytes it consumed are taken.

        While the read waits, it does not hold the peer back: the bytes
        C{handle_chunk} leaves are kept whatever C{buffer_size} says, as for
        L{really_read}.  It sees their number, C{len(data)}, each time, and
        must raise once a message is longer than its protocol allows.  A
        handler that writes replies should return a L{Stop} when
        L{twisted_tcp.Writer.bytes_to_write} grows large, and await
        L{twisted_tcp.Writer.flushed} before reading on: a peer that sends
        without reading then stops being read.

        @raise TypeError: if C{handle_chunk} is not callable.
        """
        if not callable(handle_chunk):
            raise TypeError(f"handle_chunk must be callable, not {handle_chunk!r:.80}")
        if self._waiter is not None:
            return self._start(_take_chunk, handle_chunk)  # fails: a read is pending
        # Pending before the handler runs even once, so that a read started
        # inside it fails instead of taking the bytes it is given.
        pending = self._wait(_take_chunk, handle_chunk)
        buffer = self._buffer
        if buffer.size or buffer.eof:
            self._serve()
        return pending

    def contents(self) -> Deferred[bytes]:
        """
        Read until the end of the stream and return everything.  The whole
        rest of the stream is held in memory: use it only with peers you trust
        to send a bounded amount.
        """
        return self._start(RecordBuffer.take_all, None)

    def lines(self) -> AsyncIterator[bytes]:
        """
        Iterate, with C{async for}, over the lines of the stream, as
        L{read_line} returns them, until the end of the stream.  (The
        reader is that iterator itself, as asyncio's C{StreamReader} is:
        C{async for line in reader} is the same.)
        """
        return self

    def line_batches(self) -> AsyncIterator[list[bytes]]:
        """
        Iterate, with C{async for}, over the lines of the stream in batches,
        as L{read_lines} returns them (each a list of whole lines that were
        there at once, at most about 8 KiB of them: more may be buffered),
        until the end of the stream: where lines come many at a time, the
        cheapest way to read them.
        """
        return _LineBatches(self)

    def __aiter__(self) -> Reader:
        return self

    @types.coroutine
    def __anext__(self) -> Any:
        # The await itself (a generator, made when asked for and run when
        # awaited: a line that came meanwhile is not lost).  A whole line
        # already buffered is given at once, with no Deferred; else the
        # reader becomes its own pending read, and the lean driver
        # (twisted_tcp._driver.Driver), which sets itself as _task, resumes
        # it with the line directly: waiting makes no Deferred either.  As
        # few locals as can be: it is kept for as long as a connection
        # waits, and the rest of the work is in _line_or_wait.
        if self._waiter is None and self._buffer.size:
            line = self._buffer.line_now()
            if line is not None:
                if self._paused:
                    self._update_flow()
                return line
        line = self._line_or_wait(_take_line)
        if line is self:
            line = yield self  # the lean driver resumes with the line
            if line is self:
                # A driver that does not know it sent it back (Twisted's own
                # does): wait on a Deferred instead, which that driver knows.
                line = yield self._wait(_take_line, None)
        if line is None:
            raise StopAsyncIteration
        return line

    def _line_or_wait(self, op: Callable[[RecordBuffer, Any], Any]) -> Any:
        """
        The next line of L{lines} (with C{op} L{RecordBuffer.take_line}),
        or batch of L{line_batches} (L{RecordBuffer.take_lines}), or None
        at the end of the stream; or, if it must wait for bytes, the reader
        itself, now its pending read.
        """
        buffer = self._buffer
        if buffer.size or buffer.eof or self._waiter is not None:
            line = self._try(op, None)  # (ReadInProgressError if a read is pending)
            if line is not NEED:
                return line
        # (What _wait_on does, inlined: this is the path of every line awaited.)
        self._waiter = self
        self._op = op
        self._op_arg = None
        if self._paused:
            self._set_paused(False)
        return self

    def _cancel_lines(self) -> None:
        """The task awaiting a line is cancelled: it gets C{CancelledError} there."""
        task = self._task
        if task is not None:
            self._task = None
            self._cancel(self)
            task.resume(None, Failure(CancelledError()))

    # -- what the connection calls -------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Buffer C{data} and serve the pending read if it is now satisfied."""
        self._received += len(data)
        buffer = self._buffer
        buffer.feed(data)
        if self._waiter is not None:
            self._serve()
        elif buffer.size > self.buffer_size and not self._paused:
            self._set_paused(True)

    def eof_received(self) -> None:
        """The stream has ended: serve the pending read with what is left."""
        self._buffer.feed_eof()
        if self._waiter is not None:
            self._serve()

    def eof_known(self) -> None:
        """
        The stream has ended (L{at_eof} says so from now on), but the
        pending read is left to L{eof_received}: the connection tells the
        reader first, then the writer, whose Deferreds may run user code,
        then serves the read.
        """
        self._buffer.feed_eof()

    # -- internals -----------------------------------------------------------

    def _start(self, op: Callable[[RecordBuffer, Any], Any], arg: Any) -> Deferred[Any]:
        """Start a read; return its Deferred (a L{ReadDeferred} if it waits for bytes)."""
        buffer = self._buffer
        if not (buffer.size or buffer.eof or self._waiter is not None) and arg != 0:
            # Nothing buffered: every read waits (but really_read(0)).
            return self._wait(op, arg)
        try:
            result = self._try(op, arg)
        except Exception:
            return fail()
        if result is NEED:
            return self._wait(op, arg)
        return _fired(result)

    def _try(self, op: Callable[[RecordBuffer, Any], Any], arg: Any) -> Any:
        """
        Try a read with no read pending: return its result, or L{NEED} (it
        must wait for bytes); raise its error.
        """
        if self._waiter is not None:
            raise ReadInProgressError(
                "another read is already pending on this Reader; "
                "a Reader serves one read at a time"
            )
        try:
            result = op(self._buffer, arg)
        except Exception:
            self._update_flow()
            raise
        if result is not NEED and self._paused and self._buffer.size <= self.buffer_size:
            self._set_paused(False)
        return result

    def _wait(self, op: Callable[[RecordBuffer, Any], Any], arg: Any) -> ReadDeferred:
        """Make C{op(buffer, arg)} the pending read, tried again as bytes arrive."""
        if Deferred.debug:  # (then Deferred.__init__ records where it was made)
            pending = ReadDeferred(self)
        else:  # what ReadDeferred(self) makes, with no call to Deferred.__init__
            pending = _new_read()
            pending.reader = self
            pending._task = None
            pending.tapped = False
        self._wait_on(pending, op, arg)
        return pending

    def _wait_on(
        self, waiter: ReadDeferred | Reader, op: Callable[[RecordBuffer, Any], Any], arg: Any
    ) -> None:
        """Make C{op(buffer, arg)} the pending read, for C{waiter}."""
        self._waiter = waiter
        self._op = op
        self._op_arg = arg
        if self._paused:
            self._set_paused(False)

    def _serve(self) -> None:
        op = self._op
        assert op is not None
        # A line's fast path first (take_line's own, without its call).
        buffer = self._buffer
        result: Any = buffer.line_now() if op is _take_line and buffer.size else None
        if result is None:
            if op is _take_chunk:
                result = self._chunk_result()
                if result is NEED:
                    return
            else:
                try:
                    result = op(buffer, self._op_arg)
                except Exception:
                    result = Failure()
                else:
                    if result is NEED:
                        return
        waiter = self._waiter
        assert waiter is not None
        self._waiter = self._op = self._op_arg = None
        # A task that awaits the read (a ReadDeferred with no callbacks, or
        # the iterator of lines()) is resumed directly; a Deferred given
        # callbacks, or waited on by another driver, is fired.
        task = waiter._task
        waiter._task = None
        if type(waiter) is ReadDeferred and (task is None or waiter.tapped):
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(result)
        if task is not None:
            if isinstance(result, Failure):
                task.resume(None, result)
            else:
                task.resume(result, None)
        if self._paused or buffer.size > self.buffer_size:
            self._update_flow()

    def _chunk_result(self) -> Any:
        """
        Call the pending chunk read's handler (user code) as its request
        says: return the read's result, a Failure, or L{NEED}, also when the
        read was cancelled meanwhile (then it is no longer pending).  While
        the handler runs, the pending read is marked busy: bytes or the end
        of the stream fed meanwhile (a close in the handler can end the
        stream at once) wait, and are given to it when it returns.  If the
        handler cancels the read (under the lean driver, cancelling resumes
        the awaiting task inside the handler), the read ends cancelled,
        whatever the handler then returns or raises, and no other read can
        start before the handler returns.
        """
        waiter = self._waiter
        buffer = self._buffer
        self._op = _busy
        try:
            while True:
                received = self._received
                eof = buffer.eof
                try:
                    result = _take_chunk(buffer, self._op_arg)
                except Exception:
                    result = Failure()
                if self._waiter is not waiter:
                    return NEED  # cancelled by the handler: no longer to be served
                if result is not NEED or (received == self._received and eof == buffer.eof):
                    return result
        finally:
            if self._waiter is waiter:
                self._op = _take_chunk
            elif self._waiter is _CANCELLED:
                self._waiter = self._op = self._op_arg = None
                self._update_flow()

    def _cancel(self, d: object) -> None:
        if self._waiter is d:
            if self._op is _busy:
                # Cancelled from inside its handler: the reader stays busy
                # (a read started there fails) until the handler returns.
                self._waiter = _CANCELLED
                return
            self._waiter = self._op = self._op_arg = None
            self._update_flow()

    def _update_flow(self) -> None:
        want_paused = self._buffer.size > self.buffer_size and self._waiter is None
        if want_paused != self._paused:
            self._set_paused(want_paused)

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        producer = self._producer
        if producer is None or self._buffer.eof:
            return
        if paused:
            producer.pauseProducing()
        else:
            producer.resumeProducing()


# The awaits of this module (Reader.__anext__, ReadDeferred.__await__ and
# _Fired.__await__) are generators, not iterator objects whose send() raises
# StopIteration: a coroutine resumes a generator and takes its return value
# with no exception raised, which is three times faster, and leaves the
# handler's frame as it is (an exception raised by a Python-level send()
# makes CPython build a frame object for the coroutine, 200 bytes kept for
# the connection's life).


def _cancel_read(d: Any) -> None:
    """A read's canceller (a function: no bound method made for each read)."""
    d.reader._cancel(d)


class ReadDeferred(Deferred[Any]):
    """
    The Deferred of a read that waits for bytes.  Awaited by the lean
    driver (a L{twisted_tcp._driver.Driver}), which sets itself as C{_task}, it
    is not fired when the read ends: the reader resumes the task with the
    result directly, with no callback run (unless callbacks were added to
    it, which it then runs too).  Awaited under Twisted's own driver, or
    given callbacks, it is an ordinary Deferred.

    @ivar _task: the driver that awaits it, or C{None}.
    @ivar tapped: whether callbacks were added to it.
    """

    __slots__ = ("_task", "reader", "tapped")

    # Its canceller, for Deferred.cancel (as the class's, it need not be
    # set on each; Reader._wait makes most of them with no __init__).
    _canceller = staticmethod(_cancel_read)

    def __init__(self, reader: Reader) -> None:
        Deferred.__init__(self, _cancel_read)
        self.reader = reader
        self._task: Any = None
        self.tapped = False

    # Every way to add a callback says so: then the driver waits on them.
    def addCallbacks(self, *args: Any, **kwargs: Any) -> Any:
        self.tapped = True
        return super().addCallbacks(*args, **kwargs)

    def addCallback(self, *args: Any, **kwargs: Any) -> Any:
        self.tapped = True
        return super().addCallback(*args, **kwargs)

    def addErrback(self, *args: Any, **kwargs: Any) -> Any:
        self.tapped = True
        return super().addErrback(*args, **kwargs)

    def addBoth(self, *args: Any, **kwargs: Any) -> Any:
        self.tapped = True
        return super().addBoth(*args, **kwargs)

    def __await__(self) -> Generator[Any, Any, Any]:
        if not self.called:
            value = yield self  # the driver waits on it
            if not self.called:
                return value  # the lean driver sent the result (the Deferred was not fired)
        # Fired before the await, or resumed by a driver from inside its callback.
        result = self.result
        if isinstance(result, Failure):
            self.addErrback(_consumed)  # raised here: not to be logged as unhandled
            result.raiseException()
        return result

    def cancel(self) -> None:
        task = self._task
        if task is not None and not self.called:
            self._task = None
            self.reader._cancel(self)
            task.resume(None, Failure(CancelledError()))
            return
        super().cancel()


class _Fired(Deferred[Any]):
    """
    The Deferred of a read that had its result at once: an ordinary fired
    Deferred, but for its await, a generator, which is twice as
    fast as a fired Deferred's own.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, Any]:
        result = self.result
        if (type(result) is bytes or result is None) and not self.paused:
            return result  # (no isinstance against Deferred: ABCMeta's is slow)
        if self.paused or isinstance(result, (Failure, Deferred)):
            # Callbacks added since made it fail or wait: awaited as Twisted does.
            return (yield from super().__await__())
        return result


_new_fired = made_without_init(_Fired)
_new_read = made_without_init(ReadDeferred)


def _fired(result: object) -> _Fired:
    """A Deferred that has fired with C{result}, as C{succeed} makes, for a read."""
    # With Deferred debugging on (setDebugging), Deferred.__init__ records
    # where each Deferred was made.
    d: _Fired = _Fired() if Deferred.debug else _new_fired()
    # What callback() does to a Deferred with no callbacks yet: the two
    # attributes that Deferred documents as saying it has fired, and with what.
    d.called = True
    d.result = result
    return d


class _LineBatches:
    """The iterator of L{Reader.line_batches}: as the reader's own iterator of lines, by batch."""

    __slots__ = ("_reader",)

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def __aiter__(self) -> _LineBatches:
        return self

    @types.coroutine
    def __anext__(self) -> Any:
        # As Reader.__anext__, for a batch (its comments say why).
        reader = self._reader
        if reader._waiter is None and reader._buffer.size:
            lines = reader._buffer.lines_now()
            if lines:
                if reader._paused:
                    reader._update_flow()
                return lines
        lines = reader._line_or_wait(_take_lines)
        if lines is reader:
            lines = yield reader
            if lines is reader:
                lines = yield reader._wait(_take_lines, None)
        if lines is None:
            raise StopAsyncIteration
        return lines


_take_line = RecordBuffer.take_line
_take_lines = RecordBuffer.take_lines
_take_chunk = RecordBuffer.take_chunk


def _busy(buffer: RecordBuffer, arg: object) -> Any:
    """The request of a chunk read whose handler is running: it waits."""
    return NEED


_CANCELLED: Any = object()
"""The pending read of a reader whose chunk handler cancelled it while running."""


def _consumed(failure: Failure) -> None:
    return None
