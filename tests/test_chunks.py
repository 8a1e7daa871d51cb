"""
Reader.read_one_chunk_at_a_time: a parser of the user's, called with the
bytes as they arrive, taking what it says it consumed.  The buffer's part
alone (RecordBuffer.take_chunk, for any cut of the stream), the Reader's
(flow control, errors, cancellation, a read inside the handler), and
handlers reading that way over real sockets, TCP and Unix.
"""

from __future__ import annotations

import itertools
import struct
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError

import twisted_tcp as tt
from twisted_tcp import IncompleteReadError, Need, ReadInProgressError, Stop
from twisted_tcp._buffer import NEED, RecordBuffer

from .conftest import (
    LOCAL,
    failure_of,
    logged_errors,
    raw_client,
    read_to_end,
    result_of,
    serving,
    sleep,
    within,
)
from .test_reader import Watched, feed, make


def framed(payloads: list[bytes]) -> bytes:
    """Frames of a 2-byte big-endian length, then that many bytes."""
    return b"".join(struct.pack(">H", len(p)) + p for p in payloads)


class Frames:
    """
    A chunk handler that parses L{framed} frames into C{got}; it stops,
    with the count so far, once it has C{stop_after} of them, if given.
    """

    def __init__(self, stop_after: int | None = None) -> None:
        self.got: list[bytes] = []
        self.calls: list[bytes] = []
        self.stop_after = stop_after

    def __call__(self, data: bytes) -> int | Stop:
        self.calls.append(data)
        pos = 0
        while len(self.got) != self.stop_after and len(data) - pos >= 2:
            (n,) = struct.unpack_from(">H", data, pos)
            if len(data) - pos - 2 < n:
                break
            self.got.append(data[pos + 2 : pos + 2 + n])
            pos += 2 + n
        if len(self.got) == self.stop_after:
            return Stop(pos, len(self.got))
        return pos


# -- the buffer alone ----------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=40), max_size=20),
    cuts=st.lists(st.integers(0, 900), max_size=12),
    tail=st.binary(max_size=3),
)
def test_frames_do_not_depend_on_the_chunks(
    payloads: list[bytes], cuts: list[int], tail: bytes
) -> None:
    # However the stream is cut, the handler gets every frame once, in
    # order; a handler that left bytes is shown them again with the next;
    # what it leaves at the end is the IncompleteReadError's partial.
    stream = framed(payloads) + tail
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    buffer = RecordBuffer()
    handler = Frames()
    for i, j in itertools.pairwise(bounds):
        buffer.feed(stream[i:j])
        assert buffer.take_chunk(handler) is NEED
    buffer.feed_eof()
    try:
        end = buffer.take_chunk(handler)
    except IncompleteReadError as e:
        left = e.partial
    else:
        assert end is None
        left = b""
    # (A tail may itself hold frames: b"\0\0" is an empty one.)
    assert handler.got[: len(payloads)] == payloads
    assert framed(handler.got) + left == stream
    assert buffer.size == 0
    assert all(handler.calls)  # never called with nothing


def test_what_a_handler_leaves_is_given_again_with_the_new_bytes() -> None:
    buffer = RecordBuffer()
    handler = Frames()
    buffer.feed(b"\x00\x03ab")
    assert buffer.take_chunk(handler) is NEED
    buffer.feed(b"c\x00")
    buffer.feed(b"\x01d")
    assert buffer.take_chunk(handler) is NEED
    assert handler.calls == [b"\x00\x03ab", b"\x00\x03abc\x00\x01d"]
    assert handler.got == [b"abc", b"d"]
    assert buffer.size == 0


def test_stop_leaves_the_rest_to_the_next_request() -> None:
    buffer = RecordBuffer()
    buffer.feed(framed([b"one", b"two"]) + b"line\n")
    assert buffer.take_chunk(Frames(stop_after=1)) == 1
    assert buffer.take_chunk(Frames(stop_after=1)) == 1
    assert buffer.take_line() == b"line"
    assert buffer.size == 0


def test_the_end_of_the_stream() -> None:
    buffer = RecordBuffer()
    buffer.feed_eof()
    assert buffer.take_chunk(Frames()) is None  # nothing left: the handler is not called
    buffer = RecordBuffer()
    buffer.feed(b"\x00\x05abc")
    buffer.feed_eof()
    handler = Frames()
    with pytest.raises(IncompleteReadError) as info:
        buffer.take_chunk(handler)
    assert info.value.partial == b"\x00\x05abc" and info.value.expected is None
    assert "chunk handler" in str(info.value)
    assert handler.calls == [b"\x00\x05abc"]  # called once more, at the end
    assert buffer.size == 0


@pytest.mark.parametrize(
    ("returned", "error", "words"),
    [
        (None, TypeError, "returned None"),
        (True, TypeError, "returned True"),
        (2.0, TypeError, "returned 2.0"),
        (Stop("2"), TypeError, "must be an int, not str"),
        (Stop(False), TypeError, "must be an int, not bool"),
        (-1, ValueError, "consumed -1 bytes of the 4"),
        (5, ValueError, "consumed 5 bytes of the 4"),
        (Stop(5, "x"), ValueError, "consumed 5 bytes of the 4"),
    ],
)
def test_a_handler_that_answers_wrongly_is_told_and_takes_nothing(
    returned: Any, error: type[Exception], words: str
) -> None:
    buffer = RecordBuffer()
    buffer.feed(b"ab")
    buffer.feed(b"cd")
    with pytest.raises(error, match=words):
        buffer.take_chunk(lambda data: returned)
    assert buffer.size == 4
    assert buffer.take_some(10) == b"abcd"


class Lengths(Frames):
    """L{Frames}, saying with a L{Need} how many bytes the frame it has begun needs."""

    def __call__(self, data: bytes) -> int | Stop | Need:
        pos = super().__call__(data)
        if isinstance(pos, int) and len(data) - pos >= 2:
            (n,) = struct.unpack_from(">H", data, pos)
            return Need(pos, 2 + n)
        return pos


def test_a_need_holds_the_handler_back_until_its_bytes_are_there() -> None:
    buffer = RecordBuffer()
    handler = Lengths()
    buffer.feed(framed([b"ab"]) + b"\x00\x0a" + b"x")
    assert buffer.take_chunk(handler) is NEED
    for piece in [b"x" * 3, b"x" * 5]:  # 9 of the 12 bytes it needs
        buffer.feed(piece)
        assert buffer.take_chunk(handler) is NEED
    assert handler.calls == [framed([b"ab"]) + b"\x00\x0ax"]  # not called for those
    assert buffer.take_chunk(Frames()) is NEED  # another handler is called: the Need was not its
    buffer.feed(b"x" + framed([b"c"]))
    assert buffer.take_chunk(handler) is NEED
    assert handler.got == [b"ab", b"x" * 10, b"c"] and len(handler.calls) == 2
    buffer.feed(b"\x00\x05ab")
    assert buffer.take_chunk(handler) is NEED
    buffer.feed_eof()
    with pytest.raises(IncompleteReadError) as info:  # the end, before the bytes it needs
        buffer.take_chunk(handler)
    assert info.value.partial == b"\x00\x05ab" and len(handler.calls) == 3


def test_a_need_holds_for_the_same_bound_method_taken_again() -> None:
    buffer = RecordBuffer()
    parser = Lengths()
    buffer.feed(b"\x00\x0aabc")
    assert buffer.take_chunk(parser.__call__) is NEED  # (a new bound method each time)
    buffer.feed(b"de")
    assert buffer.take_chunk(parser.__call__) is NEED
    assert len(parser.calls) == 1


@pytest.mark.parametrize(
    ("returned", "error", "words"),
    [
        (Need(0, 0), ValueError, "at_least must be at least 1, not 0"),
        (Need(0, True), TypeError, "at_least must be an int, not bool"),
        (Need(9, 1), ValueError, "consumed 9 bytes of the 4"),
    ],
)
def test_a_wrong_need_is_told_and_takes_nothing(
    returned: Any, error: type[Exception], words: str
) -> None:
    buffer = RecordBuffer()
    buffer.feed(b"abcd")
    with pytest.raises(error, match=words):
        buffer.take_chunk(lambda data: returned)
    assert buffer.take_some(10) == b"abcd"


def test_a_handler_that_reads_the_buffer_itself_is_told() -> None:
    buffer = RecordBuffer()
    buffer.feed(b"abcd")

    def reads(data: bytes) -> int:
        buffer.take_some(1)
        return 2

    with pytest.raises(RuntimeError, match="read while handle_chunk ran"):
        buffer.take_chunk(reads)
    assert buffer.take_some(10) == b"bcd"  # what it took, and no more


# -- the Reader ----------------------------------------------------------------------


def test_a_read_ends_with_the_stop_and_the_next_read_takes_the_rest() -> None:
    reader, _ = make()
    feed(reader, framed([b"a"]))
    handler = Frames(stop_after=2)
    w = Watched(reader.read_one_chunk_at_a_time(handler))
    assert not w.fired and handler.got == [b"a"]  # called at once with what was buffered
    feed(reader, framed([b"b", b"c"]) + b"rest\n")
    assert w.value == 2 and handler.got == [b"a", b"b"]
    assert result_of(reader.read_one_chunk_at_a_time(Frames(stop_after=1))) == 1
    assert result_of(reader.read_line()) == b"rest"


def test_the_end_of_the_stream_for_the_reader() -> None:
    reader, _ = make()
    w = Watched(reader.read_one_chunk_at_a_time(Frames()))
    feed(reader, framed([b"x"]))
    reader.eof_received()
    assert w.value is None and reader.at_eof
    reader, _ = make()
    w = Watched(reader.read_one_chunk_at_a_time(Frames()))
    feed(reader, b"\x00\x09half")
    reader.eof_received()
    assert w.failure(IncompleteReadError).partial == b"\x00\x09half"  # type: ignore[attr-defined]
    assert reader.at_eof


def test_what_the_handler_raises_fails_the_read_and_keeps_the_bytes() -> None:
    reader, _ = make()

    def broken(data: bytes) -> int:
        raise ZeroDivisionError(len(data))

    w = Watched(reader.read_one_chunk_at_a_time(broken))
    feed(reader, b"abc")
    assert w.failure(ZeroDivisionError).args == (3,)
    assert result_of(reader.read()) == b"abc"
    feed(reader, b"de")
    failure_of(reader.read_one_chunk_at_a_time(broken), ZeroDivisionError)  # at once
    assert reader.bytes_buffered == 2


def test_a_read_inside_the_handler_fails() -> None:
    reader, _ = make()
    errors: list[BaseException] = []

    def nested(data: bytes) -> int:
        for read in (reader.read_line, reader.read, lambda: reader.really_read(1)):
            errors.append(failure_of(read(), ReadInProgressError))
        return len(data)

    feed(reader, b"a\nb\n")
    w = Watched(reader.read_one_chunk_at_a_time(nested))  # the bytes were there: at once
    feed(reader, b"c\n")  # and as they arrive
    assert len(errors) == 6 and not w.fired
    assert reader.bytes_buffered == 0


def test_one_read_at_a_time_and_bad_arguments() -> None:
    reader, _ = make()
    d = reader.read_line()
    failure_of(reader.read_one_chunk_at_a_time(Frames()), ReadInProgressError)
    d.cancel()
    failure_of(d, CancelledError)
    chunks = reader.read_one_chunk_at_a_time(Frames())
    failure_of(reader.read_line(), ReadInProgressError)
    chunks.cancel()
    failure_of(chunks, CancelledError)
    with pytest.raises(TypeError, match="handle_chunk must be callable, not b'ab'"):
        reader.read_one_chunk_at_a_time(b"ab")  # type: ignore[arg-type]


def test_cancelling_loses_no_byte() -> None:
    reader, _ = make()
    handler = Frames()
    d = reader.read_one_chunk_at_a_time(handler)
    feed(reader, b"\x00\x04ab")
    d.cancel()
    failure_of(d, CancelledError)
    feed(reader, b"cd")
    assert handler.calls == [b"\x00\x04ab"]  # not called once cancelled
    assert result_of(reader.read_one_chunk_at_a_time(Frames(stop_after=1))) == 1
    assert reader.bytes_buffered == 0


def test_a_pending_read_keeps_reading_and_a_stop_with_much_left_pauses() -> None:
    reader, producer = make(buffer_size=10)
    handler = Frames()
    w = Watched(reader.read_one_chunk_at_a_time(handler))
    feed(
        reader, b"\x00\x40", b"x" * 30, b"y" * 30
    )  # above buffer_size: the handler waits for them
    assert not producer.paused and reader.bytes_buffered == 62
    feed(reader, b"z" * 4 + b"\x00\x30" + b"w" * 20)
    assert handler.got == [b"x" * 30 + b"y" * 30 + b"z" * 4]
    assert not producer.paused  # still pending, with 22 bytes the handler left
    reader.eof_received()
    assert w.failure(IncompleteReadError)
    reader, producer = make(buffer_size=10)
    feed(reader, framed([b"a"]) + b"q" * 20)
    assert producer.paused
    assert result_of(reader.read_one_chunk_at_a_time(Frames(stop_after=1))) == 1
    assert producer.paused  # 19 left, no read pending
    assert result_of(reader.read(15)) == b"q" * 15
    assert not producer.paused


def test_a_handler_that_cancels_its_read_is_not_served() -> None:
    reader, _ = make()
    reads: list[Any] = []

    def cancels(data: bytes) -> Stop:
        reads[0].cancel()
        return Stop(1, "never seen")

    reads.append(reader.read_one_chunk_at_a_time(cancels))
    feed(reader, b"abc")  # nothing raised
    failure_of(reads[0], CancelledError)
    assert result_of(reader.read()) == b"bc"  # what it consumed is gone, the rest is there


def test_no_read_starts_inside_a_handler_that_cancelled_its_read() -> None:
    # As a task cancelled under the lean driver is resumed inside the handler.
    reader, _ = make()
    reads: list[Any] = []
    inside: list[BaseException] = []

    def cancels(data: bytes) -> int:
        reads[0].cancel()
        for read in (lambda: reader.read_one_chunk_at_a_time(Frames()), reader.read_line):
            inside.append(failure_of(read(), ReadInProgressError))
        return 2

    reads.append(reader.read_one_chunk_at_a_time(cancels))
    feed(reader, b"ab\ncdef")
    failure_of(reads[0], CancelledError)
    assert len(inside) == 2
    assert result_of(reader.read_line()) == b""  # what the handler consumed, and no more
    assert result_of(reader.read()) == b"cdef"


def test_bytes_and_the_end_fed_while_the_handler_runs_wait_for_it() -> None:
    reader, _ = make()
    handler = Frames()
    fed = [b"\x00\x02x", b"y", None]

    def feeding(data: bytes) -> int | Stop:
        # As a close inside a handler can end the stream at once.
        if fed:
            more = fed.pop(0)
            reader.eof_received() if more is None else feed(reader, more)
        return handler(data)

    w = Watched(reader.read_one_chunk_at_a_time(feeding))
    feed(reader, framed([b"a"]))
    assert handler.got == [b"a", b"xy"]
    assert handler.calls == [framed([b"a"]), b"\x00\x02x", b"\x00\x02xy"]  # once per arrival
    assert w.value is None and reader.at_eof


# -- over real sockets ---------------------------------------------------------------


async def frame_echo(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
    """Echo each frame back as a line; a frame b"quit" ends the handler."""

    def handle(data: bytes) -> int | Stop:
        pos = 0
        while len(data) - pos >= 2:
            (n,) = struct.unpack_from(">H", data, pos)
            if len(data) - pos - 2 < n:
                break
            frame = data[pos + 2 : pos + 2 + n]
            pos += 2 + n
            if frame == b"quit":
                return Stop(pos, "quit")
            writer.write(frame + b"\n")
        return pos

    try:
        said = await reader.read_one_chunk_at_a_time(handle)
    except IncompleteReadError as e:
        writer.write(b"left %d\n" % len(e.partial))
        return
    writer.write(b"%s\n" % (said or "eof").encode())


@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest_twisted.ensureDeferred
async def test_a_handler_parses_frames_as_they_arrive(family: str, tmp_path: Any) -> None:
    where = tt.on_file(str(tmp_path / "s")) if family == "unix" else None
    async with serving(frame_echo, where) as server:
        to = (
            tt.to_file(str(tmp_path / "s"))
            if family == "unix"
            else tt.to_host_and_port(LOCAL, server.listening_on)
        )
        sock, reader, writer = await within(tt.connect(to))
        try:
            stream = framed([b"one", b"x" * 60000, b"two", b"quit", b"after"])
            for i in range(0, len(stream), 9000):  # frames cut across writes
                writer.write(stream[i : i + 9000])
            assert await within(reader.read_line()) == b"one"
            assert await within(reader.really_read(60001)) == b"x" * 60000 + b"\n"
            assert await within(reader.read_line()) == b"two"
            assert await within(reader.read_line()) == b"quit"
            assert await within(reader.read_line()) is None  # the handler ended: the server closed
        finally:
            await within(sock.close())


@pytest_twisted.ensureDeferred
async def test_a_peer_leaving_mid_frame_is_an_incomplete_read() -> None:
    async with serving(frame_echo) as server:
        s = raw_client(server.listening_on)
        try:
            s.sendall(framed([b"ok"]) + b"\x00\x10abc")
            s.shutdown(1)
            assert await read_to_end(s) == b"ok\nleft 5\n"
        finally:
            s.close()
        s = raw_client(server.listening_on)
        try:
            s.sendall(framed([b"ok"]))
            s.shutdown(1)
            assert await read_to_end(s) == b"ok\neof\n"
        finally:
            s.close()


@pytest_twisted.ensureDeferred
async def test_a_close_in_the_handler_that_ends_the_stream_at_once() -> None:
    # After write_eof, Twisted reports a close as lost at once, from inside
    # the handler: the end of the stream waits for the handler to return.
    async def sends(address: Any, reader: tt.Reader, writer: tt.Writer) -> None:
        await reader.contents()
        writer.write(b"abc")
        await sleep(0.2)

    async with serving(sends) as server:
        to = tt.to_host_and_port(LOCAL, server.listening_on)
        sock, reader, writer = await within(tt.connect(to))
        try:
            await within(writer.write_eof())
            calls: list[bytes] = []

            def closes(data: bytes) -> int:
                calls.append(data)
                writer.close()
                return len(data)

            with logged_errors() as errors:
                assert await within(reader.read_one_chunk_at_a_time(closes)) is None
            assert calls == [b"abc"] and reader.at_eof
            assert not errors, errors
        finally:
            await within(sock.close())
