"""
The Writer: writes that never block, and a way to learn when they reached the
kernel.

A small C{write} is a plain append to the transport, with no Deferred made,
so Twisted still gathers many small writes into one system call.  What is
written while the connection hands a received chunk to the reader (a reply
to a request) is gathered, and sent as one when the chunk is handled:
straight to the socket, where Twisted's buffer holds nothing and the kernel
takes it all, as asyncio's transports do (L{Writer.send_gathered}), not in a
later turn of the reactor, after it has seen the socket writable.  So is a
single write of 16 KiB to 64 KiB made at any other time (L{SEND_NOW_MIN}).
What has reached the kernel is asked of Twisted's transport when it matters
(it says how many bytes it holds); only when somebody waits -- C{flushed()},
bytes that wait past a second under the buffer-age limit, an idle timeout --
does the writer register with the transport as a non-streaming producer,
whose C{resumeProducing} the transport then calls every time its buffer has
drained into the kernel.  (A streaming producer would only be resumed after
a pause, that is after 64 KiB were buffered, so a flush of a small write
would never be reported.)  An echo that never waits thus costs no call per
drain, and the transport no producer.

The buffer-age check costs no timer per write: a writer whose bytes wait is
noted with a sweeper, and gets a timer of its own only if they still wait a
second later.

Over TLS the writer registers at once, with the socket transport under the
TLS layer (Twisted's TLS layer would turn a non-streaming producer into one
resumed on every turn of the reactor), and the buffer has drained when that
transport's has and the TLS layer holds no plaintext of ours either.  Over
twisted_tcp's own TLS layer (C{tls=}), what is sent at once on a plain
socket is encrypted at once, and its records go to the kernel in one send
where that transport holds nothing unsent (C{write_now}); Twisted's layer
would gather it for its next turn, then wait for the socket to be seen
writable.  The end of the stream over TLS is a TLS close_notify, and closing
sends one, then closes the socket once it has left, without waiting for the
peer's.

The writer's states (open, half-closed, closing, closed, failed) and every
transition between them are in L{_NEXT}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPullProducer
from twisted.python.failure import Failure
from zope.interface import implementer

from ._errors import BufferAgeLimitError, WriterClosedError
from ._oneshot import PENDING, OneShot, decided, has_come, waited
from ._settings import DEFAULTS, Settings, check_seconds
from ._sweeper import GRACE, Deadline, Sweeper, sweeper_for
from ._tls import split_transport
from ._twisted_private import (
    SOCKET_TRANSPORTS,
    send_now,
    tls_plaintext_held,
    tls_session_ended,
    unsent_bytes,
)
from ._where import show_address

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport

    from ._connection import Socket


# The writer's states.  Whether written bytes are still draining into the
# kernel is a separate fact (C{_clean}), since every write changes it.
OPEN = 0  # writes go out
HALF_CLOSED = 1  # write_eof(): the end of our stream follows the bytes; the peer may go on
CLOSING = 2  # close() or abort(): the bytes leave (within close_timeout), then the close
CLOSED = 3  # closed by this side, and the connection is gone
FAILED = 4  # the connection was lost without this side closing it: writes are dropped
# (so "state >= CLOSED" says the connection is gone)

SEND_NOW_MAX = 64 * 1024
"""
The most bytes sent to the kernel at once (L{Writer._send}); more are left
to Twisted, which sends them in pieces, with no copy of the rest.
"""
SEND_NOW_MIN = 16 * 1024
"""
The least bytes of one L{Writer.write} outside a gather sent to the kernel
at once, as asyncio's transports send every write: smaller ones wait for
Twisted's next send, which takes all the small writes of a turn in one call.
"""

# How the writer watches the transport's drains (when registered as its producer).
WAIT_DRAIN = 1  # until the next drain
ALWAYS = 2  # for good

# Every transition, (state, event) -> state; an event not listed changes
# nothing.  Events: "eof" (write_eof), "close" (close or abort), "lost".
_NEXT = {
    (OPEN, "eof"): HALF_CLOSED,
    (OPEN, "close"): CLOSING,
    (OPEN, "lost"): FAILED,
    (HALF_CLOSED, "close"): CLOSING,
    (HALF_CLOSED, "lost"): CLOSED,
    (CLOSING, "lost"): CLOSED,
    (FAILED, "eof"): CLOSED,
    (FAILED, "close"): CLOSED,
}
_STATE_NAMES = ("open", "half-closed", "closing", "closed", "failed")


@implementer(IPullProducer)
class Writer:
    """
    Writes to one connection.

    C{write} and C{write_line} never block and never fail because of the
    peer: the bytes are buffered in memory, and once the peer is gone they are
    dropped.  Use L{flushed} for back-pressure.

    """

    __slots__ = (
        "__weakref__",
        "_age_limit",
        "_age_mark",
        "_age_watch",
        "_clean",
        "_clock",
        "_close_deadline",
        "_close_timeout",
        "_connection",
        "_done",
        "_eof",
        "_error",
        "_flush_waiters",
        "_flushed_count",
        "_held",
        "_left",
        "_lost_reason",
        "_peer",
        "_registered",
        "_since",
        "_sink",
        "_state",
        "_tls",
        "_tls_sends_now",
        "_transport",
        "_written",
    )

    def __init__(
        self,
        transport: ITransport,
        clock: IReactorTime,
        buffer_age_limit: float | None = DEFAULTS.buffer_age_limit,
        close_timeout: float | None = DEFAULTS.close_timeout,
        peer: object = None,
    ) -> None:
        sink, tls = split_transport(transport)
        self._setup(
            transport,
            sink,
            tls,
            clock,
            check_seconds("buffer_age_limit", buffer_age_limit, none="unlimited"),
            check_seconds("close_timeout", close_timeout, zero=True, none="wait for ever"),
        )
        self._peer = peer

    @classmethod
    def for_connection(cls, connection: Any, settings: Settings) -> Writer:
        """
        The writer of a connection's protocol (which found the layers of its
        transport when it was made), with limits from L{Settings}, which
        checked them.
        """
        writer = cls.__new__(cls)
        transport = connection.transport
        sink = connection._sink
        writer._setup(
            transport,
            transport if sink is None else sink,
            connection._tls,
            connection.clock,
            settings.buffer_age_limit,
            settings.close_timeout,
        )
        writer._connection = connection
        return writer

    def _setup(
        self,
        transport: Any,
        sink: Any,
        tls: Any,
        clock: IReactorTime,
        buffer_age_limit: float | None,
        close_timeout: float | None,
    ) -> None:
        self._age_limit = buffer_age_limit
        self._close_timeout = close_timeout
        self._transport = transport
        # The transport that writes to the kernel, and the TLS layer between.
        self._sink = sink
        self._tls = tls
        self._tls_sends_now = False  # (start)
        self._clock = clock
        self._peer = None
        self._state = OPEN
        self._lost_reason: BaseException | None = None  # ... with this (flushes fail with it)
        # Nothing written to the transport since it was last known drained
        # (bytes gathered for send_gathered are not written yet: most leave
        # at once, with no age to watch).
        self._clean = True
        # The transport's producer, told of every drain: not (0), until the
        # next drain (WAIT_DRAIN), or for good (ALWAYS).
        self._registered = 0
        self._written = 0
        self._held: list[bytes] | None = None  # writes kept by gather() until send_gathered()
        self._flushed_count = 0
        # Clean, when the transport last had nothing of ours waiting (it
        # drained, or was written to drained); else, when the age of the
        # bytes waiting counts from.
        self._since = 0.0
        self._age_mark = 0  # bytes written by _since, all to be sent in time
        # How their age is watched: not at all, by the clock's sweeper (the
        # writer is noted there), or by a timer of its own.
        self._age_watch: IDelayedCall | Sweeper | None = None
        self._close_deadline: Deadline | None = None  # close() waits for bytes to leave
        self._error: BaseException | None = None
        self._flush_waiters: list[Deferred[None]] | None = None  # made by the first flushed()
        # Made by whoever first waits (most connections never do), each
        # fired with the outcome recorded when it came, if it came before.
        self._done: OneShot[None] | None = None
        self._eof: Any = PENDING  # how the end of our stream went (a slot of waited())
        self._left: Any = PENDING  # the consumer_left outcome (the same)
        self._connection: Any = None  # the connection's protocol, which sets this

    # -- what the user calls -------------------------------------------------

    def write(self, data: bytes) -> None:
        """
        Append C{data} to the connection's outgoing bytes.  Outside the
        handling of a received chunk (whose writes leave together as it
        ends), on a plain TCP or Unix socket, or over the TLS layer of
        C{tls=}, whose transport holds nothing written before and has no
        producer of somebody else's, C{data} of 16 KiB to 64 KiB goes to the
        kernel at once (encrypted first), as far as it takes it; other
        writes leave in Twisted's next send, small ones together.

        @raise WriterClosedError: after L{close}, L{write_eof} or L{abort}.
        @raise TypeError: if C{data} is not bytes.
        """
        if type(data) is not bytes:
            _check_bytes("data", data)
        if self._state:
            self._refuse_write()
            return
        if data:
            self._written += len(data)
            held = self._held
            if held is not None:
                held.append(data)
            elif len(data) >= SEND_NOW_MIN:
                self._send(data)
            else:  # small writes of one turn leave together, in Twisted's next send
                self._transport.write(data)
                if self._clean:
                    self._became_dirty()

    def write_line(self, line: bytes) -> None:
        """
        Write C{line} followed by C{b"\\n"}.

        @raise WriterClosedError: after L{close}, L{write_eof} or L{abort}.
        @raise TypeError: if C{line} is not bytes.
        """
        if type(line) is not bytes:
            _check_bytes("line", line)
        if self._state:
            self._refuse_write()
            return
        held = self._held
        size = len(line)
        if size < 16384:
            if held is None:
                self._transport.write(line + b"\n")
            else:
                held.append(line + b"\n")
        elif held is None:  # a long line is not copied
            self._transport.writeSequence((line, b"\n"))
        else:
            held += (line, b"\n")
        self._written += size + 1
        if self._clean and held is None:
            self._became_dirty()

    def write_sequence(self, chunks: list[bytes]) -> None:
        """
        Write several chunks, in order, as one call.

        @raise WriterClosedError: after L{close}, L{write_eof} or L{abort}.
        @raise TypeError: if C{chunks} is not a list or tuple of bytes.
        """
        if not isinstance(chunks, (list, tuple)):
            raise TypeError(
                f"chunks must be a list of bytes, not {type(chunks).__name__}: {chunks!r:.80}"
            )
        for chunk in chunks:
            if type(chunk) is not bytes:
                _check_bytes("each chunk", chunk)
        if self._state:
            self._refuse_write()
            return
        held = self._held
        if held is not None:
            held.extend(chunks)
        else:
            self._transport.writeSequence(chunks)
        self._written += sum(map(len, chunks))
        if self._clean and held is None and self._written != self._flushed_count:
            self._became_dirty()

    def flushed(self) -> Deferred[None]:
        """
        Return a Deferred that fires once every byte written so far has been
        handed to the kernel.  It fails if the connection is lost, or the
        buffer-age limit is hit, before that, and after bytes written once the
        connection was lost (they were dropped).
        """
        if self._error is not None:
            return fail(self._error)
        self._refresh()
        if self._clean and not self._held:
            return succeed(None)
        if self._state >= CLOSED:
            lost = ConnectionLost(f"connection to {self._peer_text()} lost before flush")
            lost.__cause__ = self._lost_reason
            return fail(lost)
        self.watch_drains()
        d: Deferred[None] = Deferred(self._forget_flush)
        if self._flush_waiters is None:
            self._flush_waiters = [d]
        else:
            self._flush_waiters.append(d)
        return d

    @property
    def socket(self) -> Socket:
        """
        The socket this writer writes to (as Async's C{Writer.fd}): its
        addresses, options and TLS details, such as
        L{Socket.alpn_protocol} in a server's handler.

        @raise RuntimeError: for a writer made on a transport by hand.
        """
        if self._connection is None:
            raise RuntimeError("this writer was not made by twisted_tcp for a connection")
        from ._connection import Socket

        return Socket(self._connection)

    @property
    def close_timeout(self) -> float | None:
        """
        Seconds that L{close} waits for the buffer to drain before dropping
        what is left, or C{None} to wait for ever (applies to the next
        close).

        @raise TypeError: if set to something other than a number or None.
        @raise ValueError: if set to NaN, infinity or a negative number.
        """
        return self._close_timeout

    @close_timeout.setter
    def close_timeout(self, seconds: float | None) -> None:
        self._close_timeout = check_seconds(
            "close_timeout", seconds, zero=True, none="wait for ever"
        )

    @property
    def buffer_age_limit(self) -> float | None:
        """
        Seconds that written bytes may wait unflushed before the connection
        is closed with L{BufferAgeLimitError}, or C{None} for no limit.  A
        new value takes effect at once, for the bytes already waiting too.

        @raise TypeError: if set to something other than a number or None.
        @raise ValueError: if set to NaN, infinity, 0 or less.
        """
        return self._age_limit

    @buffer_age_limit.setter
    def buffer_age_limit(self, limit: float | None) -> None:
        self._age_limit = check_seconds("buffer_age_limit", limit, none="unlimited")
        self._stop_age_watch()
        self._refresh()
        if not self._clean and self._state < CLOSED and limit is not None:
            self._check_age()

    @property
    def bytes_to_write(self) -> int:
        """The number of written bytes not yet known to be handed to the kernel."""
        held = self._held
        if not (self._clean or held):  # (the transport is not asked while writes are gathered)
            self._refresh()
        if (self._clean and not held) or self._state >= CLOSED:
            return 0
        return self._written - self._flushed_count

    @property
    def bytes_written(self) -> int:
        """
        The number of bytes written so far (accepted by L{write} and the
        like; under TLS, the plaintext), sent or not.
        """
        return self._written

    @property
    def is_closed(self) -> bool:
        """Whether L{close}, L{write_eof} or L{abort} was called, or the connection is gone."""
        return self._state != OPEN

    def close(self) -> Deferred[None]:
        """
        Flush what was written, then close the connection (both directions).
        If the buffer has not drained after C{close_timeout} seconds, what is
        left is dropped.  Idempotent; the Deferred fires when the connection
        is closed, and never fails.
        """
        self.start_close()
        if self._state >= CLOSED:
            return succeed(None)
        if self._done is None:
            self._done = OneShot()
        return self._done.wait()

    def start_close(self) -> None:
        """L{close}, for a caller that does not wait for the end (the server)."""
        was = self._event("close")
        if was == OPEN:
            # (Each call only where it has something to do: this is the
            # path of every connection a server's handler ends.)
            if self._held is not None:
                self.send_gathered()
            if self._age_watch is not None:  # (after what send_gathered left waiting)
                self._stop_age_watch()
            if self._registered and self._tls is None:
                self._unregister()
            if not self._clean:
                self._refresh()
            # Over TLS: close_notify after what was written; the writer
            # stays registered, and closes the socket once it has left
            # (resumeProducing), without waiting for the peer's.
            if self._connection is not None:
                self._connection.close_transport()
            else:
                self._transport.loseConnection()
            # With nothing left to send the transport closes by itself;
            # else the peer has close_timeout seconds to take the rest.
            if (
                self._close_timeout is not None
                and (not self._clean or self._tls is not None)
                and self._state == CLOSING
            ):
                self._wait_for_close()
        elif was == HALF_CLOSED:
            # After write_eof() only our side was closed: close the rest now,
            # rather than wait for the peer to close its side.  The timer
            # first: with the write side already shut down, loseConnection()
            # may report the connection lost at once.
            if self._close_timeout is not None:
                self._wait_for_close()
            if self._tls is None:
                self._transport.loseConnection()
            elif has_come(self._eof):  # close_notify has left: no wait
                self._sink.loseConnection()
            # else resumeProducing closes the socket once close_notify has left

    def write_eof(self) -> Deferred[None]:
        """
        Flush what was written, then half-close: the peer reads the end of
        the stream, while this side can still read its reply.  The Deferred
        fires when the end of the stream has been sent.

        Over TLS the end of the stream is TLS's close_notify.  Under TLS 1.3
        the peer can still reply, as over TCP, if its TLS layer allows it
        (twisted_tcp's own, behind C{tls=}, does); under TLS 1.2, or with a
        peer whose TLS layer closes on close_notify (Twisted's own does), the
        connection ends there.
        """
        was = self._event("eof")
        if was == FAILED:
            return self.flushed()
        if was != OPEN:
            raise WriterClosedError(f"write_eof on a closed writer (peer {self._peer_text()})")
        # The age check stays on: a peer that never reads fails this Deferred
        # with BufferAgeLimitError instead of leaving it pending for ever.
        self.send_gathered()
        if self._tls is not None:
            # close_notify after what was written; the writer stays
            # registered to learn when it has left (resumeProducing).
            self._transport.loseConnection()
        else:
            self._unregister()
            self._transport.loseWriteConnection()
        return self._wait_eof()

    def _wait_eof(self) -> Deferred[None]:
        self._eof, d = waited(self._eof)
        return d

    def abort(self) -> None:
        """
        Close the connection at once, dropping the bytes written that have
        not reached the kernel yet (L{bytes_to_write}).
        """
        was = self._event("close")
        held = self._held
        self._held = None
        if held:
            # Handed to the transport, which drops them with its own unsent
            # bytes: a later flushed() fails, as for those.
            self._transport.writeSequence(held)
            self._clean = False
        if was < CLOSED:
            self._transport.abortConnection()

    def consumer_left(self) -> Deferred[None]:
        """
        Return a Deferred that fires when the peer is gone: the connection was
        lost without this writer closing it.  It fails with
        L{BufferAgeLimitError} if the writer closed the connection because the
        peer stopped reading.
        """
        self._left, d = waited(self._left)
        return d

    # -- holding writes while received bytes are handled ------------------------

    def gather(self) -> None:
        """
        Keep what is written from now on, until L{send_gathered}, and hand it to
        the transport as one C{writeSequence}.  The connection holds writes
        while the reader handles a received chunk: a handler that answers
        many pipelined lines then costs Twisted one call, not one per line,
        and nothing is delayed, since Twisted sends on the reactor's next
        turn anyway.
        """
        if self._held is None and self._state < CLOSED:
            self._held = []

    def send_gathered(self) -> None:
        """
        Hand the writes gathered since L{gather} to the transport; to the
        kernel at once, where the transport is a socket's and holds nothing
        unsent (L{send_now}): a reply to a request then leaves with no wait
        for the next turn of the reactor, whoever waits for a drain (a
        flush, the idle timeout) learns of it now, and the buffer-age check
        has nothing to watch.  Only bytes left to the transport are watched.
        """
        held = self._held
        if held is not None:
            self._held = None
            data = held[0] if len(held) == 1 else b"".join(held)
            if data:
                self._send(data)
            elif self._clean:  # a flush awaited meanwhile has nothing to wait for
                self._drained()

    def _send(self, data: bytes) -> None:
        """
        Send C{data} (a write, or what was gathered): to the kernel at
        once, where the transport is a socket's, holds nothing unsent and
        has no producer of somebody else's (L{send_now}), then drained with
        no age to watch; what the kernel does not take, or all of C{data}
        otherwise, to the transport.
        """
        transport = self._transport
        if len(data) <= SEND_NOW_MAX:
            if type(transport) in SOCKET_TRANSPORTS:
                sent = send_now(transport, data, self)
                if sent == len(data):
                    self._since = self._clock.seconds()
                    self._drained()
                    return
                if sent:
                    # The transport held nothing, and the kernel took part: all
                    # but the rest has left (as the transport would say if asked).
                    data = data[sent:]
                    self._flushed_count = self._written - len(data)
            elif self._tls_sends_now and not transport.disconnecting:
                # Our TLS layer on a socket: encrypted now, and the records
                # to the kernel at once where it takes them, as above.  (Not
                # once the TLS layer closes, nor counted as sent once its
                # session has ended, an error perhaps: it drops what it is
                # given.)
                transport.write_now(data, self)
                if not tls_session_ended(transport):
                    unsent = self._unsent()
                    if unsent == 0:
                        self._since = self._clock.seconds()
                        self._drained()
                        return
                    if unsent is not None:
                        # What the kernel took has left (counted in encrypted
                        # bytes held, a little more than the plaintext).
                        self._flushed_count = max(self._flushed_count, self._written - unsent)
                if self._clean:
                    self._became_dirty()
                return
        transport.write(data)
        if self._clean:
            self._became_dirty()

    def start(self) -> None:
        """
        Start learning when the transport's buffer drains: at once over TLS,
        or where the transport cannot say how many bytes it holds; else on
        the first wait that needs it (L{watch_drains}).  Until then, what
        has drained is asked of the transport when it matters (L{_refresh}):
        an echo that never waits costs no call per drain, and the transport
        no producer (adding one costs each of Twisted's transports 0.8 KiB).

        Over our own TLS layer on a socket transport, L{_send} (a reply, a
        large write) has it encrypt at once and hand the records to the
        kernel in one send (C{write_now}), as on a plain socket.
        """
        tls = self._tls
        if tls is None and type(self._sink) in SOCKET_TRANSPORTS:
            return  # (each of them says what it holds)
        if tls is not None or self._unsent() is None:
            self.watch_drains(always=True)
            if (
                tls is self._transport
                and type(self._sink) in SOCKET_TRANSPORTS
                and hasattr(tls, "write_now")
            ):
                self._tls_sends_now = True

    def watch_drains(self, always: bool = False) -> None:
        """
        Be told by the transport of the next drain (a wait that needs it:
        a flush, bytes that have waited), or with C{always} of every drain
        from now on (over TLS, a transport that does not say what it holds,
        an idle timeout); while open only: once the writer is half-closed or
        closing, a producer would keep Twisted's transport from sending its
        FIN or closing (it calls the producer instead), and what waits is
        told by the end of the stream or of the connection (L{eof_sent},
        L{connection_lost}).

        A writer watching until the next drain stops then: a connection
        that once had a reply in flight at a sweep is not called at every
        drain for the rest of its life.
        """
        if self._state != OPEN:
            return
        if not self._registered:
            self._registered = ALWAYS if always else WAIT_DRAIN
            self._sink.registerProducer(self, False)
        elif always:
            self._registered = ALWAYS

    def sent_at(self) -> float | None:
        """
        When this writer last wrote to a drained transport, or the transport
        last drained, whichever is later; None while written bytes wait.
        (The time of a drain is known after L{watch_drains}.)
        """
        self._refresh()
        if not self._clean or self._held:
            return None
        return self._since

    def _unregister(self) -> None:
        if self._registered:
            self._registered = 0
            self._sink.unregisterProducer()

    def _refresh(self) -> None:
        """
        Not told of drains: learn from the transport whether what was
        written has left, and how much has.
        """
        if self._clean or self._registered or self._held or self._state >= CLOSED:
            return  # (once the connection is gone, what was written since is lost)
        if self._flush_waiters:
            return  # theirs to learn, from the event that tells them (not from a getter)
        if self._tls is not None and tls_session_ended(self._tls):
            return  # what the TLS layer holds now is dropped, not sent
        unsent = self._unsent()
        if unsent == 0:
            self._drained()
        elif unsent is not None and self._held is None:
            self._flushed_count = self._written - unsent

    # -- IPullProducer: the transport calls this whenever its buffer drained --

    def resumeProducing(self) -> None:
        sink = self._sink
        if sink.disconnecting:
            # Closed under us (over TLS: the peer's close_notify, an error):
            # a registered producer would keep the transport from closing.
            self._unregister()
        tls = self._tls
        if tls is not None:
            if tls_session_ended(tls):
                # The TLS session ended (the peer's close_notify, an error): it
                # drops what is written now, which must not count as flushed.
                self._unregister()
                return
            if tls_plaintext_held(tls):
                return  # on its way to the sink, which will call again once it drained
            state = self._state
            if (state == HALF_CLOSED or state == CLOSING) and tls.disconnecting:
                # Our close_notify has left too.
                self._unregister()
                self.eof_sent()
                if state == CLOSING:  # close(), not only write_eof()
                    sink.loseConnection()
                return
        elif self._held or self._unsent():
            return  # registered while bytes wait: the transport calls again once they left
        self._drained()

    def _drained(self) -> None:
        if not self._clean:
            self._clean = True
            self._since = self._clock.seconds()
        self._flushed_count = self._written
        if self._registered == WAIT_DRAIN:  # (before the waiters: one may wait again)
            self._unregister()
        waiters = self._flush_waiters
        if waiters:
            self._flush_waiters = None
            for d in waiters:
                d.callback(None)

    def _forget_flush(self, d: Deferred[None]) -> None:
        if self._flush_waiters is not None and d in self._flush_waiters:
            self._flush_waiters.remove(d)

    def stopProducing(self) -> None:
        pass

    # -- what the connection calls -------------------------------------------

    def eof_sent(self) -> None:
        """Everything was flushed and the end of the stream sent (L{write_eof})."""
        self._drained()
        self._eof_done(None)

    def _eof_done(self, outcome: Any) -> None:
        self._eof = decided(self._eof, outcome)

    def connection_lost(self, reason: Failure) -> None:
        """The connection is gone: fail pending flushes, report the peer leaving."""
        was = self._event("lost")
        if was >= CLOSED:
            return
        closed_here = was != OPEN  # by close(), write_eof() or abort()
        if self._held:  # never to be sent: a later flushed() fails
            self._clean = False
        self._held = None
        self._lost_reason = reason.value
        if self._age_watch is not None:  # (nor held by the sweeper, with its connection)
            self._stop_age_watch()
        if self._close_deadline is not None:
            self._close_deadline.cancel()
            self._close_deadline = None
        error = self._error
        if (
            not self._clean
            and closed_here
            and error is None
            and isinstance(reason.value, ConnectionDone)
            and self._tls is None
        ):
            # close() flushed everything before the connection closed cleanly.
            # (Over TLS that is known only from resumeProducing: a TLS layer
            # closed by the peer drops what it is given.)
            self._drained()
        waiters = self._flush_waiters
        self._flush_waiters = None
        for d in waiters or ():
            d.errback(error or reason)
        self._eof_done(Failure(error) if error is not None else reason)
        if error is not None or not closed_here:
            self._left = decided(self._left, Failure(error) if error is not None else None)
        if self._done is not None:
            self._done.fire(None)

    def _failed_for_loss(self, exc: BaseException | None) -> bool:
        """
        Whether C{exc} is the error this writer's flushes failed with because
        the connection was lost (the peer left, or it was aborted): not a
        fault of whoever awaited them.
        """
        lost = self._lost_reason
        return lost is not None and exc is not None and (exc is lost or exc.__cause__ is lost)

    @property
    def error(self) -> BaseException | None:
        """The error that closed the connection (the buffer-age limit), if any."""
        return self._error

    # -- internals -----------------------------------------------------------

    def _event(self, event: str) -> int:
        """Move to the state that C{event} leads to (L{_NEXT}); return the state left."""
        state = self._state
        self._state = _NEXT.get((state, event), state)
        return state

    def _refuse_write(self) -> None:
        """A write in a state other than open: dropped once the connection failed, else refused."""
        if self._state != FAILED:
            raise WriterClosedError(f"write to a closed writer (peer {self._peer_text()})")
        self._clean = False  # dropped: a later flushed() fails

    def _became_dirty(self) -> None:
        """Bytes were written to a drained transport: watch their age."""
        self._clean = False
        self._since = self._clock.seconds()
        self._age_mark = self._written
        limit = self._age_limit
        if limit is not None and self._age_watch is None:
            if limit > GRACE:  # a timer only if the bytes wait that long
                sweeper = sweeper_for(self._clock)
                sweeper.note(self)
                self._age_watch = sweeper
            else:
                self._age_watch = self._clock.callLater(limit, self._check_age)

    def _wait_for_close(self) -> None:
        """A close waits for bytes to leave: abort it after close_timeout seconds."""
        timeout = self._close_timeout
        assert timeout is not None
        if self._close_deadline is not None:
            self._close_deadline.cancel()
        self._close_deadline = Deadline(self._clock, timeout, self.abort)

    def swept(self) -> None:
        """
        Some time (at most L{GRACE} seconds) after its bytes started to
        wait: if they still wait, the writer gets its buffer-age timer now,
        due when it would have been had it been armed at the start -- or,
        where drains were not watched (the transport was asked instead), due
        a limit from now for every byte written so far: the buffer may have
        drained unseen since its first byte, and the bytes waiting now are
        at most this old.
        """
        sweeper = self._age_watch
        if not isinstance(sweeper, Sweeper):
            return  # (not noted any more)
        self._age_watch = None
        state = self._state
        if state >= CLOSED:
            return
        ages = state != CLOSING  # close() ends the age check
        self._refresh()
        if ages and not self._clean and self._age_limit is not None:
            if not self._registered:
                self._since = sweeper.due
                self._age_mark = self._written
            self._check_age()  # closes now if over the limit, else arms the timer for the rest

    def _check_age(self) -> None:
        self._age_watch = None
        limit = self._age_limit
        self._refresh()
        if self._clean or self._state >= CLOSING or limit is None:
            return  # (close() ends the age check: close_timeout bounds the rest)
        self.watch_drains()  # bytes have waited: learn as soon as they leave
        now = self._clock.seconds()
        age = now - self._since
        if age < limit:
            self._age_watch = self._clock.callLater(limit - age, self._check_age)
            return
        unsent = self._unsent()
        if unsent is not None and self._written - unsent >= self._age_mark:
            # The buffer never drained, but every byte written by then has
            # been sent since: the peer reads, if slowly.  Watch what is
            # pending now.
            self._since = now
            self._age_mark = self._written
            self._age_watch = self._clock.callLater(limit, self._check_age)
            return
        self._error = BufferAgeLimitError(self._peer_text(), limit, self.bytes_to_write)
        waiters = self._flush_waiters
        self._flush_waiters = None
        for d in waiters or ():
            d.errback(Failure(self._error))
        # Not self.abort(): the writer is stopped, not closed, so a handler
        # still writing has its bytes dropped instead of getting an exception.
        self._transport.abortConnection()

    def all_sent(self) -> bool:
        """
        Whether the writer was closed (not only half-closed) and every byte
        written has been handed to the kernel, as far as the transport says.
        """
        return self._state == CLOSING and self._unsent() == 0

    def _unsent(self) -> int | None:
        """
        The bytes the transport still holds, where it says (Twisted's own
        socket transports do), or None.  Over TLS, those are encrypted bytes,
        and the TLS layer's plaintext is added: a little more than the
        plaintext unsent, which errs towards calling a slow reader stuck, by
        TLS's overhead of about 0.2 %.
        """
        held = unsent_bytes(self._sink)
        if held is not None and self._tls is not None:
            held += tls_plaintext_held(self._tls)
        return held

    def _stop_age_watch(self) -> None:
        watch = self._age_watch
        if watch is not None:
            self._age_watch = None
            if isinstance(watch, Sweeper):
                watch.forget(self)
            elif watch.active():
                watch.cancel()

    def _peer_text(self) -> str:
        if self._peer is None:
            self._peer = show_address(self._transport.getPeer())
        return str(self._peer)

    def __repr__(self) -> str:
        state = _STATE_NAMES[self._state]
        return f"<Writer to {self._peer_text()} {state}, {self.bytes_to_write} bytes to write>"


def _check_bytes(name: str, data: object) -> None:
    """@raise TypeError: if C{data} is not bytes (a subclass is)."""
    if not isinstance(data, bytes):
        hint = " (encode it first)" if isinstance(data, str) else ""
        raise TypeError(f"{name} must be bytes{hint}, not {type(data).__name__}: {data!r:.80}")
