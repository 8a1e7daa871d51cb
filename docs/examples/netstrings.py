"""
Parsing a protocol's messages one chunk at a time: netstrings (``5:hello,``),
each answered with its text in capitals, as a netstring; the empty one,
``0:,``, says goodbye.
"""

import twisted_tcp

MAX_LENGTH = 65536  # the longest text a netstring may hold, in bytes
MAX_DIGITS = len(str(MAX_LENGTH))
HIGH_WATER = 256 * 1024  # unsent replies above which the peer is waited for


class BadNetstring(Exception):
    """What the peer sent is not a netstring, or holds too long a text."""


def next_netstring(data, pos):
    """
    The text of the netstring at data[pos] and the offset after it; or,
    while it is not all there, None and how many bytes from pos it
    needs at least.  Raise BadNetstring as soon as it cannot be one, before
    its text arrives: this is what keeps memory bounded.
    """
    colon = data.find(b":", pos, pos + MAX_DIGITS + 1)
    if colon < 0:
        if len(data) - pos > MAX_DIGITS:
            raise BadNetstring("a length, then ':' was expected")
        return None, len(data) - pos + 1  # the length is still arriving
    digits = data[pos:colon]
    if not digits.isdigit() or int(digits) > MAX_LENGTH:
        raise BadNetstring(f"bad length {digits!r}")
    end = colon + 1 + int(digits)
    if end >= len(data):
        return None, end + 1 - pos  # the text, or its comma, is still arriving
    if data[end] != ord(","):
        raise BadNetstring("',' was expected after the text")
    return data[colon + 1 : end], end + 1


async def handle(address, reader, writer):
    """Answer each netstring as it arrives, until the empty one or the end."""

    def answer(data):
        # Called with every byte not consumed yet, when more arrive.
        pos = 0
        while pos < len(data):
            text, end = next_netstring(data, pos)
            if text is None:  # called again once the netstring is all there
                return twisted_tcp.Need(pos, end)
            if not text:  # goodbye; what follows it is left unread
                return twisted_tcp.Stop(end, "goodbye")
            writer.write(b"%d:%s," % (len(text), text.upper()))
            pos = end
            if writer.bytes_to_write > HIGH_WATER:  # a peer that does not read
                return twisted_tcp.Stop(pos, "wait")
        return pos

    while True:
        try:
            said = await reader.read_one_chunk_at_a_time(answer)
        except BadNetstring as e:
            writer.write(b"ERR %s" % str(e).encode())
            return
        except twisted_tcp.IncompleteReadError:
            return  # the peer left in the middle of a netstring
        if said == "wait":
            await writer.flushed()  # then read on
        elif said == "goodbye":
            writer.write(b"0:,")
            return
        else:
            return  # the end of the stream
