"""Integration playbooks of the modules that need the whole stack: bonseyes_artefact and bonseyes_pipeline.

One ``ansible-playbook`` run on inventories/local deploys a real SM, Marketplace registry and BM under
supervisord (the deployment plays of site.yml, in a temporary state directory on free ports), then runs
tests/ansible/playbooks_stack/bonseyes_artefact_and_pipeline.yml in the same run, so the endpoints the roles
publish as facts are there: check mode -> real -> check mode again -> real again for each module, with
the asserts inside the playbook (a failed assert fails the run).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from test_molecule import free_port
from test_playbooks import recap
from test_site_premise import stop_supervisord

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.docker]
REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = ["playbooks/security_manager.yml", "playbooks/marketplace.yml", "playbooks/users_and_premises.yml",
              "playbooks/bonseyes_module.yml"]
PLAYBOOK = Path(__file__).parent / "playbooks_stack" / "bonseyes_artefact_and_pipeline.yml"


def remove_images(name: str) -> None:
    """Remove the image built for ``name`` and the copies the MP pushed and the BM pulled (their repository
    names carry the artefact name)."""
    listing = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}} {{.ID}}"], capture_output=True,
                             text=True, check=False).stdout
    ids = {line.split()[1] for line in listing.splitlines() if name in line.split(" ", 1)[0]}
    if ids:
        subprocess.run(["docker", "image", "rm", "-f", *sorted(ids)], capture_output=True, check=False)


def test_artefact_and_pipeline_check_real_check_real(ansible_playbook, installed_collections: str,
                                                     tmp_path: Path) -> None:
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.fail("the Docker engine does not answer (scripts/ci/start_docker.sh starts it)")
    # Short: supervisord's socket lives in it, and an AF_UNIX path is at most 107 bytes (tmp_path under
    # pytest-xdist, /tmp/pytest-of-root/pytest-N/popen-gwN/<test name>/, leaves too little).
    state = Path(tempfile.mkdtemp(prefix="bv-stack-"))
    name = f"itest-{uuid.uuid4().hex[:8]}"
    # A hardware tree of its own: the host ID derives from it, and the BM labels its containers with the host ID.
    # Other BMs on this machine (the machine's own hardware ID) then never take this run's containers for theirs.
    sysroot = tmp_path / "sysroot"
    (sysroot / "etc").mkdir(parents=True)
    (sysroot / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    variables = {"bonseyes_state_dir": state, "bonseyes_sm_port": free_port(), "bonseyes_registry_port": free_port(),
                 "bonseyes_registry_pull_port": free_port(), "bonseyes_bm_port": free_port(),
                 "bonseyes_module_sysroot": sysroot, "output_dir": tmp_path / "out", "itest_name": name}
    args = [arg for key, value in variables.items() for arg in ("-e", f"{key}={value}")]
    try:
        run = ansible_playbook("-i", "inventories/local", *args, *DEPLOYMENT, str(PLAYBOOK),
                               collections_path=installed_collections)
    finally:
        stop_supervisord(state)
        remove_images(name)
        shutil.rmtree(state, ignore_errors=True)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-3000:]
    counters = recap(run.stdout)
    assert counters["failed"] == 0
    assert "Check the stop's changed flags" in run.stdout
