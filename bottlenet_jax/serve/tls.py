"""The credentials both ports serve with, from the same files: --tls-cert/--tls-key (PEM), and with
--tls-client-ca, clients must present a certificate that CA signed (mutual TLS). Plaintext when
none is given (a loopback default). Certificates for trials: serve/certs.py.
"""

from __future__ import annotations

import ssl

import grpc


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise OSError(f"{what} {path}: {e.strerror}") from None


def grpc_credentials(cert: str | None, key: str | None, client_ca: str | None):
    """None (plaintext), or TLS credentials; with `client_ca`, clients must present a certificate
    that CA signed (mutual TLS)."""
    if not cert and not key:
        if client_ca:
            raise ValueError("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is TLS first)")
        return None
    if not (cert and key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    return grpc.ssl_server_credentials(
        [(_read(key, "--tls-key"), _read(cert, "--tls-cert"))],
        root_certificates=_read(client_ca, "--tls-client-ca"),
        require_client_auth=bool(client_ca),
    )


def ssl_context(cert: str | None, key: str | None, client_ca: str | None) -> ssl.SSLContext | None:
    """None (plaintext), or the TLS context of --tls-cert/--tls-key; with `client_ca`, clients must
    present a certificate that CA signed (mutual TLS): the gRPC port's rules."""
    if not cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
