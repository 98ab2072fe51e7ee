"""Hardware ID from a fake sysroot: stable, sensitive to every fact, never guessing missing facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from bonseyes_py.identity.hardware import FACT_NAMES, collect_hardware_facts, host_name_for
from bonseyes_py.identity.ids import check_hardware_id


def _write(root: Path, relative: str, content: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


@pytest.fixture
def sysroot(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    _write(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n")
    _write(root, "sys/class/dmi/id/product_uuid", "4C4C4544-0042-3510-8052-B3C04F4E4B32\n")
    _write(root, "sys/class/net/eth0/address", "AA:BB:CC:00:11:22\n")
    (root / "sys/class/net/eth0/device").mkdir()
    _write(root, "sys/class/net/docker0/address", "02:42:ac:11:00:01\n")  # virtual: no device link
    _write(root, "sys/class/net/lo/address", "00:00:00:00:00:00\n")
    _write(root, "proc/cpuinfo", "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)   CPU E5-2680 v4\n"
                                 "processor\t: 1\nmodel name\t: Intel(R) Xeon(R)   CPU E5-2680 v4\n")
    _write(root, "sys/bus/pci/devices/0000:01:00.0/class", "0x030000\n")
    _write(root, "sys/bus/pci/devices/0000:01:00.0/vendor", "0x10de\n")
    _write(root, "sys/bus/pci/devices/0000:01:00.0/device", "0x1eb8\n")
    _write(root, "sys/bus/pci/devices/0000:00:1f.2/class", "0x010601\n")  # SATA controller, not a GPU
    _write(root, "sys/bus/pci/devices/0000:00:1f.2/vendor", "0x8086\n")
    _write(root, "sys/bus/pci/devices/0000:00:1f.2/device", "0x8d02\n")
    return root


def test_facts_read_from_sysroot(sysroot: Path) -> None:
    facts = collect_hardware_facts(sysroot)
    assert facts.machine_id == "0123456789abcdef0123456789abcdef"
    assert facts.product_uuid == "4c4c4544-0042-3510-8052-b3c04f4e4b32"
    assert facts.nic_macs == ["aa:bb:cc:00:11:22"]  # docker0 (virtual) and lo left out
    assert facts.cpu_model == "Intel(R) Xeon(R) CPU E5-2680 v4"
    assert facts.gpus == ["10de:1eb8"]
    assert facts.gpu_count == 1
    summary = facts.as_dict()
    assert summary["gpu_count"] == 1
    assert summary["hardware_id"] == facts.hardware_id
    assert set(FACT_NAMES) <= set(summary)
    assert check_hardware_id(facts.hardware_id) == facts.hardware_id
    assert host_name_for(facts.hardware_id) == "h-" + facts.hardware_id[3:35]


def test_same_id_on_two_runs(sysroot: Path) -> None:
    assert collect_hardware_facts(sysroot).hardware_id == collect_hardware_facts(sysroot).hardware_id


@pytest.mark.parametrize(("relative", "content"), [
    ("etc/machine-id", "ffffffffffffffffffffffffffffffff"),
    ("sys/class/dmi/id/product_uuid", "00000000-0000-0000-0000-000000000001"),
    ("sys/class/net/eth0/address", "aa:bb:cc:00:11:23"),
    ("proc/cpuinfo", "model name\t: AMD EPYC 7763\n"),
    ("sys/bus/pci/devices/0000:01:00.0/device", "0x2204"),
    ("sys/bus/pci/devices/0000:01:00.0/vendor", "0x1002"),
], ids=["machine-id", "product-uuid", "mac", "cpu", "gpu-device", "gpu-vendor"])
def test_changing_any_fact_changes_the_id(sysroot: Path, relative: str, content: str) -> None:
    before = collect_hardware_facts(sysroot).hardware_id
    _write(sysroot, relative, content)
    assert collect_hardware_facts(sysroot).hardware_id != before


def test_added_physical_nic_changes_id_virtual_does_not(sysroot: Path) -> None:
    before = collect_hardware_facts(sysroot).hardware_id
    _write(sysroot, "sys/class/net/veth1234/address", "0a:58:0a:f4:00:01")
    assert collect_hardware_facts(sysroot).hardware_id == before  # virtual interface ignored
    _write(sysroot, "sys/class/net/eth1/address", "aa:bb:cc:00:11:99")
    (sysroot / "sys/class/net/eth1/device").mkdir()
    facts = collect_hardware_facts(sysroot)
    assert facts.nic_macs == ["aa:bb:cc:00:11:22", "aa:bb:cc:00:11:99"]
    assert facts.hardware_id != before


def test_gpus_are_counted(sysroot: Path) -> None:
    _write(sysroot, "sys/bus/pci/devices/0000:02:00.0/class", "0x030200")  # 3D controller
    _write(sysroot, "sys/bus/pci/devices/0000:02:00.0/vendor", "0x10de")
    _write(sysroot, "sys/bus/pci/devices/0000:02:00.0/device", "0x20b0")
    facts = collect_hardware_facts(sysroot)
    assert facts.gpus == ["10de:1eb8", "10de:20b0"]
    assert facts.gpu_count == 2


def test_missing_facts_are_null(tmp_path: Path) -> None:
    facts = collect_hardware_facts(tmp_path)
    assert facts.machine_id is None
    assert facts.product_uuid is None
    assert facts.nic_macs == []
    assert facts.cpu_model is None
    assert facts.gpus == []
    assert facts.as_dict()["machine_id"] is None
    assert b'"machine_id":null' in facts.canonical()
    assert check_hardware_id(facts.hardware_id)


def test_one_missing_fact_is_null_not_guessed(sysroot: Path) -> None:
    """An unreadable product_uuid (root-only on real hosts) is null; the ID stays stable without it."""
    (sysroot / "sys/class/dmi/id/product_uuid").unlink()
    _write(sysroot, "etc/machine-id", "\n")  # empty counts as missing
    _write(sysroot, "proc/cpuinfo", "processor\t: 0\n")  # no model line
    facts = collect_hardware_facts(sysroot)
    assert facts.product_uuid is None
    assert facts.machine_id is None
    assert facts.cpu_model is None
    assert facts.hardware_id == collect_hardware_facts(sysroot).hardware_id


def test_real_machine_is_stable() -> None:
    first, second = collect_hardware_facts("/"), collect_hardware_facts("/")
    assert first == second
    assert first.hardware_id == second.hardware_id
    assert check_hardware_id(first.hardware_id)
