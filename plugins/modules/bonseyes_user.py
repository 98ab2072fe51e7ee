#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: enrol a user with the Security Manager from a CSR and keep the issued certificate."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_user
short_description: Enrol a Bonseyes user with the Security Manager from a CSR
version_added: 0.1.0
description:
  - Enrols O(user_id) at the Security Manager (C(POST /v1/users)) from the CSR in O(csr_path), so the user's key
    never leaves the host it was made on (make both with M(community.crypto.openssl_privatekey) and
    M(community.crypto.openssl_csr)), and writes the issued certificate followed by the intermediate to
    O(certificate_path).
  - A user the SM already knows, whose certificate at O(certificate_path) the SM issued for the CSR's key, is left
    alone. The SM never enrols a user twice, so a known user without such a local certificate fails with
    C(check=user-exists) rather than being silently re-keyed.
  - A known user whose O(role) or O(organisation) at the SM differs from the options, or who is revoked, fails
    with C(check=user-drift) (or C(check=revoked)) naming the field, because the SM cannot change either of an
    enrolled user; the module refuses rather than report the user as it is not.
  - O(owner), O(group), O(mode) and the SELinux options apply to O(certificate_path) (default mode C(0644)); a
    difference is a change. With O(backup=true) a certificate that is replaced is kept as a timestamped copy.
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py on the managed host's Python interpreter
extends_documentation_fragment:
  - ansible.builtin.files
  - bonseyes.vp.sm_connection
  - bonseyes.vp.attributes
  - bonseyes.vp.attributes.files
attributes:
  check_mode:
    support: full
    details: Asks the SM whether the user exists (a read) and enrols nobody; drift fails as it would for real.
  diff_mode:
    support: full
    details: Shows whether the user exists, with role and organisation, before and after.
  idempotent:
    support: full
  safe_file_operations:
    support: full
options:
  user_id:
    description: The unique user ID.
    type: str
    required: true
  csr_path:
    description: CSR (PEM) of the user's key.
    type: path
    required: true
  certificate_path:
    description: Where the issued certificate chain (leaf, intermediate) is written, mode C(0644).
    type: path
    required: true
  role:
    description: Role of the new identity.
    type: str
    choices: [user, admin]
    default: user
  organisation:
    description: Organisation recorded with the user.
    type: str
    default: ""
  backup:
    description:
      - Keep a timestamped copy of O(certificate_path) before it is replaced.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Enrol the demo user
  bonseyes.vp.bonseyes_user:
    user_id: demo-user
    csr_path: /var/lib/bonseyes/users/demo-user/user.csr
    certificate_path: /var/lib/bonseyes/users/demo-user/user.pem
    sm_url: https://127.0.0.1:8443
    client_cert: /var/lib/bonseyes/sm/admin/admin-chain.pem
    client_key: /var/lib/bonseyes/sm/admin/admin.key
    ca_cert: /var/lib/bonseyes/sm/tls/ca-bundle.pem
"""

RETURN = r"""
user_id:
  description: The user ID.
  returned: success
  type: str
  sample: demo-user
uri:
  description: SPIFFE URI of the user's identity; null in check mode before enrolment.
  returned: success
  type: str
  sample: spiffe://bonseyes.local/user/demo-user
certificate_path:
  description: Path of the certificate chain.
  returned: success
  type: str
  sample: /var/lib/bonseyes/users/demo-user/user.pem
backup_file:
  description: Copy of the certificate made before it was replaced.
  returned: changed and if O(backup) is V(true)
  type: str
  sample: /var/lib/bonseyes/users/demo-user/user.pem.2442.2026-12-03@19:30:00~
"""

import os  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
)

if HAS_BONSEYES_PY:
    from bonseyes_py.errors import InputError
    from bonseyes_py.pki.certs import load_certificate_chain, load_csr
    from bonseyes_py.pki.roles import identity_of


class UserModule(BonseyesAnsibleModule):
    argument_spec = dict(
        user_id=dict(type="str", required=True),
        csr_path=dict(type="path", required=True),
        certificate_path=dict(type="path", required=True),
        role=dict(type="str", choices=["user", "admin"], default="user"),
        organisation=dict(type="str", default=""),
    )
    module_kwargs = dict(supports_check_mode=True)
    sm_connection = True
    file_module = True

    def run(self):
        user_id, cert_path = self.params["user_id"], self.params["certificate_path"]
        with open(self.params["csr_path"], "rb") as handle:
            csr_pem = handle.read()
        csr = load_csr(csr_pem)
        local = self._local_identity(cert_path, csr)
        known = self.sm_call("GET", f"/v1/users/{user_id}", missing_ok=True)
        wanted = dict(user="present", role=self.params["role"], organisation=self.params["organisation"])
        if known is not None:
            self._refuse_drift(known)
            if local is None or local[1] not in known.get("serials", []):
                raise InputError(f"user {user_id} is already enrolled at the SM but {cert_path} holds no certificate "
                                 f"the SM issued for the key of {self.params['csr_path']}; the SM enrols a user once",
                                 check="user-exists")
            return self._result(False, local[0], wanted)
        before = dict(user="absent")
        if self.check_mode:
            return self._result(True, None, before)
        enrolment = dict(user_id=user_id, csr=csr_pem.decode("ascii"), role=self.params["role"],
                         organisation=self.params["organisation"])
        answer = self.sm_call("POST", "/v1/users", enrolment, expect=(201,))
        chain = load_certificate_chain(answer["chain"].encode())
        intermediates = "".join(c.public_bytes(_pem()).decode() for c in chain if c.issuer != c.subject)
        directory = os.path.dirname(cert_path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700)
        backup_file = self.replace_file(cert_path, (answer["certificate"] + intermediates).encode(), 0o644)
        result = self._result(True, answer["uri"], before)
        if backup_file:
            result["backup_file"] = backup_file
        return result

    def _refuse_drift(self, known):
        """A known user is what the options say, or the task fails naming the field (the SM cannot change it)."""
        user_id = self.params["user_id"]
        if known.get("revoked"):
            raise InputError(f"user {user_id} is revoked at the SM; enrol a new user ID", check="revoked")
        for field in ("role", "organisation"):
            if known.get(field) != self.params[field]:
                raise InputError(f"user {user_id} is enrolled at the SM with {field} {known.get(field)!r}, not"
                                 f" {self.params[field]!r}; the SM cannot change the {field} of an enrolled user:"
                                 f" set {field}: {known.get(field)!r}, or revoke the user and enrol a new ID",
                                 check="user-drift")

    def _local_identity(self, cert_path, csr):
        """(URI, hex serial) of the certificate at ``cert_path`` if it is this user's and for the CSR's key."""
        if not os.path.exists(cert_path):
            return None
        with open(cert_path, "rb") as handle:
            leaf = load_certificate_chain(handle.read())[0]
        identity = identity_of(leaf)
        if identity.name != self.params["user_id"] or leaf.public_key() != csr.public_key():
            return None
        return identity.uri, format(leaf.serial_number, "x")

    def _result(self, changed, uri, before):
        changed = self.apply_file_attributes(self.params["certificate_path"], changed)
        result = dict(changed=changed, user_id=self.params["user_id"], uri=uri,
                      certificate_path=self.params["certificate_path"])
        if self.diff_mode:
            result["diff"] = dict(before=before, after=dict(user="present", role=self.params["role"],
                                                            organisation=self.params["organisation"]))
        return result


def _pem():
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.PEM


def main():
    UserModule()()


if __name__ == "__main__":
    main()
