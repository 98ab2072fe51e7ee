"""Fixtures of the end-to-end tests: one virtual premise (SM, registry, MP, two BMs) per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab import REPO, Lab

from bonseyes_py.bl.build import build_layer

SCRIPTS = REPO / "scripts" / "ci"
PREMISE = "lab"


def _engine() -> docker.DockerClient:
    try:
        client = docker.from_env(timeout=600)
        client.ping()
        return client
    except (docker.errors.DockerException, OSError):
        if os.geteuid() != 0:
            pytest.skip("no Docker engine and not root: cannot start one")
        if shutil.which("dockerd") is None or shutil.which("docker-registry") is None:
            subprocess.run([str(SCRIPTS / "install_docker.sh")], check=True)
        subprocess.run([str(SCRIPTS / "start_docker.sh")], check=True)
        return docker.from_env(timeout=600)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    client = _engine()
    try:
        client.images.get("bonseyes/base-python:bookworm")
    except docker.errors.ImageNotFound:
        subprocess.run([str(SCRIPTS / "build_base_images.sh")], check=True)
    root = tmp_path_factory.mktemp("lab")
    os.chmod(root, 0o700)
    lab = Lab(root, client, build_layer())
    try:
        lab.start_sm()
        lab.enrol_user("alice")
        lab.enrol_user("mallory")
        lab.put_premise(PREMISE, ["alice"])
        lab.start_registry()
        lab.host_a = lab.add_host("127.0.0.2", "alice", [PREMISE], renew_seconds=2.0)
        lab.host_b = lab.add_host("127.0.0.3", "alice", [PREMISE], renew_seconds=2.0)
        lab.start_bm(lab.host_a)
        lab.start_bm(lab.host_b)
        lab.relay = lab.register_artefact("relay", "alice")
        yield lab
    finally:
        lab.close()
