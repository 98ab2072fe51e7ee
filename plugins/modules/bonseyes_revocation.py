#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: ensure a user, host, artefact or licence is revoked at the Security Manager."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_revocation
short_description: Ensure a user, host, artefact or licence is revoked at the Security Manager
version_added: 0.1.0
description:
  - Revokes O(id) of kind O(kind) at the Security Manager (C(POST /v1/revocations)) with an admin identity; its
    certificates go on the CRL and its unexpired licences are revoked with it.
  - A subject that is already revoked is left alone and reported unchanged, in check mode too, so a teardown
    playbook can be run again. The SM's record (C(GET /v1/users/<id>), C(/v1/hosts/<id>), C(/v1/artefacts/<id>),
    or the published list of revoked licence IDs) says whether it is.
  - A subject the SM does not know fails with C(check=not-found), unless O(missing_ok=true), which reports it
    unchanged (a host that was never enrolled).
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py on the managed host's Python interpreter
extends_documentation_fragment:
  - bonseyes.vp.sm_connection
  - bonseyes.vp.attributes
attributes:
  check_mode:
    support: full
    details: Reads the SM's record and revokes nothing. For a licence the SM does not know, check mode predicts a
      change; the real run then fails (or, with O(missing_ok=true), reports none).
  diff_mode:
    support: full
    details: Before and after are the subject's revocation state.
  idempotent:
    support: full
options:
  kind:
    description: What O(id) names.
    type: str
    choices: [user, host, artefact, licence]
    required: true
  id:
    description: User ID, host ID (C(h-...)), artefact ID, or licence ID (its C(jti)).
    type: str
    required: true
  reason:
    description: Reason recorded in the SM's audit log.
    type: str
    default: ""
  missing_ok:
    description: Report a subject the SM does not know as unchanged instead of failing.
    type: bool
    default: false
seealso:
  - module: bonseyes.vp.bonseyes_host_enrol
  - module: bonseyes.vp.bonseyes_user
"""

EXAMPLES = r"""
- name: Revoke a decommissioned host (a second run reports no change)
  bonseyes.vp.bonseyes_revocation:
    kind: host
    id: h-3f2a0c7d9e8b4a6f1c2d3e4f5a6b7c8d
    reason: decommissioned
    missing_ok: true
    sm_url: https://127.0.0.1:8443
    client_cert: /var/lib/bonseyes/sm/admin/admin-chain.pem
    client_key: /var/lib/bonseyes/sm/admin/admin.key
    ca_cert: /var/lib/bonseyes/sm/tls/ca-bundle.pem
"""

RETURN = r"""
kind:
  description: The kind of subject.
  returned: success
  type: str
  sample: host
id:
  description: The subject.
  returned: success
  type: str
  sample: h-3f2a0c7d9e8b4a6f1c2d3e4f5a6b7c8d
found:
  description: Whether the SM knows the subject (for a licence in check mode, assumed when it is not revoked yet).
  returned: success
  type: bool
  sample: true
revoked:
  description: Whether the subject is revoked after the task (would be, in check mode); false only for an unknown
    subject with O(missing_ok=true).
  returned: success
  type: bool
  sample: true
serials:
  description: Serials (hex) of the certificates this run revoked; empty when nothing was revoked.
  returned: success
  type: list
  elements: str
  sample: ["4b1f0c"]
licences:
  description: IDs of the licences this run revoked; empty when nothing was revoked.
  returned: success
  type: list
  elements: str
  sample: ["0b6c2f5e-3f42-4b8e-9a55-0f1f9c7e8d21"]
"""

from urllib.parse import quote  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
)

if HAS_BONSEYES_PY:
    from bonseyes_py.errors import InputError

RECORDS = {"user": "/v1/users/{}", "host": "/v1/hosts/{}", "artefact": "/v1/artefacts/{}"}


class RevocationModule(BonseyesAnsibleModule):
    argument_spec = dict(
        kind=dict(type="str", choices=["user", "host", "artefact", "licence"], required=True),
        id=dict(type="str", required=True),
        reason=dict(type="str", default=""),
        missing_ok=dict(type="bool", default=False),
    )
    module_kwargs = dict(supports_check_mode=True)
    sm_connection = True

    def run(self):
        kind, subject = self.params["kind"], self.params["id"]
        found, revoked = self._state(kind, subject)
        if not found:
            return self._missing(kind, subject)
        if revoked or self.check_mode:
            return self._result(not revoked, found=True, before=revoked)
        answer = self.sm_call("POST", "/v1/revocations", dict(kind=kind, id=subject, reason=self.params["reason"]),
                              expect=(200,), missing_ok=True)
        if answer is None:  # a licence the SM does not know
            return self._missing(kind, subject)
        return self._result(True, found=True, before=False, serials=answer.get("serials", []),
                            licences=answer.get("licences", []))

    def _state(self, kind, subject):
        """(known to the SM, already revoked), from the SM's own records."""
        if kind == "licence":
            revoked = self.sm_call("GET", "/v1/licences/revoked").get("licence_ids", [])
            return True, subject in revoked
        record = self.sm_call("GET", RECORDS[kind].format(quote(subject, safe="")), missing_ok=True)
        if record is None:
            return False, False
        return True, bool(record.get("revoked"))

    def _missing(self, kind, subject):
        if not self.params["missing_ok"]:
            raise InputError(f"the Security Manager knows no {kind} {subject}; check id, or set missing_ok=true to"
                             " accept that", check="not-found")
        return self._result(False, found=False, before=False, revoked=False)

    def _result(self, changed, found, before, revoked=True, serials=(), licences=()):
        result = dict(changed=changed, kind=self.params["kind"], id=self.params["id"], found=found, revoked=revoked,
                      serials=list(serials), licences=list(licences))
        if self.diff_mode:
            result["diff"] = dict(before=dict(revoked=before), after=dict(revoked=revoked))
        return result


def main():
    RevocationModule()()


if __name__ == "__main__":
    main()
