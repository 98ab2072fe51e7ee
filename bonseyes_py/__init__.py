"""Bonseyes virtual premise: the one core that every adapter (CLI, services, Ansible) calls."""

from __future__ import annotations

__version__ = "0.1.0"
