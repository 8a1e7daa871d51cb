"""
The record buffer: the bytes a stream has received, split into records on
demand.  No I/O and no Deferreds: it is fed bytes and the end of the stream,
and asked for records; each request returns its record now, raises its error
now, or returns L{NEED} when the bytes it needs have not arrived yet (ask
again after the next feed).  L{twisted_tcp._reader.Reader} puts the pull API,
the pending read and flow control around it.

Received chunks are kept as they are and sliced only when a request needs part
of one, so a request that takes a whole chunk copies nothing.  Records are
bounded: a line or delimited record longer than C{max_line_length} raises
L{LineTooLongError}, and the rest of it is dropped as it arrives instead of
being buffered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ._errors import IncompleteReadError, LineTooLongError
from ._settings import DEFAULTS, check_count

NEED: Any = object()
"""Returned by a request that needs more bytes than are buffered."""

_NO_CHUNKS: Any = ()
"""The chunks of an empty buffer: falsy and immutable, never appended to."""

BATCH_BYTES = 8192
"""
The most bytes of lines that one L{RecordBuffer.take_lines} takes (but a
whole line, however long): a batch of the shortest lines is a list of small
bytes objects, several times the size of the bytes they were split from.
"""


class Stop(NamedTuple):
    """
    What a chunk handler (see L{twisted_tcp.Reader.read_one_chunk_at_a_time})
    returns to end the read: it consumed the first C{consumed} bytes of the
    chunk it was given, the rest stay unread for the next read, and the
    read returns C{value}.
    """

    consumed: int
    value: Any = None


class Need(NamedTuple):
    """
    What a chunk handler (see L{twisted_tcp.Reader.read_one_chunk_at_a_time})
    returns to go on reading when it knows how many more bytes the next
    message needs: it consumed the first C{consumed} bytes of the chunk it
    was given, and is not to be called again before at least C{at_least}
    bytes are there after them (the rest of this chunk counted).  A large
    message arriving in small pieces is then handed over once, not once per
    piece.
    """

    consumed: int
    at_least: int


class RecordBuffer:
    """
    Received bytes, taken by requests: L{take_some}, L{take_line},
    L{take_until}, L{take_exactly}, L{take_all}, and L{take_chunk}, which
    lets a parser of the caller's say what it takes.

    Each request either takes its record from the front of the buffer, or
    raises, or returns L{NEED} and takes nothing.  A request repeated after
    L{NEED} does not search again the bytes it has already searched, so a
    record that arrives in many chunks costs time linear in its length.

    @ivar max_line_length: the longest record, delimiter excluded, that
        L{take_line} and L{take_until} return.
    """

    __slots__ = (
        "_chunks",
        "_discard",
        "_pos",
        "_scan",
        "eof",
        "max_line_length",
        "size",
    )

    def __init__(self, max_line_length: int = DEFAULTS.max_line_length) -> None:
        if type(max_line_length) is not int or max_line_length < 1:  # (as Reader.__init__)
            check_count("max_line_length", max_line_length)  # raises, but for an int subclass
        self.max_line_length = max_line_length
        # A list, not a deque: it usually holds a chunk or two.  Empty, it
        # is no list but _NO_CHUNKS, which feed() replaces: an idle
        # connection holds no object here for the garbage collector to
        # track (a list would be 72 bytes).
        self._chunks: list[bytes] = _NO_CHUNKS
        self._pos = 0  # bytes of _chunks[0] already taken
        self.size = 0
        """The number of bytes buffered, not yet taken."""
        self.eof = False
        """Whether the end of the stream was fed (bytes may still be buffered)."""
        # What _find searched with nothing taken since, or None: the
        # delimiter, the chunks searched for it, and the unread bytes they
        # hold; or what a chunk handler's Need said: (the handler, the bytes
        # it needs, 0).
        self._scan: tuple[Any, int, int] | None = None
        # Dropping an overlong record: up to this delimiter, with these last
        # bytes maybe its start.
        self._discard: tuple[bytes, bytes] | None = None

    # -- what the stream feeds -------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Buffer C{data}, but for the rest of a record too long to keep."""
        if self._discard is not None:
            data = self._drop_until_delimiter(data)
        if data:  # (no empty chunk is kept: the chunks are there only while bytes are)
            chunks = self._chunks
            if chunks:
                chunks.append(data)
            else:
                self._chunks = [data]
            self.size += len(data)

    def feed_eof(self) -> None:
        """The stream has ended: requests now take what is left."""
        if not self.eof:
            self.eof = True
            self._discard = None

    # -- the requests ----------------------------------------------------------

    def line_now(self) -> bytes | None:
        """
        The fast path of every line request: take a whole line of allowed
        length from the first chunk, or return None and take nothing (then
        L{take_line} decides: more bytes needed, a longer record, the end of
        the stream).
        """
        chunks = self._chunks
        if not chunks:
            return None
        first = chunks[0]
        pos = self._pos
        end = first.find(b"\n", pos)
        if not 0 <= end - pos <= self.max_line_length:
            return None
        after = end + 1
        # (What _took and _drop_first do, inlined: this is the path of every line.)
        if after == len(first):
            if len(chunks) == 1:
                self._chunks = _NO_CHUNKS
            else:
                del chunks[0]
            self._pos = 0
        else:
            self._pos = after
        self.size -= after - pos
        self._scan = None
        if end > pos and first[end - 1] == 13:  # b"\r"
            end -= 1
        return first[pos:end]

    def lines_now(self, most: int = 0) -> list[bytes]:
        """
        Take the whole lines of the first chunk at once, each as
        L{take_line} returns it, up to one too long (left for L{take_line}
        to raise) and up to L{BATCH_BYTES} bytes (but a whole line, however
        long), or with C{most} up to that many bytes (and no longer line);
        C{[]} if there is none.  A chunk of many lines is split by
        C{bytes.split}, not searched line by line.
        """
        chunks = self._chunks
        if not chunks:
            return []
        first = chunks[0]
        pos = self._pos
        last = first.rfind(b"\n", pos, pos + (most or BATCH_BYTES))
        if last < 0:
            if most:
                return []
            last = first.find(b"\n", pos)  # a first line of BATCH_BYTES or more
            if last < 0:
                return []
        region = first[pos:last]
        lines = region.split(b"\n")
        limit = self.max_line_length
        if len(region) > limit and max(map(len, lines)) > limit:
            lines = self._up_to_overlong(lines)
            if not lines:
                return []
            last = pos + sum(map(len, lines)) + len(lines) - 1  # the newline after them
        if b"\r" in region:
            lines = [line[:-1] if line[-1:] == b"\r" else line for line in lines]
        after = last + 1
        self._took(after - pos)
        return lines

    def _up_to_overlong(self, lines: list[bytes]) -> list[bytes]:
        """The lines before the first one longer than C{max_line_length}."""
        limit = self.max_line_length
        for i, line in enumerate(lines):
            if len(line) > limit:
                return lines[:i]
        return lines

    def take_lines(self, _: object = None) -> Any:
        """
        Whole lines buffered now, at least one (a list, each line as
        L{take_line} returns it): the first line, then what L{lines_now}
        takes after it, L{BATCH_BYTES} in all (or the first line alone);
        C{None} at the end.  What L{take_line} would raise
        for the first line, this raises.
        """
        size = self.size
        if not size:
            return None if self.eof else NEED
        line = self.line_now()  # often the only one (a request), and else the first
        if line is None:
            line = self.take_line()  # across chunks, too long, or the end
            if line is NEED or line is None:
                return line
        room = BATCH_BYTES - (size - self.size)  # for the lines after it
        if not self.size or room <= 0:
            return [line]
        lines = self.lines_now(room)
        lines.insert(0, line)
        return lines

    def take_some(self, max_bytes: int) -> Any:
        """At least one and at most C{max_bytes} bytes; C{b""} at the end."""
        size = self.size
        if size:
            available = len(self._chunks[0]) - self._pos
            if available >= max_bytes or available == size:
                return self.take_now(min(available, max_bytes))
            return self.take_now(min(size, max_bytes))
        if self.eof:
            return b""
        return NEED

    def take_line(self, _: object = None) -> Any:
        """
        A line without its C{b"\\n"} or C{b"\\r\\n"}; a last line without a
        newline as it is; C{None} at the end.

        @raise LineTooLongError: the line is longer than C{max_line_length};
            it is dropped, and the next request starts after it.
        """
        if not self.size:  # (the end of a stream read to its last line)
            return None if self.eof else NEED
        line = self.line_now()
        if line is not None:
            return line
        limit = self.max_line_length
        i = self._find(b"\n")
        if i >= 0:
            if i > limit + 1:
                raise self._overlong(b"\n", i)
            line = self._take_record(i, 1)
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) > limit:
                raise LineTooLongError(limit)
            return line
        if self.size > limit + 1 or (self.eof and self.size > limit):
            raise self._overlong(b"\n", -1)
        if self.eof:
            return self.take_now(self.size) if self.size else None
        return NEED

    def take_until(self, arg: tuple[bytes, bool]) -> Any:
        """
        C{arg} is C{(delimiter, keep_delimiter)}: the bytes up to the
        delimiter, with it only if C{keep_delimiter}; C{None} at the end.

        @raise LineTooLongError: the record is longer than
            C{max_line_length}; it is dropped, and the next request starts
            after it.
        @raise IncompleteReadError: the stream ended inside a record.
        """
        delimiter, keep = arg
        i = self._find(delimiter)
        if i >= 0:
            if i > self.max_line_length:
                raise self._overlong(delimiter, i)
            if keep:
                return self.take_now(i + len(delimiter))
            return self._take_record(i, len(delimiter))
        if self.size > self.max_line_length + len(delimiter) - 1:
            raise self._overlong(delimiter, -1)
        if self.eof:
            if not self.size:
                return None
            raise IncompleteReadError(self.take_now(self.size), delimiter)
        return NEED

    def take_exactly(self, n: int) -> Any:
        """
        Exactly C{n} bytes.

        @raise IncompleteReadError: the stream ended first (with the rest).
        """
        if self.size >= n:
            return self.take_now(n)
        if self.eof:
            raise IncompleteReadError(self.take_now(self.size), n)
        return NEED

    def take_chunk(self, handle_chunk: Callable[[bytes], Any]) -> Any:
        """
        Call C{handle_chunk} with every byte buffered, as one bytes object
        (if there is any, and as many as a L{Need} it returned asked for),
        and take the bytes it says it consumed.  It returns their number or
        a L{Need}, then this returns L{NEED} (it is to be called again with
        more); or a L{Stop}, whose value this returns.  At the end of the
        stream, with nothing left, C{None}.

        @raise IncompleteReadError: the stream ended with bytes the handler
            left unconsumed (they are taken, as its C{partial}).
        @raise TypeError: C{handle_chunk} returned neither an int (not a
            bool) nor a L{Stop} or L{Need} of ints.
        @raise ValueError: it consumed less than none or more than it was
            given, or needs less than one byte.
        @raise RuntimeError: the buffer was read while it ran.  After any of
            these errors, or what C{handle_chunk} raises, the bytes of that
            call are all still buffered.
        """
        size = self.size
        scan = self._scan  # (handle_chunk, at_least, 0) after a Need from it, nothing taken since
        if size and (scan is None or scan[0] != handle_chunk or size >= scan[1]):
            chunks = self._chunks
            if len(chunks) == 1 and not self._pos:
                data = chunks[0]  # (the usual case: one chunk, untouched, is passed as it is)
            else:
                data = self._join()  # joined once: what the handler leaves is not joined again
                self._scan = None
            result = handle_chunk(data)
            need = 0
            if type(result) is int:
                consumed, value = result, NEED
            elif isinstance(result, Stop):
                consumed, value = result
            elif isinstance(result, Need):
                (consumed, need), value = result, NEED
                if type(need) is not int or need < 1:
                    check_count("handle_chunk's at_least", need)  # raises
            else:
                raise TypeError(
                    "handle_chunk must return the number of bytes it consumed, "
                    f"a Stop or a Need; it returned {result!r:.80}"
                )
            chunks = self._chunks
            if not chunks or chunks[0] is not data or self._pos:
                raise RuntimeError("the reader was read while handle_chunk ran")
            if type(consumed) is not int or not 0 <= consumed <= size:
                if type(consumed) is not int:
                    raise TypeError(
                        f"handle_chunk's consumed must be an int, not {type(consumed).__name__}: "
                        f"{consumed!r:.80}"
                    )
                raise ValueError(
                    f"handle_chunk consumed {consumed} bytes of the {size} it was given"
                )
            if consumed:
                self._took(consumed)
            if value is not NEED:
                return value
            if need:
                self._scan = (handle_chunk, need, 0)
        if self.eof:
            if self.size:
                raise IncompleteReadError(self.take_now(self.size), None)
            return None
        return NEED

    def take_all(self, _: object = None) -> Any:
        """Every byte of the stream, once it has ended."""
        if self.eof:
            return self.take_now(self.size)
        return NEED

    def take_now(self, n: int) -> bytes:
        """
        Remove and return the first C{n} buffered bytes (C{n <= size}): the
        fast path of L{take_exactly}, and the last step of every request.
        """
        if not n:
            return b""
        chunks = self._chunks
        pos = self._pos
        first = chunks[0]
        end = pos + n
        self.size -= n
        self._scan = None
        if end < len(first):
            self._pos = end
            return first[pos:end]
        if end == len(first):
            self._drop_first()
            return first[pos:] if pos else first
        parts = [first[pos:] if pos else first]
        need = end - len(first)
        self._pos = 0
        taken = 1  # whole chunks taken, removed at once below
        while need:
            chunk = chunks[taken]
            if len(chunk) <= need:
                parts.append(chunk)
                need -= len(chunk)
                taken += 1
            else:
                parts.append(chunk[:need])
                self._pos = need
                break
        if taken == len(chunks):
            self._chunks = _NO_CHUNKS
        else:
            del chunks[:taken]
        return b"".join(parts)

    # -- internals ---------------------------------------------------------------

    def _take_record(self, n: int, skip: int) -> bytes:
        """Remove C{n + skip} buffered bytes and return the first C{n}."""
        chunks = self._chunks
        first = chunks[0]
        pos = self._pos
        end = pos + n + skip
        if end <= len(first):  # the common case: the record lies inside one chunk
            self._took(n + skip)
            return first[pos : pos + n]
        record = self.take_now(n)
        self.take_now(skip)
        return record

    def _join(self) -> bytes:
        """Make the buffered bytes one chunk, taken from its start, and return it."""
        chunks = self._chunks
        first = chunks[0][self._pos :] if self._pos else chunks[0]
        chunks[:] = [b"".join([first, *chunks[1:]]) if len(chunks) > 1 else first]
        self._pos = 0
        return chunks[0]

    def _drop_first(self) -> None:
        """The first chunk was taken to its end: drop it (and the list, with the last one)."""
        chunks = self._chunks
        if len(chunks) == 1:
            self._chunks = _NO_CHUNKS
        else:
            del chunks[0]
        self._pos = 0

    def _took(self, n: int) -> None:
        """C{n} bytes were taken from the first chunk (no more than it holds)."""
        after = self._pos + n
        if after == len(self._chunks[0]):
            self._drop_first()
        else:
            self._pos = after
        self.size -= n
        self._scan = None

    def _find(self, delimiter: bytes) -> int:
        """
        Return the offset of C{delimiter} from the front of the buffer, or
        -1; what an earlier call for the same delimiter searched, with
        nothing taken since, is not searched again.
        """
        chunks = self._chunks
        if not chunks:
            return -1
        scan = self._scan
        if scan is not None and scan[0] == delimiter:
            _, k, offset = scan
        else:
            k = offset = 0
        width = len(delimiter)
        if width > 1:
            # The delimiter may straddle chunks: search them joined.
            if len(chunks) > 1:
                self._join()
            pos = self._pos
            i = chunks[0].find(delimiter, pos + max(0, offset - width + 1))
            if i < 0:
                self._scan = (delimiter, 1, self.size)
                return -1
            return i - pos
        count = len(chunks)
        while k < count:
            chunk = chunks[k]
            if k == 0:
                pos = self._pos
                i = chunk.find(delimiter, pos)
                if i >= 0:
                    return i - pos
                offset = len(chunk) - pos
            else:
                i = chunk.find(delimiter)
                if i >= 0:
                    return offset + i
                offset += len(chunk)
            k += 1
        self._scan = (delimiter, k, offset)
        return -1

    def _overlong(self, delimiter: bytes, found: int) -> LineTooLongError:
        """Drop an overlong record and return the error to raise."""
        if found >= 0:
            self._take_record(found, len(delimiter))
        else:
            width = len(delimiter)
            tail = b"".join(self._chunks)[-(width - 1) :] if width > 1 else b""
            self._chunks = _NO_CHUNKS
            self._pos = self.size = 0
            self._scan = None
            if not self.eof:
                # Keep dropping what arrives until the record ends.
                self._discard = (delimiter, tail)
        return LineTooLongError(self.max_line_length)

    def _drop_until_delimiter(self, data: bytes) -> bytes:
        assert self._discard is not None
        delimiter, tail = self._discard
        window = tail + data if tail else data
        i = window.find(delimiter)
        if i < 0:
            width = len(delimiter)
            self._discard = (delimiter, window[-(width - 1) :] if width > 1 else b"")
            return b""
        self._discard = None
        return window[i + len(delimiter) :]
