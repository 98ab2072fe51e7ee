"""MP registration against a real SM under gunicorn: the MP is enrolled by the SM (``POST /v1/services``),
gets the artefact ID signed and the name reserved before the build, the image ID after the push, and
releases the reservation when the registration fails."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sm"))

from helpers_mp import image_state
from mp_server import MPServer, Person, start_mp
from sm_testlib import Client, digest_of, free_port, new_csr, start_sm, stop, wait_ready, write_identity

from bonseyes_py.identity.ids import verify_artefact_id, verify_image_id
from bonseyes_py.mp.catalogue import Catalogue
from bonseyes_py.mp.client import MarketplaceRefusal
from bonseyes_py.mp.errors import RegistryError
from bonseyes_py.mp.registry import RegistryClient, RegistryCredentials, RegistryProcess
from bonseyes_py.mp.service import Marketplace, repository_for
from bonseyes_py.mp.signing import HttpsArtefactSigner
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.roles import Role
from bonseyes_py.sm import SMConfig, init_sm

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@dataclass
class Deployment:
    sm: SMConfig
    sm_url: str
    admin: Client
    mp: MPServer
    people: dict[str, Person]

    @property
    def root(self) -> Path:
        return self.sm.ca_directory / "root.pem"


def _enrol(admin: Client, directory: Path, name: str) -> Person:
    key, csr = new_csr()
    answer = admin.post("/v1/users", {"user_id": name, "csr": csr})
    assert answer.status_code == 201, answer.text
    cert, key_path = write_identity(directory, name, key, answer.json()["certificate"])
    return Person(name, str(cert), str(key_path))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory, registry: RegistryProcess, bl_dir: Path
               ) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp("sm-deployment")
    port = free_port()
    config = init_sm(directory / "sm", bind=f"127.0.0.1:{port}", workers=1, threads=4)
    url = f"https://127.0.0.1:{port}"
    process = start_sm(config.directory, directory / "sm.log")
    admin = Client(url, config.admin_certificate, config.admin_key, config.ca_directory / "root.pem")
    try:
        wait_ready(admin, process, directory / "sm.log")
        people = {name: _enrol(admin, directory / "ids", name) for name in ("alice", "bob")}
        mp = start_mp(directory / "mp", registry, config.ca_directory / "root.pem", people["alice"], sm_url=url,
                      admin=(config.admin_certificate, config.admin_key))
        try:
            yield Deployment(config, url, admin, mp, people)
        finally:
            mp.stop()
    finally:
        stop(process)


def test_registration_through_the_sm(deployment: Deployment, shell_image: str) -> None:
    result = deployment.mp.client(deployment.people["alice"]).register_image(shell_image, "sm-signed")
    at_sm = deployment.admin.get("/v1/artefacts/sm-signed")
    assert at_sm.status_code == 200, at_sm.text
    record = at_sm.json()
    assert record["owner"] == "alice"
    assert record["artefact_id_token"] == result["artefact_id"]
    assert [(i["digest"], i["image_id_token"]) for i in record["images"]] == [(result["digest"], result["image_id"])]
    trust = CertificateAuthority.load(deployment.sm.ca_directory).trust_store()
    assert verify_artefact_id(result["artefact_id"], trust, expect_name="sm-signed")["owner"] == "alice"
    verify_image_id(result["image_id"], trust, expect_digest=result["digest"], expect_artefact="sm-signed")
    # The MP's certificate is the SM's marketplace identity: only it may reserve names.
    alice = Client(deployment.sm_url, Path(deployment.people["alice"].cert), Path(deployment.people["alice"].key),
                   deployment.root)
    refused = alice.post("/v1/artefact-ids", {"name": "by-hand", "owner": "alice"})
    assert refused.status_code == 403, refused.text


def test_name_held_at_the_sm_by_another_owner(deployment: Deployment, shell_image: str,
                                              docker_client: docker.DockerClient) -> None:
    taken = deployment.admin.post("/v1/artefacts", {"artefact_id": "held-by-bob", "owner": "bob",
                                                    "digest": digest_of("held-by-bob")})
    assert taken.status_code == 201, taken.text
    alice = deployment.mp.client(deployment.people["alice"])
    rows = len(alice.list())
    before = image_state(docker_client, deployment.mp.config.registry_host + f":{deployment.mp.config.registry_port}",
                         shell_image)
    with pytest.raises(MarketplaceRefusal) as error:
        alice.register_image(shell_image, "held-by-bob")
    assert (error.value.status, error.value.check) == (409, "name-taken"), str(error.value)
    assert len(alice.list()) == rows
    assert deployment.admin.get("/v1/artefacts/held-by-bob").json()["owner"] == "bob"
    registry = RegistryProcess(deployment.mp.config.registry_directory, port=deployment.mp.config.registry_port)
    assert registry.client().tags(repository_for("held-by-bob")) == []
    assert image_state(docker_client, registry.address, shell_image) == before


def test_failed_push_releases_the_reservation(deployment: Deployment, shell_image: str, tmp_path: Path,
                                              docker_client: docker.DockerClient, bl_dir: Path) -> None:
    """In-process MP with the HTTPS signer and a registry that does not listen: the push fails after
    the SM reserved the name, and the SM forgets the name again."""
    config = deployment.mp.config
    signer = HttpsArtefactSigner(deployment.sm_url, client_certificate=config.tls_certificate,
                                 client_key=config.tls_key, sm_root=config.sm_root)
    dead = f"127.0.0.1:{free_port()}"
    marketplace = Marketplace(catalogue=Catalogue.sqlite(tmp_path / "c.db"), registry=RegistryClient(f"http://{dead}"),
                              registry_address=dead, credentials=RegistryCredentials("marketplace", "unused"),
                              signer=signer, docker_client=docker_client, bl_dir=bl_dir)
    reserved: list[str] = []
    original = signer.sign_artefact_id

    def spy(name: str, owner: str) -> str:
        token = original(name, owner)
        reserved.append(deployment.admin.get(f"/v1/artefacts/{name}").json()["owner"])
        return token

    signer.sign_artefact_id = spy  # type: ignore[method-assign]
    alice = deployment.people["alice"]
    caller = CertificateAuthority.load(deployment.sm.ca_directory).identity(Role.USER, alice.name)
    with pytest.raises(RegistryError):
        marketplace.register_local_image(shell_image, owner=caller, name="never-pushed")
    assert reserved == ["alice"], "the SM must have held the name during the build"
    gone = deployment.admin.get("/v1/artefacts/never-pushed")
    assert gone.status_code == 404, gone.text
    assert marketplace.catalogue.count() == 0
