"""The Security Manager service: every operation of the paper's six steps, without HTTP.

``SecurityManager`` combines the operation mixins over one ``SMCore``. The Flask app is a thin
adapter over it, and so is the admin API below, which a CLI calls in-process with the admin
identity on disk (``admin_api``).

``revocation_store`` answers where a CA directory's revocations live: the SM's database when the CA
belongs to an SM (``SecurityManagerStore``, through the same ``revoke`` the HTTPS route calls), its
CRL file otherwise. ``install_intermediate`` puts a renewed intermediate in place for either kind.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

from cryptography import x509

from bonseyes_py.pki.ca import CertificateAuthority, CRLFileStore, Revocation, RevocationStore, crl_number_of
from bonseyes_py.pki.certs import read_certificate
from bonseyes_py.pki.roles import Identity, Role, identity_of
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
    identity_of(certificate)
    return verify_certificate(certificate, ca.trust_store(), roles=[Role.ADMIN])


def admin_api(directory: Path | str, **overrides: Any) -> tuple[SecurityManager, Identity]:
    """Open an SM directory in-process for administration: (service, admin identity to act as)."""
    config = SMConfig.load(directory, **overrides)
    return SecurityManager.open(config), admin_identity(config)


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class SecurityManagerStore:
    """The revocation store of a CA that belongs to an SM: the SM's database, through ``SecurityManager.revoke``.

    Works next to a running SM (same write lock and transaction as its workers); the CRL it publishes
    is the file the workers reload on their next request.
    """

    def __init__(self, directory: Path | str) -> None:
        self.config = SMConfig.load(directory)
        self.name = f"security-manager:{self.config.directory}"

    def revoke(self, certificate: x509.Certificate, *, reason: str = "") -> Revocation:
        sm = SecurityManager.open(self.config)
        try:
            # The holder of the CA directory acts as the SM's CA; the audit entry names the local account.
            actor = sm.identity(Role.SECURITY_MANAGER, "sm")
            result = sm.revoke(actor, "certificate", format(certificate.serial_number, "x"), reason=reason,
                               certificate=certificate, via=f"bonseyes ca revoke (user {_operator()})")
            crl = sm.ca.current_crl()
        finally:
            sm.close()
        return Revocation(serial=result["serials"][0], store=self.name, crl=sm.ca.paths.crl,
                          crl_number=int(result["crl_number"]), crl_entries=len(list(crl)))


def revocation_store(ca_directory: Path | str) -> RevocationStore:
    """The one place a CA directory's revocations are recorded (and its CRL published from)."""
    ca = CertificateAuthority.load(ca_directory)
    if ca.security_manager is not None:
        return SecurityManagerStore(ca.security_manager)
    return CRLFileStore(ca)


def install_intermediate(ca: CertificateAuthority, certificate: x509.Certificate) -> dict[str, Any]:
    """Install a renewed intermediate in ``ca``; for an SM's CA also its chain files, the audit entry
    and a fresh CRL (which makes every running worker reload the intermediate)."""
    from bonseyes_py.sm.initialise import refresh_chain_files

    previous = ca.install_intermediate(certificate)
    answer: dict[str, Any] = {
        "intermediate": str(ca.paths.intermediate_cert), "serial": format(certificate.serial_number, "x"),
        "previous_serial": format(previous.serial_number, "x"),
        "not_after": certificate.not_valid_after_utc.isoformat(), "security_manager": None}
    if ca.security_manager is not None:
        config = SMConfig.load(ca.security_manager)
        answer["security_manager"] = str(config.directory)
        answer["rewritten"] = [str(path) for path in refresh_chain_files(config, ca)]
        sm = SecurityManager.open(config)
        try:
            answer["crl_number"] = sm.record_intermediate_renewal(previous,
                                                                  via=f"bonseyes ca (user {_operator()})")
        finally:
            sm.close()
    else:
        answer["crl_number"] = crl_number_of(ca.write_crl(list(ca.current_crl())))
    return answer
