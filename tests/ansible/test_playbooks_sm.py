"""Integration playbooks of the modules that talk to the SM, run by ansible-playbook against a real SM.

The community.crypto pattern: check mode -> real -> check mode again -> real again, asserting
``is changed`` / ``is not changed`` inside the playbook; a failed assert fails the run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from test_modules_sm_unit import sysroot, unique
from test_playbooks import recap

pytestmark = pytest.mark.integration
PLAYBOOKS = Path(__file__).parent / "playbooks_sm"


def test_user_and_host_enrol_check_real_check_real(ansible_playbook, sm_admin_args: dict[str, Any],
                                                   tmp_path: Path) -> None:
    variables = {
        "sm_url": sm_admin_args["sm_url"], "admin_cert": sm_admin_args["client_cert"],
        "admin_key": sm_admin_args["client_key"], "ca_cert": sm_admin_args["ca_cert"],
        "user_id": unique("integration"), "output_dir": str(tmp_path / "out"),
        "sysroot": str(sysroot(tmp_path / "root", unique("machine"))),
        "changed_sysroot": str(sysroot(tmp_path / "changed", unique("machine"))),
        "ansible_python_interpreter": sys.executable,
    }
    args = [arg for key, value in variables.items() for arg in ("-e", f"{key}={value}")]
    run = ansible_playbook("-i", "localhost,", "-c", "local", *args,
                           str(PLAYBOOKS / "bonseyes_user_and_host_enrol.yml"))
    assert run.returncode == 0, run.stdout + run.stderr
    counters = recap(run.stdout)
    assert counters["failed"] == 0
    assert counters["ignored"] == 1
