#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: register a host's hardware ID with the Security Manager and get its host certificate."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_host_enrol
short_description: Register a host (owner-signed hardware ID and CSR) with the Security Manager
version_added: 0.1.0
description:
  - Step 1 of the host side. Computes the host's hardware ID from its facts, has the owner sign it (the host ID,
    signed with the owner's user key in O(client_key), which is also the identity this module presents to the SM),
    and registers it with the CSR in O(csr_path) (C(POST /v1/hosts)). The SM names the host after its hardware and
    issues the host certificate, written with the intermediate to O(certificate_path).
  - The host key itself is made on the host by M(bonseyes.vp.bonseyes_host_key) and never leaves it.
  - A host whose certificate at O(certificate_path) is for the CSR's key, names the host its hardware gives,
    verifies against O(ca_cert) and is known to the SM (with the wanted O(premises)) is left alone.
  - A host whose hardware changed since its certificate was issued asks the SM to register it under the old
    name; the SM refuses (C(check=hardware-changed)) and nothing on the host is touched. Set
    O(replace_identity=true) to register it as the new host it now is.
  - O(premises) are the premises the host must serve; premises an admin added the host to at the SM are kept.
  - O(owner), O(group), O(mode) and the SELinux options apply to O(certificate_path) (default mode C(0644)); a
    difference is a change. With O(backup=true) a certificate that is replaced is kept as a timestamped copy.
  - The identity in O(client_cert) and O(client_key) must be the host's owner; O(client_key) may be encrypted
    (O(client_key_passphrase)).
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
  safe_file_operations:
    support: full
  check_mode:
    support: full
    details: Reads the SM's record of the host and registers nothing; a changed hardware fails as it would for real.
  diff_mode:
    support: full
    details: Shows the host name and premises before and after.
  idempotent:
    support: full
options:
  csr_path:
    description: CSR (PEM) of the host key.
    type: path
    required: true
  certificate_path:
    description: Where the host certificate chain (leaf, intermediate) is written, mode C(0644).
    type: path
    required: true
  premises:
    description:
      - Premises the host serves; each must exist at the SM.
      - "Each is a name of 1-128 characters of A-Z a-z 0-9 . _ : @ + - starting with a letter or digit."
    type: list
    elements: str
    default: []
  sysroot:
    description:
      - Root of the tree the hardware facts are read from (a fake tree lets several test hosts share a machine).
      - Must be a directory; anything else fails the task before the SM is asked.
    type: path
    default: /
  replace_identity:
    description:
      - Register a host whose hardware changed as the new host it now is and overwrite O(certificate_path).
    type: bool
    default: false
  backup:
    description:
      - Keep a timestamped copy of O(certificate_path) before it is replaced.
    type: bool
    default: false
seealso:
  - module: bonseyes.vp.bonseyes_host_key
  - module: bonseyes.vp.bonseyes_hardware_id
"""

EXAMPLES = r"""
- name: Register this host with the SM as owned by demo-user
  bonseyes.vp.bonseyes_host_enrol:
    csr_path: /var/lib/bonseyes/bm/tls/host.csr
    certificate_path: /var/lib/bonseyes/bm/tls/host.pem
    premises: [local]
    sm_url: https://127.0.0.1:8443
    client_cert: /var/lib/bonseyes/users/demo-user/user.pem
    client_key: /var/lib/bonseyes/users/demo-user/user.key
    ca_cert: /var/lib/bonseyes/bm/tls/ca-bundle.pem
  register: enrolled
"""

RETURN = r"""
host_id:
  description: The host's name at the SM, derived from its hardware ID.
  returned: success
  type: str
  sample: h-3f2a0c7d9e8b4a6f1c2d3e4f5a6b7c8d
hardware_id:
  description: The host's hardware ID.
  returned: success
  type: str
  sample: hw-5b0f0b2cbd0e3f9b1a8f4f3e7a2d1c0b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b
premises:
  description: Premises the host serves according to the SM (the wanted ones in check mode).
  returned: success
  type: list
  elements: str
  sample: [local]
certificate_path:
  description: Path of the host certificate chain.
  returned: success
  type: str
  sample: /var/lib/bonseyes/bm/tls/host.pem
backup_file:
  description: Copy of the certificate made before it was replaced.
  returned: changed and if O(backup) is V(true)
  type: str
  sample: /var/lib/bonseyes/bm/tls/host.pem.2442.2026-12-03@19:30:00~
"""

import os  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
    load_ca_bundle,
)

if HAS_BONSEYES_PY:
    from bonseyes_py.errors import BonseyesError, InputError
    from bonseyes_py.identity.hardware import collect_hardware_facts, host_name_for
    from bonseyes_py.identity.ids import sign_host_id
    from bonseyes_py.jose import Signer
    from bonseyes_py.pki.certs import load_certificate_chain, load_csr
    from bonseyes_py.pki.roles import Role, check_name, identity_of
    from bonseyes_py.pki.verify import TrustStore, verify_certificate


class HostEnrolModule(BonseyesAnsibleModule):
    argument_spec = dict(
        csr_path=dict(type="path", required=True),
        certificate_path=dict(type="path", required=True),
        premises=dict(type="list", elements="str", default=[]),
        sysroot=dict(type="path", default="/"),
        replace_identity=dict(type="bool", default=False),
    )
    module_kwargs = dict(supports_check_mode=True)
    sm_connection = True
    file_module = True

    def check_params(self):
        for premise in self.params["premises"]:
            check_name(premise, "premise")
        if not os.path.isdir(self.params["sysroot"]):
            raise InputError(f"sysroot {self.params['sysroot']} is not a directory", check="sysroot")

    def run(self):
        facts = collect_hardware_facts(self.params["sysroot"])
        host_name = host_name_for(facts.hardware_id)
        with open(self.params["csr_path"], "rb") as handle:
            csr_pem = handle.read()
        csr = load_csr(csr_pem)
        current_name = self._current_name(csr, *load_ca_bundle(self.params["ca_cert"], "ca_cert"))
        wanted = sorted(set(self.params["premises"]))
        before = dict(host=current_name or "absent", premises=[])
        register_as = None
        if current_name is not None and current_name != host_name:
            if not self.params["replace_identity"]:
                register_as = current_name  # the SM decides; it refuses a name another hardware owns
                if self.check_mode:
                    raise InputError(f"host {current_name} is registered for other hardware: this machine's hardware "
                                     f"gives {host_name}; set replace_identity=true to register it as a new host",
                                     check="hardware-changed")
        elif current_name == host_name:
            record = self.sm_call("GET", f"/v1/hosts/{host_name}", missing_ok=True)
            if record is not None:
                before["premises"] = record["premises"]
                if record.get("revoked"):
                    raise InputError(f"host {host_name} is revoked at the SM", check="revoked")
                if set(wanted) <= set(record["premises"]):
                    return self._result(False, host_name, facts.hardware_id, record["premises"], before)
        if self.check_mode:
            return self._result(True, host_name, facts.hardware_id, wanted, before)

        with open(self.params["client_cert"], "rb") as handle:
            owner_chain = load_certificate_chain(handle.read())
        owner_uri = identity_of(owner_chain[0]).uri
        token = sign_host_id(Signer(self.client_private_key, owner_chain), owner_uri, facts.hardware_id)
        body = dict(host_id=token, csr=csr_pem.decode("ascii"), premises=wanted, gpu_count=len(facts.gpus))
        if register_as is not None:
            body["name"] = register_as
        answer = self.sm_call("POST", "/v1/hosts", body, expect=(201,))
        chain = load_certificate_chain(answer["chain"].encode())
        intermediates = b"".join(_pem(c) for c in chain if c.issuer != c.subject)
        cert_path = self.params["certificate_path"]
        directory = os.path.dirname(cert_path) or "."
        if not os.path.isdir(directory):
            os.makedirs(directory, 0o700)
        backup_file = self.replace_file(cert_path, answer["certificate"].encode() + intermediates, 0o644)
        result = self._result(True, answer["host_id"], answer["hardware_id"], answer["premises"], before)
        if backup_file:
            result["backup_file"] = backup_file
        return result

    def _current_name(self, csr, root, intermediates):
        """The host name of a usable certificate at certificate_path (for this key, valid under the CA), else None."""
        path = self.params["certificate_path"]
        if not os.path.exists(path):
            return None
        try:
            with open(path, "rb") as handle:
                chain = load_certificate_chain(handle.read())
            if chain[0].public_key() != csr.public_key():
                return None
            verify_certificate(chain[0], TrustStore(root=root, intermediates=intermediates), roles=[Role.HOST],
                               extra_intermediates=chain[1:])
            return identity_of(chain[0]).name
        except BonseyesError:
            return None

    def _result(self, changed, host_id, hardware_id, premises, before):
        changed = self.apply_file_attributes(self.params["certificate_path"], changed)
        result = dict(changed=changed, host_id=host_id, hardware_id=hardware_id, premises=sorted(premises),
                      certificate_path=self.params["certificate_path"])
        if self.diff_mode:
            result["diff"] = dict(before=before, after=dict(host=host_id, premises=sorted(premises)))
        return result


def _pem(certificate):
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.PEM)


def main():
    HostEnrolModule()()


if __name__ == "__main__":
    main()
