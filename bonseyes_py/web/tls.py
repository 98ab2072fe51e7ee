"""TLS contexts for both ends of mutual TLS, and the middleware that hands the TLS peer to the app.

Server side: client certificates are required (``CERT_REQUIRED``) and must chain to the SM root
through the intermediate; TLS 1.2 is the floor and 1.3 is negotiated whenever the client offers it.
Building a context loads the key, the chain and the CA file from disk, which costs more than a
handshake, so each process builds it once (``server_ssl_context`` caches it) instead of once per
connection, which is gunicorn's default.

The application never trusts a header for who the peer is: the certificate and the address both
come from the TLS socket gunicorn passes in ``environ["gunicorn.socket"]``.
"""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cryptography import x509

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

PEER_CERT_KEY = "bonseyes.peer_certificate"
PEER_IP_KEY = "bonseyes.peer_ip"
# A body that never arrives must not pin a worker thread forever.
SOCKET_TIMEOUT_SECONDS = 15.0

_lock = threading.Lock()
_server_contexts: dict[tuple[str, str, str], ssl.SSLContext] = {}


def _harden(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    # ECDHE with AEAD only for TLS 1.2; TLS 1.3 suites are AEAD by construction.
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")


def server_ssl_context(certfile: str | Path, keyfile: str | Path, ca_file: str | Path) -> ssl.SSLContext:
    """The mutual-TLS server context of this process, built on first use and then reused."""
    cache_key = (str(certfile), str(keyfile), str(ca_file))
    with _lock:
        context = _server_contexts.get(cache_key)
        if context is None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            _harden(context)
            context.load_cert_chain(certfile=str(certfile), keyfile=str(keyfile))
            context.load_verify_locations(cafile=str(ca_file))
            context.verify_mode = ssl.CERT_REQUIRED
            _server_contexts[cache_key] = context
        return context


def new_client_ssl_context(ca_file: str, *, certfile: str | None = None, keyfile: str | None = None,
                           password: bytes | None = None, check_hostname: bool = True) -> ssl.SSLContext:
    """A new client context trusting only ``ca_file`` and presenting ``certfile`` if given.

    Not cached, so a key passphrase is never kept as a cache key; ``MTLSClient`` builds one per client
    object and reuses it for every connection of that client.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _harden(context)
    context.load_verify_locations(cafile=ca_file)
    if certfile:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile, password=password)
    context.check_hostname = check_hostname
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@functools.lru_cache(maxsize=4096)
def _parse_der(der: bytes) -> x509.Certificate:
    return x509.load_der_x509_certificate(der)


class PeerMiddleware:
    """Put the TLS peer's certificate and address into the WSGI environ.

    gunicorn exposes the accepted socket as ``environ["gunicorn.socket"]``; after the handshake it
    is an ``ssl.SSLSocket`` whose peer certificate the handshake already verified against the CA.
    """

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sock = environ.get("gunicorn.socket")
        environ[PEER_CERT_KEY] = None
        environ[PEER_IP_KEY] = None
        if isinstance(sock, ssl.SSLSocket):
            der = sock.getpeercert(binary_form=True)
            if der:
                environ[PEER_CERT_KEY] = _parse_der(der)
            try:
                environ[PEER_IP_KEY] = sock.getpeername()[0]
                sock.settimeout(SOCKET_TIMEOUT_SECONDS)
            except OSError:
                pass
        return self.app(environ, start_response)
