"""
A tiny key-value store, one command per line:

    SET key value   store value (the rest of the line after the key and one
                    space, kept exactly) -> OK
    GET key         the value, or NIL if there is none
    DEL key         1 if the key was there, else 0
    QUIT            BYE, then the server closes the connection
    anything else   ERR and what was wrong; the connection stays open

Keys are single words; commands are case-insensitive; replies end with a
newline.  Every connection served by the same process shares one store, which
lives in memory only and holds at most L{MAX_KEYS} keys.  Run it with

    twistd -n --pidfile= tcpserver --port 9000 --handler twisted_tcp.examples.kv:handle

and talk to it with C{nc 127.0.0.1 9000}.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress

from twisted_tcp import LineTooLongError, Reader, Writer

MAX_KEYS = 10000
"""The most keys the store holds; a SET of a new key beyond answers C{ERR}."""

store: dict[bytes, bytes] = {}
"""The store, shared by every connection of the process."""


def execute(line: bytes) -> bytes | None:
    """The reply to one command line, or C{None} for C{QUIT}."""
    command, _, rest = line.lstrip().partition(b" ")
    verb = command.upper()
    if verb == b"SET":
        key, space, value = rest.partition(b" ")
        if not (key and space):
            return b"ERR usage: SET key value"
        if key not in store and len(store) >= MAX_KEYS:
            return b"ERR store full (%d keys)" % MAX_KEYS
        store[key] = value
        return b"OK"
    if verb in (b"GET", b"DEL"):
        key = rest.strip()
        if not key or b" " in key:
            return b"ERR usage: %s key" % verb
        if verb == b"GET":
            return store.get(key, b"NIL")
        return b"1" if store.pop(key, None) is not None else b"0"
    if verb == b"QUIT":
        return None
    if not verb:
        return b"ERR empty command"
    return b"ERR unknown command '%s' (SET, GET, DEL or QUIT)" % command[:40]


async def handle(address: IAddress, reader: Reader, writer: Writer) -> None:
    """Answer each command line until C{QUIT} or the end of the stream."""
    while True:
        try:
            line = await reader.read_line()
        except LineTooLongError:
            writer.write_line(b"ERR line too long")
            continue
        if line is None:
            return
        reply = execute(line)
        if reply is None:
            writer.write_line(b"BYE")
            return
        writer.write_line(reply)
        if writer.bytes_to_write > 1 << 20:  # a client that sends but does not read
            await writer.flushed()
