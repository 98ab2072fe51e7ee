"""Artefact registration (step 1 of the paper) as one atomic pipeline.

vet -> sign artefact ID -> build (base + BL + IDs + SM certificates) -> push -> digest -> sign
image ID -> catalogue row. Every step records what it created (local images and tags, the
pushed manifest); any failure undoes all of it, so a refused or failed registration leaves no
catalogue row, no manifest or tag in the registry and no image in the local engine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from bonseyes_py.bl.build import build_layer
from bonseyes_py.errors import BonseyesError, PolicyDenied
from bonseyes_py.identity.ids import check_digest
from bonseyes_py.mp.archive import ImageArchive, read_archive
from bonseyes_py.mp.catalogue import Artefact, Catalogue
from bonseyes_py.mp.errors import RegistrationError, RegistryError
from bonseyes_py.mp.layer import Progress, build_image, original_settings, push_image, write_context
from bonseyes_py.mp.registry import RegistryClient, RegistryCredentials
from bonseyes_py.mp.signing import ArtefactSigner
from bonseyes_py.mp.vetting import VettingRules, vet
from bonseyes_py.pki.roles import Identity, Role, check_name

PUBLISHED_TAG = "registered"
MAX_POLICY_BYTES = 64 * 1024
REGISTER_ROLES = (Role.USER,)
READ_ROLES = (Role.USER, Role.HOST, Role.ADMIN, Role.MARKETPLACE, Role.SECURITY_MANAGER)


def _no_progress(_stage: str, _detail: dict[str, Any]) -> None:
    return None


def repository_for(name: str) -> str:
    """A registry repository name for an artefact name (the registry allows only lower-case paths).

    The hash suffix keeps distinct artefact names (``Face-Det`` and ``face-det``) apart.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "artefact"
    return f"artefacts/{slug[:64]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def authorize(caller: Identity, roles: tuple[Role, ...], action: str) -> None:
    if caller.role not in roles:
        raise PolicyDenied(f"{caller.uri} may not {action} (needs role {', '.join(r.value for r in roles)})",
                           check="unauthorized")


def check_policies(policies: Any) -> dict[str, Any]:
    if isinstance(policies, str | bytes):
        try:
            policies = json.loads(policies)
        except ValueError as exc:
            raise RegistrationError(f"execution policies are not valid JSON: {exc}", check="policies") from exc
    if not isinstance(policies, dict):
        raise RegistrationError("execution policies must be a JSON object", check="policies")
    if len(json.dumps(policies)) > MAX_POLICY_BYTES:
        raise RegistrationError(f"execution policies exceed {MAX_POLICY_BYTES} bytes", check="policies")
    return policies


@dataclass
class Timings:
    """Seconds per stage of one registration (the benchmark reads them)."""

    stages: dict[str, float] = field(default_factory=dict)

    def add(self, stage: str, started: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + time.perf_counter() - started


@dataclass
class _Undo:
    """What a registration created so far, undone in reverse order on failure."""

    client: docker.DockerClient
    images: list[str] = field(default_factory=list)  # tags or IDs, removed last-first
    manifest: tuple[RegistryClient, str, str] | None = None
    reservation: tuple[ArtefactSigner, str] | None = None  # the SM's reservation of the name

    def remove_local(self) -> list[str]:
        problems = []
        for reference in reversed(self.images):
            try:
                self.client.images.remove(reference, force=False, noprune=False)
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.APIError as exc:
                problems.append(f"{reference}: {exc.explanation or exc}")
        self.images.clear()
        return problems

    def remove_manifest(self) -> None:
        if self.manifest is not None:
            registry, repository, digest = self.manifest
            registry.delete_manifest(repository, digest)
            self.manifest = None

    def release_reservation(self) -> None:
        if self.reservation is not None:
            signer, name = self.reservation
            release = getattr(signer, "release_artefact_id", None)  # signers written before the SM phase lack it
            if release is not None:
                release(name)
            self.reservation = None


class Marketplace:
    """The MP core: registry, catalogue, vetting rules, and the SM's signatures through a signer."""

    def __init__(self, *, catalogue: Catalogue, registry: RegistryClient, registry_address: str,
                 credentials: RegistryCredentials, signer: ArtefactSigner, rules: VettingRules | None = None,
                 docker_client: docker.DockerClient | None = None, bl_dir: Path | None = None) -> None:
        self.catalogue = catalogue
        self.registry = registry
        self.registry_address = registry_address
        self.credentials = credentials
        self.signer = signer
        self.rules = rules or VettingRules()
        self.docker = docker_client or docker.from_env(timeout=600)
        self._bl_dir = bl_dir

    @property
    def bl_dir(self) -> Path:
        if self._bl_dir is None:
            self._bl_dir = build_layer()
        return self._bl_dir

    # -- reading ---------------------------------------------------------------------------------

    def list(self, caller: Identity, owner: str | None = None) -> list[Artefact]:
        authorize(caller, READ_ROLES, "list artefacts")
        return self.catalogue.list(owner)

    def show(self, caller: Identity, name: str) -> Artefact:
        authorize(caller, READ_ROLES, "read artefacts")
        artefact = self.catalogue.get(name)
        if artefact is None:
            raise RegistrationError(f"no artefact named {name!r}", check="not-found")
        return artefact

    # -- registration ------------------------------------------------------------------------------

    def register(self, source: Path | str, *, caller: Identity, name: str, policies: Any = None,
                 progress: Progress | None = None, timings: Timings | None = None) -> Artefact:
        """Register ``source`` (a ``docker save`` archive path, or an image reference on the local
        engine) as artefact ``name`` owned by the caller."""
        authorize(caller, REGISTER_ROLES, "register artefacts")
        check_name(name, "artefact name")
        checked_policies = check_policies(policies if policies is not None else {})
        progress = progress or _no_progress
        timings = timings if timings is not None else Timings()
        existing = self.catalogue.get(name)
        if existing is not None:
            whose = "you" if existing.owner == caller.name else f"owner {existing.owner}"
            raise RegistrationError(f"artefact name {name!r} is already registered by {whose}", check="name-taken")
        undo = _Undo(self.docker)
        try:
            artefact = self._register(source, caller, name, checked_policies, progress, timings, undo)
        except BaseException as exc:
            try:
                undo.remove_manifest()
            except BonseyesError as cleanup:
                exc.add_note(f"cleanup: could not delete the pushed manifest: {cleanup}")
            if not (isinstance(exc, RegistrationError) and exc.check == "name-taken"):
                try:
                    undo.release_reservation()
                except BonseyesError as cleanup:
                    exc.add_note(f"cleanup: could not release the SM's reservation: {cleanup}")
            raise
        finally:
            problems = undo.remove_local()
            if problems:
                progress("cleanup", {"problems": problems})
        return artefact

    def _register(self, source: Path | str, caller: Identity, name: str, policies: dict[str, Any],
                  progress: Progress, timings: Timings, undo: _Undo) -> Artefact:
        with tempfile.TemporaryDirectory(prefix="bonseyes-mp-") as work:
            workdir = Path(work)
            started = time.perf_counter()
            archive_path, from_engine = self._materialise(source, workdir)
            progress("vet", {"archive": str(archive_path)})
            image = read_archive(archive_path)
            vet(image, self.rules)
            timings.add("vet", started)

            started = time.perf_counter()
            base = self._base_in_engine(image, archive_path, from_engine, undo)
            staging = f"bonseyes-mp-staging/{secrets.token_hex(8)}"
            self.docker.api.tag(base, staging, "base")
            undo.images.append(f"{staging}:base")
            artefact_id = self.signer.sign_artefact_id(name, caller.name)
            undo.reservation = (self.signer, name)
            original = original_settings(image.container_config)
            repository = repository_for(name)
            published = f"{self.registry_address}/{repository}"
            context = workdir / "context"
            context.mkdir()
            labels = write_context(context, base=f"{staging}:base", bl_dir=self.bl_dir, artefact=name,
                                   owner=caller.name, artefact_id=artefact_id,
                                   sm_certificates=self.signer.sm_certificates(), original=original)
            image_ref = f"{published}:{PUBLISHED_TAG}"
            undo.images.append(image_ref)  # registered before the build: a half-built tag is removed too
            build_image(self.docker, context, image_ref, labels, progress)
            timings.add("layer", started)
            size = int(self.docker.images.get(image_ref).attrs.get("Size") or 0)

        started = time.perf_counter()
        progress("push", {"repository": published})
        try:
            digest = push_image(self.docker, published, PUBLISHED_TAG, self.credentials, progress)
        except RegistryError:
            self._forget_partial_push(repository, undo)
            raise
        undo.manifest = (self.registry, repository, check_digest(digest))
        timings.add("push", started)

        started = time.perf_counter()
        stored = self.registry.manifest_digest(repository, digest)
        if stored != digest:
            raise RegistryError(f"registry holds {stored} for {repository}, engine pushed {digest}",
                                check="digest-mismatch")
        timings.add("digest", started)

        started = time.perf_counter()
        progress("sign", {"digest": digest})
        image_id = self.signer.sign_image_id(digest, name)
        artefact = Artefact(name=name, owner=caller.name, artefact_id=artefact_id, image_id=image_id, digest=digest,
                            repository=repository, registry=self.registry_address, policies=policies,
                            original=original, size=size, created_at=dt.datetime.now(dt.UTC))
        self.catalogue.add(artefact)
        timings.add("sign", started)
        undo.manifest = None  # committed: the manifest now belongs to the catalogue row
        undo.reservation = None
        progress("done", {"reference": artefact.reference})
        return artefact

    def _forget_partial_push(self, repository: str, undo: _Undo) -> None:
        """If the registry did store the manifest before the push broke, delete it (best effort)."""
        try:
            digest = self.registry.manifest_digest(repository, PUBLISHED_TAG)
        except RegistryError:
            return  # unreachable: it cannot have stored a manifest we could not check either
        if digest is not None:
            undo.manifest = (self.registry, repository, digest)

    def _materialise(self, source: Path | str, workdir: Path) -> tuple[Path, bool]:
        """A ``docker save`` archive on disk, and whether the image came from the local engine."""
        path = Path(source)
        if path.is_file():
            return path, False
        if isinstance(source, Path) or ("/" in str(source) and path.suffix in (".tar", ".gz")):
            raise RegistrationError(f"archive {source} does not exist", check="archive")
        try:
            engine_image = self.docker.images.get(str(source))
        except docker.errors.ImageNotFound as exc:
            raise RegistrationError(f"no image {source!r} on the local engine and no such archive",
                                    check="image-not-found") from exc
        archive = workdir / "source.tar"
        with archive.open("wb") as handle:
            for chunk in engine_image.save(named=False):
                handle.write(chunk)
        return archive, True

    def _base_in_engine(self, image: ImageArchive, archive_path: Path, from_engine: bool, undo: _Undo) -> str:
        """The uploaded image's ID in the engine, loading the archive when needed (and undoing the load)."""
        if from_engine:
            return image.image_id
        try:
            self.docker.images.get(image.image_id)
            return image.image_id  # already present: not ours to remove afterwards
        except docker.errors.ImageNotFound:
            pass
        tags_before = {tag for tag in image.repo_tags if self._exists(tag)}
        try:
            with archive_path.open("rb") as handle:
                loaded = self.docker.images.load(handle)
        except docker.errors.APIError as exc:
            raise RegistrationError(f"archive {archive_path.name} could not be loaded: {exc.explanation or exc}",
                                    check="archive") from exc
        undo.images.append(image.image_id)
        undo.images.extend(tag for tag in image.repo_tags if tag not in tags_before)
        if not any(candidate.id == image.image_id for candidate in loaded):
            raise RegistrationError("the engine loaded a different image than the archive's manifest names",
                                    check="archive")
        return image.image_id

    def _exists(self, reference: str) -> bool:
        try:
            self.docker.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        return True
