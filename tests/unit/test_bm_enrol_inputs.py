"""``enrol_host`` refuses a malformed bind address or port itself, before it reads keys or calls the SM.

The CLI checks these too, but the Ansible module and Python callers reach the core directly: a BM
enrolled with ``bind_ip: not-an-ip`` would be written to bm.json and fail only when it starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bonseyes_py.bm.enrol import OwnerIdentity, enrol_host
from bonseyes_py.errors import InputError


@pytest.mark.parametrize(("bind_ip", "port", "check"), [
    ("not-an-ip", 8444, "bind-ip"), ("999.1.1.1", 8444, "bind-ip"), ("127.0.0.1\n", 8444, "bind-ip"),
    ("127.0.0.1", 0, "port"), ("127.0.0.1", 70000, "port"), ("127.0.0.1", True, "port"),
])
def test_malformed_bind_address_or_port_is_refused_before_anything_is_done(tmp_path: Path, bind_ip: str,
                                                                            port: int, check: str) -> None:
    owner = OwnerIdentity(certificate=tmp_path / "missing.pem", key=tmp_path / "missing.key")
    with pytest.raises(InputError) as caught:
        enrol_host(tmp_path / "bm", sm_url="https://127.0.0.1:1", ca_bundle=tmp_path / "ca.pem", owner=owner,
                   bind_ip=bind_ip, port=port)
    assert caught.value.check == check
    assert not (tmp_path / "bm").exists()
