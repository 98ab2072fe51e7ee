#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: verify a host or artefact licence against the Security Manager's root."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_licence_info
short_description: Verify a Bonseyes host or artefact licence and return its claims
version_added: 0.1.0
description:
  - Verifies a licence file (a JWS signed by the Security Manager's licence signer) the one way the core knows, checking
    token type and algorithm, signer chain up to O(root_cert), revocation when O(crl) is given, signature,
    validity window, and every binding listed in O(expect).
  - Returns the verified claims. Fails with a one-line message that starts with the failed check, for example
    C(signature) or C(host-id); the check is also returned as RV(check).
  - A licence holds no private key, so its claims are safe to show.
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py on the managed host's Python interpreter
extends_documentation_fragment:
  - bonseyes.vp.attributes
  - bonseyes.vp.attributes.info_module
options:
  path:
    description:
      - Path of the licence file (a compact JWS).
    type: path
    required: true
  root_cert:
    description:
      - The Security Manager's root certificate (PEM), the trust anchor.
    type: path
    required: true
  intermediate_cert:
    description:
      - Extra intermediate certificates (PEM), for signer chains that do not carry their intermediate.
    type: path
  crl:
    description:
      - CRL (PEM) to check the signer chain against.
    type: path
  kind:
    description:
      - Which licence the file must be. A host licence is never accepted as an artefact licence, nor the reverse.
    type: str
    choices: [host, artefact]
    default: host
  expect:
    description:
      - Bindings the licence must carry. An unset binding is not checked.
    type: dict
    default: {}
    suboptions:
      host_id:
        description: Host ID (short host name) of the runtime ID.
        type: str
      host_ip:
        description: Host IP address of the runtime ID.
        type: str
      image_digest:
        description: OCI image digest (C(sha256:...)) of the runtime ID.
        type: str
      artefact_id:
        description: Artefact ID of the runtime ID.
        type: str
      user_id:
        description: User ID of the runtime ID.
        type: str
      nonce:
        description: Nonce of the runtime ID, as sent in the licence request.
        type: str
      audience:
        description: Audience URI (the host's C(spiffe://) identity).
        type: str
      runtime_cert:
        description: Path of the runtime certificate (PEM) whose thumbprint the licence's C(cnf) claim must hold.
        type: path
      host_licence_id:
        description: For artefact licences, the C(jti) of the host licence it must derive from.
        type: str
seealso:
  - module: bonseyes.vp.bonseyes_ca
"""

EXAMPLES = r"""
- name: Verify the host licence for this host and image
  bonseyes.vp.bonseyes_licence_info:
    path: /var/lib/bonseyes/licences/demo.jwt
    root_cert: /etc/bonseyes/trust/root.pem
    expect:
      host_id: "{{ hardware.host_name }}"
      host_ip: 192.0.2.10
      image_digest: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
  register: licence

- name: Show who may run what
  ansible.builtin.debug:
    msg: "{{ licence.runtime.user_id }} may run {{ licence.runtime.artefact_id }} until {{ licence.expires_at }}"

- name: Check a licence without failing the play, and branch on the failed check
  bonseyes.vp.bonseyes_licence_info:
    path: /var/lib/bonseyes/licences/demo.jwt
    root_cert: /etc/bonseyes/trust/root.pem
  register: licence_check
  failed_when: licence_check is failed and licence_check.check != 'expired'
"""

RETURN = r"""
claims:
  description: All verified claims of the licence.
  returned: success
  type: dict
  sample: {"iss": "spiffe://bonseyes.local/signer/sm", "aud": "spiffe://bonseyes.local/host/h-0df5...",
           "exp": 1767225600, "jti": "0b6c...", "runtime": {"host_id": "h-0df5..."}}
runtime:
  description: The runtime ID the licence is for.
  returned: success
  type: dict
  contains:
    image_digest:
      description: OCI image digest.
      type: str
      returned: success
      sample: sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    artefact_id:
      description: Artefact ID.
      type: str
      returned: success
      sample: face-detector
    user_id:
      description: User ID.
      type: str
      returned: success
      sample: alice
    host_id:
      description: Host ID.
      type: str
      returned: success
      sample: h-0df5dd19de74acdc903c8f8b526a823f
    nonce:
      description: Nonce of the licence request.
      type: str
      returned: success
      sample: q9i5cZr1tqVhJtNw0GJ8Sg
    host_ip:
      description: Host IP address.
      type: str
      returned: success
      sample: 192.0.2.10
licence_id:
  description: The licence's C(jti).
  returned: success
  type: str
  sample: 0b6c2f5e-3f42-4b8e-9a55-0f1f9c7e8d21
kind:
  description: The kind of licence verified.
  returned: success
  type: str
  sample: host
expires_at:
  description: End of the licence's validity, ISO 8601 in UTC.
  returned: success
  type: str
  sample: "2026-01-01T00:00:00+00:00"
check:
  description: On failure, the name of the failed check (for example C(signature), C(expired), C(host-id)).
  returned: failure
  type: str
  sample: signature
"""

import datetime  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
)

if HAS_BONSEYES_PY:
    from bonseyes_py.licences import Expectations, LicenceKind, verify_licence
    from bonseyes_py.pki.certs import load_certificate_chain, load_crl, read_certificate
    from bonseyes_py.pki.verify import TrustStore

# A licence is a few kilobytes; read one byte beyond the core's token limit so that it reports the size.
MAX_LICENCE_FILE_BYTES = 64 * 1024 + 1


def _read(path, limit=None):
    with open(path, "rb") as handle:
        return handle.read(limit) if limit else handle.read()


class LicenceInfoModule(BonseyesAnsibleModule):
    argument_spec = dict(
        path=dict(type="path", required=True),
        root_cert=dict(type="path", required=True),
        intermediate_cert=dict(type="path"),
        crl=dict(type="path"),
        kind=dict(type="str", choices=["host", "artefact"], default="host"),
        expect=dict(
            type="dict",
            default={},
            options=dict(
                host_id=dict(type="str"),
                host_ip=dict(type="str"),
                image_digest=dict(type="str"),
                artefact_id=dict(type="str"),
                user_id=dict(type="str"),
                nonce=dict(type="str"),
                audience=dict(type="str"),
                runtime_cert=dict(type="path"),
                host_licence_id=dict(type="str"),
            ),
        ),
    )
    module_kwargs = dict(supports_check_mode=True)

    def run(self):
        params = self.params
        token = _read(params["path"], MAX_LICENCE_FILE_BYTES).strip()
        trust = TrustStore(
            root=read_certificate(params["root_cert"]),
            intermediates=load_certificate_chain(_read(params["intermediate_cert"]))
            if params["intermediate_cert"] else [],
            crls=[load_crl(_read(params["crl"]))] if params["crl"] else [],
        )
        expect = dict(params["expect"] or {})
        runtime_cert = expect.pop("runtime_cert", None)
        expectations = Expectations(
            runtime_certificate=read_certificate(runtime_cert) if runtime_cert else None,
            **{name: value for name, value in expect.items() if value is not None}
        )
        kind = LicenceKind.HOST if params["kind"] == "host" else LicenceKind.ARTEFACT
        claims = verify_licence(token, trust, kind=kind, expect=expectations)
        utc = datetime.timezone.utc  # noqa: UP017 - managed hosts may run Python older than 3.11
        expires_at = datetime.datetime.fromtimestamp(claims["exp"], utc).isoformat()
        return dict(changed=False, claims=claims, runtime=claims["runtime"], licence_id=claims["jti"],
                    kind=params["kind"], expires_at=expires_at)


def main():
    LicenceInfoModule()()


if __name__ == "__main__":
    main()
