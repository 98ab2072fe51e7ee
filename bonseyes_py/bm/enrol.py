"""Host registration (step 1, host part): the owner vouches for the machine and installs its BM.

The BM's key pair is generated here and never leaves ``tls/host.key``; the SM signs a certificate
from its CSR. The owner signs the hardware ID with their user certificate (the host ID). Several
"hosts" on one test machine pass ``sysroot`` (a fake /etc, /sys, /proc tree) so each gets its own
hardware ID the same way a real host would: from facts, never from a free-form name.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from bonseyes_py.bm.config import BMConfig
from bonseyes_py.errors import InputError
from bonseyes_py.identity.hardware import collect_hardware_facts
from bonseyes_py.identity.ids import sign_host_id
from bonseyes_py.jose import Signer
from bonseyes_py.pki.certs import load_certificate_chain, read_certificate
from bonseyes_py.pki.keys import generate_private_key, read_private_key, signature_hash, write_private_key
from bonseyes_py.pki.roles import identity_of
from bonseyes_py.settings import check as check_settings
from bonseyes_py.web.client import ClientError, MTLSClient, ServerRefused


@dataclass(frozen=True)
class OwnerIdentity:
    """The host owner's user certificate (leaf first, then the intermediate) and key, as files."""

    certificate: Path
    key: Path


def enrol_host(directory: Path | str, *, sm_url: str, ca_bundle: Path, owner: OwnerIdentity, bind_ip: str,
               port: int, registry: str = "", premises: list[str] | None = None, sysroot: Path | str = "/",
               **settings: Any) -> BMConfig:
    try:
        ipaddress.ip_address(bind_ip)
    except ValueError as exc:
        raise InputError(f"bind IP {bind_ip!r} is not an IP address", check="bind-ip") from exc
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise InputError(f"port {port!r} is not a TCP port (1-65535)", check="port")
    directory = Path(directory)
    if (directory / "bm.json").exists():
        raise InputError(f"a Bonseyes Module already exists in {directory}", check="bm-exists")
    # A value bm.json could not hold is refused now, before the host is registered at the SM (the SM gives
    # the real host ID; this placeholder only lets the other settings be checked).
    check_settings(BMConfig(directory=directory, host_id="pending-registration", sm_url=sm_url, bind_ip=bind_ip,
                            port=port, registry=registry, **settings), source=str(directory / "bm.json"))
    facts = collect_hardware_facts(sysroot)
    owner_chain = load_certificate_chain(Path(owner.certificate).read_bytes())
    owner_key = read_private_key(owner.key)
    owner_uri = identity_of(owner_chain[0]).uri
    host_id_token = sign_host_id(Signer(owner_key, owner_chain), owner_uri, facts.hardware_id)

    key = generate_private_key()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bonseyes-bm")]))
           .sign(key, signature_hash(key)))  # type: ignore[arg-type]
    body: dict[str, Any] = {"host_id": host_id_token,
                            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
                            "premises": premises or [], "gpu_count": facts.gpu_count}
    try:
        with MTLSClient(sm_url, ca_file=ca_bundle, cert_file=owner.certificate, key_file=owner.key) as sm:
            answer = sm.request("POST", "/v1/hosts", json=body, expected=(201,))
    except ServerRefused as exc:
        raise InputError(f"SM refused the host registration ({exc.status}): {exc.message}",
                         check="host-registration") from exc
    except ClientError as exc:
        raise InputError(f"host registration at the SM failed: {exc.args[0]}", check="sm-unreachable") from exc
    if not isinstance(answer, dict):
        raise InputError("SM answer to POST /v1/hosts is not a JSON object", check="host-registration")
    config = BMConfig(directory=directory, host_id=answer["host_id"], sm_url=sm_url, bind_ip=bind_ip, port=port,
                      registry=registry, **settings)
    config.ensure_private_dirs()
    write_private_key(config.key, key)
    config.certificate.parent.mkdir(parents=True, exist_ok=True)
    config.certificate.write_text(answer["certificate"] + _intermediates_pem(answer["chain"]))
    config.ca_bundle.write_bytes(Path(ca_bundle).read_bytes())
    config.save()
    return config


def _intermediates_pem(chain_pem: str) -> str:
    """The non-root certificates of a chain, PEM: what a TLS server sends after its leaf."""
    certificates = load_certificate_chain(chain_pem.encode())
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certificates
                   if c.issuer != c.subject)


def host_certificate(config: BMConfig) -> x509.Certificate:
    return read_certificate(config.certificate)
