#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: register an AI artefact with the Marketplace (vet, add BL, push, sign) and the SM."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_artefact
short_description: Register a Bonseyes AI artefact with the Marketplace and the Security Manager
version_added: 0.1.0
description:
  - Runs the Marketplace's registration pipeline on the marketplace host, in process, with the operator's
    authority, through C(bonseyes_py.mp.service.Marketplace.register_local_image) (the one registration path
    that reads the engine; the Marketplace's network service takes uploads only). It vets the image
    O(image) from the local Docker engine, adds the Bonseyes Layer, pushes it to the registry at
    O(registry_address) with the MP's push credentials, and has the SM's CA (in O(ca_dir), on this host) sign
    the artefact and image IDs. The artefact is then recorded at the SM (C(POST /v1/artefacts)) with the
    identity in O(client_cert), an admin or the Marketplace's.
  - An artefact already in the catalogue and at the SM is left alone; one in the catalogue but missing at the SM
    is only recorded there. A catalogue entry of another owner fails with C(check=artefact-owner).
  - Drift follows the collection's one rule. An SM record that lacks the catalogue's image digest is converged
    (the digest is added at the SM, C(POST /v1/artefacts/<id>/images)) and reported as a change (RV(image_added)).
    What cannot change fails naming the field, an artefact revoked at the SM (C(check=revoked)), and a catalogue
    entry with other O(policies) (C(check=artefact-drift)), since the catalogue keeps an artefact's policies.
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py and the Docker SDK on the marketplace host's Python interpreter
  - a Docker engine on the marketplace host holding O(image)
extends_documentation_fragment:
  - bonseyes.vp.sm_connection
  - bonseyes.vp.attributes
attributes:
  check_mode:
    support: full
    details: Reads the catalogue and the SM's record and registers nothing.
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  name:
    description: Name of the artefact (its artefact ID at the SM).
    type: str
    required: true
  owner:
    description: User ID of the artefact's owner; must be enrolled at the SM.
    type: str
    required: true
  image:
    description:
      - The source image in the local engine (reference or ID), registered for O(owner).
      - The operator vouches that this image is O(owner)'s; users register their own images by upload.
    type: str
    required: true
  policies:
    description: Usage policies stored with the artefact in the catalogue.
    type: dict
    default: {}
  marketplace_dir:
    description: Directory of the Marketplace (its catalogue database).
    type: path
    required: true
  registry_dir:
    description: Directory of the registry push endpoint (its credentials).
    type: path
    required: true
  registry_address:
    description: C(host:port) of the registry push endpoint.
    type: str
    required: true
  ca_dir:
    description: Directory of the SM's CA, whose licence signer signs the artefact and image IDs.
    type: path
    required: true
"""

EXAMPLES = r"""
- name: Register the demo sender artefact
  bonseyes.vp.bonseyes_artefact:
    name: demo-sender
    owner: demo-user
    image: bonseyes-demo/sender:1
    marketplace_dir: /var/lib/bonseyes/marketplace
    registry_dir: /var/lib/bonseyes/registry
    registry_address: 127.0.0.1:15000
    ca_dir: /var/lib/bonseyes/sm/ca
    sm_url: https://127.0.0.1:8443
    client_cert: /var/lib/bonseyes/sm/admin/admin-chain.pem
    client_key: /var/lib/bonseyes/sm/admin/admin.key
    ca_cert: /var/lib/bonseyes/sm/tls/ca-bundle.pem
"""

RETURN = r"""
artefact:
  description:
    - The catalogue entry (name, owner, digest, reference, policies, size).
    - Null in check mode before registration.
  returned: success
  type: dict
  sample:
    name: demo-sender
    owner: demo-user
    digest: sha256:5b0f0b2c
    reference: 127.0.0.1:15000/demo-sender@sha256:5b0f0b2c
registered:
  description: Whether the MP registration pipeline ran (or would run, in check mode).
  returned: success
  type: bool
  sample: false
recorded:
  description: Whether the artefact was recorded at the SM (or would be, in check mode).
  returned: success
  type: bool
  sample: false
image_added:
  description: Whether the catalogue's image digest was added to the SM's record of the artefact (or would be, in
    check mode).
  returned: success
  type: bool
  sample: false
"""

import os  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
)

if HAS_BONSEYES_PY:
    from bonseyes_py.errors import InputError
    from bonseyes_py.mp.catalogue import Catalogue
    from bonseyes_py.mp.registry import RegistryClient, RegistryProcess
    from bonseyes_py.mp.service import Marketplace
    from bonseyes_py.mp.signing import LocalArtefactSigner
    from bonseyes_py.pki.ca import CertificateAuthority
    from bonseyes_py.pki.roles import Identity, Role


class ArtefactModule(BonseyesAnsibleModule):
    argument_spec = dict(
        name=dict(type="str", required=True),
        owner=dict(type="str", required=True),
        image=dict(type="str", required=True),
        policies=dict(type="dict", default={}),
        marketplace_dir=dict(type="path", required=True),
        registry_dir=dict(type="path", required=True),
        registry_address=dict(type="str", required=True),
        ca_dir=dict(type="path", required=True),
    )
    module_kwargs = dict(supports_check_mode=True)
    sm_connection = True

    def run(self):
        name, owner = self.params["name"], self.params["owner"]
        database = os.path.join(self.params["marketplace_dir"], "catalogue.db")
        catalogue = Catalogue.sqlite(database) if os.path.exists(database) else None
        existing = catalogue.get(name) if catalogue is not None else None
        if existing is not None and existing.owner != owner:
            raise InputError(f"artefact {name} belongs to {existing.owner}, not {owner}", check="artefact-owner")
        if existing is not None and existing.policies != self.params["policies"]:
            raise InputError(f"artefact {name} is in the catalogue with policies {existing.policies}, not"
                             f" {self.params['policies']}; the catalogue keeps an artefact's policies: set policies"
                             " to what it holds, or register the image under a new name", check="artefact-drift")
        recorded = self.sm_call("GET", f"/v1/artefacts/{name}", missing_ok=True)
        if recorded is not None and recorded["owner"] != owner:
            raise InputError(f"artefact {name} is recorded at the SM for {recorded['owner']}, not {owner}",
                             check="artefact-owner")
        if recorded is not None and recorded.get("revoked"):
            raise InputError(f"artefact {name} is revoked at the SM; register the image under a new name",
                             check="revoked")
        register, record = existing is None, recorded is None
        add_image = (existing is not None and recorded is not None
                     and existing.digest not in [image.get("digest") for image in recorded.get("images", [])])
        before = dict(catalogue="present" if existing else "absent", sm="present" if recorded else "absent")
        if add_image:
            before["sm"] = f"present without {existing.digest}"
        if self.check_mode or not (register or record or add_image):
            return self._result(register, record, existing, before, add_image)
        if add_image:
            self.sm_call("POST", f"/v1/artefacts/{name}/images", dict(digest=existing.digest, owner=owner),
                         expect=(201,))
            return self._result(False, False, existing, before, True)
        if register:
            ca = CertificateAuthority.load(self.params["ca_dir"])
            credentials = RegistryProcess(self.params["registry_dir"]).credentials()
            os.makedirs(self.params["marketplace_dir"], 0o700, exist_ok=True)
            marketplace = Marketplace(
                catalogue=Catalogue.sqlite(database),
                registry=RegistryClient(f"http://{self.params['registry_address']}", credentials),
                registry_address=self.params["registry_address"], credentials=credentials,
                signer=LocalArtefactSigner(ca))
            existing = marketplace.register_local_image(
                self.params["image"], owner=Identity(ca.trust_domain, Role.USER, owner), name=name,
                policies=self.params["policies"])
        if record:
            self.sm_call("POST", "/v1/artefacts", dict(artefact_id=name, owner=owner, digest=existing.digest),
                         expect=(201,))
        return self._result(register, record, existing, before)

    def _result(self, register, record, artefact, before, image_added=False):
        view = None
        if artefact is not None:
            shown = ("name", "owner", "digest", "reference", "policies", "size")
            view = {k: v for k, v in artefact.as_dict().items() if k in shown}
        result = dict(changed=register or record or image_added, registered=register, recorded=record,
                      image_added=image_added, artefact=view)
        if self.diff_mode:
            result["diff"] = dict(before=before, after=dict(catalogue="present", sm="present"))
        return result


def main():
    ArtefactModule()()


if __name__ == "__main__":
    main()
