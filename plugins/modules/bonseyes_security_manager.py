#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: ensure a Security Manager directory (CA, TLS identity, first admin, database) exists."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_security_manager
short_description: Ensure a Bonseyes Security Manager instance directory exists
version_added: 0.1.0
description:
  - Creates, once, everything a Security Manager needs in O(path) through C(bonseyes_py.sm.initialise.init_sm)
    the CA (root, intermediate, licence signer), the server's TLS key and certificate, the CA bundle, the at-rest
    data key, the first admin identity and the database.
  - An existing instance (C(sm.json) present) is never re-initialised; the module then only reports its paths and
    ensures the admin client chain file (admin certificate then intermediate) exists.
  - "Drift of an existing instance follows one rule: what the module can converge it converges and reports as a
    change (O(server_names) and O(server_ips): the server certificate is reissued for the same server key), what
    it cannot it refuses with C(check=sm-mismatch), naming the option (O(trust_domain), O(algorithm),
    O(admin_name), on which every issued certificate depends)."
  - Key files of an existing instance (server, admin, data and CA keys) that group or others may read are refused
    (C(check=key-file)), naming the file.
  - The service settings (bind address, workers, TTLs) are not this module's business; the
    P(bonseyes.vp.security_manager#role) role templates C(sm.json) after this module ran.
  - The root key is encrypted with a passphrase, from O(root_passphrase) (an Ansible Vault variable) or
    O(root_passphrase_file). Creating an instance without one fails unless O(root_key_plaintext=true) says,
    explicitly, that the root key may stay unencrypted; the module then warns on every run. The root key is
    needed only to renew the intermediate; C(bonseyes ca move-root) takes it off the host (see
    C(docs/pki-and-keys.md)).
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py on the managed host's Python interpreter
extends_documentation_fragment:
  - bonseyes.vp.attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the instance or the admin chain would be created and writes nothing.
  diff_mode:
    support: full
    details: Shows the state (absent/present), the root certificate fingerprint and the server certificate's names
      and addresses.
  idempotent:
    support: full
options:
  path:
    description: Directory of the Security Manager instance; created if missing.
    type: path
    required: true
  trust_domain:
    description: SPIFFE trust domain of the PKI. An existing instance of another trust domain is refused.
    type: str
    default: bonseyes.local
  server_names:
    description: DNS names put in the server certificate; the certificate is reissued when they change.
    type: list
    elements: str
    default: [localhost]
  server_ips:
    description: IP addresses put in the server certificate; the certificate is reissued when they change.
    type: list
    elements: str
    default: [127.0.0.1]
  admin_name:
    description: Name of the first admin identity. An existing instance with another first admin is refused.
    type: str
    default: admin
  algorithm:
    description: Key algorithm of the CA and the server. An existing instance of another algorithm is refused.
    type: str
    choices: [ec-p256, ed25519, rsa-3072]
    default: ec-p256
  root_passphrase:
    description:
      - Passphrase that encrypts the root private key, used only when the instance is created. Never logged.
      - Keep it in Ansible Vault. Mutually exclusive with O(root_passphrase_file).
    type: str
  root_passphrase_file:
    description:
      - File on the managed host holding the root key's passphrase (one line), used only when the instance is
        created. It must not be readable by group or others (mode C(0600)); the module refuses it otherwise.
    type: path
  root_key_plaintext:
    description:
      - Explicitly allow the root key to be written unencrypted when no passphrase is given. Not recommended,
        since whoever reads the key can mint intermediates for the whole trust domain. The module warns whenever
        the root key on disk is unencrypted.
    type: bool
    default: false
seealso:
  - module: bonseyes.vp.bonseyes_ca
"""

EXAMPLES = r"""
- name: Ensure the Security Manager instance exists
  bonseyes.vp.bonseyes_security_manager:
    path: /var/lib/bonseyes/sm
    trust_domain: lab.example.org
    server_names: [sm.lab.example.org]
    server_ips: [192.0.2.10]
    root_passphrase: "{{ vault_security_manager_root_passphrase }}"
  register: sm
"""

RETURN = r"""
created:
  description: Whether the instance was created (or would be, in check mode).
  returned: success
  type: bool
  sample: false
ca_bundle:
  description: Root then intermediate certificate (PEM); the CA file every peer verifies with.
  returned: success
  type: str
  sample: /var/lib/bonseyes/sm/tls/ca-bundle.pem
ca_dir:
  description: Directory of the CA.
  returned: success
  type: str
  sample: /var/lib/bonseyes/sm/ca
admin_cert:
  description: The first admin's certificate chain (leaf then intermediate), what an admin client presents.
  returned: success
  type: str
  sample: /var/lib/bonseyes/sm/admin/admin-chain.pem
admin_key:
  description: The first admin's private key (mode 0600).
  returned: success
  type: str
  sample: /var/lib/bonseyes/sm/admin/admin.key
root_sha256:
  description: SHA-256 fingerprint of the root certificate (hex); null in check mode before creation.
  returned: success
  type: str
  sample: 9f2c0b...
server_certificate_changed:
  description: Whether the server certificate of an existing instance was reissued (or would be, in check mode)
    because O(server_names) or O(server_ips) changed; the service must be restarted to present it.
  returned: success
  type: bool
  sample: false
root_key:
  description:
    - State of the root private key in the CA directory. C(encrypted), C(plaintext) (warned about), or C(absent)
      when it was moved offline.
  returned: success
  type: str
  sample: encrypted
"""

import hashlib  # noqa: E402
import ipaddress  # noqa: E402
import os  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
    check_private_key_file,
    load_ca_bundle,
)

if HAS_BONSEYES_PY:
    from cryptography import x509

    from bonseyes_py.errors import InputError
    from bonseyes_py.pki.ca import CertificateAuthority, root_key_state
    from bonseyes_py.pki.certs import certificate_pem, chain_pem, load_certificate_chain
    from bonseyes_py.pki.keys import algorithm_of, read_passphrase_file, read_private_key
    from bonseyes_py.pki.roles import Role, identity_of
    from bonseyes_py.sm.config import CONFIG_NAME, SMConfig
    from bonseyes_py.sm.initialise import init_sm

ADMIN_CHAIN = "admin-chain.pem"
PLAINTEXT_ROOT_WARNING = (
    "SECURITY: the root private key {key} is NOT encrypted. Whoever reads it can mint intermediates for the whole"
    " trust domain. Create the instance with root_passphrase (Ansible Vault) or root_passphrase_file, or take the"
    " key off the host with `bonseyes ca move-root` (docs/pki-and-keys.md).")


class SecurityManagerModule(BonseyesAnsibleModule):
    argument_spec = dict(
        path=dict(type="path", required=True),
        trust_domain=dict(type="str", default="bonseyes.local"),
        server_names=dict(type="list", elements="str", default=["localhost"]),
        server_ips=dict(type="list", elements="str", default=["127.0.0.1"]),
        admin_name=dict(type="str", default="admin"),
        algorithm=dict(type="str", choices=["ec-p256", "ed25519", "rsa-3072"], default="ec-p256"),
        root_passphrase=dict(type="str", no_log=True),
        root_passphrase_file=dict(type="path", no_log=False),
        root_key_plaintext=dict(type="bool", default=False),
    )
    module_kwargs = dict(supports_check_mode=True, mutually_exclusive=[("root_passphrase", "root_passphrase_file")])

    def _root_passphrase(self):
        """The passphrase that encrypts the root key of a new instance, or None when plaintext was chosen."""
        if self.params["root_passphrase_file"]:
            passphrase = read_passphrase_file(self.params["root_passphrase_file"])
        elif self.params["root_passphrase"]:
            passphrase = self.params["root_passphrase"].encode("utf-8")
        else:
            passphrase = None
        if passphrase is not None and self.params["root_key_plaintext"]:
            raise InputError("root_key_plaintext=true contradicts the root passphrase that was given; drop one",
                             check="root-passphrase")
        if passphrase is None and not self.params["root_key_plaintext"]:
            raise InputError("the Security Manager's root key needs a passphrase: give root_passphrase (keep it in"
                             " Ansible Vault) or root_passphrase_file (mode 0600); to keep the root key unencrypted"
                             " anyway, set root_key_plaintext=true", check="root-passphrase")
        return passphrase

    def run(self):
        path = self.params["path"]
        exists = os.path.exists(os.path.join(path, CONFIG_NAME))
        config = SMConfig(directory=path)
        chain_path = os.path.join(os.path.dirname(str(config.admin_certificate)), ADMIN_CHAIN)
        created = not exists
        passphrase = self._root_passphrase() if created else None
        if created and not self.check_mode:
            config = init_sm(path, trust_domain=self.params["trust_domain"],
                             server_names=tuple(self.params["server_names"]),
                             server_ips=tuple(self.params["server_ips"]), admin_name=self.params["admin_name"],
                             algorithm=self.params["algorithm"], root_passphrase=passphrase)
        server_changed, server_before = False, None
        if exists:
            server_changed, server_before = self._converge(config)
        chain_changed = False
        fingerprint = None
        if os.path.exists(config.ca_bundle):
            root, intermediates = load_ca_bundle(config.ca_bundle, "the CA bundle")
            if not intermediates:
                raise InputError(f"the CA bundle {config.ca_bundle} holds no intermediate; it must hold the root"
                                 " then the intermediate", check="ca-bundle")
            intermediate = intermediates[0]
            fingerprint = hashlib.sha256(certificate_pem(root)).hexdigest()
            with open(config.admin_certificate, "rb") as handle:
                wanted = handle.read() + certificate_pem(intermediate)
            current = None
            if os.path.exists(chain_path):
                with open(chain_path, "rb") as handle:
                    current = handle.read()
            chain_changed = current != wanted
            if chain_changed and not self.check_mode:
                self.write_file_atomic(chain_path, wanted, 0o644)
        elif created:
            chain_changed = True
        if os.path.exists(config.ca_directory):
            root_key = root_key_state(config.ca_directory)
        else:  # check mode, before creation
            root_key = "encrypted" if passphrase else "plaintext"
        if root_key == "plaintext":
            self.ansible.warn(PLAINTEXT_ROOT_WARNING.format(key=os.path.join(str(config.ca_directory), "private",
                                                                             "root.key")))
        result = dict(changed=created or chain_changed or server_changed, created=created,
                      ca_bundle=str(config.ca_bundle), ca_dir=str(config.ca_directory), admin_cert=chain_path,
                      admin_key=str(config.admin_key), root_sha256=fingerprint, root_key=root_key,
                      server_certificate_changed=server_changed)
        if self.diff_mode:
            wanted = self._server_names()
            before = dict(state="present" if exists else "absent")
            if server_before is not None:
                before.update(server_names=server_before[0], server_ips=server_before[1])
            result["diff"] = dict(before=before, after=dict(state="present", root_sha256=fingerprint,
                                                            server_names=wanted[0], server_ips=wanted[1]))
        return result

    def _server_names(self):
        return sorted(set(self.params["server_names"])), sorted({str(ipaddress.ip_address(ip))
                                                                 for ip in self.params["server_ips"]})

    def _converge(self, config):
        """An existing instance against the options: refuse what cannot change, reissue the server certificate
        when only its names or addresses differ. Returns (server certificate changed, its (names, ips) before)."""
        for key, what in ((config.tls_key, "server key"), (config.admin_key, "admin key"),
                          (config.data_key, "data key")):
            check_private_key_file(key, what)
        root_key = os.path.join(str(config.ca_directory), "private", "root.key")
        if os.path.exists(root_key):
            check_private_key_file(root_key, "root key")
        ca = CertificateAuthority.load(config.ca_directory)
        with open(config.admin_certificate, "rb") as handle:
            admin = identity_of(load_certificate_chain(handle.read())[0]).name
        actual = dict(trust_domain=ca.trust_domain, algorithm=algorithm_of(ca.root.public_key()).value,
                      admin_name=admin)
        for option, value in actual.items():
            if value != self.params[option]:
                raise InputError(f"the Security Manager in {self.params['path']} has {option} {value}, not"
                                 f" {self.params[option]}; every certificate it issued depends on it, so it is never"
                                 f" changed: set {option}: {value}, or create a new instance elsewhere",
                                 check="sm-mismatch")
        with open(config.tls_certificate, "rb") as handle:
            server = load_certificate_chain(handle.read())[0]
        san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        before = (sorted(set(san.get_values_for_type(x509.DNSName))),
                  sorted({str(ip) for ip in san.get_values_for_type(x509.IPAddress)}))
        wanted = self._server_names()
        if before == wanted:
            return False, before
        if not self.check_mode:
            key = read_private_key(config.tls_key)
            certificate = ca.issue(key.public_key(), ca.identity(Role.SECURITY_MANAGER, "sm"),
                                   dns_names=tuple(wanted[0]), ip_addresses=tuple(wanted[1]))
            self.write_file_atomic(str(config.tls_certificate), chain_pem([certificate, ca.intermediate]), 0o644)
        return True, before


def main():
    SecurityManagerModule()()


if __name__ == "__main__":
    main()
