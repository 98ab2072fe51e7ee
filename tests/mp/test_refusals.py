"""Every bad registration is refused with its own check and leaves nothing behind.

"Nothing" is checked in all three places a registration writes: the catalogue, the registry
(no tag, no manifest) and the local engine (no new image or tag, intermediates included).
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path

import docker
import pytest
from helpers_mp import build, image_state, import_rootfs, save

from bonseyes_py.bl import layout
from bonseyes_py.errors import BonseyesError, PolicyDenied
from bonseyes_py.mp.errors import RegistrationError, VettingError
from bonseyes_py.mp.registry import RegistryProcess
from bonseyes_py.mp.service import Marketplace, repository_for
from bonseyes_py.mp.vetting import VettingRules
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.roles import Role

pytestmark = [pytest.mark.docker, pytest.mark.slow]

MINBASE = "bonseyes/base-minbase:bookworm"


@pytest.fixture
def assert_refused(docker_client: docker.DockerClient, registry: RegistryProcess
                   ) -> Callable[..., BonseyesError]:
    """Run a registration that must fail; check the error type and check, and that nothing is left."""

    def check(marketplace: Marketplace, error: type[BonseyesError], expected_check: str, source: str | Path, *,
              name: str = "refused", caller: str = "alice", role: Role = Role.USER,
              **kwargs: object) -> BonseyesError:
        sources = [source] if isinstance(source, str) else []
        before = image_state(docker_client, marketplace.registry_address, *sources)
        rows = marketplace.catalogue.count()
        identity = marketplace.signer.ca.identity(role, caller)  # type: ignore[attr-defined]
        register: Callable[..., object] = (
            functools.partial(marketplace.register_local_image, source, owner=identity)  # the operator's path
            if isinstance(source, str) else functools.partial(marketplace.register, source, caller=identity))
        with pytest.raises(error) as info:
            register(name=name, **kwargs)
        assert info.value.check == expected_check, str(info.value)
        assert marketplace.catalogue.count() == rows
        assert marketplace.registry.tags(repository_for(name)) == []
        assert image_state(docker_client, marketplace.registry_address, *sources) == before
        return info.value

    return check


def test_corrupt_archive(marketplace: Marketplace, assert_refused: Callable[..., BonseyesError],
                         tmp_path: Path) -> None:
    archive = tmp_path / "corrupt.tar"
    archive.write_bytes(b"this is not a tar archive" * 100)
    error = assert_refused(marketplace, RegistrationError, "archive", archive)
    assert "not a readable docker save archive" in str(error)


def test_truncated_archive(marketplace: Marketplace, assert_refused: Callable[..., BonseyesError],
                           docker_client: docker.DockerClient, shell_image: str, tmp_path: Path) -> None:
    archive = save(docker_client, shell_image, tmp_path / "full.tar")
    data = archive.read_bytes()
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(data[: len(data) // 2])
    assert_refused(marketplace, RegistrationError, "archive", truncated)


def test_missing_archive_and_unknown_image(marketplace: Marketplace,
                                           assert_refused: Callable[..., BonseyesError], tmp_path: Path) -> None:
    assert_refused(marketplace, RegistrationError, "archive", tmp_path / "absent.tar")
    assert_refused(marketplace, RegistrationError, "image-not-found", "bonseyes-test/no-such-image:1")


def test_register_takes_uploads_only(marketplace: Marketplace, docker_client: docker.DockerClient,
                                     ca: CertificateAuthority, shell_image: str) -> None:
    """``register`` is the path of every remote caller: a name or ID of an image on the engine is no upload.

    Only the operator's ``register_local_image`` reads the engine.
    """
    before = image_state(docker_client, marketplace.registry_address, shell_image)
    for source in (shell_image, docker_client.images.get(shell_image).id):
        with pytest.raises(RegistrationError) as info:
            marketplace.register(source, caller=ca.identity(Role.USER, "mallory"), name="by-engine-name")
        assert info.value.check == "archive", str(info.value)
        assert "register_local_image" in str(info.value)
    assert marketplace.catalogue.count() == 0
    assert marketplace.registry.tags(repository_for("by-engine-name")) == []
    assert image_state(docker_client, marketplace.registry_address, shell_image) == before


def test_image_without_entrypoint_or_command(marketplace: Marketplace, docker_client: docker.DockerClient,
                                             assert_refused: Callable[..., BonseyesError]) -> None:
    image = build(docker_client, f"FROM {MINBASE}\nCMD []\n", "bonseyes-test/no-command:1")
    assert not docker_client.images.get(image).attrs["Config"].get("Cmd")
    error = assert_refused(marketplace, VettingError, "entrypoint", image)
    assert "neither an entrypoint nor a command" in str(error)


def test_name_taken_by_another_owner(marketplace: Marketplace, ca: CertificateAuthority, shell_image: str,
                                     docker_client: docker.DockerClient) -> None:
    first = marketplace.register_local_image(shell_image, owner=ca.identity(Role.USER, "alice"), name="taken")
    before = image_state(docker_client, marketplace.registry_address, shell_image)
    with pytest.raises(RegistrationError) as info:
        marketplace.register_local_image(shell_image, owner=ca.identity(Role.USER, "bob"), name="taken")
    assert info.value.check == "name-taken"
    assert "already registered by owner alice" in str(info.value)
    # Alice's artefact is untouched: same row, same manifest behind the tag.
    assert marketplace.catalogue.list() == [first]
    assert marketplace.registry.manifest_digest(first.repository, "registered") == first.digest
    assert image_state(docker_client, marketplace.registry_address, shell_image) == before


def test_unauthorized_caller(marketplace: Marketplace, assert_refused: Callable[..., BonseyesError],
                             shell_image: str) -> None:
    for role in (Role.HOST, Role.RUNTIME, Role.MARKETPLACE):
        error = assert_refused(marketplace, PolicyDenied, "unauthorized", shell_image, caller="intruder", role=role)
        assert f"/{role.value}/intruder may not register artefacts" in str(error)


def test_bad_policies(marketplace: Marketplace, assert_refused: Callable[..., BonseyesError],
                      shell_image: str) -> None:
    assert_refused(marketplace, RegistrationError, "policies", shell_image, policies="{not json")
    assert_refused(marketplace, RegistrationError, "policies", shell_image, policies=["a", "list"])


@pytest.mark.parametrize(("rule", "dockerfile_tail", "expected_check", "message"), [
    ("default", "RUN install -m 4755 /bin/true /usr/local/bin/escalate\n", "setuid", "/usr/local/bin/escalate"),
    ("default", "RUN touch /etc/ld.so.preload\n", "forbidden-path", "/etc/ld.so.preload"),
    ("default", "RUN mkdir -p /opt/bonseyes && echo fake > /opt/bonseyes/artefact.json\n", "forbidden-path",
     "/opt/bonseyes"),
    ("small", "", "size", "over the 10000000-byte limit"),
    ("labels", 'LABEL org.opencontainers.image.title="x"\n', "label", "org.opencontainers.image.source"),
])
def test_vetting_refusals(rule: str, dockerfile_tail: str, expected_check: str, message: str,
                          make_marketplace: Callable[..., Marketplace], docker_client: docker.DockerClient,
                          assert_refused: Callable[..., BonseyesError]) -> None:
    rules = {"default": VettingRules(), "small": VettingRules(max_size_bytes=10_000_000),
             "labels": VettingRules(required_labels=("org.opencontainers.image.source",))}[rule]
    tag = f"bonseyes-test/vetting-{expected_check}-{hashlib.sha256(dockerfile_tail.encode()).hexdigest()[:8]}:1"
    image = build(docker_client, f'FROM {MINBASE}\n{dockerfile_tail}CMD ["/bin/true"]\n', tag)
    error = assert_refused(make_marketplace(rules), VettingError, expected_check, image)
    assert message in str(error)


def test_scanner_hook_can_refuse(make_marketplace: Callable[..., Marketplace], shell_image: str,
                                 assert_refused: Callable[..., BonseyesError]) -> None:
    def scanner(image: object) -> None:
        raise VettingError("scanner found EICAR", check="scanner")

    assert_refused(make_marketplace(VettingRules(scanners=(scanner,))), VettingError, "scanner", shell_image)


@pytest.fixture(scope="module")
def static_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real statically linked program, as a busybox-static or scratch image would hold."""
    directory = tmp_path_factory.mktemp("static")
    (directory / "hello.c").write_text('#include <stdio.h>\nint main(void){puts("static");return 0;}\n')
    result = subprocess.run(["gcc", "-static", "-O2", "-o", str(directory / "hello"), str(directory / "hello.c")],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"no static toolchain: {result.stderr.strip()[:200]}")
    return (directory / "hello").read_bytes()


def test_static_image_without_glibc(marketplace: Marketplace, docker_client: docker.DockerClient,
                                    static_binary: bytes, assert_refused: Callable[..., BonseyesError]) -> None:
    image = import_rootfs(docker_client, {"hello": (static_binary, 0o755)}, "bonseyes-test/static:1",
                          ['CMD ["/hello"]'])
    ran = subprocess.run(["docker", "run", "--rm", "--network", "none", image], capture_output=True, text=True,
                         check=False)
    assert ran.stdout.strip() == "static"  # a working image, refused only because BL could not run in it
    error = assert_refused(marketplace, VettingError, "libc", image)
    assert "no dynamic glibc (static or busybox image)" in str(error)


def test_musl_image(marketplace: Marketplace, docker_client: docker.DockerClient, static_binary: bytes,
                    assert_refused: Callable[..., BonseyesError]) -> None:
    # The Alpine layout: musl's loader doubles as libc.so under /lib.
    image = import_rootfs(docker_client, {"lib/ld-musl-x86_64.so.1": (static_binary, 0o755),
                                          "bin/hello": (static_binary, 0o755)},
                          "bonseyes-test/musl:1", ['CMD ["/bin/hello"]'])
    error = assert_refused(marketplace, VettingError, "libc", image)
    assert "musl libc (Alpine-style)" in str(error)


# The registry killed in the middle of a push: tests/mp/test_mp_service.py, through the HTTPS service
# (same Marketplace code, plus the 503 and the NDJSON outcome), so the 50 s push retry is paid once.


def test_signing_failure_after_push_deletes_the_manifest(make_marketplace: Callable[..., Marketplace],
                                                         docker_client: docker.DockerClient,
                                                         ca: CertificateAuthority, shell_image: str) -> None:
    marketplace = make_marketplace()
    pushed: list[str] = []

    def failing_image_id(digest: str, name: str) -> str:
        pushed.append(digest)
        raise RegistrationError("SM unavailable", check="signing")

    marketplace.signer.sign_image_id = failing_image_id  # type: ignore[method-assign]
    before = image_state(docker_client, marketplace.registry_address, shell_image)
    with pytest.raises(RegistrationError) as info:
        marketplace.register_local_image(shell_image, owner=ca.identity(Role.USER, "alice"), name="unsigned")
    assert info.value.check == "signing"
    repository = repository_for("unsigned")
    assert pushed, "the failure must come after the push for this test to mean anything"
    assert marketplace.registry.manifest_digest(repository, pushed[0]) is None
    assert marketplace.registry.tags(repository) == []
    assert marketplace.catalogue.count() == 0
    assert image_state(docker_client, marketplace.registry_address, shell_image) == before


def test_forbidden_paths_protect_bl_mount_point() -> None:
    assert "run/bonseyes/*" in VettingRules().forbidden_paths
    assert layout.HOST_LICENCE.startswith("/run/bonseyes/")
