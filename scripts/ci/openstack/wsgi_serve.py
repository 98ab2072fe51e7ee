"""Serve one OpenStack WSGI application with gunicorn, with an argv the application can parse.

OpenStack services parse ``sys.argv`` with oslo.config when their WSGI module is imported; under the
``gunicorn`` command they would see gunicorn's own options and refuse them. This runs gunicorn's
application class directly and clears ``sys.argv`` before the service module is imported.

    python wsgi_serve.py NAME HOST:PORT package.module[:attribute]
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from gunicorn.app.base import BaseApplication


class ServiceApplication(BaseApplication):  # type: ignore[misc]
    def __init__(self, name: str, bind: str, target: str) -> None:
        self.name, self.bind, self.target = name, bind, target
        super().__init__()

    def load_config(self) -> None:
        threads = int(os.environ.get("BONSEYES_WSGI_THREADS", "8"))
        for key, value in {"bind": self.bind, "workers": 1, "threads": threads, "worker_class": "gthread",
                           "timeout": 300, "graceful_timeout": 2, "proc_name": self.name,
                           "control_socket_disable": True}.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        module, _, attribute = self.target.partition(":")
        sys.argv = [self.name]
        return getattr(importlib.import_module(module), attribute or "application")


if __name__ == "__main__":
    name, bind, target = sys.argv[1:4]
    ServiceApplication(name, bind, target).run()
