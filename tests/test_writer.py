"""
The Writer over a StringTransport, with a Clock for its timers.

A real transport calls the writer's C{resumeProducing} each time its buffer
has drained into the kernel (the writer is registered as a non-streaming
producer); here the test does it, with L{FakeTransport.drain}.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPullProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from twisted_tcp import BufferAgeLimitError, Writer, WriterClosedError
from twisted_tcp._sweeper import GRACE

from .conftest import PENDING, failure_of, outcome, result_of


class FakeTransport(StringTransport):
    """A StringTransport that can half-close and that counts what was asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.lose_calls = 0
        self.abort_calls = 0
        self.write_eof_calls = 0

    def loseConnection(self) -> None:
        self.lose_calls += 1
        super().loseConnection()

    def abortConnection(self) -> None:
        self.abort_calls += 1
        self.disconnecting = self.disconnected = True

    def loseWriteConnection(self) -> None:
        self.write_eof_calls += 1

    def drain(self) -> None:
        """The buffer went to the kernel: tell the registered producer."""
        if self.producer is not None:
            self.producer.resumeProducing()


def make(
    buffer_age_limit: float | None = None, close_timeout: float | None = 30.0
) -> tuple[Writer, FakeTransport, Clock]:
    transport = FakeTransport()
    clock = Clock()
    writer = Writer(transport, clock, buffer_age_limit, close_timeout, peer="198.51.100.7:99")
    writer.start()
    assert transport.producer is writer and transport.streaming is False
    return writer, transport, clock


def pending(d: Deferred[Any]) -> bool:
    return outcome(d) is PENDING


# -- writing and flushing ----------------------------------------------------------


def test_is_a_pull_producer() -> None:
    writer, _, _ = make()
    verifyObject(IPullProducer, writer)


def test_flushed_with_nothing_written_fires_at_once() -> None:
    writer, _, _ = make()
    assert result_of(writer.flushed()) is None
    assert writer.bytes_to_write == 0


def test_flushed_fires_only_when_the_transport_drains() -> None:
    writer, transport, _ = make()
    writer.write(b"hello ")
    writer.write(b"world")
    assert transport.value() == b"hello world"
    assert writer.bytes_to_write == 11
    d1 = writer.flushed()
    d2 = writer.flushed()
    assert pending(d1) and pending(d2)
    transport.drain()
    assert result_of(d1) is None and result_of(d2) is None
    assert writer.bytes_to_write == 0
    assert result_of(writer.flushed()) is None


def test_flushed_covers_only_what_was_written_before_the_drain() -> None:
    writer, transport, _ = make()
    writer.write(b"a")
    transport.drain()
    writer.write(b"bc")
    assert writer.bytes_to_write == 2
    d = writer.flushed()
    assert pending(d)
    transport.drain()
    assert result_of(d) is None
    assert writer.bytes_to_write == 0


def test_cancelled_flushed_is_forgotten() -> None:
    writer, transport, _ = make()
    writer.write(b"x")
    d = writer.flushed()
    d.cancel()
    assert pending(d) is False
    other = writer.flushed()
    transport.drain()
    assert result_of(other) is None


def test_empty_write_is_not_dirty() -> None:
    writer, _, clock = make(buffer_age_limit=1.0)
    writer.write(b"")
    assert writer.bytes_to_write == 0
    assert result_of(writer.flushed()) is None
    assert not clock.getDelayedCalls()


def test_write_line_and_write_sequence() -> None:
    writer, transport, _ = make()
    writer.write_line(b"one")
    writer.write_line(b"x" * 20000)
    writer.write_sequence([b"a", b"", b"bc"])
    assert transport.value() == b"one\n" + b"x" * 20000 + b"\nabc"
    assert writer.bytes_to_write == 4 + 20001 + 3
    d = writer.flushed()
    transport.drain()
    assert result_of(d) is None


def test_write_sequence_of_empty_chunks_is_not_dirty() -> None:
    writer, _, _ = make()
    writer.write_sequence([b"", b""])
    assert writer.bytes_to_write == 0
    assert result_of(writer.flushed()) is None


def test_write_rejects_str() -> None:
    writer, transport, _ = make()
    with pytest.raises(TypeError):
        writer.write("text")  # type: ignore[arg-type]
    assert transport.value() == b""
    assert writer.bytes_to_write == 0


# -- after close / after the connection is lost ---------------------------------------


@pytest.mark.parametrize("how", ["close", "write_eof", "abort"])
def test_write_after_close_raises(how: str) -> None:
    writer, transport, _ = make()
    writer.write(b"before")
    getattr(writer, how)()
    assert writer.is_closed
    for write in (
        lambda: writer.write(b"after"),
        lambda: writer.write_line(b"after"),
        lambda: writer.write_sequence([b"after"]),
    ):
        with pytest.raises(WriterClosedError, match=r"198\.51\.100\.7:99"):
            write()
    assert transport.value() == b"before"


def test_writes_after_connection_lost_are_dropped() -> None:
    writer, transport, _ = make()
    writer.write(b"kept")
    writer.connection_lost(Failure(ConnectionLost("peer went away")))
    assert writer.is_closed
    writer.write(b"dropped")
    writer.write_line(b"dropped")
    writer.write_sequence([b"dropped"])
    assert transport.value() == b"kept"
    assert writer.bytes_to_write == 0


def test_pending_flush_fails_when_the_connection_is_lost() -> None:
    writer, _, _ = make()
    writer.write(b"x")
    d = writer.flushed()
    writer.connection_lost(Failure(ConnectionLost("gone")))
    assert "gone" in str(failure_of(d, ConnectionLost))
    # A new flushed() of unflushed bytes fails too, naming the peer.
    assert "198.51.100.7:99" in str(failure_of(writer.flushed(), ConnectionLost))


def test_consumer_left_fires_when_the_peer_leaves() -> None:
    writer, _, _ = make()
    d = writer.consumer_left()
    assert pending(d)
    writer.connection_lost(Failure(ConnectionDone()))
    assert result_of(d) is None
    assert result_of(writer.consumer_left()) is None
    writer.connection_lost(Failure(ConnectionLost()))  # a second report changes nothing
    assert result_of(writer.consumer_left()) is None


def test_consumer_left_does_not_fire_when_we_closed() -> None:
    writer, _, _ = make()
    d = writer.consumer_left()
    closed = writer.close()
    writer.connection_lost(Failure(ConnectionDone()))
    assert result_of(closed) is None
    assert pending(d)
    d.cancel()
    outcome(d)


# -- buffer_age_limit ------------------------------------------------------------------


def test_buffer_age_limit_aborts_and_fails_with_a_clear_error() -> None:
    writer, transport, clock = make(buffer_age_limit=5.0)
    writer.write(b"x" * 100)
    flushed = writer.flushed()
    left = writer.consumer_left()
    clock.advance(3)
    writer.write(b"y" * 23)  # a later write does not restart the age
    clock.advance(1.9)
    assert pending(flushed)
    assert transport.abort_calls == 0
    clock.advance(0.1)
    assert transport.abort_calls == 1
    err = failure_of(flushed, BufferAgeLimitError)
    assert isinstance(err, ConnectionLost)
    message = str(err)
    assert "stopped reading" in message
    assert "198.51.100.7:99" in message
    assert "123 bytes" in message
    assert err.limit == 5.0  # type: ignore[attr-defined]
    assert err.pending == 123  # type: ignore[attr-defined]
    assert writer.error is err
    # The writer is stopped, not closed: a handler still writing is not
    # interrupted by an exception (its bytes go nowhere).
    writer.write(b"ignored")
    assert failure_of(writer.flushed(), BufferAgeLimitError) is err
    # The transport reports the abort; flushed() and consumer_left() fail.
    writer.connection_lost(Failure(ConnectionAborted()))
    assert writer.is_closed
    before = transport.value()
    writer.write(b"dropped")
    assert transport.value() == before
    assert failure_of(left, BufferAgeLimitError) is err
    assert failure_of(writer.consumer_left(), BufferAgeLimitError) is err
    assert failure_of(writer.flushed(), BufferAgeLimitError) is err
    assert result_of(writer.close()) is None
    assert not clock.getDelayedCalls()


def test_buffer_age_limit_not_hit_when_the_buffer_drains_in_time() -> None:
    writer, transport, clock = make(buffer_age_limit=5.0)
    for _ in range(20):
        writer.write(b"data")
        clock.advance(4.9)
        transport.drain()
        clock.advance(0.05)
    assert transport.abort_calls == 0
    assert writer.error is None
    # Dirty again: the age counts from this write, not from the first one.
    writer.write(b"late")
    clock.advance(4.9)
    assert transport.abort_calls == 0
    transport.drain()
    clock.advance(100)
    assert transport.abort_calls == 0
    assert result_of(writer.flushed()) is None
    assert not clock.getDelayedCalls()  # no timer while nothing waits


def test_buffer_age_timer_only_while_dirty() -> None:
    writer, transport, clock = make(buffer_age_limit=5.0)
    assert not clock.getDelayedCalls()
    writer.write(b"a")
    writer.write(b"b")
    assert len(clock.getDelayedCalls()) == 1  # one timer, not one per write
    transport.drain()
    clock.advance(5)
    assert not clock.getDelayedCalls()


def test_no_buffer_age_limit() -> None:
    writer, transport, clock = make(buffer_age_limit=None)
    writer.write(b"stuck")
    d = writer.flushed()
    assert not clock.getDelayedCalls()
    clock.advance(10**6)
    assert transport.abort_calls == 0
    assert pending(d)
    transport.drain()
    assert result_of(d) is None


@pytest.mark.parametrize("limit", [0, -1.0])
def test_bad_buffer_age_limit(limit: float) -> None:
    with pytest.raises(ValueError, match="buffer_age_limit"):
        Writer(FakeTransport(), Clock(), limit)


def test_close_stops_the_buffer_age_check() -> None:
    writer, transport, clock = make(buffer_age_limit=1.0, close_timeout=10.0)
    writer.write(b"x")
    writer.close()
    clock.advance(5)
    assert transport.abort_calls == 0  # close_timeout governs from here
    assert writer.error is None
    clock.advance(5)
    assert transport.abort_calls == 1
    writer.connection_lost(Failure(ConnectionAborted()))
    assert not clock.getDelayedCalls()


# -- close -----------------------------------------------------------------------------


def test_close_flushes_then_closes_and_fires_when_lost() -> None:
    writer, transport, clock = make(close_timeout=30.0)
    writer.write(b"last words")
    flushed = writer.flushed()
    d = writer.close()
    assert writer.is_closed
    assert transport.producer is None  # unregistered, so loseConnection can finish
    assert transport.lose_calls == 1
    assert pending(d)
    assert len(clock.getDelayedCalls()) == 1  # the sweeper's, for the close_timeout
    writer.connection_lost(Failure(ConnectionDone()))
    assert result_of(d) is None
    assert result_of(flushed) is None  # a clean close flushed everything
    assert writer.bytes_to_write == 0
    clock.advance(GRACE)
    assert not clock.getDelayedCalls()


def test_close_is_idempotent() -> None:
    writer, transport, _ = make()
    d1 = writer.close()
    d2 = writer.close()
    assert transport.lose_calls == 1
    assert pending(d1) and pending(d2)
    writer.connection_lost(Failure(ConnectionDone()))
    assert result_of(d1) is None and result_of(d2) is None
    assert result_of(writer.close()) is None
    assert transport.lose_calls == 1


def test_close_after_connection_lost_fires_at_once() -> None:
    writer, transport, clock = make()
    writer.connection_lost(Failure(ConnectionLost()))
    assert result_of(writer.close()) is None
    assert transport.lose_calls == 0
    assert not clock.getDelayedCalls()


def test_close_force_aborts_after_close_timeout() -> None:
    writer, transport, clock = make(close_timeout=2.0)
    writer.write(b"never drains")
    flushed = writer.flushed()
    d = writer.close()
    clock.advance(1.9)
    assert transport.abort_calls == 0
    clock.advance(0.1)
    assert transport.abort_calls == 1
    assert pending(d)
    writer.connection_lost(Failure(ConnectionAborted()))
    assert result_of(d) is None  # close() never fails
    failure_of(flushed, ConnectionAborted)  # but the bytes were not flushed


def test_close_without_close_timeout_waits() -> None:
    writer, transport, clock = make(close_timeout=None)
    writer.write(b"x")
    d = writer.close()
    assert not clock.getDelayedCalls()
    clock.advance(1000)
    assert transport.abort_calls == 0
    writer.connection_lost(Failure(ConnectionDone()))
    assert result_of(d) is None


def test_abort() -> None:
    writer, transport, _ = make()
    writer.write(b"dropped")
    writer.abort()
    assert transport.abort_calls == 1
    assert writer.is_closed
    d = writer.close()  # after abort: no graceful close, just wait
    assert transport.lose_calls == 0
    writer.connection_lost(Failure(ConnectionAborted()))
    assert result_of(d) is None


# -- write_eof -------------------------------------------------------------------------


def test_write_eof() -> None:
    writer, transport, _ = make()
    writer.write(b"request")
    flushed = writer.flushed()
    d = writer.write_eof()
    assert transport.write_eof_calls == 1
    assert transport.producer is None
    assert writer.is_closed
    assert pending(d) and pending(flushed)
    writer.eof_sent()
    assert result_of(d) is None
    assert result_of(flushed) is None
    with pytest.raises(WriterClosedError):
        writer.write_eof()

    # close() after write_eof closes the rest, without waiting for the peer.
    closed = writer.close()
    assert transport.lose_calls == 1
    assert pending(closed)
    writer.close()
    assert transport.lose_calls == 1  # idempotent
    writer.connection_lost(Failure(ConnectionDone()))
    assert result_of(closed) is None


def test_close_after_write_eof_force_aborts_after_close_timeout() -> None:
    writer, transport, clock = make(close_timeout=3.0)
    writer.write_eof()
    closed = writer.close()
    clock.advance(3)
    assert transport.abort_calls == 1
    writer.connection_lost(Failure(ConnectionAborted()))
    assert result_of(closed) is None
    assert not clock.getDelayedCalls()


def test_close_after_write_eof_and_connection_lost() -> None:
    writer, transport, clock = make()
    writer.write_eof()
    writer.connection_lost(Failure(ConnectionDone()))
    assert result_of(writer.close()) is None
    assert transport.lose_calls == 0
    assert not clock.getDelayedCalls()


def test_write_eof_fails_if_the_connection_is_lost_first() -> None:
    writer, _, _ = make()
    writer.write(b"x")
    d = writer.write_eof()
    writer.connection_lost(Failure(ConnectionLost("reset")))
    failure_of(d, ConnectionLost)


def test_repr() -> None:
    writer, _, _ = make()
    writer.write(b"abc")
    text = repr(writer)
    assert "198.51.100.7:99" in text and "open" in text and "3 bytes" in text
    writer.abort()
    assert "closing" in repr(writer)
    writer.connection_lost(Failure(ConnectionAborted()))
    assert "closed" in repr(writer)


@pytest.mark.parametrize(
    ("events", "names"),
    [
        (["write_eof", "close", "lost"], ["half-closed", "closing", "closed"]),
        (["write_eof", "lost", "close"], ["half-closed", "closed", "closed"]),
        (["close", "abort", "lost"], ["closing", "closing", "closed"]),
        (["lost", "close"], ["failed", "closed"]),
        (["lost", "write_eof"], ["failed", "closed"]),
        (["abort", "lost", "abort"], ["closing", "closed", "closed"]),
    ],
)
def test_states(events: list[str], names: list[str]) -> None:
    writer, _, _ = make()
    assert "open" in repr(writer)
    for event, name in zip(events, names, strict=True):
        if event == "lost":
            writer.connection_lost(Failure(ConnectionDone()))
        else:
            getattr(writer, event)()
        assert f" {name}," in repr(writer), (event, repr(writer))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["write", "write_eof", "close", "abort", "lost"]), max_size=8))
def test_any_order_of_events(events: list[str]) -> None:
    # What each call does depends only on what happened before: whether this
    # side closed (close, write_eof, abort) and whether the connection is gone.
    writer, _, _ = make()
    closed_here = gone = False
    for event in events:
        if event == "write":
            if closed_here:
                with pytest.raises(WriterClosedError):
                    writer.write(b"x")
            else:
                writer.write(b"x")  # dropped, not refused, once the peer left
        elif event == "write_eof":
            if closed_here:
                with pytest.raises(WriterClosedError):
                    writer.write_eof()
            else:
                d = writer.write_eof()
                assert gone == (outcome(d) is not PENDING)
                if gone:
                    outcome(d)  # consumed: failed or not, it is reported
            closed_here = True
        elif event == "close":
            d = writer.close()
            assert (outcome(d) is None) == gone  # fires once the connection is gone
            closed_here = True
        elif event == "abort":
            writer.abort()
            closed_here = True
        else:
            writer.connection_lost(Failure(ConnectionDone()))
            gone = True
        assert writer.is_closed == (closed_here or gone)


class HoldingTransport(FakeTransport):
    """A FakeTransport that says how many bytes it still holds, as Twisted's do."""

    def __init__(self) -> None:
        super().__init__()
        self.dataBuffer = b""
        self.offset = 0
        self._tempDataLen = 0


def test_buffer_age_spares_a_peer_that_reads_slowly_but_steadily() -> None:
    """
    The buffer never drains, but each byte leaves within the limit: that is
    a slow reader, not a stuck one.  Once bytes older than the limit stay
    unsent, the writer fails.  (Drains are asked of the transport, not
    watched: the age is counted from the sweep that finds bytes waiting.)
    """
    transport = HoldingTransport()
    clock = Clock()
    writer = Writer(transport, clock, 10.0, 30.0, peer="198.51.100.7:99")
    writer.start()
    writer.write(b"a" * 100)  # t=0: the buffer stops being empty
    transport._tempDataLen = 100
    clock.advance(GRACE)  # t=1: the sweep finds them waiting: due at t=11
    assert transport.producer is writer  # from now on, drains are watched
    clock.advance(4)
    writer.write(b"b" * 100)  # t=5
    transport._tempDataLen = 100  # by t=9 the first 100 bytes were sent
    clock.advance(6)  # t=11: every byte written by t=1 has left
    assert writer.error is None and transport.abort_calls == 0
    clock.advance(9.5)  # t=20.5: the bytes written at t=5 are not checked before t=21
    assert writer.error is None
    clock.advance(0.5)  # t=21: bytes written by t=11 are still unsent
    assert isinstance(writer.error, BufferAgeLimitError)
    assert transport.abort_calls == 1


def holding() -> tuple[Writer, HoldingTransport]:
    transport = HoldingTransport()
    writer = Writer(transport, Clock(), 10.0, 30.0, peer="198.51.100.7:99")
    writer.start()
    return writer, transport


def test_on_twisted_transports_the_writer_registers_only_to_wait() -> None:
    # A transport that says what it holds is asked instead of telling the
    # writer of every drain: no producer (and no call per drain) until a
    # flushed() must wait.
    writer, transport = holding()
    assert transport.producer is None
    writer.write(b"x" * 10)
    assert transport.producer is None
    assert result_of(writer.flushed()) is None  # the transport holds none of it
    writer.write(b"y" * 10)
    transport._tempDataLen = 4
    assert writer.bytes_to_write == 4
    d = writer.flushed()
    assert transport.producer is writer  # its first call found bytes waiting ...
    assert pending(d)  # ... which it did not take for a drain
    transport._tempDataLen = 0
    writer.resumeProducing()  # what Twisted's transport calls once it drained
    assert result_of(d) is None
    assert writer.bytes_to_write == 0
    assert transport.producer is None  # watched for that drain only


def test_bytes_waiting_at_a_sweep_are_watched_until_they_left_not_for_good() -> None:
    """
    A reply still in the transport's buffer when the sweep comes makes the
    writer watch drains; once it has left, the writer stops, so that a busy
    connection is not called at every drain for the rest of its life.
    """
    transport = HoldingTransport()
    clock = Clock()
    writer = Writer(transport, clock, 10.0, 30.0)
    writer.start()
    writer.write(b"reply")
    transport._tempDataLen = 5
    clock.advance(GRACE)  # the sweep finds it waiting
    assert transport.producer is writer
    transport._tempDataLen = 0
    writer.resumeProducing()
    assert transport.producer is None and writer.bytes_to_write == 0
    for _ in range(3):  # replies that leave between sweeps are not watched
        writer.write(b"next")
        clock.advance(GRACE)
        assert transport.producer is None
    clock.advance(10.0)  # the age check armed at the first sweep finds nothing waiting
    assert transport.producer is None and not clock.getDelayedCalls()
    assert transport.abort_calls == 0 and writer.error is None


def test_writes_after_the_loss_are_not_called_flushed_by_asking() -> None:
    writer, transport = holding()
    writer.connection_lost(Failure(ConnectionLost("reset")))
    writer.write(b"dropped")
    assert transport._tempDataLen == 0  # nothing held: still, nothing was sent
    failure_of(writer.flushed(), ConnectionLost)


def test_registering_while_writes_are_gathered_is_no_drain() -> None:
    writer, _ = holding()
    writer.write(b"x")
    writer.gather()
    writer.write(b"held")
    d = writer.flushed()  # the transport holds nothing, but this writer does
    assert pending(d)
    writer.send_gathered()
    assert pending(d)
    writer.resumeProducing()
    assert result_of(d) is None


# -- timers only for what waits long ---------------------------------------------------


def test_long_limits_get_timers_only_when_bytes_wait_past_the_grace() -> None:
    """
    With limits above GRACE, a write or a close that finishes within it
    costs no timer of its own (one sweeper serves every writer); one that
    waits longer gets its timer then, due when it would have been anyway.
    """
    writer, transport, clock = make(buffer_age_limit=120.0, close_timeout=30.0)
    writer.write(b"quick")
    transport.drain()
    clock.advance(GRACE)
    assert not clock.getDelayedCalls()  # drained in time: no timer was ever armed
    writer.write(b"stuck")
    clock.advance(GRACE)
    (timer,) = clock.getDelayedCalls()  # the age check, armed at the sweep
    assert timer.getTime() == GRACE + 120.0
    clock.advance(120.0 - GRACE - 0.1)
    assert transport.abort_calls == 0
    clock.advance(0.2)
    assert transport.abort_calls == 1
    assert isinstance(writer.error, BufferAgeLimitError)


def test_a_long_close_timeout_is_kept_to_the_second() -> None:
    writer, transport, clock = make(close_timeout=30.0)
    writer.write(b"last words")
    writer.close()
    clock.advance(29.9)
    assert transport.abort_calls == 0
    clock.advance(0.2)
    assert transport.abort_calls == 1


def test_short_limits_are_timed_from_the_start() -> None:
    writer, _, clock = make(buffer_age_limit=0.5)
    writer.write(b"x")
    (timer,) = clock.getDelayedCalls()
    assert timer.getTime() == 0.5


# -- events waited for late ---------------------------------------------------------------


def test_consumer_left_asked_after_the_fact_says_what_happened() -> None:
    writer, _, _ = make()
    writer.connection_lost(Failure(ConnectionLost()))
    assert result_of(writer.consumer_left()) is None  # the peer left
    assert result_of(writer.close()) is None

    writer, _, clock = make(buffer_age_limit=1.0)
    writer.write(b"x")
    clock.advance(1.0)
    writer.connection_lost(Failure(ConnectionAborted()))
    failure_of(writer.consumer_left(), BufferAgeLimitError)

    writer, _, _ = make()
    writer.close()
    writer.connection_lost(Failure(ConnectionDone()))
    assert pending(writer.consumer_left())  # we closed it: the peer did not leave


def test_end_of_stream_sent_before_anybody_waits() -> None:
    writer, _, _ = make()
    d = writer.write_eof()
    writer.eof_sent()
    assert result_of(d) is None
    writer.connection_lost(Failure(ConnectionDone()))
    assert result_of(writer.close()) is None


class _EndedTLS:
    """A TLS layer whose session ended (the peer's close_notify): it drops what it is given."""

    _lostTLSConnection = True
    _appSendBuffer: list[bytes] = []
    disconnecting = False

    def write(self, data: bytes) -> None:
        pass

    def getPeer(self) -> str:
        return "198.51.100.7:99"


def test_bytes_an_ended_tls_session_dropped_are_not_called_flushed() -> None:
    sink = HoldingTransport()
    sink.disconnecting = True
    tls = _EndedTLS()
    writer = Writer.__new__(Writer)
    writer._setup(tls, sink, tls, Clock(), None, 30.0)
    writer.start()  # over TLS: registered at once ...
    writer.resumeProducing()  # ... and not any more, once the session ended
    assert sink.producer is None
    writer.write(b"dropped")
    d = writer.flushed()
    assert pending(d) and writer.bytes_to_write == 7
    writer.connection_lost(Failure(ConnectionDone()))
    failure_of(d, ConnectionDone)


def test_a_close_in_the_turn_a_reply_is_gathered_ends_the_age_check() -> None:
    # The handler replies and closes as it handles a request: the reply's
    # bytes that wait are bounded by close_timeout, not by the age limit.
    writer, transport, clock = make(buffer_age_limit=0.5, close_timeout=30.0)
    writer.gather()
    writer.write(b"reply")
    closed = writer.close()
    clock.advance(5)
    assert writer.error is None
    assert transport.abort_calls == 0
    assert pending(closed)


def test_close_after_write_eof_ends_the_age_check() -> None:
    writer, transport, clock = make(buffer_age_limit=0.5, close_timeout=30.0)
    writer.write(b"reply")
    writer.write_eof()
    writer.close()
    clock.advance(5)
    assert writer.error is None
    assert transport.abort_calls == 0
