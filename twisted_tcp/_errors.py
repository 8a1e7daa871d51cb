"""
Exceptions raised by twisted_tcp.

Each one names what went wrong and, where there is one, the address involved.
Where Twisted already has a class for the same failure, ours subclasses it, so
that existing C{except} clauses and C{Failure.trap} calls keep working.
Each one survives C{pickle} and C{copy} with its attributes and message, so
that it can cross a process boundary.
"""

from __future__ import annotations

import builtins

from twisted.internet import error


class ConnectTimeoutError(error.TimeoutError, builtins.TimeoutError):
    """
    A connection attempt did not complete within its deadline.

    The deadline covers the whole attempt: DNS resolution and every address
    tried.  Also an instance of Twisted's L{twisted.internet.error.TimeoutError}
    and of the builtin L{TimeoutError}.

    @ivar where: the L{WhereToConnect} the attempt was connecting to.
    @ivar timeout: the deadline, in seconds.
    """

    def __init__(self, where: object, timeout: float) -> None:
        error.TimeoutError.__init__(self)
        self.where = where
        self.timeout = timeout

    def __str__(self) -> str:
        return f"connecting to {self.where} did not complete within {self.timeout:g} s"

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.where, self.timeout)


class ConnectInterruptedError(error.ConnectingCancelledError):
    """
    A connection attempt was abandoned because its C{interrupt} fired first.

    Also an instance of Twisted's
    L{twisted.internet.error.ConnectingCancelledError}.

    @ivar where: the L{WhereToConnect} the attempt was connecting to.
    """

    def __init__(self, where: object) -> None:
        super().__init__(where)
        self.where = where

    def __str__(self) -> str:
        return f"connecting to {self.where} was interrupted"

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.where,)


class TLSHandshakeError(error.ConnectError):
    """
    The TLS handshake of a new connection failed: the server's certificate
    is not trusted or not valid for the host name, no protocol version or
    cipher is shared, or the peer does not speak TLS.  The connection was
    closed.  Also an instance of Twisted's L{twisted.internet.error.ConnectError}.

    @ivar where: the L{WhereToConnect} the attempt was connecting to.
    @ivar reason: what went wrong, as text.
    """

    def __init__(self, where: object, reason: str) -> None:
        super().__init__(string=reason)
        self.where = where
        self.reason = reason

    def __str__(self) -> str:
        return f"TLS handshake with {self.where} failed: {self.reason}"

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.where, self.reason)


class LineTooLongError(ValueError):
    """
    A line (or a record read with C{read_until}) exceeded the reader's
    C{max_line_length}.  Its bytes were discarded, up to and including the
    delimiter that ends it.

    @ivar max_line_length: the limit that was exceeded, in bytes.
    """

    def __init__(self, max_line_length: int) -> None:
        super().__init__(
            f"line longer than max_line_length={max_line_length} bytes; its bytes were discarded"
        )
        self.max_line_length = max_line_length

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.max_line_length,)


class IncompleteReadError(EOFError):
    """
    The stream ended before a read could be satisfied.

    @ivar partial: the bytes that were read before the end of the stream.
    @ivar expected: the number of bytes asked for (C{really_read}), the
        delimiter looked for (C{read_until}), or C{None}: the rest of what
        a chunk handler left unconsumed (C{read_one_chunk_at_a_time}).
    """

    def __init__(self, partial: bytes, expected: int | bytes | None) -> None:
        if expected is None:
            what = "the chunk handler consumed them"
        elif isinstance(expected, int):
            what = f"{expected} bytes"
        else:
            what = f"delimiter {expected!r}"
        super().__init__(f"end of stream after {len(partial)} bytes, before {what}")
        self.partial = partial
        self.expected = expected

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.partial, self.expected)


class ReadInProgressError(RuntimeError):
    """
    A read was started while another read on the same reader was pending.
    A Reader serves one read at a time.
    """


class WriterClosedError(RuntimeError):
    """The writer was used after C{close()} or C{write_eof()}."""


class BufferAgeLimitError(error.ConnectionLost):
    """
    Bytes written to a writer stayed unflushed for longer than its
    C{buffer_age_limit}: the peer stopped reading.  The connection was closed.

    @ivar peer: the peer's address, as text.
    @ivar limit: the C{buffer_age_limit}, in seconds.
    @ivar pending: the number of bytes that were still unflushed.
    """

    def __init__(self, peer: object, limit: float, pending: int) -> None:
        super().__init__(
            f"peer {peer} stopped reading: bytes written more than {limit:g} s ago "
            f"were still not flushed ({pending} bytes pending; buffer_age_limit)"
        )
        self.peer = peer
        self.limit = limit
        self.pending = pending

    def __str__(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return type(self), (self.peer, self.limit, self.pending)
