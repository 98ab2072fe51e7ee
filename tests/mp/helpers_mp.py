"""Helpers of the Marketplace tests (a module, not conftest, so test files can import them)."""

from __future__ import annotations

import io
import secrets
import tarfile
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from bonseyes_py.identity.ids import RuntimeID
from bonseyes_py.licences import LicenceIssuer
from bonseyes_py.pki.ca import CertificateAuthority


def build(client: docker.DockerClient, dockerfile: str, tag: str) -> str:
    """Build a test image offline from a Dockerfile text; return its tag."""
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True, forcerm=True,
                        network_mode="none", pull=False)
    return tag


# The payload prints what BL must have restored: cwd, uid, gid, an original variable and its arguments.
PY_PAYLOAD = ("import os, sys; print('cwd=' + os.getcwd(), 'uid=%d' % os.getuid(), 'gid=%d' % os.getgid(), "
              "'greeting=' + os.environ.get('GREETING', '-'), 'ldpath=' + os.environ.get('LD_LIBRARY_PATH', '-'), "
              "'args=' + ','.join(sys.argv[1:]))")


def image_state(client: docker.DockerClient, registry_address: str, *sources: str) -> tuple[set[str], set[str]]:
    """The images and tags a registration of ``sources`` into ``registry_address`` could leave behind.

    That is: the source images and every image built on them (build intermediates included, found
    through their parent links), with their tags, plus every tag under the registry's address.
    Scoped this way because other suites share the engine and build their own images meanwhile.
    """
    images = client.images.list(all=True)
    parent = {image.id: image.attrs.get("ParentId") or image.attrs.get("Parent") or "" for image in images}
    roots = set()
    for source in sources:
        try:
            roots.add(client.images.get(source).id)
        except docker.errors.ImageNotFound:
            continue

    def descends(image_id: str) -> bool:
        seen = set()
        while image_id and image_id not in seen:
            if image_id in roots:
                return True
            seen.add(image_id)
            image_id = parent.get(image_id, "")
        return False

    mine = {image.id for image in images if descends(image.id)}
    tags = {tag for image in images for tag in image.tags
            if image.id in mine or tag.startswith(f"{registry_address}/")}
    return mine, tags


def save(client: docker.DockerClient, reference: str, path: Path) -> Path:
    with path.open("wb") as handle:
        for chunk in client.images.get(reference).save(named=True):
            handle.write(chunk)
    return path


def import_rootfs(client: docker.DockerClient, files: dict[str, tuple[bytes, int]], tag: str,
                  changes: list[str]) -> str:
    """Import a synthetic root filesystem (path -> (content, mode)) as an image."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path, (content, mode) in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    try:
        client.images.get(tag)
        return tag  # imported by an earlier run; a re-import would leave the old image dangling
    except docker.errors.ImageNotFound:
        pass
    client.api.import_image_from_data(buffer.getvalue(), repository=tag.split(":")[0], tag=tag.split(":")[1],
                                      changes=changes)
    return tag


@dataclass
class Licensing:
    ca: CertificateAuthority

    def host_licence(self, directory: Path, digest: str, artefact: str) -> Path:
        runtime = RuntimeID(image_digest=digest, artefact_id=artefact, user_id="bob", host_id="host-1",
                            nonce=secrets.token_urlsafe(16), host_ip="127.0.0.1")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "host-licence.jwt").write_text(LicenceIssuer(self.ca).issue_host_licence(runtime).token)
        return directory
