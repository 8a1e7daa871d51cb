"""
The Reader, driven directly: bytes go in through C{data_received} and
C{eof_received}, reads come out as Deferreds, and a fake producer records
what the reader asks of the transport.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeoutError
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from twisted_tcp import IncompleteReadError, LineTooLongError, Reader, ReadInProgressError

from .conftest import PENDING, failure_of, outcome, result_of
from .helpers.record_model import RecordModel, requests

# -- helpers -------------------------------------------------------------------


@implementer(IPushProducer)
class FakeProducer:
    """Records pause/resume and refuses redundant calls."""

    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pauseProducing(self) -> None:
        assert not self.paused, "paused twice"
        self.paused = True
        self.calls.append("pause")

    def resumeProducing(self) -> None:
        assert self.paused, "resumed while not paused"
        self.paused = False
        self.calls.append("resume")

    def stopProducing(self) -> None:
        raise AssertionError("a reader never stops its producer")


def make(
    buffer_size: int = 1 << 20, max_line_length: int = 1 << 16
) -> tuple[Reader, FakeProducer]:
    producer = FakeProducer()
    verifyObject(IPushProducer, producer)
    return Reader(producer, buffer_size, max_line_length), producer


def feed(reader: Reader, *chunks: bytes) -> None:
    for chunk in chunks:
        reader.data_received(chunk)


class Watched:
    """A Deferred whose result is captured as it arrives."""

    def __init__(self, d: Deferred[Any]) -> None:
        self.box: list[Any] = []
        d.addBoth(self.box.append)
        self.d = d

    @property
    def fired(self) -> bool:
        return bool(self.box)

    @property
    def value(self) -> Any:
        assert self.box, "not fired"
        result = self.box[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def failure(self, kind: type[BaseException]) -> BaseException:
        assert self.box, "not fired"
        result = self.box[0]
        assert isinstance(result, Failure) and result.check(kind), result
        return result.value


# -- construction ----------------------------------------------------------------


def test_bad_sizes() -> None:
    with pytest.raises(ValueError, match="reader_buffer_size"):
        Reader(None, 0)
    for bad in (-1, 0):
        with pytest.raises(ValueError, match="max_line_length must be at least 1"):
            Reader(None, 10, bad)
    for bad in (float("nan"), 2.5, True, "8", None):
        with pytest.raises(TypeError, match="reader_buffer_size must be an int"):
            Reader(None, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="max_line_length must be an int"):
            Reader(None, 10, bad)  # type: ignore[arg-type]


def test_no_producer_is_fine() -> None:
    reader = Reader(None, 4)
    feed(reader, b"0123456789")
    assert result_of(reader.read(3)) == b"012"
    assert reader.bytes_buffered == 7


# -- read --------------------------------------------------------------------------


def test_a_read_ready_at_once_is_a_fired_deferred_for_every_use() -> None:
    """
    A read whose result is buffered returns a Deferred that has fired, as
    succeed() makes: callbacks run at once, chaining works, and both the
    lean driver and Twisted's await it.
    """
    from twisted_tcp._driver import run

    reader = Reader(None)
    reader.data_received(b"one\ntwo\nthree\nfour\n")
    d = reader.read_line()
    assert isinstance(d, Deferred) and d.called
    seen: list[Any] = []
    d.addCallback(seen.append)
    assert seen == [b"one"]
    assert result_of(reader.read_line().addCallback(bytes.upper)) == b"TWO"

    async def two_more() -> list[Any]:
        return [await reader.read_line(), await reader.read_line()]

    assert result_of(ensureDeferred(two_more())) == [b"three", b"four"]
    reader.data_received(b"five\nsix\n")
    out: list[Any] = []
    run(two_more, (), out.append)
    assert out == [[b"five", b"six"]]


def test_read_returns_what_is_there_up_to_max_bytes() -> None:
    reader, _ = make()
    feed(reader, b"hello", b" world")
    assert reader.bytes_buffered == 11
    assert result_of(reader.read(3)) == b"hel"
    assert result_of(reader.read(100)) == b"lo world"  # across chunks
    assert reader.bytes_buffered == 0


def test_read_waits_for_data() -> None:
    reader, _ = make()
    w = Watched(reader.read(10))
    assert not w.fired
    feed(reader, b"abc")
    assert w.value == b"abc"


def test_read_bigger_than_max_bytes_chunk() -> None:
    reader, _ = make()
    w = Watched(reader.read(4))
    feed(reader, b"abcdefgh")
    assert w.value == b"abcd"
    assert result_of(reader.read(4)) == b"efgh"


def test_read_at_eof() -> None:
    reader, _ = make()
    feed(reader, b"tail")
    reader.eof_received()
    assert not reader.at_eof
    assert result_of(reader.read(2)) == b"ta"
    assert result_of(reader.read()) == b"il"
    assert reader.at_eof
    assert result_of(reader.read()) == b""
    assert result_of(reader.read()) == b""


def test_pending_read_gets_eof() -> None:
    reader, _ = make()
    w = Watched(reader.read())
    reader.eof_received()
    assert w.value == b""
    reader.eof_received()  # idempotent
    assert result_of(reader.read()) == b""


def test_read_rejects_bad_max_bytes() -> None:
    reader, _ = make()
    with pytest.raises(ValueError, match="max_bytes"):
        reader.read(0)
    feed(reader, b"x")
    assert result_of(reader.read(1)) == b"x"


# -- read_line -----------------------------------------------------------------------


def test_read_line_strips_newline_and_crlf() -> None:
    reader, _ = make()
    feed(reader, b"one\ntwo\r\n\nthree\r\r\nfour\rfive\n")
    assert result_of(reader.read_line()) == b"one"
    assert result_of(reader.read_line()) == b"two"
    assert result_of(reader.read_line()) == b""
    assert result_of(reader.read_line()) == b"three\r"  # only one \r goes
    assert result_of(reader.read_line()) == b"four\rfive"  # a lone \r stays
    assert reader.bytes_buffered == 0


def test_read_line_over_chunks() -> None:
    reader, _ = make()
    w = Watched(reader.read_line())
    feed(reader, b"ab", b"c", b"d\r")
    assert not w.fired
    feed(reader, b"\nrest")
    assert w.value == b"abcd"
    assert reader.bytes_buffered == 4


def test_read_line_final_unterminated_line_then_none() -> None:
    reader, _ = make()
    feed(reader, b"first\nlast\r")
    w = Watched(reader.read_line())
    assert w.value == b"first"
    w = Watched(reader.read_line())
    assert not w.fired
    reader.eof_received()
    assert w.value == b"last\r"  # an unterminated line comes back as it is
    assert result_of(reader.read_line()) is None
    assert result_of(reader.read_line()) is None


def test_read_line_none_at_eof() -> None:
    reader, _ = make()
    w = Watched(reader.read_line())
    reader.eof_received()
    assert w.value is None


def test_lines_iterates_until_eof() -> None:
    reader, _ = make()

    async def collect() -> list[bytes]:
        return [line async for line in reader.lines()]

    d = Watched(ensureDeferred(collect()))
    feed(reader, b"a\nb\r\n")
    feed(reader, b"\nc")
    assert not d.fired
    reader.eof_received()
    assert d.value == [b"a", b"b", b"", b"c"]


def test_lines_on_empty_stream() -> None:
    reader, _ = make()
    reader.eof_received()

    async def collect() -> list[bytes]:
        return [line async for line in reader.lines()]

    assert result_of(ensureDeferred(collect())) == []


@pytest.mark.parametrize("driver", ["lean", "twisted"])
def test_line_batches_give_the_lines_there_at_once_until_eof(driver: str) -> None:
    from twisted_tcp._driver import run

    reader, _ = make()
    batches: list[list[bytes]] = []

    async def collect() -> list[list[bytes]]:
        async for batch in reader.line_batches():
            batches.append(batch)
        return batches

    out: list[Any] = []
    if driver == "lean":
        run(collect, (), out.append)
    else:
        ensureDeferred(collect()).addBoth(out.append)
    feed(reader, b"a\nb\r\n\nc")  # the three whole lines, at once
    assert batches == [[b"a", b"b", b""]]
    feed(reader, b"d\ne\nf")  # one across the chunks, then the rest of its chunk
    assert batches[1:] == [[b"cd", b"e"]]
    assert not out
    reader.eof_received()
    assert out == [[[b"a", b"b", b""], [b"cd", b"e"], [b"f"]]]


def test_read_lines_reads_every_whole_line_buffered_and_none_at_eof() -> None:
    reader, _ = make()
    waiting = Watched(reader.read_lines())
    assert not waiting.fired
    feed(reader, b"one\ntwo\nthr")
    assert waiting.value == [b"one", b"two"]
    feed(reader, b"ee\n")
    assert result_of(reader.read_lines()) == [b"three"]
    reader.eof_received()
    assert result_of(reader.read_lines()) is None


def test_line_batches_end_before_an_overlong_line_which_fails_the_next() -> None:
    reader, _ = make(max_line_length=2)
    feed(reader, b"ab\nc\nabc\ncd\n")
    got: list[list[bytes]] = []

    async def collect() -> None:
        async for batch in reader.line_batches():
            got.append(batch)

    failure_of(ensureDeferred(collect()), LineTooLongError)
    assert got == [[b"ab", b"c"]]
    assert result_of(reader.read_lines()) == [b"cd"]


def test_a_batch_taken_resumes_a_paused_transport() -> None:
    reader, producer = make(buffer_size=10)
    feed(reader, b"0123\n" * 3)
    assert producer.paused

    async def first() -> list[bytes]:
        async for batch in reader.line_batches():
            return batch
        return []

    assert result_of(ensureDeferred(first())) == [b"0123"] * 3
    assert not producer.paused


# -- read_until ----------------------------------------------------------------------


@pytest.mark.parametrize("keep", [False, True])
def test_read_until(keep: bool) -> None:
    reader, _ = make()
    feed(reader, b"a,b,,c")
    suffix = b"," if keep else b""
    assert result_of(reader.read_until(b",", keep_delimiter=keep)) == b"a" + suffix
    assert result_of(reader.read_until(b",", keep)) == b"b" + suffix
    assert result_of(reader.read_until(b",", keep)) == suffix
    w = Watched(reader.read_until(b",", keep))
    assert not w.fired
    feed(reader, b"d,")
    assert w.value == b"cd" + suffix


@pytest.mark.parametrize("keep", [False, True])
def test_read_until_multibyte_delimiter_across_chunks(keep: bool) -> None:
    reader, _ = make()
    w = Watched(reader.read_until(b"\r\n\r\n", keep))
    for chunk in [b"GET / HTTP/1.1\r", b"\nHost: x\r\n", b"\r", b"\nbody"]:
        assert not w.fired
        feed(reader, chunk)
    expected = b"GET / HTTP/1.1\r\nHost: x"
    assert w.value == (expected + b"\r\n\r\n" if keep else expected)
    assert result_of(reader.read(100)) == b"body"


def test_read_until_delimiter_split_one_byte_at_a_time() -> None:
    reader, _ = make()
    w = Watched(reader.read_until(b"END"))
    for byte in b"xxENxENDyy":
        feed(reader, bytes([byte]))
    assert w.value == b"xxENx"
    assert reader.bytes_buffered == 2


def test_read_until_overlapping_delimiter() -> None:
    reader, _ = make()
    feed(reader, b"aaab")
    assert result_of(reader.read_until(b"aab", keep_delimiter=True)) == b"aaab"


def test_read_until_at_eof() -> None:
    reader, _ = make()
    feed(reader, b"rec|partial")
    reader.eof_received()
    assert result_of(reader.read_until(b"|")) == b"rec"
    err = failure_of(reader.read_until(b"|"), IncompleteReadError)
    assert isinstance(err, EOFError)
    assert err.partial == b"partial"  # type: ignore[attr-defined]
    assert err.expected == b"|"  # type: ignore[attr-defined]
    assert "7 bytes" in str(err)
    assert result_of(reader.read_until(b"|")) is None


def test_pending_read_until_fails_at_eof_with_partial() -> None:
    reader, _ = make()
    w = Watched(reader.read_until(b"::"))
    feed(reader, b"abc:")
    reader.eof_received()
    assert w.failure(IncompleteReadError).partial == b"abc:"  # type: ignore[attr-defined]


def test_read_until_rejects_bad_delimiter() -> None:
    reader, _ = make()
    with pytest.raises(ValueError, match="delimiter must not be empty"):
        reader.read_until(b"")
    for bad in ["x", None, bytearray(b"x")]:
        with pytest.raises(TypeError, match="delimiter must be bytes"):
            reader.read_until(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keep_delimiter must be a bool"):
        reader.read_until(b"x", None)  # type: ignore[arg-type]


# -- really_read ---------------------------------------------------------------------


def test_really_read() -> None:
    reader, _ = make()
    feed(reader, b"abc")
    w = Watched(reader.really_read(5))
    assert not w.fired
    feed(reader, b"d")
    assert not w.fired
    feed(reader, b"efg")
    assert w.value == b"abcde"
    assert result_of(reader.really_read(2)) == b"fg"
    assert result_of(reader.really_read(0)) == b""


def test_really_read_at_eof() -> None:
    reader, _ = make()
    w = Watched(reader.really_read(10))
    feed(reader, b"1234")
    reader.eof_received()
    err = w.failure(IncompleteReadError)
    assert err.partial == b"1234"  # type: ignore[attr-defined]
    assert err.expected == 10  # type: ignore[attr-defined]
    assert "4 bytes" in str(err) and "10 bytes" in str(err)
    # The partial bytes were consumed: nothing is left.
    assert failure_of(reader.really_read(1), IncompleteReadError).partial == b""  # type: ignore[attr-defined]
    assert result_of(reader.really_read(0)) == b""


def test_really_read_rejects_negative() -> None:
    reader, _ = make()
    with pytest.raises(ValueError):
        reader.really_read(-1)


# -- contents ------------------------------------------------------------------------


def test_contents() -> None:
    reader, _ = make(buffer_size=4)
    feed(reader, b"ab")
    assert result_of(reader.read(1)) == b"a"
    w = Watched(reader.contents())
    feed(reader, b"cdefghij", b"klm")
    assert not w.fired
    reader.eof_received()
    assert w.value == b"bcdefghijklm"
    assert result_of(reader.contents()) == b""
    assert result_of(reader.read()) == b""


# -- max_line_length -----------------------------------------------------------------


def test_line_at_the_limit_is_fine() -> None:
    reader, _ = make(max_line_length=5)
    feed(reader, b"12345\n12345\r\n")
    assert result_of(reader.read_line()) == b"12345"
    assert result_of(reader.read_line()) == b"12345"


@pytest.mark.parametrize("data", [b"123456\nnext\n", b"123456\r\nnext\n", b"1234567890\nnext\n"])
def test_overlong_line_fails_and_is_discarded(data: bytes) -> None:
    reader, _ = make(max_line_length=5)
    feed(reader, data)
    err = failure_of(reader.read_line(), LineTooLongError)
    assert isinstance(err, ValueError)
    assert err.max_line_length == 5  # type: ignore[attr-defined]
    assert "max_line_length=5" in str(err)
    assert result_of(reader.read_line()) == b"next"
    assert reader.bytes_buffered == 0


def test_overlong_line_over_several_chunks() -> None:
    reader, _ = make(max_line_length=5)
    w = Watched(reader.read_line())
    feed(reader, b"123")
    assert not w.fired
    feed(reader, b"4567")
    w.failure(LineTooLongError)
    # The rest of the overlong line is dropped as it arrives...
    feed(reader, b"89", b"0123456789" * 100, b"abc")
    assert reader.bytes_buffered == 0
    # ...up to and including its newline; what follows is kept.
    feed(reader, b"de\r\nok\r", b"\nmore")
    assert result_of(reader.read_line()) == b"ok"
    assert result_of(reader.read(100)) == b"more"


def test_overlong_line_buffered_before_the_read() -> None:
    reader, _ = make(max_line_length=3)
    feed(reader, b"abcdefg")  # no read pending yet
    failure_of(reader.read_line(), LineTooLongError)
    feed(reader, b"hij\nxy\n")
    assert result_of(reader.read_line()) == b"xy"


def test_overlong_final_line_at_eof() -> None:
    reader, _ = make(max_line_length=3)
    feed(reader, b"ok\nabcd")
    reader.eof_received()
    assert result_of(reader.read_line()) == b"ok"
    failure_of(reader.read_line(), LineTooLongError)
    assert result_of(reader.read_line()) is None


def test_overlong_record_for_read_until_is_discarded() -> None:
    reader, _ = make(max_line_length=4)
    w = Watched(reader.read_until(b"<>"))
    feed(reader, b"abc", b"defg<")
    w.failure(LineTooLongError)
    # The delimiter straddles the chunk that triggered the error and the next.
    feed(reader, b">shrt<>")
    assert result_of(reader.read_until(b"<>")) == b"shrt"


def test_record_at_the_limit_for_read_until() -> None:
    reader, _ = make(max_line_length=4)
    w = Watched(reader.read_until(b"<>", keep_delimiter=True))
    feed(reader, b"abcd<")
    assert not w.fired
    feed(reader, b">")
    assert w.value == b"abcd<>"


def test_lines_stop_on_overlong_line() -> None:
    reader, _ = make(max_line_length=2)
    feed(reader, b"ab\nabc\ncd\n")

    async def collect(into: list[bytes]) -> None:
        async for line in reader.lines():
            into.append(line)

    got: list[bytes] = []
    failure_of(ensureDeferred(collect(got)), LineTooLongError)
    assert got == [b"ab"]
    assert result_of(reader.read_line()) == b"cd"


# -- cancellation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (lambda r: r.read_line(), b"abcdef"),
        (lambda r: r.read_until(b"\n"), b"abcdef"),
        (lambda r: r.read_until(b"ef\n", keep_delimiter=True), b"abcdef\n"),
        (lambda r: r.really_read(7), b"abcdef\n"),
        (lambda r: r.contents(), b"abcdef\n"),
    ],
)
def test_cancel_loses_no_byte(start: Any, expected: bytes) -> None:
    reader, _ = make()
    feed(reader, b"ab")
    d = start(reader)
    feed(reader, b"c", b"d")
    d.cancel()
    failure_of(d, CancelledError)
    feed(reader, b"ef\n")
    reader.eof_received()
    d2 = start(reader)
    assert result_of(d2) == expected


def test_cancel_pending_read_with_nothing_buffered() -> None:
    reader, _ = make()
    d = reader.read()
    d.cancel()
    failure_of(d, CancelledError)
    feed(reader, b"xyz")
    assert result_of(reader.read()) == b"xyz"


def test_cancel_after_fired_is_harmless() -> None:
    reader, _ = make()
    feed(reader, b"a\nb\n")
    d = reader.read_line()
    assert result_of(d) == b"a"
    d.cancel()
    assert result_of(reader.read_line()) == b"b"


def test_timeout_on_a_read_with_clock() -> None:
    reader, _ = make()
    clock = Clock()
    feed(reader, b"partial ")
    d = reader.read_line().addTimeout(5, clock)
    clock.advance(4)
    feed(reader, b"line")
    assert outcome(d) is PENDING
    clock.advance(1)
    failure_of(d, DeferredTimeoutError)
    assert not clock.getDelayedCalls()
    feed(reader, b" end\n")
    d2 = reader.read_line().addTimeout(5, clock)
    assert result_of(d2) == b"partial line end"
    assert not clock.getDelayedCalls()


def test_read_until_timeout_keeps_joined_bytes() -> None:
    # A multi-byte delimiter makes the reader join chunks: none may get lost.
    reader, _ = make()
    clock = Clock()
    d = reader.read_until(b"--").addTimeout(1, clock)
    feed(reader, b"a-", b"b-", b"c")
    clock.advance(1)
    failure_of(d, DeferredTimeoutError)
    assert reader.bytes_buffered == 5
    assert result_of(reader.really_read(5)) == b"a-b-c"


# -- one read at a time ----------------------------------------------------------------


@pytest.mark.parametrize(
    "second",
    [
        lambda r: r.read(),
        lambda r: r.read_line(),
        lambda r: r.read_until(b"x"),
        lambda r: r.really_read(1),
        lambda r: r.contents(),
    ],
)
def test_second_concurrent_read_fails_at_once(second: Any) -> None:
    reader, _ = make()
    first = Watched(reader.read_line())
    err = failure_of(second(reader), ReadInProgressError)
    assert "one read at a time" in str(err)
    assert not first.fired
    feed(reader, b"line\n")
    assert first.value == b"line"
    feed(reader, b"next\n")
    assert result_of(reader.read_line()) == b"next"  # no longer refused


def test_read_after_concurrent_failure_works() -> None:
    reader, _ = make()
    first = Watched(reader.really_read(3))
    failure_of(reader.read(), ReadInProgressError)
    feed(reader, b"abcd")
    assert first.value == b"abc"
    assert result_of(reader.read()) == b"d"


# -- back-pressure ---------------------------------------------------------------------


def test_pauses_above_buffer_size_and_resumes_as_user_reads() -> None:
    reader, producer = make(buffer_size=10)
    feed(reader, b"0123456789")
    assert not producer.paused  # exactly buffer_size: still reading
    feed(reader, b"a")
    assert producer.paused
    feed(reader, b"bcdef")  # a transport may deliver one more chunk
    assert producer.paused
    assert result_of(reader.read(3)) == b"012"
    assert producer.paused  # 13 bytes left
    assert result_of(reader.read(3)) == b"345"
    assert not producer.paused  # 10 left
    assert producer.calls == ["pause", "resume"]


@pytest.mark.parametrize(
    ("read", "expected"),
    [(lambda r: r.really_read(11), b"0123456789\n"), (lambda r: r.read_line(), b"0123456789")],
    ids=["really_read", "read_line"],
)
def test_a_read_ready_at_once_resumes_a_paused_transport(read: Any, expected: bytes) -> None:
    reader, producer = make(buffer_size=10)
    feed(reader, b"0123456789\n" + b"x" * 5)
    assert producer.paused
    assert result_of(read(reader)) == expected
    assert not producer.paused  # 5 left
    assert producer.calls == ["pause", "resume"]


def test_pending_read_is_never_left_paused() -> None:
    reader, producer = make(buffer_size=10)
    feed(reader, b"x" * 20)
    assert producer.paused
    w = Watched(reader.really_read(50))  # needs more than is buffered
    assert not producer.paused
    for _ in range(2):
        feed(reader, b"y" * 10)  # above buffer_size, but the read needs them
        assert not producer.paused
    assert not w.fired
    feed(reader, b"z" * 15)
    assert w.value == b"x" * 20 + b"y" * 20 + b"z" * 10
    assert reader.bytes_buffered == 5
    assert not producer.paused


def test_pending_contents_keeps_reading() -> None:
    reader, producer = make(buffer_size=4)
    w = Watched(reader.contents())
    for _ in range(10):
        feed(reader, b"12345678")
        assert not producer.paused
    reader.eof_received()
    assert w.value == b"12345678" * 10


def test_pending_line_keeps_reading_up_to_the_line_limit() -> None:
    reader, producer = make(buffer_size=4, max_line_length=100)
    w = Watched(reader.read_line())
    feed(reader, b"abcdefgh", b"ijklmnop")
    assert not producer.paused
    feed(reader, b"\nqrstuvwxyz")
    assert w.value == b"abcdefghijklmnop"
    assert producer.paused  # 10 unread bytes, no read pending
    w = Watched(reader.read_line())
    assert not w.fired
    assert not producer.paused  # the pending read_line needs more bytes


def test_served_read_that_leaves_too_much_pauses() -> None:
    reader, producer = make(buffer_size=10)
    w = Watched(reader.read(5))
    feed(reader, b"x" * 30)
    assert w.value == b"x" * 5
    assert producer.paused


def test_cancelled_read_with_too_much_buffered_pauses() -> None:
    reader, producer = make(buffer_size=10)
    d = reader.really_read(100)
    feed(reader, b"x" * 50)
    assert not producer.paused
    d.cancel()
    failure_of(d, CancelledError)
    assert producer.paused
    assert result_of(reader.read(45)) == b"x" * 45
    assert not producer.paused


def test_failed_read_updates_flow() -> None:
    reader, producer = make(buffer_size=4, max_line_length=6)
    feed(reader, b"123456789")
    assert producer.paused
    failure_of(reader.read_line(), LineTooLongError)  # drops the 9 bytes
    assert not producer.paused


def test_no_flow_calls_after_eof() -> None:
    reader, producer = make(buffer_size=4)
    feed(reader, b"123456789")
    assert producer.calls == ["pause"]
    reader.eof_received()
    assert result_of(reader.read(100)) == b"123456789"
    assert producer.calls == ["pause"]  # the transport is gone: nothing to resume


# -- hypothesis: read_line against bytes.split ----------------------------------------


def reference_lines(data: bytes) -> list[bytes]:
    parts = data.split(b"\n")
    lines = [p[:-1] if p.endswith(b"\r") else p for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


chunked_data = st.lists(
    st.binary(min_size=0, max_size=12).map(lambda b: bytes(b"ab\r\n"[x % 4] for x in b)),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(chunks=chunked_data, buffer_size=st.integers(1, 16))
def test_read_line_matches_split(chunks: list[bytes], buffer_size: int) -> None:
    reader, _producer = make(buffer_size=buffer_size)
    got: list[bytes] = []
    done = False

    def next_line() -> Watched:
        return Watched(reader.read_line())

    w = next_line()
    for chunk in [*chunks, None]:
        # Take every line that is ready before feeding more.
        while w.fired:
            line = w.value
            if line is None:
                done = True
                break
            got.append(line)
            w = next_line()
        if chunk is None:
            reader.eof_received()
        else:
            reader.data_received(chunk)
    while not done:
        assert w.fired
        line = w.value
        if line is None:
            break
        got.append(line)
        w = next_line()
    assert got == reference_lines(b"".join(chunks))
    assert reader.at_eof


# -- hypothesis: random operations against a plain bytes buffer -----------------------


class Model(RecordModel):
    """What a Reader should do: the record model, plus one pending read."""

    def __init__(self, max_line_length: int) -> None:
        super().__init__(max_line_length)
        self.pending: tuple[str, Any] | None = None

    def feed(self, data: bytes) -> list[Any]:  # type: ignore[override]
        super().feed(data)
        return self.serve()

    def end(self) -> list[Any]:  # type: ignore[override]
        if self.eof:
            return []
        super().end()
        return self.serve()

    def serve(self) -> list[Any]:
        if self.pending is None:
            return []
        result = self.attempt(*self.pending)
        if result is PENDING:
            return []
        self.pending = None
        return [result]

    def start(self, op: str, arg: Any) -> Any:
        if self.pending is not None:
            return ("error", ReadInProgressError)
        result = self.attempt(op, arg)
        if result is PENDING:
            self.pending = (op, arg)
        return result

    def cancel(self) -> Any:
        if self.pending is None:
            return None
        self.pending = None
        return ("error", CancelledError)


def describe(result: Any) -> Any:
    """A Reader result in the Model's terms."""
    if isinstance(result, Failure):
        if result.check(IncompleteReadError):
            return ("incomplete", result.value.partial)
        for kind in (ReadInProgressError, CancelledError, LineTooLongError):
            if result.check(kind):
                return ("error", kind)
        result.raiseException()
    return ("ok", result)


reads = st.one_of(requests, st.tuples(st.just("cancel"), st.none()))
operations = st.one_of(
    st.tuples(
        st.just("feed"), st.binary(max_size=10).map(lambda b: bytes(b"ab|\r\n"[x % 5] for x in b))
    ),
    reads,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(operations, max_size=40),
    after_eof=st.lists(reads, max_size=6),
    buffer_size=st.integers(1, 12),
    max_line_length=st.sampled_from([1, 3, 6, 1 << 16]),
)
@example(
    ops=[("feed", b"a\r")], after_eof=[("read_line", None)], buffer_size=4, max_line_length=100
)
@example(
    ops=[
        ("read_until", (b"||", True)),
        ("feed", b"ab|"),
        ("feed", b"|c|"),
        ("read_until", (b"||", False)),
    ],
    after_eof=[],
    buffer_size=1,
    max_line_length=1,
)
def test_operations_match_model(
    ops: list[tuple[str, Any]],
    after_eof: list[tuple[str, Any]],
    buffer_size: int,
    max_line_length: int,
) -> None:
    reader, producer = make(buffer_size=buffer_size, max_line_length=max_line_length)
    model = Model(max_line_length)
    completed: list[Any] = []  # results as the Reader delivers them
    expected: list[Any] = []  # results as the Model predicts them
    pending: Deferred[Any] | None = None

    def watch(d: Deferred[Any]) -> Deferred[Any]:
        def record(result: Any) -> None:
            completed.append(describe(result))

        d.addBoth(record)
        return d

    def check_state() -> None:
        assert reader.bytes_buffered == len(model.buf)
        if not model.eof:
            want_paused = len(model.buf) > buffer_size and model.pending is None
            assert producer.paused == want_paused

    for op, arg in [*ops, ("eof", None), *after_eof, ("drain", None)]:
        if op == "feed":
            reader.data_received(arg)
            expected.extend(model.feed(arg))
        elif op == "eof":
            reader.eof_received()
            expected.extend(model.end())
        elif op == "drain":
            # After EOF every pending or new read completes at once.
            assert model.pending is None
            while True:
                watch(reader.read(5))
                expected.append(model.start("read", 5))
                if expected[-1] == ("ok", b""):
                    break
        elif op == "cancel":
            if pending is not None:
                pending.cancel()
            want = model.cancel()
            if want is not None:
                expected.append(want)
        else:
            d = getattr(reader, op)
            if op == "read_until":
                d = watch(reader.read_until(*arg))
            elif arg is None:
                d = watch(d())
            else:
                d = watch(d(arg))
            was_pending = model.pending is not None
            want = model.start(op, arg)
            if want is not PENDING:
                expected.append(want)
            if not was_pending:
                pending = d if want is PENDING else None
        check_state()
        assert completed == expected
    assert reader.at_eof
