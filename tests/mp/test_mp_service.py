"""The Marketplace service under gunicorn with mutual TLS: registration by upload (an archive, or a local image
the client saves first), catalogue reads per role, and each refusal a JSON error that leaves nothing behind."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest
from helpers_mp import image_state, import_rootfs, save
from mp_server import MPServer, Person, issue_identity, start_mp

from bonseyes_py.cli.main import main
from bonseyes_py.identity.ids import verify_artefact_id, verify_image_id
from bonseyes_py.mp.client import MarketplaceRefusal
from bonseyes_py.mp.registry import RegistryProcess
from bonseyes_py.mp.service import repository_for
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import read_certificate
from bonseyes_py.pki.keys import read_private_key
from bonseyes_py.pki.pkcs12 import export_pkcs12
from bonseyes_py.pki.roles import Role

pytestmark = [pytest.mark.docker, pytest.mark.slow]

SMALL_UPLOAD_LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def people(ca: CertificateAuthority, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Person]:
    directory = tmp_path_factory.mktemp("people")
    return {"alice": issue_identity(ca, directory, Role.USER, "alice"),
            "bob": issue_identity(ca, directory, Role.USER, "bob"),
            "host": issue_identity(ca, directory, Role.HOST, "host-1"),
            "admin": issue_identity(ca, directory, Role.ADMIN, "root-admin")}


@pytest.fixture(scope="module")
def server(ca: CertificateAuthority, registry: RegistryProcess, people: dict[str, Person], bl_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[MPServer]:
    started = start_mp(tmp_path_factory.mktemp("mp"), registry, ca.paths.root_cert, people["alice"],
                       ca_directory=ca.paths.directory)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def python_archive(docker_client: docker.DockerClient, python_image: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(docker_client, python_image, tmp_path_factory.mktemp("upload") / "python.tar")


def refused(error: pytest.ExceptionInfo[MarketplaceRefusal], status: int, check: str) -> None:
    assert (error.value.status, error.value.check) == (status, check), str(error.value)


def assert_nothing_left(server: MPServer, admin: Person, docker_client: docker.DockerClient, name: str,
                        before: Any, *sources: str, rows: int) -> None:
    """No spooled upload, no catalogue row, no tag in the registry, no image or tag in the engine."""
    assert server.uploads() == []
    assert len(server.client(admin).list()) == rows
    registry = RegistryProcess(server.config.registry_directory, port=server.config.registry_port)
    assert registry.client().tags(repository_for(name)) == []
    assert image_state(docker_client, registry.address, *sources) == before


def test_ping_and_openapi(server: MPServer, people: dict[str, Person]) -> None:
    pong = server.client(people["host"]).ping()
    assert (pong["role"], pong["name"]) == ("host", "host-1")
    document = server.client(people["alice"]).request("GET", "/openapi.json").json()
    assert {"/v1/artefacts", "/v1/artefacts/{name}", "/v1/ping"} <= set(document["paths"])


def test_register_upload_with_progress_then_read_as_host(server: MPServer, people: dict[str, Person],
                                                         python_archive: Path, ca: CertificateAuthority) -> None:
    stages: list[str] = []
    result = server.client(people["alice"]).register_archive(
        python_archive, "served-upload", {"gpu": False}, progress=lambda stage, _d: stages.append(stage))
    assert {"upload", "vet", "build", "push", "sign", "done"} <= set(stages)
    assert stages.index("upload") < stages.index("vet") < stages.index("push") < stages.index("sign")
    assert server.uploads() == []
    host = server.client(people["host"])
    assert "served-upload" in [a["name"] for a in host.list()]
    shown = host.show("served-upload")
    assert (shown["digest"], shown["owner"]) == (result["digest"], "alice")
    assert shown["policies"] == {"gpu": False}
    trust = ca.trust_store()
    verify_artefact_id(shown["artefact_id"], trust, expect_name="served-upload")
    verify_image_id(shown["image_id"], trust, expect_digest=shown["digest"], expect_artefact="served-upload")


def test_refusals_leave_nothing_behind(server: MPServer, people: dict[str, Person], docker_client: docker.DockerClient,
                                      python_archive: Path, shell_image: str, tmp_path: Path) -> None:
    alice, bob, host = (server.client(people[n]) for n in ("alice", "bob", "host"))
    # A local image, saved by the client and uploaded, registered with a plain JSON answer (no progress stream).
    registered = bob.register_image(shell_image, "bobs-name")
    assert (registered["owner"], registered["original"]["user"]) == ("bob", "daemon:daemon")
    assert [a["name"] for a in alice.list(owner="bob")] == ["bobs-name"]
    rows = len(server.client(people["admin"]).list())
    before = image_state(docker_client, server.config.registry_host + f":{server.config.registry_port}", shell_image)

    def nothing_left(name: str) -> None:
        assert_nothing_left(server, people["admin"], docker_client, name, before, shell_image, rows=rows)

    # A host may read but not register; an admin neither (registration is a user's act).
    for who in (host, server.client(people["admin"])):
        with pytest.raises(MarketplaceRefusal) as error:
            who.register_image(shell_image, "not-yours")
        refused(error, 403, "role")
    nothing_left("not-yours")

    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(MarketplaceRefusal) as error:
        alice.register_archive(corrupt, "corrupt-upload")
    refused(error, 400, "archive")
    nothing_left("corrupt-upload")

    truncated = tmp_path / "truncated.tar"  # a real archive cut short (a few MB: enough to break the tar)
    with python_archive.open("rb") as handle:
        truncated.write_bytes(handle.read(min(python_archive.stat().st_size // 2, 3 * 1024 * 1024)))
    with pytest.raises(MarketplaceRefusal) as error:
        alice.register_archive(truncated, "truncated-upload", progress=lambda *_: None)  # streamed outcome too
    refused(error, 400, "archive")
    nothing_left("truncated-upload")

    with pytest.raises(MarketplaceRefusal) as error:
        alice.register_image(shell_image, "bobs-name")
    refused(error, 409, "name-taken")
    with pytest.raises(MarketplaceRefusal) as error:  # refused before the upload is read: not an archive error
        alice.register_archive(corrupt, "bobs-name")
    refused(error, 409, "name-taken")
    assert bob.show("bobs-name")["owner"] == "bob"

    with pytest.raises(MarketplaceRefusal) as error:  # the client's own engine lacks it: nothing is sent
        alice.register_image("bonseyes-test/no-such-image:1", "ghost")
    refused(error, 0, "image-not-found")
    for image in ("/etc/passwd", shell_image):  # the service registers no image (nor file) by name
        response = alice.request("POST", "/v1/artefacts", json={"name": "a-path", "image": image})
        assert (response.status, response.json()["error"]) == (415, "content-type")
    with pytest.raises(MarketplaceRefusal) as error:
        alice.register_image(shell_image, "bad-policies", policies=["not", "an", "object"])  # type: ignore[arg-type]
    refused(error, 400, "policies")
    response = alice.request("POST", "/v1/artefacts", data=b"x", headers={"Content-Type": "text/plain"})
    assert (response.status, response.json()["error"]) == (415, "content-type")
    with pytest.raises(MarketplaceRefusal) as error:
        alice.show("no-such-artefact")
    refused(error, 404, "not-found")
    nothing_left("ghost")
    nothing_left("a-path")


@pytest.fixture
def small_server(ca: CertificateAuthority, people: dict[str, Person], bl_dir: Path, tmp_path: Path,
                 docker_client: docker.DockerClient) -> Iterator[tuple[MPServer, RegistryProcess]]:
    """Its own registry (killed by a test) and a 1 MiB upload limit."""
    registry = RegistryProcess(tmp_path / "doomed-registry").start()
    started = start_mp(tmp_path / "mp", registry, ca.paths.root_cert, people["alice"],
                       ca_directory=ca.paths.directory, max_upload_bytes=SMALL_UPLOAD_LIMIT)
    yield started, registry
    started.stop()
    registry.stop()


def test_oversized_upload_and_registry_down_mid_push(small_server: tuple[MPServer, RegistryProcess],
                                                     people: dict[str, Person], docker_client: docker.DockerClient,
                                                     tmp_path: Path) -> None:
    server, registry = small_server
    alice = server.client(people["alice"])
    # Small enough for the 1 MiB upload limit (a glibc loader by name is all vetting looks for); the push still
    # has the Bonseyes Layer's megabytes to send when the registry dies.
    tiny = import_rootfs(docker_client, {"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": (b"\x7fELF", 0o755),
                                         "bin/tiny": (b"#!/bin/sh\n", 0o755)},
                         "bonseyes-test/tiny-glibc:1", ['CMD ["/bin/tiny"]'])
    before = image_state(docker_client, registry.address, tiny)

    response = alice.request("POST", "/v1/artefacts", params={"name": "too-big"},
                             data=os.urandom(2 * SMALL_UPLOAD_LIMIT), headers={"Content-Type": "application/x-tar"})
    assert (response.status, response.json()["error"]) == (413, "upload-too-large")
    big = tmp_path / "big.tar"
    big.write_bytes(b"\0" * (SMALL_UPLOAD_LIMIT + 1))
    with pytest.raises(MarketplaceRefusal) as error:  # the client checks the advertised limit first
        alice.register_archive(big, "too-big")
    assert error.value.check == "upload-too-large"
    assert server.uploads() == []

    def kill_on_first_upload(stage: str, detail: dict[str, Any]) -> None:
        if stage == "push" and detail.get("status") == "Pushing" and registry.running:
            registry.kill()

    with pytest.raises(MarketplaceRefusal) as error:
        alice.register_image(tiny, "killed-mid-push", progress=kill_on_first_upload)
    assert error.value.status == 503, str(error.value)
    assert error.value.check in ("push", "registry-unreachable"), str(error.value)
    assert server.uploads() == []
    assert image_state(docker_client, registry.address, tiny) == before
    restarted = RegistryProcess(registry.directory, port=registry.port).start()
    try:
        assert restarted.client().tags(repository_for("killed-mid-push")) == []
        assert restarted.client().manifest_digest(repository_for("killed-mid-push"), "registered") is None
        assert alice.list() == []
    finally:
        restarted.stop()


def test_cli_register_list_show_and_one_line_errors(server: MPServer, people: dict[str, Person], shell_image: str,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    ca: CertificateAuthority) -> None:
    alice = people["alice"]
    pem = ["--mp", server.url, "--sm-root", server.sm_root, "--cert", alice.cert, "--key", alice.key]
    assert main(["artefact", "register", "cli-shell", "--image", shell_image, "--policies", '{"premises": ["lab"]}',
                 *pem]) == 0
    out, err = capsys.readouterr()
    registered = json.loads(out)
    assert registered["policies"] == {"premises": ["lab"]}
    assert any(line.startswith("upload: ") for line in err.splitlines())  # saved here, uploaded: never by name
    assert any(line.startswith("build: Step") for line in err.splitlines())
    assert any(line.startswith("push: ") for line in err.splitlines())
    assert f"done: {registered['reference']}" in err

    bundle = tmp_path / "alice.p12"
    bundle.write_bytes(export_pkcs12("alice", read_private_key(alice.key), read_certificate(alice.cert),
                                     [ca.intermediate], b"secret-passphrase"))
    passphrase = tmp_path / "pass"
    passphrase.write_text("secret-passphrase\n")
    p12 = ["--mp", server.url, "--sm-root", server.sm_root, "--pkcs12", str(bundle),
           "--passphrase-file", str(passphrase)]
    assert main(["artefact", "show", "cli-shell", *p12]) == 0
    assert json.loads(capsys.readouterr().out)["digest"] == registered["digest"]
    assert main(["artefact", "list", "--owner", "alice", *p12]) == 0
    assert "cli-shell" in [a["name"] for a in json.loads(capsys.readouterr().out)]

    assert main(["artefact", "show", "missing", *pem]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: not-found: ")
    assert err.count("\n") == 1
    assert main(["artefact", "register", "cli-shell", "--image", shell_image, *pem, "--quiet"]) == 1
    assert capsys.readouterr().err.startswith("error: name-taken: ")
