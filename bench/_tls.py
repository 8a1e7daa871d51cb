"""
The test PKI of the TLS workloads: the one the tests use
(tests/helpers/pki.py, made with C{trustme}: a CA and a server certificate
for 127.0.0.1 and localhost, both ECDSA P-256), made once per run by run.py
(L{make_pki}) in a temporary directory that it removes at the end.  run.py
passes that directory to every worker in the environment variable
C{BENCH_TLS_DIR}; a worker reads the files from it (L{paths}).  The module
is imported from this checkout (L{_common.use_repo_package}), as
C{twisted_tcp} is.

The handshake is outside the timing of every TLS workload but
tls_server_conc_conns (each client measures from the moment its connection
is secured), so the key type matters little there; in
tls_server_conc_conns, which times full handshakes, it is the same P-256
key for every server.  The cipher is whatever OpenSSL negotiates by default
(TLS 1.3, TLS_AES_256_GCM_SHA384 on the machine of bench/README.md), the
same for every implementation, since all of them are OpenSSL underneath.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from _common import use_repo_package

ENV = "BENCH_TLS_DIR"
# What the TLS workloads need: trustme to make the PKI, the others to speak TLS.
MODULES = ("trustme", "cryptography", "OpenSSL", "service_identity")
# The TLS line-echo servers' deadline for a client's handshake (twisted_tcp's
# handshake_timeout=, asyncio's ssl_handshake_timeout=; raw Twisted has none):
# far longer than any measurement, so that tls_pending_handshakes measures
# connections waiting for a handshake, not connections closed for being late.
HANDSHAKE_TIMEOUT = 3600.0


def _pki() -> ModuleType:
    """tests/helpers/pki.py of this checkout: the test PKI of the tests and the benchmark."""
    use_repo_package()
    from tests.helpers import pki

    return pki


def paths() -> Any:
    """
    The PKI files of this run (from C{BENCH_TLS_DIR}, set by run.py): a
    C{tests.helpers.pki.Pki}, whose C{ca}, C{cert} and C{key} are the paths
    of the CA certificate, the server's certificate and its key (PEM).
    """
    directory = os.environ.get(ENV)
    if not directory:
        raise RuntimeError(f"{ENV} is not set: run the TLS workloads through bench/run.py")
    return _pki().Pki.at(directory)


def make_pki(directory: str) -> Any:
    """Write a new CA and a server certificate for 127.0.0.1/localhost into C{directory}."""
    return _pki().make_pki(directory)


# -- the client and server options of each implementation ---------------------------


def twisted_client_options(host: str) -> object:
    """Twisted's client TLS options: this run's CA trusted, C{host} verified."""
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    with open(paths().ca, "rb") as f:
        ca = Certificate.loadPEM(f.read())
    return optionsForClientTLS(host, trustRoot=ca)


def twisted_server_options() -> object:
    """Twisted's server TLS options (C{CertificateOptions}) for this run's server certificate."""
    from twisted.internet.ssl import PrivateCertificate

    pki = paths()
    with open(pki.cert, "rb") as f, open(pki.key, "rb") as g:
        return PrivateCertificate.loadPEM(f.read() + g.read()).options()


def ssl_client_context() -> object:
    """An C{ssl.SSLContext} for asyncio clients: this run's CA trusted, host names checked."""
    import ssl

    return ssl.create_default_context(cafile=paths().ca)


def ssl_server_context() -> object:
    """An C{ssl.SSLContext} for asyncio servers, with this run's server certificate."""
    import ssl

    pki = paths()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    return context
