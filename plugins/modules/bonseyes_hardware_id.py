#!/usr/bin/python
# Copyright (c) Bonseyes virtual premise developers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: a host's hardware ID and the facts behind it (step 1 of the protocol, host side)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: bonseyes_hardware_id
short_description: Compute a host's Bonseyes hardware ID and the facts behind it
version_added: 0.1.0
description:
  - Reads stable facts of the managed host (C(/etc/machine-id), the firmware product UUID, permanent MACs
    of physical NICs, the CPU model and the PCI IDs of display controllers) and returns the hardware ID,
    C(hw-) followed by the SHA-256 of their canonical JSON, as the Security Manager records it.
  - A fact that cannot be read is reported as null, never guessed, so the ID is stable between runs.
    The firmware UUID is readable by root only; run with O(ignore:become) if it must be part of the ID.
  - The facts are also set as the host fact C(bonseyes_hardware).
author:
  - Bonseyes virtual premise developers (@bonseyes)
requirements:
  - bonseyes_py on the managed host's Python interpreter
extends_documentation_fragment:
  - bonseyes.vp.attributes
  - bonseyes.vp.attributes.facts
attributes:
  check_mode:
    support: full
    details: The module only reads; it behaves the same in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
  facts:
    support: full
options:
  sysroot:
    description:
      - Directory to read the facts from instead of C(/), for hosts whose root is mounted elsewhere
        (image builds, rescue systems) and for tests.
    type: path
    default: /
seealso:
  - module: bonseyes.vp.bonseyes_host_key
"""

EXAMPLES = r"""
- name: Compute this host's hardware ID
  bonseyes.vp.bonseyes_hardware_id:
  register: hardware

- name: Show the hardware ID and the short host name used in certificates
  ansible.builtin.debug:
    msg: "{{ hardware.hardware_id }} ({{ hardware.host_name }}), {{ ansible_facts.bonseyes_hardware.gpu_count }} GPU(s)"

- name: Compute the hardware ID of a host image mounted at /mnt/image
  bonseyes.vp.bonseyes_hardware_id:
    sysroot: /mnt/image
"""

RETURN = r"""
hardware_id:
  description: The hardware ID, C(hw-) and 64 hex digits.
  returned: success
  type: str
  sample: hw-3f0c9a0a8ae7d7ad4f4d9d7fb2bb1c2b5d4b8bde2b9a3f4f0a9c1e7b5d2c3a41
host_name:
  description: The short name of the host in certificates and runtime IDs, C(h-) and 32 hex digits.
  returned: success
  type: str
  sample: h-3f0c9a0a8ae7d7ad4f4d9d7fb2bb1c2b
facts:
  description: The facts the hardware ID is computed from, plus the GPU count.
  returned: success
  type: dict
  contains:
    machine_id:
      description: Content of C(/etc/machine-id), or null.
      type: str
      returned: success
      sample: 6b1f3e0f0b7a4ad2a6b4d0f9b54d1e26
    product_uuid:
      description: Firmware product UUID in lower case, or null when unreadable.
      type: str
      returned: success
      sample: 4c4c4544-0042-3510-8052-b2c04f4e4d32
    nic_macs:
      description: Sorted permanent MAC addresses of physical NICs.
      type: list
      elements: str
      returned: success
      sample: ["52:54:00:12:34:56"]
    cpu_model:
      description: The first CPU model name, or null.
      type: str
      returned: success
      sample: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz
    gpus:
      description: Sorted C(vendor:device) PCI IDs of display controllers.
      type: list
      elements: str
      returned: success
      sample: ["10de:1eb8"]
    gpu_count:
      description: Number of display controllers found.
      type: int
      returned: success
      sample: 1
ansible_facts:
  description: Facts set on the host.
  returned: success
  type: dict
  contains:
    bonseyes_hardware:
      description: The same as RV(facts), with RV(hardware_id) and RV(host_name) added.
      type: dict
      returned: success
      sample: {"hardware_id": "hw-3f0c...", "host_name": "h-3f0c...", "gpu_count": 0}
"""

import os  # noqa: E402

from ansible_collections.bonseyes.vp.plugins.module_utils.bonseyes_module import (  # noqa: E402
    HAS_BONSEYES_PY,
    BonseyesAnsibleModule,
)

if HAS_BONSEYES_PY:
    from bonseyes_py.identity.hardware import collect_hardware_facts, host_name_for


class HardwareIdModule(BonseyesAnsibleModule):
    argument_spec = dict(sysroot=dict(type="path", default="/"))
    module_kwargs = dict(supports_check_mode=True)

    def run(self):
        sysroot = self.params["sysroot"]
        if not os.path.isdir(sysroot):
            self.fail(msg=f"sysroot {sysroot} is not a directory", check="input")
        facts = collect_hardware_facts(sysroot)
        details = facts.as_dict()
        details.pop("hardware_id")
        host_name = host_name_for(facts.hardware_id)
        return dict(
            changed=False,
            hardware_id=facts.hardware_id,
            host_name=host_name,
            facts=details,
            ansible_facts=dict(bonseyes_hardware=dict(details, hardware_id=facts.hardware_id, host_name=host_name)),
        )


def main():
    HardwareIdModule()()


if __name__ == "__main__":
    main()
