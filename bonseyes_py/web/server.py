"""gunicorn as the production server of every bonseyes HTTPS service.

``WSGIServer`` is a gunicorn application configured from ``ServerSettings`` rather than from a
command line, so the SM, the Marketplace and test peers start the same way. The ``ssl_context``
server hook returns the per-process cached context of ``bonseyes_py.web.tls``. The workers are
gunicorn's ``gthread``/``sync`` ones with JSON error bodies (``bonseyes_py.web.workers``), so even
what gunicorn refuses itself (URI too long, header fields too large, malformed request line) answers
``{"error": <check>, "message": ...}``.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gunicorn.app.base import BaseApplication

from bonseyes_py.web.tls import PeerMiddleware, WSGIApp, server_ssl_context
from bonseyes_py.web.workers import WORKERS, worker_class_for

WORKER_CLASSES = tuple(WORKERS)


@dataclass(frozen=True)
class ServerSettings:
    """Where and how gunicorn listens. ``ca_file`` holds the SM root and intermediate."""

    bind: str
    certfile: str
    keyfile: str
    ca_file: str
    workers: int = 2
    worker_class: str = "gthread"
    threads: int = 8
    timeout: int = 30
    graceful_timeout: int = 10
    keepalive: int = 5
    pidfile: str | None = None
    accesslog: str | None = None
    errorlog: str = "-"
    loglevel: str = "warning"
    proc_name: str = "bonseyes"


class WSGIServer(BaseApplication):  # type: ignore[misc]
    """A gunicorn application whose WSGI app is built in each worker by ``app_factory``."""

    def __init__(self, app_factory: Callable[[], WSGIApp], settings: ServerSettings,
                 on_starting: Callable[[], None] | None = None) -> None:
        if settings.worker_class not in WORKER_CLASSES:
            raise ValueError(f"worker class {settings.worker_class!r} is not one of {WORKER_CLASSES}")
        self.app_factory = app_factory
        self.settings = settings
        self.on_starting = on_starting
        super().__init__()

    def load_config(self) -> None:
        s = self.settings

        def ssl_context(_config: Any, _default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return server_ssl_context(s.certfile, s.keyfile, s.ca_file)

        options: dict[str, Any] = {
            "bind": [s.bind],
            "workers": s.workers,
            "worker_class": worker_class_for(s.worker_class, s.threads),
            "threads": s.threads,
            "timeout": s.timeout,
            "graceful_timeout": s.graceful_timeout,
            "keepalive": s.keepalive,
            "certfile": s.certfile,
            "keyfile": s.keyfile,
            "ca_certs": s.ca_file,
            "cert_reqs": ssl.CERT_REQUIRED,
            "ssl_context": ssl_context,
            # Peers are identified by their TLS socket only; no proxy header is ever believed.
            "forwarded_allow_ips": "",
            "proxy_allow_ips": "",
            "preload_app": False,
            "errorlog": s.errorlog,
            "loglevel": s.loglevel,
            "proc_name": s.proc_name,
            "limit_request_line": 8190,
            "limit_request_fields": 100,
        }
        if s.pidfile:
            options["pidfile"] = s.pidfile
        if s.accesslog:
            options["accesslog"] = s.accesslog
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        return PeerMiddleware(self.app_factory())


def serve_wsgi(app_factory: Callable[[], WSGIApp], settings: ServerSettings) -> None:
    """Run gunicorn in the foreground until it is told to stop."""
    WSGIServer(app_factory, settings).run()
