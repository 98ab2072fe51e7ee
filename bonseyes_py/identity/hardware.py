"""Hardware ID: a digest over stable, documented facts of a host.

Facts (each read from the running system, relative to ``sysroot`` so tests can use a fake tree):

- ``machine_id``: ``/etc/machine-id`` (systemd; stable across reboots, regenerated on reinstall);
- ``product_uuid``: ``/sys/class/dmi/id/product_uuid`` (firmware UUID; readable by root only);
- ``nic_macs``: permanent MACs of physical NICs (``/sys/class/net/*`` that have a ``device`` link),
  sorted; virtual interfaces (bridges, veth, docker0) are left out because they change;
- ``cpu_model``: the first ``model name`` in ``/proc/cpuinfo``;
- ``gpus``: ``vendor:device`` PCI IDs of display controllers (PCI class 0x03xxxx), sorted, with the
  count, so that policies can ask for GPU hosts.

The hardware ID is ``hw-`` + SHA-256 over the canonical JSON of those facts; a missing fact is
recorded as null (never guessed), so two runs on the same host give the same ID.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bonseyes_py.errors import InputError

FACT_NAMES = ("machine_id", "product_uuid", "nic_macs", "cpu_model", "gpus")


@dataclass(frozen=True)
class HardwareFacts:
    machine_id: str | None
    product_uuid: str | None
    nic_macs: list[str] = field(default_factory=list)
    cpu_model: str | None = None
    gpus: list[str] = field(default_factory=list)

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @property
    def hardware_id(self) -> str:
        return "hw-" + hashlib.sha256(self.canonical()).hexdigest()

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "gpu_count": self.gpu_count, "hardware_id": self.hardware_id}


def _read(path: Path) -> str | None:
    try:
        value = path.read_text(errors="replace").strip()
    except OSError:
        return None
    return value or None


def _nic_macs(sysroot: Path) -> list[str]:
    macs: list[str] = []
    net = sysroot / "sys/class/net"
    if not net.is_dir():
        return macs
    for interface in sorted(net.iterdir()):
        if not (interface / "device").exists():
            continue  # virtual interface: no backing device
        mac = _read(interface / "address")
        if mac and mac != "00:00:00:00:00:00":
            macs.append(mac.lower())
    return sorted(set(macs))


def _cpu_model(sysroot: Path) -> str | None:
    text = _read(sysroot / "proc/cpuinfo")
    if text is None:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return " ".join(value.split()) or None
    return None


def _gpus(sysroot: Path) -> list[str]:
    devices = sysroot / "sys/bus/pci/devices"
    found: list[str] = []
    if not devices.is_dir():
        return found
    for device in sorted(devices.iterdir()):
        pci_class = _read(device / "class")
        if not pci_class or not pci_class.lower().startswith("0x03"):
            continue
        vendor, product = _read(device / "vendor"), _read(device / "device")
        if vendor and product:
            found.append(f"{vendor.lower().removeprefix('0x')}:{product.lower().removeprefix('0x')}")
    return sorted(found)


def collect_hardware_facts(sysroot: Path | str = "/") -> HardwareFacts:
    """The facts under ``sysroot``, which must be a directory: a file or a missing path would give every
    fact as null, a hardware ID computed over nothing that any such mistake shares."""
    root = Path(sysroot)
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a directory"
        raise InputError(f"hardware facts root {str(sysroot)!r} {what}", check="sysroot")
    uuid = _read(root / "sys/class/dmi/id/product_uuid")
    return HardwareFacts(
        machine_id=_read(root / "etc/machine-id"),
        product_uuid=uuid.lower() if uuid else None,
        nic_macs=_nic_macs(root),
        cpu_model=_cpu_model(root),
        gpus=_gpus(root),
    )


def host_name_for(hardware_id: str) -> str:
    """The short host name used in certificates and runtime IDs: ``h-`` + 32 hex of the hardware ID."""
    return "h-" + hardware_id.removeprefix("hw-")[:32]
