"""A tenant registers only what she proves to own: bytes she uploads.

Each attack runs with the attacker's real identity (Alice's client certificate) against the real MP
service (gunicorn, mutual TLS), the real registry (the MP's push endpoint, and a read-only pull endpoint
with client certificates over the same storage) and the real Docker engine. The victim, Bob, registered
his model by upload; his source image also sits on the Marketplace host's engine (the operator registers
Bob's demo artefacts from there), and a Bonseyes Module on that host (the all-in-one premise) pulled his
published image into the same engine. Alice reads his manifest and config from the pull endpoint with her
certificate, and the catalogue's digests from the MP.

- Alice names Bob's image on the MP's engine (``{"name", "image"}``): the service takes uploads only.
- Alice uploads an archive whose manifest names Bob's published config by its digest, with her own
  harmless config under that name: the config must hash to the digest it is named by.
- Alice uploads an archive whose config lists Bob's layer digests (``rootfs.diff_ids``) and whose layer
  files hold harmless bytes (``docker load`` would reuse the engine's layers of those digests): every
  layer must hash to its digest.
- Alice's archive names an engine tag in ``RepoTags`` (Bob's source image the operator registers from
  the engine for him): the upload must never move a tag in the engine.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest
import requests
from helpers_mp import build, image_state, save
from mp_server import MPServer, Person, issue_identity, start_mp

from bonseyes_py.mp.client import MarketplaceClient, MarketplaceRefusal
from bonseyes_py.mp.registry import MANIFEST_TYPES, RegistryProcess, RegistryTLS, free_port
from bonseyes_py.mp.service import repository_for
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import certificate_pem, chain_pem
from bonseyes_py.pki.keys import generate_private_key, write_private_key
from bonseyes_py.pki.roles import Role

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MINBASE = "bonseyes/base-minbase:bookworm"
BOBS_SOURCE = "bonseyes-test/bobs-model:1"
LOADER = "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"


@dataclass
class PullReader:
    """What any holder of an SM-issued certificate may read: the pull endpoint, by digest."""

    url: str
    person: Person
    root: str

    def get(self, path: str, **headers: str) -> bytes:
        response = requests.get(f"{self.url}{path}", cert=(self.person.cert, self.person.key), verify=self.root,
                                headers=headers, timeout=60)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
        return response.content

    def image(self, repository: str, digest: str) -> tuple[str, list[str]]:
        """The config digest and the layer diff IDs of a published image."""
        manifest = json.loads(self.get(f"/v2/{repository}/manifests/{digest}", Accept=", ".join(MANIFEST_TYPES)))
        config_digest = manifest["config"]["digest"]
        config = json.loads(self.get(f"/v2/{repository}/blobs/{config_digest}"))
        return config_digest, list(config["rootfs"]["diff_ids"])


@dataclass
class Victim:
    artefact: dict[str, Any]
    config_digest: str
    diff_ids: list[str]  # the published image's: Bob's layers, then the BL layer


@pytest.fixture(scope="module")
def people(ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    directory = tmp_path_factory.mktemp("tenants")
    return {"alice": issue_identity(ca, directory, Role.USER, "alice"),
            "bob": issue_identity(ca, directory, Role.USER, "bob"),
            "admin": issue_identity(ca, directory, Role.ADMIN, "root-admin")}


@pytest.fixture(scope="module")
def server(ca: CertificateAuthority, registry: RegistryProcess, people: dict[str, Person], bl_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[MPServer]:
    started = start_mp(tmp_path_factory.mktemp("mp"), registry, ca.paths.root_cert, people["alice"],
                       ca_directory=ca.paths.directory)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def pull_endpoint(ca: CertificateAuthority, registry: RegistryProcess, people: dict[str, Person],
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[PullReader]:
    """The registry's read-only endpoint over the push endpoint's storage; client certificates required."""
    directory = tmp_path_factory.mktemp("pull")
    key = generate_private_key()
    key_path = write_private_key(directory / "server.key", key)
    certificate = ca.issue(key.public_key(), ca.identity(Role.MARKETPLACE, "registry-pull"),
                           ip_addresses=("127.0.0.1",))
    cert_path = directory / "server.pem"
    cert_path.write_bytes(chain_pem([certificate, ca.intermediate]))
    bundle = directory / "client-cas.pem"
    bundle.write_bytes(certificate_pem(ca.root) + certificate_pem(ca.intermediate))
    process = RegistryProcess(directory / "registry", port=free_port(), storage=registry.storage, read_only=True,
                              tls=RegistryTLS(cert_path, key_path, bundle)).start()
    yield PullReader(process.url, people["alice"], str(ca.paths.root_cert))
    process.stop()


@pytest.fixture(scope="module")
def victim(server: MPServer, people: dict[str, Person], registry: RegistryProcess, pull_endpoint: PullReader,
           docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Victim]:
    """Bob's model, registered by upload; then pulled into the MP host's engine as a co-located BM does.

    Bob's source image stays on the engine too (``BOBS_SOURCE``).
    """
    build(docker_client, f"FROM {MINBASE}\nRUN mkdir -p /srv/model && echo 'bob-weights-{secrets.token_hex(8)}' "
                         "> /srv/model/weights.bin\nCMD [\"/bin/cat\", \"/srv/model/weights.bin\"]\n", BOBS_SOURCE)
    archive = save(docker_client, BOBS_SOURCE, tmp_path_factory.mktemp("bob") / "model.tar")
    artefact = server.client(people["bob"]).register_archive(archive, "bobs-model")
    docker_client.api.pull(artefact["reference"], auth_config=registry.credentials().auth_config())
    config_digest, diff_ids = pull_endpoint.image(repository_for("bobs-model"), artefact["digest"])
    assert docker_client.images.get(artefact["reference"]).id == config_digest  # the engine holds Bob's image
    yield Victim(artefact, config_digest, diff_ids)
    docker_client.images.remove(artefact["reference"], force=True)


# -- crafted archives ------------------------------------------------------------------------------------


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def harmless_layer(marker: str) -> bytes:
    """A layer that passes vetting: a (fake) glibc loader and a program."""
    return _tar({LOADER: b"\x7fELF not really", "bin/harmless": f"#!/bin/sh\necho {marker}\n".encode()})


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def harmless_config(diff_ids: list[str], marker: str) -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/harmless"], "Labels": {"m": marker}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}}


def crafted_archive(path: Path, config: dict[str, Any], layers: list[bytes], *, config_name: str | None = None,
                    repo_tags: list[str] | None = None) -> Path:
    """A docker save archive (legacy layout) from parts: the config under ``config_name`` (default: its digest)."""
    config_bytes = json.dumps(config).encode()
    config_name = config_name or f"{digest(config_bytes)[7:]}.json"
    names = [f"{index:02d}/layer.tar" for index in range(len(layers))]
    manifest = [{"Config": config_name, "RepoTags": repo_tags, "Layers": names}]
    members = {**dict(zip(names, layers, strict=True)), config_name: config_bytes,
               "manifest.json": json.dumps(manifest).encode()}
    path.write_bytes(_tar(members))
    return path


# -- checks ----------------------------------------------------------------------------------------------


def refused_and_nothing_left(server: MPServer, people: dict[str, Person], pull: PullReader, victim: Victim,
                             docker_client: docker.DockerClient, name: str, attempt: Any, *, status: int,
                             check: str, absent_images: tuple[str, ...] = ()) -> MarketplaceRefusal:
    """Run Alice's attempt: it must be refused with (status, check) and leave nothing anywhere.

    Were it accepted, the failure says whether Alice's new artefact carries Bob's layers.
    """
    registry_address = f"{server.config.registry_host}:{server.config.registry_port}"
    before = image_state(docker_client, registry_address, victim.artefact["reference"], BOBS_SOURCE)
    rows = len(server.client(people["admin"]).list())
    try:
        result = attempt()
    except MarketplaceRefusal as exc:
        error = exc
    else:
        _, published = pull.image(repository_for(name), result["digest"])
        stolen = [d for d in victim.diff_ids[:-1] if d in published]
        pytest.fail(f"registered as {result['owner']}'s {name} ({result['digest']}); it carries "
                    f"{len(stolen)} of Bob's {len(victim.diff_ids) - 1} layers; its layers: {published[:-1]}")
    assert (error.status, error.check) == (status, check), str(error)
    assert "\n" not in str(error)
    assert server.uploads() == []
    assert len(server.client(people["admin"]).list()) == rows
    registry = RegistryProcess(server.config.registry_directory, port=server.config.registry_port)
    assert registry.client().tags(repository_for(name)) == []
    assert image_state(docker_client, registry_address, victim.artefact["reference"], BOBS_SOURCE) == before
    for image in absent_images:
        with pytest.raises(docker.errors.ImageNotFound):
            docker_client.images.get(image)
    assert server.client(people["bob"]).show("bobs-model")["digest"] == victim.artefact["digest"]
    return error


def alice(server: MPServer, people: dict[str, Person]) -> MarketplaceClient:
    return server.client(people["alice"])


# -- the attacks -----------------------------------------------------------------------------------------


def test_an_image_on_the_engine_is_not_registrable_by_name(server: MPServer, people: dict[str, Person],
                                                           victim: Victim, pull_endpoint: PullReader,
                                                           docker_client: docker.DockerClient) -> None:
    """Bob's source image is on the MP's engine; Alice names it (by tag, then by ID) in a JSON body."""
    client = alice(server, people)
    for image in (BOBS_SOURCE, docker_client.images.get(BOBS_SOURCE).id):

        def attempt(image: str = image) -> dict[str, Any]:
            response = client.request("POST", "/v1/artefacts", json={"name": "alices-by-name", "image": image})
            return dict(MarketplaceClient._answer(response, 201))

        error = refused_and_nothing_left(server, people, pull_endpoint, victim, docker_client, "alices-by-name",
                                         attempt, status=415, check="content-type")
        assert "application/x-tar" in str(error)
    # The NDJSON form of the same request is refused the same way, before any stream starts.
    response = client.request("POST", "/v1/artefacts", json={"name": "alices-by-name", "image": BOBS_SOURCE},
                              headers={"Accept": "application/x-ndjson"})
    assert (response.status, response.json()["error"]) == (415, "content-type")


def test_a_config_named_by_another_artefacts_digest_is_refused(server: MPServer, people: dict[str, Person],
                                                               victim: Victim, pull_endpoint: PullReader,
                                                               docker_client: docker.DockerClient,
                                                               tmp_path: Path) -> None:
    """Alice's archive holds her own harmless config, named by the digest of Bob's published config."""
    layer = harmless_layer("alice")
    archive = crafted_archive(tmp_path / "config-by-digest.tar", harmless_config([digest(layer)], "config"), [layer],
                              config_name=f"{victim.config_digest[7:]}.json")
    error = refused_and_nothing_left(
        server, people, pull_endpoint, victim, docker_client, "alices-config",
        lambda: alice(server, people).register_archive(archive, "alices-config"), status=400, check="archive-digest")
    assert victim.config_digest in str(error)
    # The same archive in the OCI layout's naming (blobs/sha256/<hex>), and streamed with progress.
    oci = crafted_archive(tmp_path / "config-by-blob.tar", harmless_config([digest(layer)], "oci"), [layer],
                          config_name=f"blobs/sha256/{victim.config_digest[7:]}")
    refused_and_nothing_left(
        server, people, pull_endpoint, victim, docker_client, "alices-config",
        lambda: alice(server, people).register_archive(oci, "alices-config", progress=lambda *_: None),
        status=400, check="archive-digest")


def test_layers_named_by_another_artefacts_digests_are_refused(server: MPServer, people: dict[str, Person],
                                                               victim: Victim, pull_endpoint: PullReader,
                                                               docker_client: docker.DockerClient,
                                                               tmp_path: Path) -> None:
    """Alice's config lists Bob's layer digests; her archive's layer files hold harmless bytes instead."""
    bobs_layers = victim.diff_ids[:-1]
    layers = [harmless_layer(f"alice-{index}") for index in range(len(bobs_layers))]
    config = harmless_config(bobs_layers, "layers")
    archive = crafted_archive(tmp_path / "layers-by-digest.tar", config, layers)
    config_id = digest(json.dumps(config).encode())
    error = refused_and_nothing_left(
        server, people, pull_endpoint, victim, docker_client, "alices-layers",
        lambda: alice(server, people).register_archive(archive, "alices-layers"), status=400, check="archive-digest",
        absent_images=(config_id,))
    assert bobs_layers[0] in str(error)
    # Only the last layer borrowed (the first one genuinely Alice's): still refused, naming that layer.
    mixed = [harmless_layer("alice-own"), harmless_layer("alice-fake")]
    config = harmless_config([digest(mixed[0]), bobs_layers[-1]], "mixed")
    archive = crafted_archive(tmp_path / "one-borrowed-layer.tar", config, mixed)
    error = refused_and_nothing_left(
        server, people, pull_endpoint, victim, docker_client, "alices-layers",
        lambda: alice(server, people).register_archive(archive, "alices-layers"), status=400, check="archive-digest",
        absent_images=(digest(json.dumps(config).encode()),))
    assert bobs_layers[-1] in str(error)


def test_an_upload_never_moves_a_tag_on_the_engine(server: MPServer, people: dict[str, Person], victim: Victim,
                                                   docker_client: docker.DockerClient, tmp_path: Path) -> None:
    """Alice's archive (her own, honest bytes) names in RepoTags the tag of Bob's source image, which the operator
    registers for him from the engine: after her registration the tag must still name Bob's image."""
    bobs_id = docker_client.images.get(BOBS_SOURCE).id
    layer = harmless_layer("alice-tagged")
    archive = crafted_archive(tmp_path / "repo-tags.tar", harmless_config([digest(layer)], "tags"), [layer],
                              repo_tags=[BOBS_SOURCE])
    try:
        result = alice(server, people).register_archive(archive, "alices-tagged")
        assert result["owner"] == "alice"
        assert server.uploads() == []
        try:
            now = docker_client.images.get(BOBS_SOURCE).id
        except docker.errors.ImageNotFound:
            now = "no image (the tag went with Alice's loaded image)"
        assert now == bobs_id, f"Alice's upload moved the tag of Bob's image: {BOBS_SOURCE} is {now}"
    finally:
        if docker_client.images.get(bobs_id).tags != [BOBS_SOURCE]:
            docker_client.images.get(bobs_id).tag(BOBS_SOURCE)  # put it back for the tests after this one


def test_a_config_aliased_under_another_member_path_is_refused(server: MPServer, people: dict[str, Person],
                                                               victim: Victim, pull_endpoint: PullReader,
                                                               docker_client: docker.DockerClient,
                                                               tmp_path: Path) -> None:
    """Two members for one path: ``X.json`` (harmless) and, later, ``./X.json`` (a config whose layer holds a
    setuid program; its own digest is X). A reader that looks members up by exact name vets the first; the
    engine, unpacking the archive, keeps the last. The config actually read must hash to X."""
    harmless = harmless_layer("alias-vetted")
    hidden = _tar({LOADER: b"\x7fELF", "bin/harmless": b"#!/bin/sh\n"})
    hidden_buffer = io.BytesIO(hidden)
    with tarfile.open(fileobj=hidden_buffer, mode="a") as tar:
        info = tarfile.TarInfo("usr/local/bin/escalate")
        info.size, info.mode = 4, 0o4755
        tar.addfile(info, io.BytesIO(b"root"))
    hidden = hidden_buffer.getvalue()
    shown = json.dumps(harmless_config([digest(harmless)], "alias-shown")).encode()
    loaded = json.dumps(harmless_config([digest(hidden)], "alias-loaded")).encode()
    config_name = f"{digest(loaded)[7:]}.json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": None, "Layers": ["00/layer.tar"]}]).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in (("00/layer.tar", harmless), (config_name, shown), ("manifest.json", manifest),
                           ("./00/layer.tar", hidden), (f"./{config_name}", loaded)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = tmp_path / "aliased.tar"
    archive.write_bytes(buffer.getvalue())
    refused_and_nothing_left(
        server, people, pull_endpoint, victim, docker_client, "alices-alias",
        lambda: alice(server, people).register_archive(archive, "alices-alias"), status=400, check="archive-digest",
        absent_images=(digest(loaded),))
