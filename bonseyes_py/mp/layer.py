"""Build the published image (base + BL + artefact ID + SM certificates) and push it, via the Docker SDK.

The published image is the uploaded one with one layer on top, holding ``/opt/bonseyes``: the BL
executable, the SM-signed artefact ID, the SM root and intermediate certificates and a JSON record
of the original entrypoint, command, environment, working directory and user (also in labels).
Its entrypoint becomes BL, and it runs as root so BL can keep what BM hands it away from the
payload before dropping to the original user.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import docker.errors
from cryptography import x509

from bonseyes_py.bl import layout
from bonseyes_py.mp.errors import RegistrationError, RegistryError
from bonseyes_py.mp.registry import RegistryCredentials
from bonseyes_py.pki.certs import certificate_pem

Progress = Callable[[str, dict[str, Any]], None]
BL_FORMAT_VERSION = "1"


def original_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The start-up settings of the uploaded image, from its image config's ``config`` section."""
    return {"entrypoint": config.get("Entrypoint") or [], "cmd": config.get("Cmd") or [],
            "env": config.get("Env") or [], "workdir": config.get("WorkingDir") or "/",
            "user": config.get("User") or ""}


def write_context(directory: Path, *, base: str, bl_dir: Path, artefact: str, owner: str, artefact_id: str,
                  sm_certificates: list[x509.Certificate], original: dict[str, Any]) -> dict[str, str]:
    """Write the build context and Dockerfile; return the labels the image gets."""
    home = directory / layout.BL_HOME.lstrip("/")
    shutil.copytree(bl_dir, home / "bl", symlinks=True)
    (home / "certs").mkdir(parents=True)
    root, intermediate = sm_certificates[0], sm_certificates[1]
    (directory / layout.SM_ROOT.lstrip("/")).write_bytes(certificate_pem(root))
    (directory / layout.SM_INTERMEDIATE.lstrip("/")).write_bytes(certificate_pem(intermediate))
    (directory / layout.ARTEFACT_ID.lstrip("/")).write_text(artefact_id + "\n")
    metadata = {"artefact": artefact, "owner": owner, "original": original, "bl": {"format": BL_FORMAT_VERSION}}
    (directory / layout.METADATA.lstrip("/")).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    for path in [home, *home.rglob("*")]:
        # World-readable so BL can read them after a drop to an unprivileged original user.
        path.chmod(0o755 if path.is_dir() or path.stat().st_mode & 0o100 else 0o644)
    labels = {layout.LABEL_ARTEFACT: artefact, layout.LABEL_OWNER: owner, layout.LABEL_ARTEFACT_ID: artefact_id,
              layout.LABEL_ORIGINAL: json.dumps(original, sort_keys=True), layout.LABEL_BL_VERSION: BL_FORMAT_VERSION}
    # ENTRYPOINT resets the inherited CMD; "CMD []" says so explicitly: BL reads the original from metadata.
    (directory / "Dockerfile").write_text(
        f"FROM {base}\n"
        f"COPY {layout.BL_HOME.lstrip('/')}/ {layout.BL_HOME}/\n"
        "USER root\n"
        f'ENTRYPOINT ["{layout.BL_EXECUTABLE}"]\n'
        "CMD []\n")
    return labels


def build_image(client: docker.DockerClient, context: Path, tag: str, labels: dict[str, str],
                progress: Progress) -> str:
    """Build with the engine's builder, no network; return the new image ID.

    Labels go through the API, not a Dockerfile ``LABEL``, which would expand ``$VAR`` in the
    recorded command.
    """
    image_id = None
    try:
        for event in client.api.build(path=str(context), tag=tag, labels=labels, rm=True, forcerm=True,
                                      pull=False, network_mode="none", decode=True):
            if "error" in event:
                raise RegistrationError(f"layer build failed: {event['error'].strip()}", check="build")
            if "aux" in event and "ID" in event["aux"]:
                image_id = event["aux"]["ID"]
            if event.get("stream", "").strip():
                progress("build", {"message": event["stream"].strip()})
    except docker.errors.APIError as exc:
        raise RegistrationError(f"layer build failed: {exc.explanation or exc}", check="build") from exc
    if image_id is None:
        image_id = client.images.get(tag).id
    return str(image_id)


def push_image(client: docker.DockerClient, repository: str, tag: str, credentials: RegistryCredentials,
               progress: Progress) -> str:
    """Push and return the manifest digest the engine reports (re-checked against the registry after)."""
    digest = None
    try:
        for event in client.api.push(repository, tag=tag, auth_config=credentials.auth_config(), stream=True,
                                     decode=True):
            if "error" in event:
                raise RegistryError(f"push of {repository}:{tag} failed: {event['error'].strip()}",
                                    check="push")
            if "aux" in event and "Digest" in event["aux"]:
                digest = event["aux"]["Digest"]
            if "status" in event:
                progress("push", {"status": event["status"], "layer": event.get("id"),
                                  "detail": event.get("progressDetail") or {}})
    except docker.errors.APIError as exc:
        raise RegistryError(f"push of {repository}:{tag} failed: {exc.explanation or exc}", check="push") from exc
    if digest is None:
        raise RegistryError(f"push of {repository}:{tag} reported no digest", check="push")
    return str(digest)
