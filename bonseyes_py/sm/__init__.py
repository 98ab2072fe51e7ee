"""The Security Manager (SM): CA, identities, registrations, pipelines, licences, audit.

Entry points: ``init_sm`` creates an SM directory, ``create_app`` builds the WSGI app,
``serve`` runs it under gunicorn with mutual TLS, ``admin_api`` opens it in-process for a CLI.
"""

from __future__ import annotations

from bonseyes_py.sm.app import create_app
from bonseyes_py.sm.audit import verify_audit_chain
from bonseyes_py.sm.config import SMConfig
from bonseyes_py.sm.initialise import init_sm
from bonseyes_py.sm.server import serve
from bonseyes_py.sm.service import SecurityManager, admin_api

__all__ = ["SMConfig", "SecurityManager", "admin_api", "create_app", "init_sm", "serve", "verify_audit_chain"]
