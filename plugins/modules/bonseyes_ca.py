#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: ensure the Security Manager's certificate authority exists in a directory."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_ca
short_description: Ensure the Security Manager's certificate authority exists
version_added: 0.1.0
description:
  - Ensures that O(path) holds a Bonseyes certificate authority, the trust anchor of a virtual premise; that is a root
    (which may be kept offline), one online intermediate that signs every leaf and the CRL, a licence-signer
    certificate for licences and signed IDs, and an empty CRL.
  - Creates the CA only when O(path) holds none. An existing CA is never regenerated or modified, whatever the
    options say; when its trust domain or key algorithm differ from O(trust_domain) or O(algorithm), the module
    fails instead, because every certificate and licence issued so far depends on it.
  - Private keys are written with mode C(0600) under C(private/) (mode C(0700)), each atomically. An existing CA
    whose key files group or others may read is refused (C(check=key-file)), naming the file.
  - A root key without O(root_passphrase) is written unencrypted; the module then warns, on this and every later
    run, until the key is encrypted or taken off the host (C(bonseyes ca move-root), see C(docs/pki-and-keys.md)).
  - This module never revokes. C(bonseyes ca revoke) writes a revocation to the CA's one store, the database of the
    Security Manager that owns the CA, or the CRL file of a standalone CA.
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py on the managed host's Python interpreter
extends_documentation_fragment:
  - bonseyes.vp.attributes
attributes:
  check_mode:
    support: full
    details: Reports whether the CA would be created and writes nothing.
  diff_mode:
    support: full
    details: Shows the CA's state, trust domain and algorithm before and after.
  idempotent:
    support: full
    details: An existing CA is loaded and reported, never changed.
options:
  path:
    description:
      - Directory of the CA. Created if missing.
    type: path
    required: true
  trust_domain:
    description:
      - Trust domain of the identities the CA issues (C(spiffe://<trust_domain>/<role>/<name>)).
      - Checked against an existing CA, never applied to one.
    type: str
    default: bonseyes.local
  algorithm:
    description:
      - Key algorithm of the root, the intermediate and the licence signer.
      - Checked against an existing CA, never applied to one.
    type: str
    choices: [ec-p256, ed25519, rsa-3072]
    default: ec-p256
  root_passphrase:
    description:
      - Encrypt the root private key with this passphrase, so the root can be kept offline.
      - Used only when the CA is created. Never logged.
    type: str
seealso:
  - module: bonseyes.vp.bonseyes_host_key
  - module: bonseyes.vp.bonseyes_licence_info
"""

EXAMPLES = r"""
- name: Ensure the Security Manager's CA exists
  bonseyes.vp.bonseyes_ca:
    path: /var/lib/bonseyes/sm/ca
    trust_domain: lab.example.org
  register: sm_ca

- name: Show the root fingerprint that hosts and images will pin
  ansible.builtin.debug:
    msg: "SM root {{ sm_ca.root_cert }} sha256 {{ sm_ca.root_fingerprint }}"

- name: Ensure a CA with an encrypted root key
  bonseyes.vp.bonseyes_ca:
    path: /var/lib/bonseyes/sm/ca
    root_passphrase: "{{ vault_sm_root_passphrase }}"
"""

RETURN = r"""
path:
  description: Directory of the CA.
  returned: success
  type: str
  sample: /var/lib/bonseyes/sm/ca
created:
  description: Whether this run created the CA (or would have, in check mode).
  returned: success
  type: bool
  sample: false
trust_domain:
  description: Trust domain of the CA.
  returned: success
  type: str
  sample: lab.example.org
algorithm:
  description: Key algorithm of the CA.
  returned: success
  type: str
  sample: ec-p256
root_cert:
  description: Path of the root certificate (PEM), the trust anchor to install on hosts and in images.
  returned: success
  type: str
  sample: /var/lib/bonseyes/sm/ca/root.pem
intermediate_cert:
  description: Path of the intermediate certificate (PEM).
  returned: success
  type: str
  sample: /var/lib/bonseyes/sm/ca/intermediate.pem
signer_cert:
  description: Path of the licence-signer certificate (PEM).
  returned: success
  type: str
  sample: /var/lib/bonseyes/sm/ca/signer.pem
crl:
  description: Path of the current CRL (PEM).
  returned: success
  type: str
  sample: /var/lib/bonseyes/sm/ca/crl.pem
root_fingerprint:
  description: SHA-256 over the DER root certificate, in hex. Null in check mode when the CA would be created.
  returned: success
  type: str
  sample: 9a1c8e0d27a4c2fb0fd5a8c6d5e3b8c15c9f5c0f52e8d26a1e3cdb0fbe0f2a11
root_key:
  description:
    - State of the root private key in O(path), C(encrypted), C(plaintext) (warned about) or C(absent) (offline).
  returned: success
  type: str
  sample: encrypted
"""

from pathlib import Path  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
    check_private_key_file,
)

if HAS_BONSEYES_PY:
    from bonseyes_py.pki.ca import CAPaths, CertificateAuthority, root_key_state
    from bonseyes_py.pki.certs import fingerprint_sha256
    from bonseyes_py.pki.keys import algorithm_of


class CertificateAuthorityModule(BonseyesAnsibleModule):
    argument_spec = dict(
        path=dict(type="path", required=True),
        trust_domain=dict(type="str", default="bonseyes.local"),
        algorithm=dict(type="str", choices=["ec-p256", "ed25519", "rsa-3072"], default="ec-p256"),
        root_passphrase=dict(type="str", no_log=True),
    )
    module_kwargs = dict(supports_check_mode=True)

    def run(self):
        paths = CAPaths(Path(self.params["path"]))
        wanted = dict(state="present", trust_domain=self.params["trust_domain"], algorithm=self.params["algorithm"])
        if paths.config.exists():
            if paths.root_key.exists():  # the others are checked as the CA loads them
                check_private_key_file(paths.root_key, "root key")
            authority = CertificateAuthority.load(paths.directory)
            actual = dict(state="present", trust_domain=authority.trust_domain,
                          algorithm=algorithm_of(authority.root.public_key()).value)
            for option in ("trust_domain", "algorithm"):
                if actual[option] != wanted[option]:
                    self.fail(msg=f"the CA in {paths.directory} has {option} {actual[option]}, not {wanted[option]};"
                                  " an existing CA is never regenerated", check="ca-mismatch")
            return self._result(paths, actual, created=False, fingerprint=fingerprint_sha256(authority.root),
                                before=actual)
        if paths.root_cert.exists() or paths.root_key.exists():
            self.fail(msg=f"{paths.directory} holds part of a CA but no ca.json; refusing to overwrite it,"
                          " repair or remove it by hand", check="ca-incomplete")
        if self.check_mode:
            return self._result(paths, wanted, created=True, fingerprint=None, before=dict(state="absent"))
        passphrase = self.params["root_passphrase"]
        authority = CertificateAuthority.init(paths.directory, trust_domain=wanted["trust_domain"],
                                              algorithm=wanted["algorithm"],
                                              root_passphrase=passphrase.encode("utf-8") if passphrase else None)
        return self._result(paths, wanted, created=True, fingerprint=fingerprint_sha256(authority.root),
                            before=dict(state="absent"))

    def _result(self, paths, state, created, fingerprint, before):
        if paths.config.exists():
            root_key = root_key_state(paths.directory)
        else:  # check mode, before creation
            root_key = "encrypted" if self.params["root_passphrase"] else "plaintext"
        if root_key == "plaintext":
            self.ansible.warn(f"SECURITY: the root private key {paths.root_key} is NOT encrypted; whoever reads it can"
                              " mint intermediates for the whole trust domain. Give root_passphrase (Ansible Vault)"
                              " when creating a CA, or take the key off the host with `bonseyes ca move-root`.")
        result = dict(
            changed=created,
            created=created,
            path=str(paths.directory),
            trust_domain=state["trust_domain"],
            algorithm=state["algorithm"],
            root_cert=str(paths.root_cert),
            intermediate_cert=str(paths.intermediate_cert),
            signer_cert=str(paths.signer_cert),
            crl=str(paths.crl),
            root_fingerprint=fingerprint,
            root_key=root_key,
        )
        if self.diff_mode:
            result["diff"] = dict(before=before, after=state)
        return result


def main():
    CertificateAuthorityModule()()


if __name__ == "__main__":
    main()
