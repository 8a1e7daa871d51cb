"""
twisted_tcp: the API of Jane Street Async's C{Tcp} module on Twisted.

Where to connect (L{to_host_and_port}, L{to_file}, L{to_endpoint}) and where
to listen (L{on_port}, L{on_port_chosen_by_os}, L{on_file}, L{on_endpoint}),
over TLS with C{tls=} or any Twisted endpoint; L{connect_sock},
L{connect} and L{with_connection}, each with one deadline for the whole
attempt and an C{interrupt}; L{persistent_connection}, which keeps one
connection up, reconnecting with back-off; a pull-style L{Reader} and a
L{Writer} over a connection; and a L{Server} that runs a handler per
connection behind a connection limit and a limit per client address, and
counts what it does (L{Server.stats}).  Every function that waits returns a
Deferred, and the reactor is only imported when a function is called
without one.
"""

from ._buffer import Need, Stop
from ._connect import connect, connect_sock, with_connection
from ._connection import Socket
from ._errors import (
    BufferAgeLimitError,
    ConnectInterruptedError,
    ConnectTimeoutError,
    IncompleteReadError,
    LineTooLongError,
    ReadInProgressError,
    TLSHandshakeError,
    WriterClosedError,
)
from ._persistent import ConnectionEvent, PersistentConnection, persistent_connection
from ._reader import Reader
from ._server import Server
from ._settings import DEFAULTS, Settings
from ._stats import DurationHistogram, ServerStats
from ._where import (
    OnEndpoint,
    OnFile,
    OnPort,
    ToEndpoint,
    ToFile,
    ToHostAndPort,
    WhereToConnect,
    WhereToListen,
    on_endpoint,
    on_file,
    on_port,
    on_port_chosen_by_os,
    to_endpoint,
    to_file,
    to_host_and_port,
)
from ._writer import Writer

__version__ = "0.1.0"

__all__ = [
    "DEFAULTS",
    "BufferAgeLimitError",
    "ConnectInterruptedError",
    "ConnectTimeoutError",
    "ConnectionEvent",
    "DurationHistogram",
    "IncompleteReadError",
    "LineTooLongError",
    "Need",
    "OnEndpoint",
    "OnFile",
    "OnPort",
    "PersistentConnection",
    "ReadInProgressError",
    "Reader",
    "Server",
    "ServerStats",
    "Settings",
    "Socket",
    "Stop",
    "TLSHandshakeError",
    "ToEndpoint",
    "ToFile",
    "ToHostAndPort",
    "WhereToConnect",
    "WhereToListen",
    "Writer",
    "WriterClosedError",
    "connect",
    "connect_sock",
    "on_endpoint",
    "on_file",
    "on_port",
    "on_port_chosen_by_os",
    "persistent_connection",
    "to_endpoint",
    "to_file",
    "to_host_and_port",
    "with_connection",
]
