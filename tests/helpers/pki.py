"""
The test PKI of the tests and of the benchmark, made with C{trustme}: an
authority, a server certificate it signed for C{localhost} and 127.0.0.1,
and a self-signed certificate that nobody trusts, all ECDSA P-256, written
as PEM files into a directory.

The tests make it once per session (the C{pki} fixture of
C{tests/conftest.py}); the benchmark once per run (C{bench/_tls.py}, which
puts this checkout on C{sys.path} to import this module, and hands the
directory to its workers, which read the files through L{Pki.at}).  Only
the standard library is imported here: C{trustme} when a PKI is made,
Twisted when L{Pki.trust} is called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CA_FILE = "ca.pem"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
SELF_SIGNED_CERT_FILE = "self-signed.pem"
SELF_SIGNED_KEY_FILE = "self-signed-key.pem"
ROOTS_DIRECTORY = "roots"
SERVER_NAMES = ("localhost", "127.0.0.1")  # what the server certificate is valid for


@dataclass(frozen=True)
class Pki:
    """The PEM files of a test PKI, in C{directory}."""

    directory: Path

    @classmethod
    def at(cls, directory: str | os.PathLike[str]) -> Pki:
        """The files of the PKI that L{make_pki} wrote into C{directory}."""
        return cls(Path(directory))

    @property
    def ca(self) -> Path:
        """The authority's certificate: what clients trust."""
        return self.directory / CA_FILE

    @property
    def cert(self) -> Path:
        """The server's certificate, signed by the authority, for L{SERVER_NAMES}."""
        return self.directory / CERT_FILE

    @property
    def key(self) -> Path:
        """The server's private key (unencrypted)."""
        return self.directory / KEY_FILE

    @property
    def self_signed_cert(self) -> Path:
        """A self-signed certificate (another authority's own), which nobody here trusts."""
        return self.directory / SELF_SIGNED_CERT_FILE

    @property
    def self_signed_key(self) -> Path:
        """Its private key: a key that does not go with L{cert} either."""
        return self.directory / SELF_SIGNED_KEY_FILE

    @property
    def roots(self) -> Path:
        """A directory holding only the authority (a C{tls:} description's C{trustRoots})."""
        return self.directory / ROOTS_DIRECTORY

    @property
    def files(self) -> tuple[Path, Path]:
        """The server's certificate and key, as C{tls=} takes them."""
        return self.cert, self.key

    def trust(self, host: str = "localhost") -> Any:
        """Twisted's client TLS options: the authority trusted, C{host} checked."""
        from twisted.internet.ssl import Certificate, optionsForClientTLS

        return optionsForClientTLS(host, trustRoot=Certificate.loadPEM(self.ca.read_bytes()))


def _write(path: Path, pem: bytes, *, secret: bool = False) -> None:
    mode = 0o600 if secret else 0o644  # a private key is for its owner's eyes only
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
        f.write(pem)


def make_pki(directory: str | os.PathLike[str]) -> Pki:
    """Write a new test PKI into C{directory} (made if need be) and return its files."""
    import trustme

    pki = Pki.at(directory)
    pki.roots.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="twisted_tcp tests")
    server = ca.issue_cert(*SERVER_NAMES)
    # Every root is self-signed: an authority of its own that nobody trusts
    # gives the self-signed certificate, and its key.
    stranger = trustme.CA(organization_name="twisted_tcp tests, untrusted")
    _write(pki.ca, ca.cert_pem.bytes())
    _write(pki.roots / CA_FILE, ca.cert_pem.bytes())
    _write(pki.cert, server.cert_chain_pems[0].bytes())
    _write(pki.key, server.private_key_pem.bytes(), secret=True)
    _write(pki.self_signed_cert, stranger.cert_pem.bytes())
    _write(pki.self_signed_key, stranger.private_key_pem.bytes(), secret=True)
    return pki
