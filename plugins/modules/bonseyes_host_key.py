#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: ensure a host's private key and its certificate signing request exist."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_host_key
short_description: Ensure a Bonseyes host private key and CSR exist
version_added: 0.1.0
description:
  - Ensures that O(path) holds a private key (PKCS#8 PEM, mode C(0600)) and that O(csr_path) holds a certificate
    signing request for it, signed by the key. The Security Manager issues the host certificate from the CSR,
    so the key never leaves the host.
  - An existing key is kept unless O(regenerate=always). The CSR is rewritten only when it is missing, does not
    match the key, or carries another O(common_name).
  - A key file readable by group or others is refused, not repaired, because such a key may already be exposed.
  - With O(state=absent) the key and the CSR are removed (after a backup with O(backup=true)).
  - O(owner), O(group) and the SELinux options apply to the key and the CSR; O(mode) applies to the key only and
    may not give group or others any access (default C(0600)). The CSR keeps mode C(0644).
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py on the managed host's Python interpreter
extends_documentation_fragment:
  - ansible.builtin.files
  - bonseyes.vp.attributes
  - bonseyes.vp.attributes.files
attributes:
  check_mode:
    support: full
    details: Reports whether the key or the CSR would be written, removed or have their attributes changed, and
      changes nothing.
  diff_mode:
    support: full
    details: Shows the key's algorithm and public key fingerprint and the CSR's label; never key material.
  idempotent:
    support: partial
    details: Idempotent except with O(regenerate=always), which makes a new key on every run.
  safe_file_operations:
    support: full
options:
  state:
    description:
      - Whether the key and the CSR should exist. V(absent) removes both.
    type: str
    choices: [present, absent]
    default: present
  backup:
    description:
      - Keep a timestamped copy of the key and the CSR before they are replaced or removed, as
        community.crypto's C(openssl_privatekey) does. The copy of the key keeps the key's mode.
    type: bool
    default: false
  path:
    description:
      - Path of the private key. Its directory is created (mode C(0700)) if missing.
    type: path
    required: true
  csr_path:
    description:
      - Path of the CSR (PEM, mode C(0644)).
    type: path
    required: true
  common_name:
    description:
      - Label put in the CSR subject, typically the host name from M(bonseyes.vp.bonseyes_hardware_id).
      - The Security Manager sets the certificate's role and name itself; this is for humans.
      - Printable text without surrounding spaces; a label with a control character (such as a newline) fails the
        task, in check mode too. Labels longer than 64 characters are cut to 64.
    type: str
  algorithm:
    description:
      - Key algorithm for a new key.
    type: str
    choices: [ec-p256, ed25519, rsa-3072]
    default: ec-p256
  regenerate:
    description:
      - When to replace an existing key, in the manner of community.crypto's C(openssl_privatekey).
      - V(never) keeps any readable existing key, even one of another algorithm than O(algorithm).
      - V(fail) keeps an existing key of O(algorithm) and fails if it is of another algorithm.
      - V(always) makes a new key on every run; certificates issued for the old key stop matching it.
    type: str
    choices: [never, fail, always]
    default: fail
seealso:
  - module: bonseyes.vp.bonseyes_hardware_id
  - module: bonseyes.vp.bonseyes_ca
  - module: community.crypto.openssl_privatekey
"""

EXAMPLES = r"""
- name: Compute this host's hardware ID
  bonseyes.vp.bonseyes_hardware_id:
  register: hardware

- name: Ensure the host key and CSR exist
  bonseyes.vp.bonseyes_host_key:
    path: /etc/bonseyes/host/host.key
    csr_path: /etc/bonseyes/host/host.csr
    common_name: "{{ hardware.host_name }}"
  register: host_key

- name: Rotate the host key, keeping a copy of the old one
  bonseyes.vp.bonseyes_host_key:
    path: /etc/bonseyes/host/host.key
    csr_path: /etc/bonseyes/host/host.csr
    common_name: "{{ hardware.host_name }}"
    regenerate: always
    backup: true

- name: Let the bonseyes service user own the key
  bonseyes.vp.bonseyes_host_key:
    path: /etc/bonseyes/host/host.key
    csr_path: /etc/bonseyes/host/host.csr
    owner: bonseyes
    group: bonseyes
    mode: "0600"

- name: Remove the host key and CSR
  bonseyes.vp.bonseyes_host_key:
    path: /etc/bonseyes/host/host.key
    csr_path: /etc/bonseyes/host/host.csr
    state: absent
"""

RETURN = r"""
key_path:
  description: Path of the private key.
  returned: success
  type: str
  sample: /etc/bonseyes/host/host.key
csr_path:
  description: Path of the CSR.
  returned: success
  type: str
  sample: /etc/bonseyes/host/host.csr
csr:
  description: The CSR in PEM. Null in check mode when the CSR would be written, and with O(state=absent).
  returned: success
  type: str
  sample: "-----BEGIN CERTIFICATE REQUEST-----\nMIHd...\n-----END CERTIFICATE REQUEST-----\n"
algorithm:
  description: Algorithm of the key; null with O(state=absent).
  returned: success
  type: str
  sample: ec-p256
public_key_sha256:
  description: SHA-256 over the DER public key, in hex. Null in check mode when a new key would be made, and with
    O(state=absent).
  returned: success
  type: str
  sample: 5b0f0b2cbd0e3f9b1a8f4f3e7a2d1c0b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b
key_changed:
  description: Whether a new key was written or the key removed (or would be, in check mode).
  returned: success
  type: bool
  sample: false
csr_changed:
  description: Whether the CSR was written or removed (or would be, in check mode).
  returned: success
  type: bool
  sample: false
backup_file:
  description: Copy of the key made before it was replaced or removed.
  returned: changed and if O(backup) is V(true)
  type: str
  sample: /etc/bonseyes/host/host.key.2442.2026-12-03@19:30:00~
csr_backup_file:
  description: Copy of the CSR made before it was replaced or removed.
  returned: changed and if O(backup) is V(true)
  type: str
  sample: /etc/bonseyes/host/host.csr.2442.2026-12-03@19:30:00~
"""

import os  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
)

if HAS_BONSEYES_PY:
    from bonseyes_py.errors import InputError
    from bonseyes_py.pki.certs import load_csr
    from bonseyes_py.pki.csr import (
        build_csr,
        check_common_name,
        csr_common_name,
        csr_matches_key,
        csr_pem,
        public_key_sha256,
    )
    from bonseyes_py.pki.keys import algorithm_of, generate_private_key, private_key_pem

KEY_MODE = 0o600
CSR_MODE = 0o644
KEY_DIR_MODE = 0o700


class HostKeyModule(BonseyesAnsibleModule):
    argument_spec = dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        path=dict(type="path", required=True),
        csr_path=dict(type="path", required=True),
        common_name=dict(type="str"),
        algorithm=dict(type="str", choices=["ec-p256", "ed25519", "rsa-3072"], default="ec-p256"),
        regenerate=dict(type="str", choices=["never", "fail", "always"], default="fail"),
    )
    module_kwargs = dict(supports_check_mode=True)
    file_module = True

    def run(self):
        key_path, csr_path = self.params["path"], self.params["csr_path"]
        common_name, algorithm = self.params["common_name"], self.params["algorithm"]
        if os.path.realpath(key_path) == os.path.realpath(csr_path):
            self.fail(msg=f"path and csr_path are both {key_path}; the CSR would overwrite the key", check="input")
        if self.params["state"] == "absent":
            return self._remove(key_path, csr_path)
        check_common_name(common_name)  # before anything is read or written, in check mode too
        self.check_secret_mode(key_path, "private key")

        key = self.read_private_key("path", key_path) if os.path.exists(key_path) else None
        before = self._describe(key, csr_path)
        key_changed = key is None or self.params["regenerate"] == "always"
        if (key is not None and not key_changed and self.params["regenerate"] == "fail"
                and algorithm_of(key).value != algorithm):
            raise InputError(f"key {key_path} is {algorithm_of(key).value}, not {algorithm}; set regenerate=always"
                             " to replace it, or never to keep it", check="key-algorithm")
        csr = None
        if not key_changed and os.path.exists(csr_path):
            with open(csr_path, "rb") as handle:
                existing = handle.read()
            try:
                csr = load_csr(existing)
            except InputError:
                csr = None  # an unreadable or forged CSR is replaced, it is not a secret
            if csr is not None and not csr_matches_key(csr, key, common_name):
                csr = None
        csr_changed = key_changed or csr is None

        if self.check_mode:
            after = dict(key=f"new {algorithm} key" if key_changed else before["key"],
                         csr=f"new CSR, CN {common_name}" if csr_changed else before["csr"])
            result = self._result(key if not key_changed else None, csr, key_changed, csr_changed, before, after)
            return self._with_attributes(result, key_changed, csr_changed)

        backups = {}
        if key_changed:
            key = generate_private_key(algorithm)
            self._ensure_directory(os.path.dirname(key_path) or ".")
            backups["backup_file"] = self.replace_file(key_path, private_key_pem(key), KEY_MODE)
        if csr_changed:
            csr = build_csr(key, common_name)
            directory = os.path.dirname(csr_path) or "."
            if not os.path.isdir(directory):
                os.makedirs(directory, 0o755)
            backups["csr_backup_file"] = self.backup(csr_path)
            self.write_file_atomic(csr_path, csr_pem(csr), CSR_MODE)
        result = self._result(key, csr, key_changed, csr_changed, before, self._describe(key, csr_path))
        result.update({name: path for name, path in backups.items() if path})
        return self._with_attributes(result, key_changed, csr_changed)

    def _with_attributes(self, result, key_changed, csr_changed):
        """owner/group/mode of the key, owner/group of the CSR: a difference is a change (predicted in check mode).

        A file that this run would create exists only outside check mode; in check mode its attributes are
        part of the creation already reported.
        """
        result["changed"] = self.apply_file_attributes(self.params["path"], result["changed"])
        result["changed"] = self.apply_file_attributes(self.params["csr_path"], result["changed"], with_mode=False)
        return result

    def _remove(self, key_path, csr_path):
        """state=absent: the key and the CSR go, each after a backup when asked; a second run changes nothing."""
        before = dict(key="present" if os.path.lexists(key_path) else "absent",
                      csr="present" if os.path.lexists(csr_path) else "absent")
        key_removed, key_backup = self.remove_file(key_path)
        csr_removed, csr_backup = self.remove_file(csr_path)
        result = dict(changed=key_removed or csr_removed, key_changed=key_removed, csr_changed=csr_removed,
                      key_path=key_path, csr_path=csr_path, algorithm=None, public_key_sha256=None, csr=None)
        if key_backup:
            result["backup_file"] = key_backup
        if csr_backup:
            result["csr_backup_file"] = csr_backup
        if self.diff_mode:
            result["diff"] = dict(before=before, after=dict(key="absent", csr="absent"))
        return result

    def _ensure_directory(self, directory):
        if not os.path.isdir(directory):
            os.makedirs(directory, KEY_DIR_MODE)
            os.chmod(directory, KEY_DIR_MODE)

    def _describe(self, key, csr_path):
        """What the diff shows: never key material, only the algorithm and public key fingerprint."""
        key_text = "absent"
        if key is not None:
            key_text = f"{algorithm_of(key).value} key sha256:{public_key_sha256(key.public_key())}"
        csr_text = "absent"
        if os.path.exists(csr_path):
            try:
                with open(csr_path, "rb") as handle:
                    csr = load_csr(handle.read())
                csr_text = f"CN {csr_common_name(csr)} for key sha256:{public_key_sha256(csr.public_key())}"
            except InputError as err:
                csr_text = f"unusable ({err})"
        return dict(key=key_text, csr=csr_text)

    def _result(self, key, csr, key_changed, csr_changed, before, after):
        result = dict(
            changed=key_changed or csr_changed,
            key_changed=key_changed,
            csr_changed=csr_changed,
            key_path=self.params["path"],
            csr_path=self.params["csr_path"],
            algorithm=algorithm_of(key).value if key is not None else self.params["algorithm"],
            public_key_sha256=public_key_sha256(key.public_key()) if key is not None else None,
            csr=csr_pem(csr).decode("ascii") if csr is not None else None,
        )
        if self.diff_mode:
            result["diff"] = dict(before=before, after=after)
        return result


def main():
    HostKeyModule()()


if __name__ == "__main__":
    main()
