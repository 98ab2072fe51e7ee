"""Shared HTTPS server stack of the Security Manager and the Marketplace.

gunicorn (never the Flask development server) terminates mutual TLS with one cached
``SSLContext`` per worker process; a WSGI middleware hands the verified TLS peer (certificate and
address) to the Flask app; the app turns every typed error into a JSON ``{"error", "message"}``.
"""

from __future__ import annotations

from bonseyes_py.web.errors import ConflictError, NotFoundError, error_response, http_status_of
from bonseyes_py.web.server import ServerSettings, WSGIServer, serve_wsgi
from bonseyes_py.web.tls import PeerMiddleware, server_ssl_context

__all__ = [
    "ConflictError",
    "NotFoundError",
    "PeerMiddleware",
    "ServerSettings",
    "WSGIServer",
    "error_response",
    "http_status_of",
    "serve_wsgi",
    "server_ssl_context",
]
