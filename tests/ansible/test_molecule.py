"""The role scenarios under molecule/ (Docker driver): ``molecule test -s <scenario>`` for each.

Each scenario: destroy, create, (prepare), converge, idempotence (a second converge reports no change),
verify, destroy. The bonseyes_module scenario's prepare step deploys a real Security Manager (the
security_manager role and the owner's enrolment) in its container for the BM to enrol with, and mounts the
engine's socket, which the BM drives. The sm_ca, host_identity and supervisor scenarios need no other service:
their verify steps check what a second run must never do (regenerate a CA under another trust domain, replace
a host key of another algorithm) and that the supervisor role starts a supervisord that died. Nothing is
pulled: the test host image is built here from the local bonseyes/base-python:bookworm
(molecule/shared/Dockerfile, ``--network none``), and the containers mount the repository, its .venv and the
venv's Python read-only at their host paths, so bonseyes_py and supervisor are importable offline. Containers
use the host network (the engine has no bridge network), so every scenario listens on its own free ports,
passed through the environment.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SCENARIOS = sorted(p.parent.name for p in (REPO / "molecule").glob("*/molecule.yml"))
IMAGE = "bonseyes-molecule/host:bookworm"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def molecule_image(installed_collections: str) -> str:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True,
                                                       check=False).returncode != 0:
        pytest.fail("the Docker engine does not answer (scripts/ci/start_docker.sh starts it)")
    subprocess.run(["docker", "build", "-q", "--network", "none", "-t", IMAGE, str(REPO / "molecule/shared")],
                   check=True, capture_output=True, text=True, timeout=300)
    return IMAGE


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(molecule_image: str, scenario: str) -> None:
    python_home = Path(os.path.realpath(sys.executable)).parents[1]
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
        NO_COLOR="1",
        ANSIBLE_NOCOLOR="1",
        BONSEYES_PYTHON_HOME=str(python_home),
        BONSEYES_MOLECULE_SM_PORT=str(free_port()),
        BONSEYES_MOLECULE_REGISTRY_PORT=str(free_port()),
        BONSEYES_MOLECULE_REGISTRY_PULL_PORT=str(free_port()),
        BONSEYES_MOLECULE_BM_PORT=str(free_port()),
    )
    run = subprocess.run([str(VENV_BIN / "molecule"), "test", "-s", scenario], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=500, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    steps = ("prepare",) if (REPO / "molecule" / scenario / "prepare.yml").exists() else ()
    for step in (*steps, "converge", "idempotence", "verify"):
        assert f"[{scenario} > {step}] Executed: Successful" in output, output[-6000:]
