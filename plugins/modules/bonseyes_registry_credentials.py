#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: ensure the Marketplace's push credentials for its registry exist (password + htpasswd)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_registry_credentials
short_description: Ensure the Marketplace's registry push password and htpasswd file exist
version_added: 0.1.0
description:
  - The Marketplace is the only writer of its OCI registry. This module ensures a random password exists in
    C(<path>/private/marketplace-password) (mode C(0600), generated once, never returned) and that
    C(<path>/htpasswd) (mode C(0600)) holds a bcrypt hash of it for O(username), the file the registry's
    C(auth.htpasswd) section names.
  - The password is kept across runs; the htpasswd line is rewritten only when it no longer matches it.
  - A password file that group or others may read is refused (C(check=key-file)), naming the file.
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py (and bcrypt) on the managed host's Python interpreter
extends_documentation_fragment:
  - bonseyes.vp.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  path:
    description: The registry's directory (as C(bonseyes_py.mp.registry.RegistryProcess) lays it out).
    type: path
    required: true
  username:
    description: The push user.
    type: str
    default: marketplace
"""

EXAMPLES = r"""
- name: Ensure the registry push credentials exist
  bonseyes.vp.bonseyes_registry_credentials:
    path: /var/lib/bonseyes/registry
"""

RETURN = r"""
htpasswd:
  description: Path of the htpasswd file.
  returned: success
  type: str
  sample: /var/lib/bonseyes/registry/htpasswd
password_path:
  description: Path of the 0600 password file (the password itself is never returned).
  returned: success
  type: str
  sample: /var/lib/bonseyes/registry/private/marketplace-password
"""

import os  # noqa: E402
import secrets  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
    check_private_key_file,
)

if HAS_BONSEYES_PY:
    import bcrypt


class RegistryCredentialsModule(BonseyesAnsibleModule):
    argument_spec = dict(
        path=dict(type="path", required=True),
        username=dict(type="str", default="marketplace"),
    )
    module_kwargs = dict(supports_check_mode=True)

    def run(self):
        path, username = self.params["path"], self.params["username"]
        password_path = os.path.join(path, "private", "marketplace-password")
        htpasswd = os.path.join(path, "htpasswd")
        password = None
        if os.path.exists(password_path):
            check_private_key_file(password_path, "password file")
            with open(password_path) as handle:
                password = handle.read().strip()
        password_changed = not password
        htpasswd_changed = password_changed or not self._matches(htpasswd, username, password)
        if not self.check_mode:
            if password_changed:
                os.makedirs(os.path.dirname(password_path), 0o700, exist_ok=True)
                os.chmod(os.path.dirname(password_path), 0o700)
                password = secrets.token_urlsafe(32)
                self.write_file_atomic(password_path, password.encode(), 0o600)
            if htpasswd_changed:
                hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
                self.write_file_atomic(htpasswd, f"{username}:{hashed}\n".encode(), 0o600)
        return dict(changed=password_changed or htpasswd_changed, htpasswd=htpasswd, password_path=password_path)

    @staticmethod
    def _matches(htpasswd, username, password):
        if not password or not os.path.exists(htpasswd):
            return False
        with open(htpasswd) as handle:
            for line in handle:
                user, _sep, hashed = line.strip().partition(":")
                if user == username and hashed:
                    return bcrypt.checkpw(password.encode(), hashed.encode())
        return False


def main():
    RegistryCredentialsModule()()


if __name__ == "__main__":
    main()
