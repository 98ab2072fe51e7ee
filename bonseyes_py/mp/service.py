"""Artefact registration (step 1 of the paper) as one atomic pipeline.

vet -> sign artefact ID -> build (base + BL + IDs + SM certificates) -> push -> digest -> sign
image ID -> catalogue row. Every step records what it created (local images and tags, the
pushed manifest); any failure undoes all of it, so a refused or failed registration leaves no
catalogue row, no manifest or tag in the registry and no image in the local engine.

The source of a registration is something its owner proves to hold:

- ``register``: the bytes of a ``docker save`` archive the caller sent (an upload, spooled to a
  file by the adapter). It is the only entry point of remote callers. Every config and layer of the
  archive must hash to the digest it is named by, and the engine loads a re-packed archive of just
  those bytes (``archive.write_canonical``), so no name or digest in an upload resolves to an image,
  layer or tag the engine or the registry already holds;
- ``register_local_image``: an image of this host's Docker engine, registered for ``owner`` by the
  operator (the Ansible module, in process on the MP host, with the operator's authority). No
  network adapter calls it.

After the push, the published manifest and config are read back from the registry: the config must
be the one built, its layers the uploaded diff IDs plus the one BL layer, and every blob must be
in the artefact's own repository, none a foreign (URL) layer.
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

from bonseyes_py import safejson
from bonseyes_py.bl.build import build_layer
from bonseyes_py.errors import BonseyesError, InputError, PolicyDenied
from bonseyes_py.identity.ids import check_digest
from bonseyes_py.mp.archive import ImageArchive, read_archive, write_canonical
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
            policies = safejson.loads(policies, what="execution policies", max_bytes=MAX_POLICY_BYTES)
        except InputError as exc:
            if exc.check != "json":
                raise  # json-too-deep / json-too-large keep their own check
            raise RegistrationError(str(exc.args[0]) if exc.args else exc.check, check="policies") from exc
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
                 docker_client: docker.DockerClient | None = None, bl_dir: Path | None = None,
                 work_dir: Path | None = None) -> None:
        self.catalogue = catalogue
        self.registry = registry
        self.registry_address = registry_address
        self.credentials = credentials
        self.signer = signer
        self.rules = rules or VettingRules()
        self.docker = docker_client or docker.from_env(timeout=600)
        self._bl_dir = bl_dir
        self.work_dir = work_dir  # where a registration writes its scratch files (default: the system's)

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

    def register(self, archive: Path | str, *, caller: Identity, name: str, policies: Any = None,
                 progress: Progress | None = None, timings: Timings | None = None) -> Artefact:
        """Register the ``docker save`` archive at path ``archive`` as artefact ``name`` owned by the caller.

        The archive is the caller's upload: what she sent, spooled to a file by the adapter. It is the
        whole source: a name or digest in it never resolves to what the engine or the registry holds,
        and ``archive`` is a file path, never an engine reference (see ``register_local_image``).
        """
        path = Path(archive)
        if not path.is_file():
            raise RegistrationError(f"no archive at {path}: register takes the path of an uploaded docker save "
                                    "archive (an image on this host's engine is the operator's "
                                    "register_local_image)", check="archive")
        return self._run(path, caller=caller, name=name, policies=policies, progress=progress, timings=timings)

    def register_local_image(self, reference: str, *, owner: Identity, name: str, policies: Any = None,
                             progress: Progress | None = None, timings: Timings | None = None) -> Artefact:
        """The operator registers image ``reference`` of this host's Docker engine as ``owner``'s artefact.

        For in-process callers acting with the operator's authority on the MP host (the Ansible module
        ``bonseyes_artefact``); no network adapter calls it, since an engine holds every tenant's images.
        """
        if not isinstance(reference, str):
            raise RegistrationError("register_local_image takes an image reference of the local engine; an archive "
                                    "is registered with register", check="image-reference")
        try:
            engine_image = self.docker.images.get(reference)
        except docker.errors.ImageNotFound as exc:
            raise RegistrationError(f"no image {reference!r} on the local engine", check="image-not-found") from exc
        except docker.errors.APIError as exc:
            raise RegistrationError(f"image {reference!r}: {exc.explanation or exc}", check="image-reference") from exc
        return self._run(_EngineImage(reference, str(engine_image.id)), caller=owner, name=name, policies=policies,
                         progress=progress, timings=timings)

    def _run(self, source: Path | _EngineImage, *, caller: Identity, name: str, policies: Any,
             progress: Progress | None, timings: Timings | None) -> Artefact:
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

    def _register(self, source: Path | _EngineImage, caller: Identity, name: str, policies: dict[str, Any],
                  progress: Progress, timings: Timings, undo: _Undo) -> Artefact:
        if self.work_dir is not None:
            self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="bonseyes-mp-", dir=self.work_dir) as work:
            workdir = Path(work)
            started = time.perf_counter()
            archive_path = source if isinstance(source, Path) else self._save(source, workdir)
            progress("vet", {"archive": archive_path.name})
            image = read_archive(archive_path)
            vet(image, self.rules)
            timings.add("vet", started)

            started = time.perf_counter()
            if isinstance(source, Path):
                base = self._load_upload(image, workdir, undo)
            elif image.image_id != source.image_id:
                raise RegistrationError(f"engine image {source.reference!r} changed while it was saved",
                                        check="image-changed")
            else:
                base = source.image_id  # the operator's own engine image: used where it is
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
            built = self.docker.images.get(image_ref)
            size = int(built.attrs.get("Size") or 0)

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
        self.registry.check_published(repository, digest, config=str(built.id), base_layers=image.diff_ids)
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

    def _save(self, source: _EngineImage, workdir: Path) -> Path:
        """``docker save`` of the operator's engine image (by ID), to be read and vetted like an upload."""
        archive = workdir / "source.tar"
        try:
            with archive.open("wb") as handle:
                for chunk in self.docker.api.get_image(source.image_id):
                    handle.write(chunk)
        except docker.errors.APIError as exc:
            raise RegistrationError(f"could not save engine image {source.reference!r}: {exc.explanation or exc}",
                                    check="image-not-found") from exc
        return archive

    def _load_upload(self, image: ImageArchive, workdir: Path, undo: _Undo) -> str:
        """Load the checked upload into the engine from its canonical re-pack; return its image ID.

        The re-pack holds only the uploaded bytes that hash to their digests, and no tag: whatever the
        engine already has, what it ends up with under this ID is the vetted upload, and no tag moves.
        """
        canonical = write_canonical(image, workdir / "canonical.tar")
        if not self._exists(image.image_id):
            undo.images.append(image.image_id)  # ours to remove, even if the load fails halfway
        try:
            with canonical.open("rb") as handle:
                loaded = self.docker.images.load(handle)
        except docker.errors.APIError as exc:
            raise RegistrationError(f"archive {image.path.name} could not be loaded: {exc.explanation or exc}",
                                    check="archive") from exc
        finally:
            canonical.unlink(missing_ok=True)
        if [candidate.id for candidate in loaded] != [image.image_id]:
            raise RegistrationError("the engine loaded a different image than the archive's checked config",
                                    check="archive")
        return image.image_id

    def _exists(self, reference: str) -> bool:
        try:
            self.docker.images.get(reference)
        except docker.errors.ImageNotFound:
            return False
        return True


@dataclass(frozen=True)
class _EngineImage:
    """An image of the local engine the operator registers: its reference and its ID when named."""

    reference: str
    image_id: str
