"""
The record buffer alone: bytes fed in, records asked for, no I/O and no
Deferreds.  Checked against the obvious model over one bytes value, for any
way the stream is cut into chunks.
"""

from __future__ import annotations

import gc
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from twisted_tcp import IncompleteReadError, LineTooLongError, _buffer
from twisted_tcp._buffer import NEED, RecordBuffer

from .conftest import PENDING
from .helpers.record_model import RecordModel, requests

REQUESTS = {
    "read": "take_some",
    "read_line": "take_line",
    "really_read": "take_exactly",
    "read_until": "take_until",
    "contents": "take_all",
}


def ask(buffer: RecordBuffer, op: str, arg: Any) -> Any:
    """One request, its outcome in the model's terms."""
    try:
        result = getattr(buffer, REQUESTS[op])(arg)
    except IncompleteReadError as e:
        return ("incomplete", e.partial)
    except LineTooLongError:
        return ("error", LineTooLongError)
    return PENDING if result is NEED else ("ok", result)


def lines_of(buffer: RecordBuffer) -> list[bytes]:
    lines = []
    while (line := buffer.take_line()) is not NEED and line is not None:
        lines.append(line)
    return lines


# -- examples -------------------------------------------------------------------------


def test_lines_across_chunks_and_crlf() -> None:
    buffer = RecordBuffer()
    for chunk in [b"one\r", b"\ntw", b"o\nthr", b"ee"]:
        buffer.feed(chunk)
    assert lines_of(buffer) == [b"one", b"two"]
    assert buffer.size == 5 and not buffer.eof
    buffer.feed_eof()
    assert buffer.take_line() == b"three"
    assert buffer.take_line() is None
    assert buffer.size == 0


def test_a_delimiter_that_straddles_chunks() -> None:
    buffer = RecordBuffer()
    buffer.feed(b"ab|")
    assert buffer.take_until((b"||", False)) is NEED
    buffer.feed(b"|cd||")
    assert buffer.take_until((b"||", False)) == b"ab"
    assert buffer.take_until((b"||", True)) == b"cd||"
    assert buffer.size == 0


def test_a_request_after_need_for_another_delimiter_searches_afresh() -> None:
    # The memo of what was searched belongs to one delimiter.
    buffer = RecordBuffer()
    buffer.feed(b"a|b")
    buffer.feed(b"c")
    assert buffer.take_line() is NEED
    assert buffer.take_until((b"|", False)) == b"a"
    buffer.feed(b"\n")
    assert buffer.take_until((b"\n", False)) == b"bc"


def test_take_exactly_and_all() -> None:
    buffer = RecordBuffer()
    buffer.feed(b"abc")
    assert buffer.take_exactly(4) is NEED
    assert buffer.take_exactly(0) == b""
    assert buffer.take_all() is NEED
    buffer.feed(b"de")
    assert buffer.take_exactly(4) == b"abcd"
    buffer.feed_eof()
    with pytest.raises(IncompleteReadError) as info:
        buffer.take_exactly(2)
    assert info.value.partial == b"e"
    assert buffer.take_all() == b""
    assert buffer.take_some(10) == b""


def test_an_overlong_line_is_dropped_as_it_arrives() -> None:
    buffer = RecordBuffer(max_line_length=8)
    buffer.feed(b"x" * 20)
    with pytest.raises(LineTooLongError):
        buffer.take_line()
    for _ in range(1000):  # a line of megabytes costs no memory
        buffer.feed(b"x" * 1000)
        assert buffer.size == 0
    buffer.feed(b"xx\nnext\n")
    assert lines_of(buffer) == [b"next"]


@pytest.mark.parametrize("bad", [-1, 0, True, 1.5, float("nan"), None, "8"])
def test_max_line_length_is_checked(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="max_line_length"):
        RecordBuffer(max_line_length=bad)


# -- properties -----------------------------------------------------------------------

alphabet = b"ab|\r\n"
chunks_of_stream = st.lists(
    st.binary(max_size=10).map(lambda b: bytes(alphabet[x % 5] for x in b)), max_size=30
)
steps = st.one_of(
    st.tuples(
        st.just("feed"), st.binary(max_size=10).map(lambda b: bytes(alphabet[x % 5] for x in b))
    ),
    requests,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before_eof=st.lists(steps, max_size=50),
    after_eof=st.lists(requests, max_size=8),
    max_line_length=st.sampled_from([1, 3, 6, 1 << 16]),
)
@example(before_eof=[("feed", b"a\r")], after_eof=[("read_line", None)], max_line_length=100)
@example(
    before_eof=[
        ("feed", b"ab|"),
        ("read_until", (b"||", False)),
        ("feed", b"|c|"),
        ("read_until", (b"||", False)),
    ],
    after_eof=[],
    max_line_length=1,
)
def test_requests_match_the_model(
    before_eof: list[tuple[str, Any]], after_eof: list[tuple[str, Any]], max_line_length: int
) -> None:
    buffer = RecordBuffer(max_line_length)
    model = RecordModel(max_line_length)
    for op, arg in [*before_eof, ("eof", None), *after_eof]:
        if op == "feed":
            buffer.feed(arg)
            model.feed(arg)
        elif op == "eof":
            buffer.feed_eof()
            model.end()
        else:
            assert ask(buffer, op, arg) == model.attempt(op, arg), (op, arg)
        assert buffer.size == len(model.buf)
        assert buffer.eof == model.eof
        assert holds_a_list(buffer) == (buffer.size > 0), (op, arg)
    # At the end of the stream, nothing waits: everything is taken.
    assert ask(buffer, "contents", None) == ("ok", model.buf)
    assert buffer.size == 0
    assert not holds_a_list(buffer)


def holds_a_list(buffer: RecordBuffer) -> bool:
    """Whether C{buffer} holds a list (of chunks) for the garbage collector to track."""
    return any(isinstance(o, list) for o in gc.get_referents(buffer))


def test_an_emptied_buffer_holds_no_list() -> None:
    # What an idle connection's reader keeps: no list of no chunks (72 bytes,
    # one more object for the garbage collector to track per connection).
    buffer = RecordBuffer()
    assert not holds_a_list(buffer)
    buffer.feed(b"one\ntw")
    buffer.feed(b"o\nthree\n")
    assert holds_a_list(buffer)
    assert lines_of(buffer) == [b"one", b"two", b"three"]
    assert not holds_a_list(buffer)
    buffer.feed(b"abcdef")
    assert buffer.take_now(2) == b"ab" and holds_a_list(buffer)
    buffer.feed(b"gh")
    assert buffer.take_now(6) == b"cdefgh"
    assert not holds_a_list(buffer)


@settings(max_examples=300, deadline=None)
@given(chunks=chunks_of_stream, cuts=st.lists(st.integers(0, 300), max_size=10))
def test_lines_do_not_depend_on_the_chunks(chunks: list[bytes], cuts: list[int]) -> None:
    # The same stream cut two ways gives the same lines, which are what
    # bytes.split gives, whenever the lines are asked for.
    stream = b"".join(chunks)
    parts = stream.split(b"\n")
    want = [p[:-1] if p.endswith(b"\r") else p for p in parts[:-1]]
    if parts[-1]:
        want.append(parts[-1])
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    for pieces in (chunks, [stream[i:j] for i, j in itertools.pairwise(bounds)]):
        buffer = RecordBuffer()
        got: list[bytes] = []
        for piece in pieces:
            buffer.feed(piece)
            got.extend(lines_of(buffer))
        buffer.feed_eof()
        got.extend(lines_of(buffer))
        assert got == want


@settings(max_examples=200, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=40),
    limit=st.integers(1, 32),
    delimiter=st.sampled_from([b"\n", b"\r\n", b"END"]),
)
def test_memory_is_bounded_whatever_is_fed(
    chunks: list[bytes], limit: int, delimiter: bytes
) -> None:
    # A reader that keeps asking for records never holds more than a record,
    # its delimiter and the chunk that just arrived, whatever the peer sends.
    buffer = RecordBuffer(limit)
    for chunk in chunks:
        buffer.feed(chunk)
        while True:
            try:
                record = buffer.take_until((delimiter, False))
            except LineTooLongError:
                continue
            if record is NEED:
                break
        assert buffer.size <= limit + len(delimiter) - 1


def outcome(request: Any) -> Any:
    """A request's outcome: its result (NEED, None, a record) or its error's type."""
    try:
        return request()
    except (IncompleteReadError, LineTooLongError) as e:
        return type(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    before_eof=st.lists(st.one_of(steps, st.just(("read_lines", None))), max_size=50),
    max_line_length=st.sampled_from([1, 3, 6, 1 << 16]),
    batch_bytes=st.sampled_from([1, 4, _buffer.BATCH_BYTES]),
)
@example(
    before_eof=[("feed", b"ab\r\nc\nabcdefg\nd\r"), ("read_lines", None)],
    max_line_length=3,
    batch_bytes=_buffer.BATCH_BYTES,
)
def test_take_lines_takes_the_lines_that_take_line_gives_one_by_one(
    before_eof: list[tuple[str, Any]], max_line_length: int, batch_bytes: int
) -> None:
    # Two buffers fed the same: one asked for batches of lines (of at most
    # batch_bytes, here as small as a byte), the other for as many single
    # lines; every other request asked of both.
    saved, _buffer.BATCH_BYTES = _buffer.BATCH_BYTES, batch_bytes
    try:
        take_lines_as_take_line(before_eof, max_line_length)
    finally:
        _buffer.BATCH_BYTES = saved


def take_lines_as_take_line(before_eof: list[tuple[str, Any]], max_line_length: int) -> None:
    batches, singles = RecordBuffer(max_line_length), RecordBuffer(max_line_length)
    for op, arg in [*before_eof, ("eof", None), *[("read_lines", None)] * 4]:
        if op == "feed":
            batches.feed(arg)
            singles.feed(arg)
        elif op == "eof":
            batches.feed_eof()
            singles.feed_eof()
        elif op == "read_lines":
            got = outcome(batches.take_lines)
            if type(got) is list:
                assert got, "a batch holds at least one line"
                assert got == [singles.take_line() for _ in got]
            else:
                assert got == outcome(singles.take_line)
        else:
            assert ask(batches, op, arg) == ask(singles, op, arg), (op, arg)
        assert batches.size == singles.size


def test_take_lines_splits_a_chunk_at_once_up_to_a_line_too_long() -> None:
    buffer = RecordBuffer(5)
    buffer.feed(b"ab\r\ncd\nefghij\nkl\nm")
    assert buffer.take_lines() == [b"ab", b"cd"]
    with pytest.raises(LineTooLongError):
        buffer.take_lines()
    assert buffer.take_lines() == [b"kl"]
    assert buffer.take_lines() is NEED
    buffer.feed_eof()
    assert buffer.take_lines() == [b"m"]
    assert buffer.take_lines() is None


def test_a_batch_of_lines_holds_at_most_batch_bytes_but_a_whole_line() -> None:
    buffer = RecordBuffer()
    buffer.feed(b"a\n" * 10_000 + b"x" * 20_000 + b"\nb\n")
    batches = []
    while type(lines := buffer.take_lines()) is list:
        batches.append(lines)
    assert [len(b) for b in batches] == [4096, 4096, 1808, 1, 1]
    assert batches[3] == [b"x" * 20_000] and batches[4] == [b"b"]
