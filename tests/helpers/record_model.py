"""
What the record buffer should do, written the obvious way over one bytes
value: the model that the buffer's and the Reader's hypothesis tests check
them against.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from twisted_tcp import LineTooLongError

from ..conftest import PENDING

delimiters = st.sampled_from([b"\n", b"|", b"||", b"\r\n", b"ab", b"aba"])
requests = st.one_of(
    st.tuples(st.just("read"), st.integers(1, 8)),
    st.tuples(st.just("read_line"), st.none()),
    st.tuples(st.just("really_read"), st.integers(0, 12)),
    st.tuples(st.just("read_until"), st.tuples(delimiters, st.booleans())),
    st.tuples(st.just("contents"), st.none()),
)
"""Requests (named as the Reader's reads) and their arguments, for L{RecordModel.attempt}."""


class RecordModel:
    """
    Results are C{("ok", value)}, C{("incomplete", partial)},
    C{("error", LineTooLongError)} or L{PENDING}; operations are named as the
    Reader's reads.
    """

    def __init__(self, max_line_length: int) -> None:
        self.buf = b""
        self.eof = False
        self.limit = max_line_length
        self.discard: bytes | None = None
        self.tail = b""

    def feed(self, data: bytes) -> None:
        if self.discard is not None:
            window = self.tail + data
            i = window.find(self.discard)
            if i < 0:
                w = len(self.discard)
                self.tail = window[-(w - 1) :] if w > 1 else b""
                return
            data = window[i + len(self.discard) :]
            self.discard = None
            self.tail = b""
        self.buf += data

    def end(self) -> None:
        self.eof = True
        self.discard = None
        self.tail = b""

    def take(self, n: int) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def overlong(self, delim: bytes, found: int) -> Any:
        if found >= 0:
            self.take(found + len(delim))
        else:
            dropped, self.buf = self.buf, b""
            if not self.eof:
                self.discard = delim
                w = len(delim)
                # the last bytes dropped may begin the delimiter
                self.tail = dropped[-(w - 1) :] if w > 1 else b""
        return ("error", LineTooLongError)

    def attempt(self, op: str, arg: Any) -> Any:
        if op == "read":
            if self.buf:
                return ("ok", self.take(arg))
            return ("ok", b"") if self.eof else PENDING
        if op == "really_read":
            if len(self.buf) >= arg:
                return ("ok", self.take(arg))
            if self.eof:
                return ("incomplete", self.take(len(self.buf)))
            return PENDING
        if op == "contents":
            return ("ok", self.take(len(self.buf))) if self.eof else PENDING
        if op == "read_line":
            i = self.buf.find(b"\n")
            if i >= 0:
                line = self.take(i + 1)[:-1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                if len(line) > self.limit:
                    return ("error", LineTooLongError)
                return ("ok", line)
            if len(self.buf) > self.limit + 1 or (self.eof and len(self.buf) > self.limit):
                return self.overlong(b"\n", -1)
            if self.eof:
                return ("ok", self.take(len(self.buf)) if self.buf else None)
            return PENDING
        if op == "read_until":
            delim, keep = arg
            i = self.buf.find(delim)
            if i >= 0:
                if i > self.limit:
                    return self.overlong(delim, i)
                record = self.take(i + len(delim))
                return ("ok", record if keep else record[: -len(delim)])
            if len(self.buf) > self.limit + len(delim) - 1:
                return self.overlong(delim, -1)
            if self.eof:
                if not self.buf:
                    return ("ok", None)
                return ("incomplete", self.take(len(self.buf)))
            return PENDING
        raise AssertionError(op)
