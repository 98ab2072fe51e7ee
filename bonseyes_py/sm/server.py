"""``serve``: the SM under gunicorn with mutual TLS (migrations first, then workers)."""

from __future__ import annotations

from bonseyes_py.sm.app import create_app
from bonseyes_py.sm.config import SMConfig
from bonseyes_py.sm.db import upgrade_database
from bonseyes_py.web.server import ServerSettings, WSGIServer


def server_settings(config: SMConfig) -> ServerSettings:
    return ServerSettings(bind=config.bind, certfile=str(config.tls_certificate), keyfile=str(config.tls_key),
                          ca_file=str(config.ca_bundle), workers=config.workers, worker_class=config.worker_class,
                          threads=config.threads, pidfile=config.pidfile, accesslog=config.accesslog,
                          loglevel=config.loglevel, proc_name="bonseyes-sm")


def serve(config: SMConfig) -> None:
    """Upgrade the database, then run gunicorn in the foreground; each worker builds its own app."""
    upgrade_database(config.database_url)
    WSGIServer(lambda: create_app(config), server_settings(config)).run()
