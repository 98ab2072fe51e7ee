"""An mTLS client of the Marketplace service, as a user (or host) identity: what the CLI uses.

The MP's certificate may come from the SM's ``POST /v1/services``, which names the MP by its
SPIFFE URI only (no DNS or IP name). So the client checks what matters here: the chain ends at the
SM root (the TLS handshake, ``verify=`` the root) and the peer's role is ``marketplace`` (its URI);
then it pins that exact certificate (SHA-256 fingerprint) for every request of the session.

Registration is always an upload: ``register_image`` saves an image of the caller's own Docker
engine (``docker save``) into a private temporary file and uploads that; the Marketplace never
registers an image by name.
"""

from __future__ import annotations

import json
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import docker
import docker.errors
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from requests.adapters import HTTPAdapter

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError
from bonseyes_py.pki.roles import Role, identity_of

Progress = Callable[[str, dict[str, Any]], None]
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # a catalogue listing may be long


class MarketplaceRefusal(BonseyesError):
    """The Marketplace answered with an error; ``check`` is its ``error`` field."""

    check = "marketplace"

    def __init__(self, message: str, *, check: str | None = None, status: int = 0) -> None:
        super().__init__(message, check=check)
        self.status = status


class _Pinned(HTTPAdapter):
    def __init__(self, fingerprint: str) -> None:
        self.fingerprint = fingerprint
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_hostname"] = False
        kwargs["assert_fingerprint"] = self.fingerprint
        super().init_poolmanager(*args, **kwargs)


def marketplace_fingerprint(url: str, cert: str, key: str, sm_root: str, timeout: float = 10.0) -> str:
    """Handshake once; check the chain (SM root) and the role; return the leaf's SHA-256 fingerprint."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise MarketplaceRefusal(f"Marketplace URL must be https://HOST:PORT, not {url!r}", check="usage")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # the role below is the check, not a host name
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cafile=sm_root)
    context.load_cert_chain(cert, key)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout) as raw, \
                context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise MarketplaceRefusal(f"cannot reach the Marketplace at {url}: {exc}", check="unreachable") from exc
    if der is None:
        raise MarketplaceRefusal("the Marketplace presented no certificate", check="tls")
    certificate = x509.load_der_x509_certificate(der)
    identity = identity_of(certificate)
    if identity.role is not Role.MARKETPLACE:
        raise MarketplaceRefusal(f"{url} is {identity.uri}, not a marketplace", check="peer-role")
    return certificate.fingerprint(hashes.SHA256()).hex()


class _ProgressReader:
    """A file object with a length (so requests sends Content-Length) that reports bytes sent."""

    def __init__(self, handle: BinaryIO, size: int, progress: Progress) -> None:
        self.handle, self.size, self.progress = handle, size, progress
        self.sent = 0
        self._reported = -1

    def __len__(self) -> int:
        return self.size

    def read(self, amount: int = -1) -> bytes:
        chunk = self.handle.read(amount if amount and amount > 0 else 1024 * 1024)
        self.sent += len(chunk)
        percent = self.sent * 100 // max(self.size, 1)
        if percent // 10 != self._reported // 10 or not chunk:
            self._reported = percent
            self.progress("upload", {"sent": self.sent, "total": self.size, "percent": percent})
        return chunk


class MarketplaceClient:
    def __init__(self, url: str, cert: str, key: str, sm_root: str, *, timeout: float = 3600.0) -> None:
        self.url = url.rstrip("/")
        self.cert = (cert, key)
        self.verify = sm_root
        self.timeout = timeout
        self.session = requests.Session()
        self.session.mount("https://", _Pinned(marketplace_fingerprint(self.url, cert, key, sm_root)))

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        try:
            return self.session.request(method, self.url + path, cert=self.cert, verify=self.verify, **kwargs)
        except requests.RequestException as exc:
            raise MarketplaceRefusal(f"{method} {path}: {exc}", check="unreachable") from exc

    @staticmethod
    def _answer(response: requests.Response, expected: int) -> Any:
        try:
            body = safejson.loads(response.content, what="the Marketplace's answer", max_bytes=MAX_ANSWER_BYTES)
        except BonseyesError:
            body = None
        if response.status_code != expected:
            if isinstance(body, dict) and "error" in body:
                raise MarketplaceRefusal(str(body.get("message", "")), check=str(body["error"]),
                                         status=response.status_code)
            raise MarketplaceRefusal(f"HTTP {response.status_code}: {response.text[:200]}", check="http",
                                     status=response.status_code)
        return body

    def ping(self) -> dict[str, Any]:
        return dict(self._answer(self.request("GET", "/v1/ping", timeout=30), 200))

    def list(self, owner: str | None = None) -> list[dict[str, Any]]:
        params = {"owner": owner} if owner else None
        return list(self._answer(self.request("GET", "/v1/artefacts", params=params, timeout=60), 200)["artefacts"])

    def show(self, name: str) -> dict[str, Any]:
        return dict(self._answer(self.request("GET", f"/v1/artefacts/{name}", timeout=60), 200))

    def register_archive(self, archive: Path | str, name: str, policies: dict[str, Any] | None = None,
                         progress: Progress | None = None) -> dict[str, Any]:
        """Upload a ``docker save`` archive (streamed from disk) and register it."""
        path = Path(archive)
        size = path.stat().st_size
        limit = int(self.ping().get("max_upload_bytes") or 0)
        if limit and size > limit:
            raise MarketplaceRefusal(f"archive {path.name} is {size} bytes, over the Marketplace's {limit}-byte "
                                     "upload limit", check="upload-too-large")
        params = {"name": name}
        if policies is not None:
            params["policies"] = json.dumps(policies, separators=(",", ":"))
        with path.open("rb") as handle:
            body: Any = _ProgressReader(handle, size, progress) if progress else handle
            return self._register(progress, params=params, data=body,
                                  headers={"Content-Type": "application/x-tar"})

    def register_image(self, image: str, name: str, policies: dict[str, Any] | None = None,
                       progress: Progress | None = None, *, engine: docker.DockerClient | None = None
                       ) -> dict[str, Any]:
        """Save ``image`` from this machine's Docker engine (``docker save``) and upload it.

        The archive goes to a private temporary directory and is removed afterwards.
        """
        with tempfile.TemporaryDirectory(prefix="bonseyes-upload-") as directory:
            archive = save_image(image, Path(directory) / "image.tar", engine=engine, progress=progress)
            return self.register_archive(archive, name, policies, progress)

    def _register(self, progress: Progress | None, **kwargs: Any) -> dict[str, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if progress is None:
            return dict(self._answer(self.request("POST", "/v1/artefacts", headers=headers, **kwargs), 201))
        headers["Accept"] = "application/x-ndjson"
        response = self.request("POST", "/v1/artefacts", headers=headers, stream=True, **kwargs)
        with response:
            if response.status_code != 200:
                self._answer(response, 201)
            for event in _events(response.iter_lines()):
                if event.get("event") == "progress":
                    progress(str(event.get("stage")), dict(event.get("detail") or {}))
                elif event.get("event") == "result":
                    return dict(event["artefact"])
                elif event.get("event") == "error":
                    raise MarketplaceRefusal(str(event.get("message", "")), check=str(event.get("error")),
                                             status=int(event.get("status") or 0))
        raise MarketplaceRefusal("the Marketplace ended the registration stream without an outcome",
                                 check="stream")


def save_image(image: str, archive: Path, *, engine: docker.DockerClient | None = None,
               progress: Progress | None = None) -> Path:
    """``docker save`` of ``image`` from the local engine into ``archive`` (untagged: no local names leak)."""
    try:
        client = engine or docker.from_env(timeout=600)
        local = client.images.get(image)
        if progress is not None:
            progress("save", {"image": image, "id": local.id})
        with archive.open("wb") as handle:
            for chunk in client.api.get_image(local.id):
                handle.write(chunk)
    except docker.errors.ImageNotFound as exc:
        raise MarketplaceRefusal(f"no image {image!r} on this machine's Docker engine",
                                 check="image-not-found") from exc
    except docker.errors.DockerException as exc:
        raise MarketplaceRefusal(f"cannot save image {image!r} from this machine's Docker engine: {exc}",
                                 check="docker") from exc
    return archive


def _events(lines: Iterator[bytes]) -> Iterator[dict[str, Any]]:
    for line in lines:
        if line.strip():
            try:
                event = safejson.loads_object(line, what="a registration progress event")
            except BonseyesError as exc:
                raise MarketplaceRefusal(str(exc.args[0]) if exc.args else exc.check, check="stream") from exc
            yield event
