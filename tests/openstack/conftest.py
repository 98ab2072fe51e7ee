"""Fixtures of the OpenStack provisioning tests; the helpers live in openstack_lab.py."""

from __future__ import annotations

from openstack_lab import control_plane

__all__ = ["control_plane"]
