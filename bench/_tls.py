"""
The test PKI of the TLS workloads: a CA and a server certificate for
127.0.0.1 and localhost, both ECDSA P-256, made once per run with
C{cryptography} by run.py (L{make_pki}) in a temporary directory that it
removes at the end.  run.py passes that directory to every worker in the
environment variable C{BENCH_TLS_DIR}; a worker reads the files from it
(L{paths}).

The handshake is outside the timing of every TLS workload (each client
measures from the moment its connection is secured), so the key type
matters little; the cipher is whatever OpenSSL negotiates by default
(TLS 1.3, TLS_AES_256_GCM_SHA384 on the machine of bench/README.md), the
same for every implementation, since all of them are OpenSSL underneath.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

ENV = "BENCH_TLS_DIR"
CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server.key"
MODULES = ("cryptography", "OpenSSL", "service_identity")  # what the TLS workloads need
# The TLS line-echo servers' deadline for a client's handshake (twisted_tcp's
# handshake_timeout=, asyncio's ssl_handshake_timeout=; raw Twisted has none):
# far longer than any measurement, so that tls_pending_handshakes measures
# connections waiting for a handshake, not connections closed for being late.
HANDSHAKE_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Pki:
    ca: str  # the CA certificate (PEM): what clients trust
    cert: str  # the server's certificate (PEM)
    key: str  # the server's private key (PEM, unencrypted)


def _files(directory: str) -> Pki:
    return Pki(*(os.path.join(directory, name) for name in (CA_FILE, CERT_FILE, KEY_FILE)))


def paths() -> Pki:
    """The PKI files of this run (from C{BENCH_TLS_DIR}, set by run.py)."""
    directory = os.environ.get(ENV)
    if not directory:
        raise RuntimeError(f"{ENV} is not set: run the TLS workloads through bench/run.py")
    return _files(directory)


def make_pki(directory: str) -> Pki:
    """Write a new CA and a server certificate for 127.0.0.1/localhost into C{directory}."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "twisted_tcp bench CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    os.makedirs(directory, exist_ok=True)
    pki = _files(directory)
    pem = serialization.Encoding.PEM
    with open(pki.ca, "wb") as f:
        f.write(ca.public_bytes(pem))
    with open(pki.cert, "wb") as f:
        f.write(cert.public_bytes(pem))
    with open(os.open(pki.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
        f.write(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
    return pki


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
