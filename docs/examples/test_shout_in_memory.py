"""
The shout handler tested in memory, with twisted_tcp.testing:
no socket, no reactor; each test takes under a millisecond.

    python -m pytest test_shout_in_memory.py
"""

import shout
from twisted.internet.task import Clock

import twisted_tcp
from twisted_tcp.testing import connected_pair, run_handler


def test_lines_in_capitals_then_the_count():
    chunks = [b"hello\n", b"wor", b"ld\n"]
    run = run_handler(shout.handle, chunks)
    assert run.written == (
        b"HELLO\nWORLD\n2 line(s) from 192.0.2.1, bye\n"
    )
    assert run.ended and run.error is None and run.closed


def test_quit_ends_before_the_end_of_the_stream():
    sent = b"one\nquit\nnever read\n"
    run = run_handler(shout.handle, sent, end=False)
    assert run.written == (
        b"ONE\n1 line(s) from 192.0.2.1, bye\n"
    )
    assert run.ended


def test_a_client_that_stops_reading_is_dropped():
    # The pair's clock runs the writer's buffer-age limit.
    clock = Clock()
    settings = twisted_tcp.Settings(
        reader_buffer_size=64, buffer_age_limit=10.0
    )
    pair = connected_pair(clock=clock, settings=settings)
    writer = pair.server.writer
    writer.write(b"x" * 1000)  # fills the client's reader
    pair.flush()
    writer.write(b"y" * 1000)  # waits, as in a full socket
    pair.flush()
    clock.advance(11)
    pair.flush()  # the abort reaches both ends
    error = writer.error
    assert isinstance(error, twisted_tcp.BufferAgeLimitError)
    assert pair.server.closed
