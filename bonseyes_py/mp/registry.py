"""The Marketplace's OCI registry: CNCF distribution (Debian ``docker-registry``) run as its own process.

Who may write is decided by how the process is configured, since distribution has no per-action
rule for htpasswd users:

- the *push endpoint* listens on loopback only and demands htpasswd (bcrypt) credentials that only
  the MP holds (a random password in a 0600 file beside the config); deletes are enabled so a
  failed registration can remove the manifest it pushed;
- a *pull endpoint* (``read_only=True``) serves the same storage in distribution's read-only
  maintenance mode behind TLS with client certificates checked against the SM root
  (``http.tls.clientcas``): hosts holding an SM-issued certificate can pull, nobody can push.

``RegistryClient`` is the small part of the distribution HTTP API the MP needs: resolve and delete
manifests, list tags, and stream blobs while checking their sha256 (what a BM does in step 3).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from bonseyes_py import safejson
from bonseyes_py.errors import InputError
from bonseyes_py.identity.ids import check_digest
from bonseyes_py.mp.errors import RegistryError
from bonseyes_py.pki.keys import write_secret_file
from bonseyes_py.web.client import ClientError, MTLSClient, Response

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
# The layer types the engine pushes; a foreign ("nondistributable") layer, fetched from a URL, is none of them.
LAYER_TYPES = (
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
REGISTRY_BINARY = "docker-registry"
MP_REGISTRY_USER = "marketplace"
CHUNK = 1024 * 1024


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: str = field(repr=False)

    def auth_config(self) -> dict[str, str]:
        """What the Docker SDK takes as ``auth_config`` for a push."""
        return {"username": self.username, "password": self.password}


@dataclass(frozen=True)
class RegistryTLS:
    """Server certificate and key (PEM files) and the CA bundle client certificates must chain to."""

    certificate: Path
    key: Path
    client_cas: Path


class RegistryProcess:
    """One ``docker-registry serve`` process over a storage directory.

    ``directory`` holds ``config.yml``, ``htpasswd``, the MP password (0600), the log, and by
    default the storage itself; a pull endpoint passes the push endpoint's ``storage`` directory.
    """

    def __init__(self, directory: Path | str, *, host: str = "127.0.0.1", port: int | None = None,
                 storage: Path | str | None = None, read_only: bool = False, tls: RegistryTLS | None = None,
                 username: str = MP_REGISTRY_USER) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port or free_port(host)
        self.storage = Path(storage) if storage is not None else self.directory / "storage"
        self.read_only = read_only
        self.tls = tls
        self.username = username
        self.process: subprocess.Popen[bytes] | None = None

    # -- configuration ------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` as Docker names the registry in image references."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.address}"

    @property
    def config_path(self) -> Path:
        return self.directory / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.directory / "registry.log"

    @property
    def password_path(self) -> Path:
        return self.directory / "private" / "marketplace-password"

    def credentials(self) -> RegistryCredentials:
        """The MP's push credentials, created on first use and kept (0600) for restarts."""
        if not self.password_path.exists():
            self.password_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_secret_file(self.password_path, secrets.token_urlsafe(32).encode())
        return RegistryCredentials(self.username, self.password_path.read_text().strip())

    def write_config(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.storage.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": not self.read_only},
                "maintenance": {"uploadpurging": {"enabled": False},
                                "readonly": {"enabled": self.read_only}},
            },
            "http": {
                "addr": self.address,
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
        }
        if self.tls is not None:
            config["http"]["tls"] = {"certificate": str(self.tls.certificate), "key": str(self.tls.key),
                                     "clientcas": [str(self.tls.client_cas)]}
        if not self.read_only:
            credentials = self.credentials()
            hashed = bcrypt.hashpw(credentials.password.encode(), bcrypt.gensalt(rounds=10)).decode()
            write_secret_file(self.directory / "htpasswd", f"{credentials.username}:{hashed}\n".encode())
            config["auth"] = {"htpasswd": {"realm": "bonseyes-marketplace",
                                           "path": str(self.directory / "htpasswd")}}
        # The config names the htpasswd path and an HTTP secret: keep it private too.
        write_secret_file(self.config_path, yaml.safe_dump(config, sort_keys=False).encode())
        return self.config_path

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> RegistryProcess:
        binary = shutil.which(REGISTRY_BINARY)
        if binary is None:
            raise RegistryError(f"{REGISTRY_BINARY} is not installed; run scripts/ci/install_docker.sh",
                                check="registry-missing")
        self.write_config()
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen([binary, "serve", str(self.config_path)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise RegistryError(f"registry exited with {self.process.returncode}: {' | '.join(tail)}",
                                    check="registry-start")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RegistryError(f"registry did not answer on {self.url} within {timeout:.0f} s (see {self.log_path})",
                            check="registry-start")

    def _answers(self) -> bool:
        if self.tls is not None:
            # Without a client certificate the handshake fails by design; a listening socket is enough.
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.5):
                return True
            return False
        try:
            with MTLSClient(self.url, ca_file=None, allow_http=True, timeout=1, retries=0) as probe:
                status = probe.raw("GET", "/v2/", expected=None).status
        except ClientError:
            return False
        return status in (200, 401)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash would: used to prove registration survives a registry dying mid-push."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def client(self) -> RegistryClient:
        return RegistryClient(self.url, self.credentials() if not self.read_only else None)

    def __enter__(self) -> RegistryProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RegistryClient:
    """The few distribution API calls the MP makes, with its push credentials."""

    def __init__(self, url: str, credentials: RegistryCredentials | None = None, *, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        # The push endpoint is plain HTTP on loopback, reached only by the MP with its password; answers are
        # capped like any other (a manifest or tag list at MAX_MANIFEST_BYTES), blobs are streamed.
        self.client = MTLSClient(self.url, ca_file=None, allow_http=True, timeout=timeout,
                                 max_response_bytes=MAX_MANIFEST_BYTES)
        self._headers: dict[str, str] = {}
        if credentials is not None:
            token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def _request(self, method: str, path: str, headers: dict[str, str] | None = None) -> Response:
        try:
            return self.client.raw(method, path, headers={**self._headers, **(headers or {})}, expected=None)
        except ClientError as exc:
            raise RegistryError(f"{method} {self.url}{path} failed: {exc}", check="registry-unreachable") from exc

    def ping(self) -> None:
        response = self._request("GET", "/v2/")
        if response.status != 200:
            raise RegistryError(f"registry answered {response.status} to /v2/", check="registry-auth")

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The ``Docker-Content-Digest`` of a tag or digest, or ``None`` when the registry lacks it."""
        response = self._request("HEAD", f"/v2/{repository}/manifests/{reference}",
                                 headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if response.status == 404:
            return None
        if response.status != 200:
            raise RegistryError(f"HEAD manifest {repository}:{reference} answered {response.status}")
        return check_digest(response.headers["Docker-Content-Digest"])

    def manifest(self, repository: str, digest: str) -> tuple[bytes, str]:
        """The manifest bytes for a digest, checked against that digest, and their media type."""
        response = self._request("GET", f"/v2/{repository}/manifests/{check_digest(digest)}",
                                 headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if response.status != 200:
            raise RegistryError(f"GET manifest {repository}@{digest} answered {response.status}")
        if "sha256:" + hashlib.sha256(response.body).hexdigest() != digest:
            raise RegistryError(f"manifest of {repository} does not hash to {digest}", check="digest-mismatch")
        return response.body, response.headers.get("Content-Type", "")

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """Delete a manifest (and with it the tags that point at it); ``False`` when already absent."""
        response = self._request("DELETE", f"/v2/{repository}/manifests/{check_digest(digest)}")
        if response.status == 404:
            return False
        if response.status != 202:
            raise RegistryError(f"DELETE manifest {repository}@{digest} answered {response.status}: "
                                f"{response.body[:200].decode(errors='replace')}")
        return True

    def tags(self, repository: str) -> list[str]:
        response = self._request("GET", f"/v2/{repository}/tags/list")
        if response.status == 404:
            return []
        if response.status != 200:
            raise RegistryError(f"GET tags of {repository} answered {response.status}")
        return list(_parse(response.body, f"tag list of {repository}").get("tags") or [])

    def image_manifest(self, repository: str, digest: str) -> dict[str, Any]:
        """The image manifest of a digest (checked against it), parsed; an index is refused."""
        manifest = _parse(self.manifest(repository, digest)[0], f"manifest {repository}@{digest}",
                          MAX_MANIFEST_BYTES)
        config, layers = manifest.get("config"), manifest.get("layers")
        if (not isinstance(config, dict) or not isinstance(layers, list)
                or not all(isinstance(layer, dict) for layer in layers)):
            raise RegistryError(f"{repository}@{digest} is an index, not an image manifest", check="manifest")
        return manifest

    def blob_digests(self, repository: str, digest: str) -> list[str]:
        """Config and layer digests named by an image manifest."""
        manifest = self.image_manifest(repository, digest)
        return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]

    def has_blob(self, repository: str, digest: str) -> bool:
        """Whether ``repository`` itself holds the blob (distribution answers per repository)."""
        response = self._request("HEAD", f"/v2/{repository}/blobs/{check_digest(digest)}")
        if response.status == 404:
            return False
        if response.status != 200:
            raise RegistryError(f"HEAD blob {repository}@{digest} answered {response.status}")
        return True

    def blob(self, repository: str, digest: str, limit: int) -> bytes:
        """A small blob (an image config), checked against its digest."""
        data = bytearray()
        for chunk in self.iter_blob(repository, digest):
            data += chunk
            if len(data) > limit:
                raise RegistryError(f"blob {repository}@{digest} is over {limit} bytes", check="manifest")
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RegistryError(f"blob {digest} of {repository} does not hash to its digest", check="digest-mismatch")
        return bytes(data)

    def check_published(self, repository: str, digest: str, *, config: str, base_layers: list[str]) -> None:
        """Check what a registration pushed: the built config, the uploaded layers plus one, all held here.

        ``config`` is the image ID the engine built (the config digest) and ``base_layers`` the diff
        IDs of the checked upload; the published config must list them, then exactly one layer more
        (the Bonseyes Layer). Every layer must be a regular layer blob of ``repository`` itself: no
        foreign layer fetched from a URL, no blob the manifest names but the repository lacks.
        """
        manifest = self.image_manifest(repository, digest)

        def refuse(message: str) -> RegistryError:
            return RegistryError(f"published {repository}@{digest}: {message}", check="published-content")

        if manifest["config"].get("digest") != config:
            raise refuse(f"config is {manifest['config'].get('digest')}, not the built image {config}")
        layers = manifest["layers"]
        for layer in layers:
            if layer.get("mediaType") not in LAYER_TYPES or layer.get("urls"):
                raise refuse(f"layer {layer.get('digest')} is a {layer.get('mediaType')} layer "
                             f"{'with URLs ' if layer.get('urls') else ''}the Marketplace does not publish")
        built = _parse(self.blob(repository, config, MAX_CONFIG_BYTES), f"config {config}", MAX_CONFIG_BYTES)
        rootfs = built.get("rootfs")
        diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        if not isinstance(diff_ids, list) or diff_ids[:-1] != base_layers or len(diff_ids) != len(base_layers) + 1:
            raise refuse("its layers are not the uploaded layers plus the Bonseyes Layer")
        if len(layers) != len(diff_ids):
            raise refuse(f"the manifest names {len(layers)} layers, the config {len(diff_ids)}")
        for blob in [config, *(str(layer.get("digest")) for layer in layers)]:
            if not self.has_blob(repository, blob):
                raise refuse(f"blob {blob} is not in the repository")

    def iter_blob(self, repository: str, digest: str) -> Iterator[bytes]:
        path = f"/v2/{repository}/blobs/{check_digest(digest)}"
        try:
            with self.client.stream("GET", path, headers=self._headers, expected=None) as response:
                if response.status != 200:
                    raise RegistryError(f"GET blob {repository}@{digest} answered {response.status}")
                yield from response.stream(CHUNK)
        except ClientError as exc:
            raise RegistryError(f"GET {self.url}{path} failed: {exc}", check="registry-unreachable") from exc

    def verify_image(self, repository: str, digest: str) -> int:
        """Re-hash the manifest and every blob of an image; return the bytes hashed.

        This is the integrity check of step 3: content addressing means the manifest digest alone
        pins every byte, so no ``docker save`` of the whole image is needed.
        """
        total = 0
        for blob in self.blob_digests(repository, digest):
            hasher = hashlib.sha256()
            for chunk in self.iter_blob(repository, blob):
                hasher.update(chunk)
                total += len(chunk)
            if "sha256:" + hasher.hexdigest() != blob:
                raise RegistryError(f"blob {blob} of {repository} does not hash to its digest",
                                    check="digest-mismatch")
        return total


def _parse(data: bytes, what: str, limit: int = safejson.DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """A JSON object the registry sent; a malformed one is the registry's failure."""
    try:
        return safejson.loads_object(data, what=what, max_bytes=limit)
    except InputError as exc:
        raise RegistryError(str(exc.args[0]) if exc.args else exc.check, check="manifest") from exc
