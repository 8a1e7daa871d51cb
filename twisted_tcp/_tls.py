"""
TLS: the Twisted options objects behind C{tls=}, made from what a user
gives, and the layers of a transport that TLS (or another protocol wrapper)
sits on.

pyOpenSSL and service_identity (the C{tls} extra) are imported only when TLS
is asked for, so everything else works without them.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer

from ._twisted_private import half_closeable_tls

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred
    from twisted.internet.interfaces import IProtocol, IProtocolFactory

_log = Logger()

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.S
)


def require_tls(what: str) -> None:
    """
    @raise ImportError: naming C{what} and the extra to install, if pyOpenSSL
        or service_identity is missing.
    """
    try:
        import OpenSSL  # noqa: F401
        import service_identity  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"{what} needs pyOpenSSL and service_identity: "
            "pip install 'twisted_tcp[tls]' (or 'twisted[tls]')"
        ) from e


def check_alpn(alpn: object) -> tuple[bytes, ...]:
    """
    The ALPN protocol names of C{alpn=}, in order of preference, as TLS
    sends them: C{None} is none.

    @raise TypeError: if C{alpn} is not a list or tuple of str (a lone str
        is refused: C{"h2"} would be two names, C{"h"} and C{"2"}).
    @raise ValueError: for an empty list, a duplicate, or a name that is not
        1 to 255 printable ASCII characters without spaces and commas.
    """
    if alpn is None:
        return ()
    if not isinstance(alpn, (list, tuple)):
        raise TypeError(
            "alpn must be a list of protocol names in order of preference, such as "
            f"['h2', 'http/1.1'], not {type(alpn).__name__}: {alpn!r:.80}"
        )
    if not alpn:
        raise ValueError("alpn must name at least one protocol (or be None for no ALPN)")
    names: list[bytes] = []
    for name in alpn:
        if not isinstance(name, str):
            raise TypeError(
                f"alpn: a protocol name must be a str such as 'h2', not "
                f"{type(name).__name__}: {name!r:.80}"
            )
        if not (0 < len(name) < 256 and name.isascii() and name.isprintable()) or any(
            c in name for c in " ,"
        ):
            raise ValueError(
                "alpn: a protocol name is 1 to 255 printable ASCII characters without "
                f"spaces or commas, not {name!r:.80}"
            )
        if name.encode() in names:
            raise ValueError(f"alpn: {name!r} is named twice")
        names.append(name.encode())
    return tuple(names)


def client_creator(
    host: str, tls: object, alpn: tuple[bytes, ...] = ()
) -> IOpenSSLClientConnectionCreator:
    """
    The client TLS options for C{tls=}: C{True} verifies the server's
    certificate against the system's trust store and C{host}; an object made
    by Twisted's C{optionsForClientTLS} is used as it is.  With C{alpn},
    the client offers those protocols (in that order).

    @raise TypeError: for anything else.
    @raise ImportError: if TLS support is not installed.
    """
    creator: Any = tls
    if tls is True:
        require_tls("tls=True")
        from twisted.internet.ssl import optionsForClientTLS

        creator = optionsForClientTLS(host)
    elif not IOpenSSLClientConnectionCreator.providedBy(tls):
        raise TypeError(
            "tls must be True (the system's trust store, the host name verified) or client "
            "TLS options from twisted.internet.ssl.optionsForClientTLS(host, trustRoot=...), "
            f"not {type(tls).__name__}: {tls!r:.80}"
        )
    return _OfferingALPN(creator, alpn) if alpn else creator


@implementer(IOpenSSLClientConnectionCreator)
class _OfferingALPN:
    """Client TLS options that offer the ALPN protocols of C{alpn=}."""

    def __init__(self, creator: IOpenSSLClientConnectionCreator, alpn: tuple[bytes, ...]):
        self._creator = creator
        self._alpn = list(alpn)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        connection = self._creator.clientConnectionForTLS(tlsProtocol)
        connection.set_alpn_protos(self._alpn)
        return connection


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    The TLS of a server: Twisted's server TLS options (a context factory
    such as C{CertificateOptions}, or a server connection creator), and the
    application protocols it speaks, for ALPN.

    The protocol is chosen here, on the options' context, for every TLS
    server of this package: the first of C{alpn} that the client offers.
    A client that offers none of them gets the fatal alert RFC 7301 asks
    for; with no C{alpn}, a client that offers ALPN is served with no
    protocol chosen, as one that offers none.  (Twisted's own choice, from
    26.4 on, ends every handshake that offers ALPN to a server that names
    no protocol.)  The options' context is shared: a context also used by
    another server gets this choice too.
    """

    def __init__(self, options: Any, alpn: tuple[bytes, ...] = ()) -> None:
        self.options = options
        self.alpn = alpn
        self._context: Any = None  # the context our choice is installed on
        if callable(getattr(options, "getContext", None)):
            self._prepare(options.getContext())
        elif alpn:
            raise TypeError(
                "alpn= needs TLS options with a getContext() method, such as "
                f"CertificateOptions, not {type(options).__name__}"
            )

    def _prepare(self, context: Any) -> None:
        """Install our ALPN choice on C{context}, which no connection may have used yet."""
        try:
            context.set_alpn_select_callback(self._choose)
        except ValueError:
            # pyOpenSSL refuses to change a context that made connections.
            if self.alpn:
                raise ValueError(
                    "alpn=: these TLS options have served connections already, so their "
                    "ALPN choice cannot be set; give TLS options made for this server"
                ) from None
        self._context = context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> Any:
        from OpenSSL.SSL import Connection

        options = self.options
        if self._context is None:  # a connection creator without a context factory
            return options.serverConnectionForTLS(tlsProtocol)
        context = options.getContext()
        if context is not self._context:  # a context factory that makes a new one each time
            self._prepare(context)
        return Connection(context, None)

    def _choose(self, connection: Any, offered: list[bytes]) -> Any:
        for name in self.alpn:
            if name in offered:
                return name
        from OpenSSL.SSL import NO_OVERLAPPING_PROTOCOLS, Error

        if not self.alpn:
            return NO_OVERLAPPING_PROTOCOLS
        # Raised here, it fails the handshake (with a no_application_protocol
        # alert to the client) and is the reason the connection is lost.
        raise Error(
            [
                (
                    "",
                    "ALPN",
                    f"no application protocol in common: the client offers "
                    f"{_names(offered)}, the server speaks {_names(self.alpn)}",
                )
            ]
        )


def _names(alpn: list[bytes] | tuple[bytes, ...]) -> str:
    return ", ".join(name.decode("ascii", "backslashreplace") for name in alpn) or "none"


def server_options(tls: object, alpn: tuple[bytes, ...] = ()) -> ServerTLS:
    """
    The server TLS of C{tls=}: a C{(certificate_file, key_file)} pair, one
    PEM file holding both, or a Twisted context factory (such as
    C{CertificateOptions}) used as it is; speaking the ALPN protocols
    C{alpn}.  Files are read now, so a missing file or a key that does not
    match the certificate fails here.

    @raise TypeError: for anything else.
    @raise ValueError: naming the file, if a file cannot be read or used.
    @raise ImportError: if TLS support is not installed.
    """
    if IOpenSSLServerConnectionCreator.providedBy(tls) or callable(
        getattr(tls, "getContext", None)
    ):
        return ServerTLS(tls, alpn)
    if isinstance(tls, (str, os.PathLike)):
        certificate = key = tls
    elif isinstance(tls, tuple) and len(tls) == 2:
        certificate, key = tls
    else:
        raise TypeError(
            "tls must be (certificate_file, key_file), one PEM file holding both, or a "
            f"Twisted context factory such as CertificateOptions, not {type(tls).__name__}: "
            f"{tls!r:.80}"
        )
    return ServerTLS(load_certificate(certificate, key), alpn)


def _read(path: object, what: str) -> bytes:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"the TLS {what} file must be a path, not {type(path).__name__}")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"cannot read the TLS {what} file {os.fspath(path)!r}: {e}") from None


def load_certificate(certificate: object, key: object) -> Any:
    """
    Server TLS options from PEM files: the certificate file holds the
    server's certificate followed by any intermediate ones, the key file its
    private key (both may be one file).

    @raise ValueError: naming the file that cannot be read or used.
    """
    require_tls("a TLS server")
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from OpenSSL import SSL
    from twisted.internet.ssl import CertificateOptions

    certificate_pem, key_pem = _read(certificate, "certificate"), _read(key, "key")
    found = _PEM_CERTIFICATE.findall(certificate_pem)
    if not found:
        raise ValueError(f"no PEM certificate in the TLS certificate file {certificate!s}")
    try:
        chain = [x509.load_pem_x509_certificate(pem) for pem in found]
    except ValueError as e:
        raise ValueError(f"the TLS certificate file {certificate!s} is not valid: {e}") from None
    try:
        private_key = load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as e:
        raise ValueError(f"no usable PEM private key in the TLS key file {key!s}: {e}") from None
    # pyOpenSSL takes cryptography's objects (and deprecates its own).
    leaf: Any = chain[0]
    options = CertificateOptions(
        privateKey=private_key,  # type: ignore[arg-type]
        certificate=leaf,
        extraCertChain=chain[1:],  # type: ignore[arg-type]
    )
    try:
        options.getContext()  # checks that the key is the certificate's
    except SSL.Error as e:
        raise ValueError(
            f"the TLS key in {key!s} does not go with the certificate in {certificate!s}: "
            f"{describe_tls_error(e)}"
        ) from None
    return options


def describe_tls_error(error: BaseException, host: str | None = None) -> str:
    """A short text for what made a TLS handshake fail."""
    name = type(error).__name__
    if name == "VerificationError":  # service_identity's: the name did not match
        names = []
        for mismatch in getattr(error, "errors", ()):
            wanted = getattr(mismatch, "mismatched_id", None)
            value = getattr(wanted, "hostname", None) or getattr(wanted, "ip", None)
            if value is not None:
                names.append(value.decode() if isinstance(value, bytes) else str(value))
        return f"the server's certificate is not valid for {' or '.join(names) or host}"
    reasons = error.args[0] if error.args else None
    if isinstance(reasons, list) and all(isinstance(r, tuple) and len(r) == 3 for r in reasons):
        # pyOpenSSL's errors: [(library, function, reason), ...]
        text = "; ".join(str(r[2]) for r in reasons if r[2]) or name
        if "wrong version number" in text or "record layer" in text:
            text += " (does the peer speak TLS on this port?)"
        elif text == "http request":
            text += " (a plaintext HTTP client on the TLS port?)"
        return text
    if name in ("ConnectionLost", "ConnectionDone"):
        return "the connection was closed during the handshake (does the peer speak TLS?)"
    return f"{name}: {error}"


def wrap_factory(tls: Any, factory: Any, *, client: bool) -> Any:
    """
    C{factory}, behind a TLS layer with the TLS options C{tls} (a
    L{ServerTLS} for a server): Twisted's, but for half-close under TLS 1.3
    (L{half_closeable_tls}).
    """
    from twisted.protocols.tls import TLSMemoryBIOFactory

    wrapped = TLSMemoryBIOFactory(tls, client, factory)
    wrapped.protocol = half_closeable_tls()
    wrapped.noisy = False
    return wrapped


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """
    TLS over another client endpoint, as Twisted's C{wrapClientTLS}, with
    the TLS layer of L{wrap_factory}.
    """

    def __init__(self, tls: IOpenSSLClientConnectionCreator, endpoint: IStreamClientEndpoint):
        self._tls = tls
        self._endpoint = endpoint

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        def unwrapped(tls: Any) -> IProtocol:
            protocol: IProtocol = tls.wrappedProtocol
            return protocol

        wrapped = wrap_factory(self._tls, factory, client=True)
        return self._endpoint.connect(wrapped).addCallback(unwrapped)


# -- the layers of a transport --------------------------------------------------


def _tls_class() -> type | None:
    # Without twisted.protocols.tls imported, no transport can be TLS; this
    # avoids importing OpenSSL to find out.
    module = sys.modules.get("twisted.protocols.tls")
    return getattr(module, "TLSMemoryBIOProtocol", None)


def split_transport(transport: Any) -> tuple[Any, Any]:
    """
    C{(sink, tls)}: the transport under every protocol wrapper (TLS, the
    PROXY protocol), which writes to the kernel, and the TLS layer if there
    is one, else C{None}.
    """
    tls_class = _tls_class()
    tls = None
    sink = transport
    while isinstance(sink, ProtocolWrapper):
        if tls is None and tls_class is not None and isinstance(sink, tls_class):
            tls = sink
        sink = sink.transport
    return sink, tls
