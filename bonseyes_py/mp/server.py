"""``init_mp`` and ``serve``: the Marketplace directory and its gunicorn server with mutual TLS.

``init_mp`` gets the MP a role-``marketplace`` certificate: from the SM's CA directory when both are
deployed together, else from a running SM (``POST /v1/services`` with a CSR, as an SM admin). The
key never leaves the MP directory (0600). ``serve`` starts the MP's registry (unless it is managed
elsewhere), then gunicorn; each worker builds its own app (``create_app``) after the fork.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from bonseyes_py.errors import InputError
from bonseyes_py.mp.config import CONFIG_NAME, MPConfig
from bonseyes_py.mp.registry import RegistryProcess
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import certificate_pem, chain_pem, load_certificate, load_certificate_chain
from bonseyes_py.pki.keys import generate_private_key, signature_hash, write_private_key, write_public_file
from bonseyes_py.pki.roles import Role, check_name
from bonseyes_py.settings import check as check_settings
from bonseyes_py.web.client import ClientError, MTLSClient, ServerRefused
from bonseyes_py.web.server import ServerSettings, WSGIServer


def _csr(key: Any, name: str) -> str:
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
           .sign(key, signature_hash(key)))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def _enrol_with_sm(sm_url: str, name: str, csr: str, admin_certificate: Path, admin_key: Path,
                   sm_root: Path) -> tuple[x509.Certificate, list[x509.Certificate]]:
    try:
        with MTLSClient(sm_url, ca_file=sm_root, cert_file=admin_certificate, key_file=admin_key) as sm:
            body = sm.request("POST", "/v1/services", json={"role": Role.MARKETPLACE.value, "name": name, "csr": csr},
                              expected=(201,))
    except ServerRefused as exc:
        raise InputError(f"SM refused to enrol marketplace {name}: {exc.status} {exc.message}", check="enrol") from exc
    except ClientError as exc:
        raise InputError(f"SM at {sm_url} unreachable: {exc.args[0]}", check="sm-unreachable") from exc
    if not isinstance(body, dict) or not isinstance(body.get("chain"), str) or not isinstance(
            body.get("certificate"), str):
        raise InputError("SM answer to POST /v1/services carries no certificate and chain", check="enrol")
    chain = [c for c in load_certificate_chain(body["chain"].encode()) if c.subject != c.issuer]
    return load_certificate(body["certificate"].encode()), chain


def init_mp(directory: Path | str, *, name: str = "marketplace", ca_directory: Path | str | None = None,
            sm_url: str | None = None, admin_certificate: Path | str | None = None,
            admin_key: Path | str | None = None, sm_root: Path | str | None = None,
            server_names: tuple[str, ...] = ("localhost",), server_ips: tuple[str, ...] = ("127.0.0.1",),
            **settings: Any) -> MPConfig:
    """Create a Marketplace directory with its marketplace identity; refuses to touch an existing one."""
    directory = Path(directory)
    if (directory / CONFIG_NAME).exists():
        raise InputError(f"a Marketplace already exists in {directory}; refusing to overwrite it", check="mp-exists")
    check_name(name, "marketplace name")
    config = MPConfig(directory=directory, name=name, ca_directory=str(ca_directory or ""), sm_url=sm_url or "",
                      **settings)
    # A value mp.json could not hold is refused now, before an identity is issued, not at the save.
    check_settings(config, source=str(directory / CONFIG_NAME))
    key = generate_private_key()
    if ca_directory:
        ca = CertificateAuthority.load(ca_directory)
        certificate = ca.issue(key.public_key(), ca.identity(Role.MARKETPLACE, name), dns_names=server_names,
                               ip_addresses=server_ips)
        root, intermediates = ca.root, [ca.intermediate]
    else:
        if not (admin_certificate and admin_key and sm_root):
            raise InputError("enrolling with a running SM needs the admin certificate, key and the SM root",
                             check="usage")
        # The SM names the MP by its identity URI only: clients check the role, not a host name.
        certificate, intermediates = _enrol_with_sm(str(sm_url), name, _csr(key, name), Path(admin_certificate),
                                                    Path(admin_key), Path(sm_root))
        root = load_certificate_chain(Path(sm_root).read_bytes())[0]
    directory.mkdir(parents=True, exist_ok=True)
    write_private_key(config.tls_key, key)
    write_public_file(config.tls_certificate, chain_pem([certificate, *intermediates]))
    write_public_file(config.ca_bundle, chain_pem([root, *intermediates]))
    write_public_file(config.sm_root, certificate_pem(root))
    config.uploads.mkdir(mode=0o700, exist_ok=True)
    config.save()
    return config


def registry_process(config: MPConfig) -> RegistryProcess:
    return RegistryProcess(config.registry_directory, host=config.registry_host, port=config.registry_port)


def server_settings(config: MPConfig) -> ServerSettings:
    return ServerSettings(bind=config.bind, certfile=str(config.tls_certificate), keyfile=str(config.tls_key),
                          ca_file=str(config.ca_bundle), workers=config.workers, worker_class=config.worker_class,
                          threads=config.threads, pidfile=config.pidfile, accesslog=config.accesslog,
                          loglevel=config.loglevel, proc_name="bonseyes-mp",
                          # Uploads of large archives arrive slowly; registration itself runs in a thread.
                          timeout=120)


def serve(config: MPConfig) -> None:
    """Start the registry (when managed here), then run gunicorn in the foreground; stop the registry after."""
    from bonseyes_py.mp.app import create_app

    registry = registry_process(config)
    with contextlib.ExitStack() as stack:
        if config.manage_registry:
            stack.enter_context(registry)
        WSGIServer(lambda: create_app(config), server_settings(config)).run()
