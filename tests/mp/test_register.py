"""Artefact registration against the real engine and registry, and the published image's BL at work."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest
from helpers_mp import Licensing, image_state, save

from bonseyes_py.bl import layout
from bonseyes_py.identity.ids import verify_artefact_id, verify_image_id
from bonseyes_py.mp.catalogue import Artefact
from bonseyes_py.mp.registry import RegistryProcess
from bonseyes_py.mp.service import Marketplace
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.roles import Role

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def run(reference: str, *args: str, licence_dir: Path | None = None, entrypoint: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    command = ["docker", "run", "--rm", "--network", "none"]
    if licence_dir is not None:
        command += ["-v", f"{licence_dir}:{layout.LICENCE_DIR}:ro"]
    if entrypoint is not None:
        command += ["--entrypoint", entrypoint]
    return subprocess.run([*command, reference, *args], capture_output=True, text=True, timeout=120, check=False)


def pull(client: docker.DockerClient, registry: RegistryProcess, artefact: Artefact) -> None:
    """What a BM does: pull by digest only (the local copy was removed after registration)."""
    client.api.pull(artefact.reference, auth_config=registry.credentials().auth_config())


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, ca: CertificateAuthority, registry: RegistryProcess,
               docker_client: docker.DockerClient, bl_dir: Path, python_image: str, shell_image: str
               ) -> Iterator[dict[str, Artefact]]:
    """The two good registrations: Python payload from an uploaded docker save archive, shell payload from the
    engine by the operator (``register_local_image``)."""
    from bonseyes_py.mp.catalogue import Catalogue
    from bonseyes_py.mp.signing import LocalArtefactSigner

    marketplace = Marketplace(catalogue=Catalogue.sqlite(tmp_path_factory.mktemp("cat") / "c.db"),
                              registry=registry.client(), registry_address=registry.address,
                              credentials=registry.credentials(), signer=LocalArtefactSigner(ca),
                              docker_client=docker_client, bl_dir=bl_dir)
    archive = save(docker_client, python_image, tmp_path_factory.mktemp("archive") / "python.tar")
    alice = ca.identity(Role.USER, "alice")
    stages: list[str] = []
    result = {
        "python": marketplace.register(archive, caller=alice, name="face-detector", policies={"gpu": False},
                                       progress=lambda stage, _detail: stages.append(stage)),
        "shell": marketplace.register_local_image(shell_image, owner=alice, name="Shell.Payload",
                                                  policies='{"premises": ["vp1"]}'),
    }
    assert {"vet", "build", "push", "sign", "done"} <= set(stages)
    for artefact in result.values():
        pull(docker_client, registry, artefact)
    yield result
    for artefact in result.values():  # the pulled copies, as a BM would remove them
        docker_client.images.remove(artefact.reference, force=True)


def test_registration_records_signed_ids(registered: dict[str, Artefact], ca: CertificateAuthority,
                                         registry: RegistryProcess) -> None:
    artefact = registered["python"]
    trust = ca.trust_store()
    assert verify_artefact_id(artefact.artefact_id, trust, expect_name="face-detector")["owner"] == "alice"
    verify_image_id(artefact.image_id, trust, expect_digest=artefact.digest, expect_artefact="face-detector")
    client = registry.client()
    assert client.manifest_digest(artefact.repository, "registered") == artefact.digest
    assert client.verify_image(artefact.repository, artefact.digest) > 0
    assert artefact.policies == {"gpu": False}
    assert registered["shell"].policies == {"premises": ["vp1"]}
    assert artefact.original["entrypoint"][0] == "python3"
    assert artefact.original["user"] == "nobody"


def test_published_image_has_bl_entrypoint_metadata_and_labels(registered: dict[str, Artefact],
                                                                docker_client: docker.DockerClient) -> None:
    artefact = registered["shell"]
    config = docker_client.images.get(artefact.reference).attrs["Config"]
    assert config["Entrypoint"] == [layout.BL_EXECUTABLE]
    assert not config["Cmd"]
    assert config["User"] == "root"
    labels = config["Labels"]
    assert labels[layout.LABEL_ARTEFACT] == "Shell.Payload"
    assert labels[layout.LABEL_ARTEFACT_ID] == artefact.artefact_id
    assert json.loads(labels[layout.LABEL_ORIGINAL]) == artefact.original
    assert artefact.original["workdir"] == "/var/lib/payload"
    assert artefact.original["user"] == "daemon:daemon"
    baked = run(artefact.reference, "-c", f"cat {layout.METADATA} {layout.ARTEFACT_ID}", entrypoint="/bin/sh")
    assert baked.returncode == 0, baked.stderr
    assert json.loads(baked.stdout.split("}\n", 1)[0] + "}")["original"] == artefact.original
    assert artefact.artefact_id in baked.stdout


def test_bl_runs_without_python_in_the_image(registered: dict[str, Artefact]) -> None:
    artefact = registered["shell"]
    probe = run(artefact.reference, "-c", "command -v python3 || echo no-python", entrypoint="/bin/sh")
    assert probe.stdout.strip() == "no-python"
    refused = run(artefact.reference)
    assert refused.returncode == 77
    assert refused.stderr.strip().splitlines() == [
        f"bonseyes-layer: licence: no host licence at {layout.HOST_LICENCE}; the Bonseyes Module must mount it"]


@pytest.mark.parametrize("kind", ["python", "shell"])
def test_bl_refuses_without_licence_and_proceeds_to_step_6_with_one(kind: str, registered: dict[str, Artefact],
                                                                     licensing: Licensing, tmp_path: Path) -> None:
    """A valid host licence gets BL past step 5; step 6 (SM + BM, issue 5) then needs the runtime
    material BM mounts, so here the payload still must not start. The full run with original
    cmd/env/workdir/user under a real SM and BM is the end-to-end suite's (tests/e2e)."""
    artefact = registered[kind]
    refused = run(artefact.reference)
    assert refused.returncode == 77
    assert refused.stdout == ""  # the payload never ran
    licence = licensing.host_licence(tmp_path / "licence", artefact.digest, artefact.name)
    stopped = run(artefact.reference, licence_dir=licence)
    assert stopped.returncode == 77
    assert stopped.stdout == ""
    assert stopped.stderr.startswith("bonseyes-layer: runtime-material: "), stopped.stderr
    assert "host licence refused" not in stopped.stderr


def test_bl_refuses_a_licence_for_another_artefact(registered: dict[str, Artefact], licensing: Licensing,
                                                    tmp_path: Path) -> None:
    artefact = registered["shell"]
    licence = licensing.host_licence(tmp_path / "licence", artefact.digest, "face-detector")
    refused = run(artefact.reference, licence_dir=licence)
    assert refused.returncode == 77
    assert refused.stdout == ""
    assert refused.stderr.strip() == ("bonseyes-layer: licence: host licence refused: artefact-id: licence is for "
                                      "artefact ID 'face-detector', not 'Shell.Payload'")


def test_bl_refuses_a_licence_from_a_foreign_sm(registered: dict[str, Artefact], tmp_path: Path) -> None:
    foreign = Licensing(CertificateAuthority.init(tmp_path / "foreign-ca"))
    artefact = registered["shell"]
    licence = foreign.host_licence(tmp_path / "licence", artefact.digest, artefact.name)
    refused = run(artefact.reference, licence_dir=licence)
    assert refused.returncode == 77
    assert "licence: host licence refused: signer-chain" in refused.stderr
    (licence / "host-licence.jwt").write_text("not.a.jws")
    garbage = run(artefact.reference, licence_dir=licence)
    assert garbage.returncode == 77
    assert "host licence refused" in garbage.stderr


def test_registration_leaves_no_local_images(marketplace: Marketplace, docker_client: docker.DockerClient,
                                             ca: CertificateAuthority, shell_image: str) -> None:
    before = image_state(docker_client, marketplace.registry_address, shell_image)
    marketplace.register_local_image(shell_image, owner=ca.identity(Role.USER, "carol"), name="clean-after")
    assert image_state(docker_client, marketplace.registry_address, shell_image) == before


def test_list_and_show(marketplace: Marketplace, ca: CertificateAuthority, shell_image: str) -> None:
    alice, host = ca.identity(Role.USER, "alice"), ca.identity(Role.HOST, "host-1")
    registered = marketplace.register_local_image(shell_image, owner=alice, name="listed")
    assert [a.name for a in marketplace.list(host)] == ["listed"]
    assert marketplace.list(alice, owner="someone-else") == []
    assert marketplace.show(host, "listed").digest == registered.digest


def test_registry_push_endpoint_requires_mp_credentials(registry: RegistryProcess) -> None:
    import requests

    assert requests.get(f"{registry.url}/v2/", timeout=5).status_code == 401
    assert requests.get(f"{registry.url}/v2/", auth=("marketplace", "wrong"), timeout=5).status_code == 401
    registry.client().ping()


Register = Callable[..., Artefact]
