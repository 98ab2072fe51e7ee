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


def image_state(client: docker.DockerClient) -> tuple[set[str], set[str]]:
    """Every image ID (intermediates included) and every tag of the engine."""
    images = client.images.list(all=True)
    return {image.id for image in images}, {tag for image in images for tag in image.tags}


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
