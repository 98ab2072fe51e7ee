"""Step 3 on the host: fetch images by digest from the registry and report the digest computed.

The image identity is the OCI manifest digest. ``docker pull REPO@sha256:...`` makes the engine
check the manifest against that digest and every layer blob against the digest the manifest names,
so one flipped byte anywhere fails the pull; the digest BM reports is then read back from the
engine (``RepoDigests``), never echoed from the request. A failed pull is reported as an empty
digest with the engine's reason, which the SM treats as a mismatch.

The SM names images by digest only; the repository that holds a digest is found by asking the
registry (its catalogue, then ``HEAD`` of the manifest by digest), which is content addressed and
so cannot point BM at other bytes than the ones the digest pins. A reference that is not
``REPOSITORY@sha256:...`` (a tag) is refused before anything reaches the engine.

Hosts pull over TLS with their host certificate from the Marketplace's read-only pull endpoint
(``RegistryProcess(read_only=True, tls=...)``: client certificates must chain to the SM root).
BM's own registry calls use the core's ``MTLSClient`` with the host certificate; the Docker engine, which does
the pull itself, finds the same identity in its per-registry directory
(``/etc/docker/certs.d/HOST:PORT/``): BM links ``<host ID>.cert``/``.key`` there to its own
``tls/host.pem`` and ``tls/host.key`` (links, not copies: the host key stays in one file) and
writes the SM root and intermediate as ``bonseyes-sm.crt``. The engine only uses that directory
for registries it considers secure, which excludes 127.0.0.0/8 (the engine's built-in insecure
range): name the pull endpoint by a DNS name, as a real Marketplace is.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import docker
import docker.errors

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.identity.ids import check_digest
from bonseyes_py.pki.keys import write_public_file
from bonseyes_py.web.client import ClientError, MTLSClient

log = logging.getLogger(__name__)

MANIFEST_TYPES = ", ".join((
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
))
MAX_REPOSITORIES = 10_000
CATALOGUE_PAGE = 1000  # distribution's maximum page size
# ``Link: </v2/_catalog?last=x&n=1000>; rel="next"`` (RFC 8288), as distribution paginates.
_NEXT_LINK = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?')


class ImageError(BonseyesError):
    check = "image"


@dataclass(frozen=True)
class RegistryIdentity:
    """The host identity BM presents to the pull endpoint, and the CA bundle its server must chain to."""

    certificate: Path
    key: Path
    ca_bundle: Path
    name: str  # file name stem in the engine's certs.d directory (the host ID)
    engine_certs_dir: Path | None = Path("/etc/docker/certs.d")


@dataclass(frozen=True)
class FetchResult:
    requested: str
    computed: str  # "" when the image could not be fetched or did not match
    reference: str
    error: str = ""
    # Where the time went (seconds): "lookup" (BM asking the registry which repository holds the
    # digest: protocol) and "pull" (the engine's pull, including its digest checks: Docker).
    timings: dict[str, float] = field(default_factory=dict, compare=False)


class ImageStore:
    """Pulls, digests and removes images on one Docker engine for one BM."""

    def __init__(self, client: docker.DockerClient, registry: str, *, scheme: str = "https",
                 identity: RegistryIdentity | None = None, timeout: float = 30.0) -> None:
        if scheme not in ("https", "http"):
            raise InputError(f"registry scheme must be https, not {scheme!r}", check="registry-scheme")
        if scheme == "https" and registry and identity is None:
            raise InputError("pulling over TLS needs the host identity", check="registry-identity")
        if scheme == "http" and registry:
            log.warning("registry %s is plain HTTP: hosts must pull over TLS from the mTLS pull endpoint", registry)
        self.client = client
        self.registry = registry
        self.registry_url = f"{scheme}://{registry}"
        self.identity = identity if scheme == "https" else None
        self.timeout = timeout
        self._repositories: dict[str, str] = {}
        self._lock = threading.Lock()
        self._registry_client: MTLSClient | None = None
        if self.identity is not None:
            self.configure_engine()

    def configure_engine(self) -> Path | None:
        """Give the engine this host's identity for the pull endpoint (idempotent, done at start and per fetch)."""
        if self.identity is None or self.identity.engine_certs_dir is None or not self.registry:
            return None
        directory = self.identity.engine_certs_dir / self.registry
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_public_file(directory / "bonseyes-sm.crt", self.identity.ca_bundle.read_bytes())
            for suffix, target in ((".key", self.identity.key), (".cert", self.identity.certificate)):
                link = directory / f"{self.identity.name}{suffix}"
                if link.is_symlink() and os.readlink(link) == str(target.resolve()):
                    continue
                temporary = directory / f".{self.identity.name}{suffix}.{os.getpid()}"
                temporary.unlink(missing_ok=True)
                temporary.symlink_to(target.resolve())
                os.replace(temporary, link)
        except OSError as exc:
            # Not fatal here: the engine's pull then fails the TLS handshake and step 3 reports it.
            log.warning("cannot give the engine this host's identity in %s: %s", directory, exc)
            return None
        return directory

    # -- repository lookup ------------------------------------------------------------------------

    def _registry(self) -> MTLSClient:
        """The registry's client, made on first use: a missing host certificate fails a fetch (step 3
        reports it), not the BM's start."""
        with self._lock:
            if self._registry_client is None:
                identity = self.identity
                self._registry_client = MTLSClient(
                    self.registry_url, ca_file=identity.ca_bundle if identity else None,
                    cert_file=identity.certificate if identity else None, key_file=identity.key if identity else None,
                    timeout=self.timeout, allow_http=self.registry_url.startswith("http://"))
            return self._registry_client

    def _has_manifest(self, repository: str, digest: str) -> bool:
        answer = self._registry().raw("HEAD", f"/v2/{repository}/manifests/{digest}",
                                      headers={"Accept": MANIFEST_TYPES}, expected=None)
        return answer.status == 200 and answer.headers.get("Docker-Content-Digest") == digest

    def _catalogue(self) -> list[str]:
        """Every repository name, following the registry's pagination (``Link: <...>; rel="next"``)."""
        repositories: list[str] = []
        path: str | None = f"/v2/_catalog?n={CATALOGUE_PAGE}"
        while path and len(repositories) < MAX_REPOSITORIES:
            answer = self._registry().raw("GET", path)
            page = safejson.loads_object(answer.body, what="registry catalogue page")
            listed = page.get("repositories") or []
            if not isinstance(listed, list):
                raise InputError("registry catalogue page: repositories is not a list", check="json")
            repositories += [str(r) for r in listed]
            path = _next_page(answer.headers.get("Link", ""))
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
        except (ClientError, InputError) as exc:
            raise ImageError(f"registry {self.registry} did not answer: {exc}", check="registry") from exc
        raise ImageError(f"no repository of registry {self.registry} holds {digest}", check="image-not-found")

    def reference(self, digest: str) -> str:
        return f"{self.registry}/{self.repository_of(digest)}@{digest}"

    @staticmethod
    def check_pinned(reference: str) -> tuple[str, str]:
        """``REPOSITORY@sha256:...`` -> (repository, digest); a tag (or anything else) is refused."""
        repository, at, digest = reference.partition("@")
        if not at or not repository:
            raise InputError(f"{reference!r} is not pinned by digest; BM pulls by digest only", check="pull-by-tag")
        return repository, check_digest(digest)

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
        began = time.perf_counter()
        try:
            reference = self.reference(digest)
        except BonseyesError as exc:
            return FetchResult(digest, "", "", str(exc))
        timings = {"lookup": time.perf_counter() - began}
        began = time.perf_counter()
        try:
            self.pull(reference)
        except docker.errors.APIError as exc:
            log.warning("pull of %s failed: %s", reference, exc)
            return FetchResult(digest, "", reference, f"pull failed: {exc.explanation or exc}")
        finally:
            timings["pull"] = time.perf_counter() - began
        began = time.perf_counter()
        computed = digest if digest in self.local_digests(reference) else ""
        timings["readback"] = time.perf_counter() - began
        return FetchResult(digest, computed, reference,
                           "" if computed else "engine records no such manifest digest after the pull", timings)

    def pull(self, reference: str) -> None:
        """Have the engine pull ``REPOSITORY@sha256:...`` (over TLS with this host's identity); tags are refused."""
        repository, digest = self.check_pinned(reference)
        self.configure_engine()
        self.client.images.pull(repository, tag=digest)

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


def _next_page(link: str) -> str | None:
    """The path and query of the ``rel="next"`` link; its host, if any, is ignored (same registry only)."""
    match = _NEXT_LINK.search(link)
    if match is None:
        return None
    parts = urlsplit(match.group(1))
    return parts.path + (f"?{parts.query}" if parts.query else "") if parts.path.startswith("/v2/") else None


def check_digest_list(value: object) -> list[str]:
    if not isinstance(value, list) or not 1 <= len(value) <= 256:
        raise InputError("digests must be a list of 1 to 256 sha256 digests", check="digests")
    return [check_digest(d) for d in value]
