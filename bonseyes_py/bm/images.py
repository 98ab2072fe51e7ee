"""Step 3 on the host: fetch images by digest from the registry and report the digest computed.

The image identity is the OCI manifest digest. ``docker pull REPO@sha256:...`` makes the engine
check the manifest against that digest and every layer blob against the digest the manifest names,
so one flipped byte anywhere fails the pull; the digest BM reports is then read back from the
engine (``RepoDigests``), never echoed from the request. A failed pull is reported as an empty
digest with the engine's reason, which the SM treats as a mismatch.

The SM names images by digest only; the repository that holds a digest is found by asking the
registry (its catalogue, then ``HEAD`` of the manifest by digest), which is content addressed and
so cannot point BM at other bytes than the ones the digest pins.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import docker
import docker.errors
import requests

from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.identity.ids import check_digest

log = logging.getLogger(__name__)

MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
))
MAX_REPOSITORIES = 10_000
CATALOGUE_PAGE = 1000  # distribution's maximum page size


class ImageError(BonseyesError):
    check = "image"


@dataclass(frozen=True)
class FetchResult:
    requested: str
    computed: str  # "" when the image could not be fetched or did not match
    reference: str
    error: str = ""


class ImageStore:
    """Pulls, digests and removes images on one Docker engine for one BM."""

    def __init__(self, client: docker.DockerClient, registry: str, *, scheme: str = "http",
                 timeout: float = 30.0) -> None:
        self.client = client
        self.registry = registry
        self.registry_url = f"{scheme}://{registry}"
        self.timeout = timeout
        self._repositories: dict[str, str] = {}
        self._lock = threading.Lock()

    # -- repository lookup ------------------------------------------------------------------------

    def _has_manifest(self, repository: str, digest: str) -> bool:
        response = requests.head(f"{self.registry_url}/v2/{repository}/manifests/{digest}",
                                 headers={"Accept": MANIFEST_TYPES}, timeout=self.timeout)
        return response.status_code == 200 and response.headers.get("Docker-Content-Digest") == digest

    def _catalogue(self) -> list[str]:
        """Every repository name, following the registry's pagination (``Link: <...>; rel="next"``)."""
        repositories: list[str] = []
        url: str | None = f"{self.registry_url}/v2/_catalog?n={CATALOGUE_PAGE}"
        while url and len(repositories) < MAX_REPOSITORIES:
            response = requests.get(url, timeout=self.timeout)
            response.raise_for_status()
            repositories += [str(r) for r in response.json().get("repositories") or []]
            following = response.links.get("next", {}).get("url")
            url = f"{self.registry_url}{following}" if following and following.startswith("/") else following
        return repositories

    def repository_of(self, digest: str) -> str:
        check_digest(digest)
        with self._lock:
            known = self._repositories.get(digest)
        if known is not None:
            return known
        if not self.registry:
            raise ImageError("this BM has no registry configured", check="registry")
        try:
            for repository in self._catalogue():
                if self._has_manifest(repository, digest):
                    with self._lock:
                        self._repositories[digest] = repository
                    return repository
        except (requests.RequestException, ValueError) as exc:
            raise ImageError(f"registry {self.registry} did not answer: {exc}", check="registry") from exc
        raise ImageError(f"no repository of registry {self.registry} holds {digest}", check="image-not-found")

    def reference(self, digest: str) -> str:
        return f"{self.registry}/{self.repository_of(digest)}@{digest}"

    # -- step 3 -------------------------------------------------------------------------------------

    def local_digests(self, reference: str) -> list[str]:
        """The manifest digests the engine records for a pulled image (``RepoDigests``)."""
        try:
            image = self.client.images.get(reference)
        except docker.errors.ImageNotFound:
            return []
        return [entry.partition("@")[2] for entry in image.attrs.get("RepoDigests") or []]

    def fetch(self, digest: str) -> FetchResult:
        """Pull ``digest`` and return the digest the engine computed for it."""
        try:
            reference = self.reference(digest)
        except BonseyesError as exc:
            return FetchResult(digest, "", "", str(exc))
        repository = reference.partition("@")[0]
        try:
            self.client.images.pull(repository, tag=digest)
        except docker.errors.APIError as exc:
            log.warning("pull of %s failed: %s", reference, exc)
            return FetchResult(digest, "", reference, f"pull failed: {exc.explanation or exc}")
        computed = digest if digest in self.local_digests(reference) else ""
        return FetchResult(digest, computed, reference,
                           "" if computed else "engine records no such manifest digest after the pull")

    def is_present(self, digest: str) -> bool:
        try:
            return digest in self.local_digests(self.reference(digest))
        except BonseyesError:
            return False

    def remove(self, digest: str) -> bool:
        """Delete the image pulled for ``digest``; ``False`` when it was not there."""
        check_digest(digest)
        try:
            reference = self.reference(digest)
        except BonseyesError:
            reference = ""
        removed = False
        candidates = [reference] if reference else []
        # Also any local image whose RepoDigests name this digest (another repository, or the lookup failed).
        for image in self.client.images.list(all=True):
            if any(entry.endswith("@" + digest) for entry in image.attrs.get("RepoDigests") or []):
                candidates.append(image.id)
        for candidate in candidates:
            try:
                self.client.images.remove(candidate, force=True, noprune=False)
                removed = True
            except docker.errors.ImageNotFound:
                continue
            except docker.errors.APIError as exc:
                raise ImageError(f"could not remove {candidate}: {exc.explanation or exc}") from exc
        return removed


def check_digest_list(value: object) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= 256:
        raise InputError("digests must be a list of 1 to 256 sha256 digests", check="digests")
    return [check_digest(d) for d in value]
