"""``init_sm``: create a Security Manager directory, its CA, TLS identity, first admin and database.

The CA directory records that it belongs to this SM (``ca.json``), so every revocation of its
certificates, whichever command makes it, lands in the SM's database (``service.revocation_store``).
The root key is needed only to sign intermediates: ``root_passphrase`` encrypts it, and
``root_directory`` (an offline medium) keeps it out of the SM directory altogether. Operators'
entry points (the Ansible module and role) require one of them or an explicit opt-out; this
function is the building block and takes what it is given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bonseyes_py.errors import InputError
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import certificate_pem, chain_pem, load_certificate_chain
from bonseyes_py.pki.keys import (
    KeyAlgorithm,
    generate_private_key,
    write_private_key,
    write_public_file,
    write_secret_file,
)
from bonseyes_py.pki.roles import DEFAULT_TRUST_DOMAIN, Role
from bonseyes_py.settings import check as check_settings
from bonseyes_py.sm.config import CONFIG_NAME, SMConfig
from bonseyes_py.sm.db import make_engine, session_factory, upgrade_database
from bonseyes_py.sm.models import Certificate, User


def init_sm(directory: Path | str, *, trust_domain: str = DEFAULT_TRUST_DOMAIN, database_url: str = "",
            server_names: tuple[str, ...] = ("localhost",), server_ips: tuple[str, ...] = ("127.0.0.1",),
            admin_name: str = "admin", algorithm: KeyAlgorithm | str = KeyAlgorithm.EC_P256,
            root_passphrase: bytes | None = None, root_directory: Path | str | None = None,
            **settings: Any) -> SMConfig:
    """Create everything an SM needs in ``directory``; refuses to touch an existing SM.

    The first admin's key and certificate are written to ``admin/`` (0600 key): that identity is
    how an operator (or the CLI) enrols everyone else. ``root_passphrase`` encrypts the root key;
    ``root_directory`` puts it there (offline) instead of in ``ca/private``.
    """
    directory = Path(directory)
    if (directory / CONFIG_NAME).exists():
        raise InputError(f"a Security Manager already exists in {directory}; refusing to overwrite it",
                         check="sm-exists")
    config = SMConfig(directory=directory, database_url=database_url, **settings)
    # A value sm.json could not hold is refused now, before the CA and the admin exist, not at the save.
    check_settings(config, source=str(directory / CONFIG_NAME))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "private").mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory / "private", 0o700)
    ca = CertificateAuthority.init(config.ca_directory, trust_domain=trust_domain, algorithm=algorithm,
                                   root_passphrase=root_passphrase, root_directory=root_directory,
                                   security_manager=directory)

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


ADMIN_CHAIN_NAME = "admin-chain.pem"


def refresh_chain_files(config: SMConfig, ca: CertificateAuthority) -> list[Path]:
    """Rewrite the files that carry the intermediate after it was renewed: the server's chain, the CA
    bundle peers verify with, and the admin client chain when it exists. Keys are untouched."""
    written = []
    leaf = load_certificate_chain(config.tls_certificate.read_bytes())[0]
    written.append(write_public_file(config.tls_certificate, chain_pem([leaf, ca.intermediate])))
    written.append(write_public_file(config.ca_bundle, chain_pem([ca.root, ca.intermediate])))
    admin_chain = config.admin_certificate.parent / ADMIN_CHAIN_NAME
    if admin_chain.exists():
        admin = load_certificate_chain(admin_chain.read_bytes())[0]
        written.append(write_public_file(admin_chain, chain_pem([admin, ca.intermediate])))
    return written
