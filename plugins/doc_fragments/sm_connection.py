# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Options of every bonseyes.vp module that calls the Security Manager (``sm_connection = True``)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  sm_url:
    description:
      - Base URL of the Security Manager, for example V(https://sm.example.org:8443).
      - Every call uses mutual TLS; plain HTTP is refused.
    type: str
    required: true
  client_cert:
    description:
      - Certificate chain (PEM) of the identity the module presents to the Security Manager, leaf first.
    type: path
    required: true
  client_key:
    description:
      - Private key (PEM) of O(client_cert). It must have mode V(0600); the module refuses looser modes.
    type: path
    required: true
  client_key_passphrase:
    description:
      - Passphrase of O(client_key), if it is encrypted. Never logged.
      - An encrypted key without it, or with a wrong one, fails the task (C(check=key-file)) naming O(client_key)
        before the Security Manager is called.
    type: str
  ca_cert:
    description:
      - Root certificate of the Security Manager's PKI, or its CA bundle (root, then intermediate), used to verify
        the server. A file without a root certificate fails the task (C(check=ca-bundle)).
    type: path
    required: true
  validate_certs:
    description:
      - Verify the Security Manager's certificate against O(ca_cert). Only turn off for debugging.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for each Security Manager call.
    type: float
    default: 30.0
"""
