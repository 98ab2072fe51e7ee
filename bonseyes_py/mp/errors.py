"""Errors of the Marketplace, on the core's ``BonseyesError`` so adapters show ``<check>: <message>``."""

from __future__ import annotations

from bonseyes_py.errors import BonseyesError


class VettingError(BonseyesError):
    """An uploaded image broke a vetting rule (setuid file, forbidden path, size, label, libc, ...)."""

    check = "vetting"


class RegistrationError(BonseyesError):
    """Registration could not complete (name taken, archive unreadable, registry or SM failure)."""

    check = "registration"


class RegistryError(BonseyesError):
    """The OCI registry refused a request or could not be reached."""

    check = "registry"
