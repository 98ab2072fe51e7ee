"""Typed errors of the trust core.

Every verification failure raises one of these; nothing in the core returns ``False`` for "invalid".
The message is one line that names the check that failed, so adapters (CLI, HTTP, Ansible) can
show it unchanged.
"""

from __future__ import annotations


class BonseyesError(Exception):
    """Base of every error the core raises on purpose."""

    check: str = "error"

    def __init__(self, message: str, *, check: str | None = None) -> None:
        if check is not None:
            self.check = check
        super().__init__(message.replace("\n", " "))

    def __str__(self) -> str:
        return f"{self.check}: {self.args[0]}"


class InputError(BonseyesError):
    """Malformed or oversized input: bad PEM, JSON, base64, or sizes beyond the limits."""

    check = "input"


class CertificateError(BonseyesError):
    """A certificate failed chain, validity window, role or revocation checks."""

    check = "certificate"


class LicenceError(BonseyesError):
    """A licence or signed ID failed one of its checks (signature, chain, time, audience, binding)."""

    check = "licence"


class PolicyError(BonseyesError):
    """A policy text failed to parse or to validate against the schema."""

    check = "policy"


class PolicyDenied(BonseyesError):
    """The policy engine denied a request."""

    check = "policy-denied"


class KeyFileError(BonseyesError):
    """A key file could not be read, decrypted, or has unsafe permissions."""

    check = "key-file"
