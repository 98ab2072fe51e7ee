"""Fixtures of the Marketplace tests: the real Docker engine, the real registry, real images.

The engine and the base images are started/built by the CI scripts when absent (as root), so the
tests run on a fresh machine the same way CI does; without root and without an engine they skip.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
from helpers_mp import PY_PAYLOAD, Licensing, build

from bonseyes_py.bl.build import build_layer
from bonseyes_py.mp.catalogue import Catalogue
from bonseyes_py.mp.registry import RegistryProcess
from bonseyes_py.mp.service import Marketplace
from bonseyes_py.mp.signing import LocalArtefactSigner
from bonseyes_py.mp.vetting import VettingRules
from bonseyes_py.pki.ca import CertificateAuthority

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts" / "ci"
MINBASE = "bonseyes/base-minbase:bookworm"
PYBASE = "bonseyes/base-python:bookworm"


def _engine_answers() -> bool:
    try:
        docker.from_env(timeout=5).ping()
    except (docker.errors.DockerException, OSError):
        return False
    return True


@pytest.fixture(scope="session")
def docker_client() -> docker.DockerClient:
    if not _engine_answers():
        if os.geteuid() != 0:
            pytest.skip("no Docker engine and not root: cannot start one")
        if shutil.which("dockerd") is None or shutil.which("docker-registry") is None:
            subprocess.run([str(SCRIPTS / "install_docker.sh")], check=True)
        subprocess.run([str(SCRIPTS / "start_docker.sh")], check=True)
    client = docker.from_env(timeout=600)
    for image in (MINBASE, PYBASE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            subprocess.run([str(SCRIPTS / "build_base_images.sh")], check=True)
            break
    return client


@pytest.fixture(scope="session")
def bl_dir() -> Path:
    return build_layer()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, docker_client: docker.DockerClient) -> Iterator[RegistryProcess]:
    process = RegistryProcess(tmp_path_factory.mktemp("registry")).start()
    yield process
    process.stop()


@pytest.fixture
def make_marketplace(tmp_path: Path, ca: CertificateAuthority, registry: RegistryProcess,
                     docker_client: docker.DockerClient, bl_dir: Path) -> Callable[..., Marketplace]:
    def make(rules: VettingRules | None = None, registry_process: RegistryProcess | None = None) -> Marketplace:
        used = registry_process or registry
        return Marketplace(catalogue=Catalogue.sqlite(tmp_path / f"catalogue-{secrets.token_hex(4)}.db"),
                           registry=used.client(), registry_address=used.address, credentials=used.credentials(),
                           signer=LocalArtefactSigner(ca), rules=rules, docker_client=docker_client, bl_dir=bl_dir)

    return make


@pytest.fixture
def marketplace(make_marketplace: Callable[..., Marketplace]) -> Marketplace:
    return make_marketplace()


@pytest.fixture(scope="session")
def python_image(docker_client: docker.DockerClient) -> str:
    return build(docker_client, f"""FROM {PYBASE}
ENV GREETING="hello from python"
WORKDIR /srv/app
USER nobody
ENTRYPOINT ["python3", "-c", "{PY_PAYLOAD}"]
CMD ["first", "second"]
""", "bonseyes-test/python-payload:1")


@pytest.fixture(scope="session")
def shell_image(docker_client: docker.DockerClient) -> str:
    """No Python at all: BL must run as a self-contained executable."""
    return build(docker_client, f"""FROM {MINBASE}
ENV GREETING=shell-hello
WORKDIR /var/lib/payload
USER daemon:daemon
CMD ["/bin/sh", "-c", "echo cwd=$(pwd) uid=$(id -u) gid=$(id -g) greeting=$GREETING args=$0"]
""", "bonseyes-test/shell-payload:1")


@pytest.fixture
def licensing(ca: CertificateAuthority) -> Licensing:
    return Licensing(ca)
