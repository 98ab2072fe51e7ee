"""The Security Manager service: every operation of the paper's six steps, without HTTP.

``SecurityManager`` combines the operation mixins over one ``SMCore``. The Flask app is a thin
adapter over it, and so is the admin API below, which a CLI calls in-process with the admin
identity on disk (``admin_api``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import read_certificate
from bonseyes_py.pki.roles import Identity, identity_of
from bonseyes_py.pki.verify import verify_certificate
from bonseyes_py.sm import audit
from bonseyes_py.sm.artefacts import ArtefactOperations
from bonseyes_py.sm.bm_client import BonseyesModuleClient, HttpsBonseyesModuleClient
from bonseyes_py.sm.config import SMConfig
from bonseyes_py.sm.db import make_engine
from bonseyes_py.sm.hosts import HostOperations
from bonseyes_py.sm.licensing import LicenceOperations
from bonseyes_py.sm.pipelines import PipelineOperations
from bonseyes_py.sm.premises import PremiseOperations
from bonseyes_py.sm.revocation import RevocationOperations
from bonseyes_py.sm.users import UserOperations


class SecurityManager(UserOperations, HostOperations, ArtefactOperations, PremiseOperations, PipelineOperations,
                      LicenceOperations, RevocationOperations):
    """All SM operations over one database, CA and BM client."""

    @classmethod
    def open(cls, config: SMConfig, *, bm_client: BonseyesModuleClient | None = None,
             **kwargs: Any) -> SecurityManager:
        ca = CertificateAuthority.load(config.ca_directory)
        if bm_client is None:
            bm_client = HttpsBonseyesModuleClient(config.tls_certificate, config.tls_key, config.ca_bundle,
                                                  timeout_seconds=config.bm_timeout_seconds)
        return cls(config, ca, make_engine(config.database_url, synchronous=config.sqlite_synchronous),
                   bm_client=bm_client, **kwargs)

    def audit_log(self, *, after: int = 0, limit: int = 100, action: str | None = None,
                  subject: str | None = None) -> list[dict[str, Any]]:
        with self.reading() as session:
            return audit.query(session, after=after, limit=max(1, min(limit, 1000)), action=action, subject=subject)

    def verify_audit(self) -> audit.ChainReport:
        with self.reading() as session:
            return audit.verify_audit_chain(session)

    def close(self) -> None:
        self._closing.set()
        self.flush_heartbeats()
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()
        self.write_lock.close()


def admin_identity(config: SMConfig, certificate_path: Path | None = None) -> Identity:
    """The identity of an admin certificate on disk, verified like any TLS peer's."""
    certificate = read_certificate(certificate_path or config.admin_certificate)
    ca = CertificateAuthority.load(config.ca_directory)
    from bonseyes_py.pki.roles import Role

    identity_of(certificate)
    return verify_certificate(certificate, ca.trust_store(), roles=[Role.ADMIN])


def admin_api(directory: Path | str, **overrides: Any) -> tuple[SecurityManager, Identity]:
    """Open an SM directory in-process for administration: (service, admin identity to act as)."""
    config = SMConfig.load(directory, **overrides)
    return SecurityManager.open(config), admin_identity(config)
