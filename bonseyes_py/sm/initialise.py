"""``init_sm``: create a Security Manager directory, its CA, TLS identity, first admin and database."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bonseyes_py.errors import InputError
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import certificate_pem, chain_pem
from bonseyes_py.pki.keys import (
    KeyAlgorithm,
    generate_private_key,
    write_private_key,
    write_public_file,
    write_secret_file,
)
from bonseyes_py.pki.roles import DEFAULT_TRUST_DOMAIN, Role
from bonseyes_py.sm.config import CONFIG_NAME, SMConfig
from bonseyes_py.sm.db import make_engine, session_factory, upgrade_database
from bonseyes_py.sm.models import Certificate, User


def init_sm(directory: Path | str, *, trust_domain: str = DEFAULT_TRUST_DOMAIN, database_url: str = "",
            server_names: tuple[str, ...] = ("localhost",), server_ips: tuple[str, ...] = ("127.0.0.1",),
            admin_name: str = "admin", algorithm: KeyAlgorithm | str = KeyAlgorithm.EC_P256,
            **settings: Any) -> SMConfig:
    """Create everything an SM needs in ``directory``; refuses to touch an existing SM.

    The first admin's key and certificate are written to ``admin/`` (0600 key): that identity is
    how an operator (or the CLI) enrols everyone else.
    """
    directory = Path(directory)
    if (directory / CONFIG_NAME).exists():
        raise InputError(f"a Security Manager already exists in {directory}; refusing to overwrite it",
                         check="sm-exists")
    config = SMConfig(directory=directory, database_url=database_url, **settings)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "private").mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory / "private", 0o700)
    ca = CertificateAuthority.init(config.ca_directory, trust_domain=trust_domain, algorithm=algorithm)

    server_key = generate_private_key(algorithm)
    server_certificate = ca.issue(server_key.public_key(), ca.identity(Role.SECURITY_MANAGER, "sm"),
                                  dns_names=tuple(server_names), ip_addresses=tuple(server_ips))
    write_private_key(config.tls_key, server_key)
    write_public_file(config.tls_certificate, chain_pem([server_certificate, ca.intermediate]))
    write_public_file(config.ca_bundle, chain_pem([ca.root, ca.intermediate]))
    write_secret_file(config.data_key, os.urandom(32))

    admin_key = generate_private_key(algorithm)
    admin_certificate = ca.issue(admin_key.public_key(), ca.identity(Role.ADMIN, admin_name))
    write_private_key(config.admin_key, admin_key)
    write_public_file(config.admin_certificate, certificate_pem(admin_certificate))

    upgrade_database(config.database_url)
    engine = make_engine(config.database_url)
    try:
        with session_factory(engine).begin() as session:
            from bonseyes_py.sm import audit

            session.add(User(user_id=admin_name, organisation="", role=Role.ADMIN.value, revoked=False,
                             created_at=admin_certificate.not_valid_before_utc.timestamp()))
            session.add(Certificate(serial=format(admin_certificate.serial_number, "x"), role=Role.ADMIN.value,
                                    name=admin_name, not_after=admin_certificate.not_valid_after_utc.timestamp(),
                                    created_at=admin_certificate.not_valid_before_utc.timestamp()))
            audit.append(session, actor=ca.identity(Role.SECURITY_MANAGER, "sm").uri, action="sm-initialised",
                         subject=ca.identity(Role.ADMIN, admin_name).uri,
                         details={"trust_domain": trust_domain, "root": certificate_pem(ca.root).decode()})
    finally:
        engine.dispose()
    config.save()
    return config
