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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

import docker
import docker.errors
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError
from bonseyes_py.pki.roles import Role, identity_of
from bonseyes_py.web.client import (
    ClientError,
    MTLSClient,
    Response,
    ServerRefused,
    TLSFailure,
    Unreachable,
    iter_lines,
)
from bonseyes_py.web.tls import new_client_ssl_context

Progress = Callable[[str, dict[str, Any]], None]
MAX_ANSWER_BYTES = 64 * 1024 * 1024  # a catalogue listing may be long
MAX_EVENT_BYTES = 1024 * 1024  # one NDJSON progress event


class MarketplaceRefusal(BonseyesError):
    """The Marketplace answered with an error; ``check`` is its ``error`` field."""

    check = "marketplace"

    def __init__(self, message: str, *, check: str | None = None, status: int = 0) -> None:
        super().__init__(message, check=check)
        self.status = status


def _context(cert: str, key: str, sm_root: str) -> ssl.SSLContext:
    # The role (below) and then the pinned fingerprint are the checks, not a host name.
    return new_client_ssl_context(sm_root, certfile=cert, keyfile=key, check_hostname=False)


def marketplace_fingerprint(url: str, cert: str, key: str, sm_root: str, timeout: float = 10.0,
                            context: ssl.SSLContext | None = None) -> str:
    """Handshake once; check the chain (SM root) and the role; return the leaf's SHA-256 fingerprint."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise MarketplaceRefusal(f"Marketplace URL must be https://HOST:PORT, not {url!r}", check="usage")
    try:
        context = context or _context(cert, key, sm_root)
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
    """A file object with a length (sent as Content-Length) that reports bytes sent."""

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


@contextmanager
def _as_refusal(method: str, path: str) -> Iterator[None]:
    """The client's errors as the one error the CLI and the tests catch, keeping the MP's check."""
    try:
        yield
    except ServerRefused as exc:
        if exc.error:
            raise MarketplaceRefusal(exc.message, check=exc.error, status=exc.status) from exc
        raise MarketplaceRefusal(f"HTTP {exc.status}: {exc.message}", check="http", status=exc.status) from exc
    except (Unreachable, TLSFailure) as exc:
        raise MarketplaceRefusal(f"{method} {path}: {exc.args[0]}", check="unreachable") from exc
    except ClientError as exc:
        raise MarketplaceRefusal(f"{method} {path}: {exc.args[0]}", check=exc.check) from exc


class MarketplaceClient:
    """The Marketplace's client: one kept-alive connection pool pinned to the certificate checked first."""

    def __init__(self, url: str, cert: str, key: str, sm_root: str, *, timeout: float = 3600.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        try:
            context = _context(cert, key, sm_root)
        except (OSError, ssl.SSLError) as exc:
            raise MarketplaceRefusal(f"cannot load the TLS files {cert}, {key}, {sm_root}: {exc}",
                                     check="tls") from exc
        fingerprint = marketplace_fingerprint(self.url, cert, key, sm_root, context=context)
        self.client = MTLSClient(self.url, ca_file=sm_root, ssl_context=context, check_hostname=False,
                                 assert_fingerprint=fingerprint, timeout=timeout, max_response_bytes=MAX_ANSWER_BYTES)

    def request(self, method: str, path: str, *, json: Any = None, data: Any = None,
                params: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                timeout: float | None = None) -> Response:
        """Any call, with its answer whatever the status (tests and ``_answer`` read it)."""
        with _as_refusal(method, path):
            return self.client.raw(method, path, json=json, body=data, params=params, headers=headers,
                                   expected=None, timeout=timeout)

    @staticmethod
    def _answer(response: Response, expected: int) -> Any:
        try:
            body = safejson.loads(response.body, what="the Marketplace's answer", max_bytes=MAX_ANSWER_BYTES)
        except BonseyesError:
            body = None
        if response.status != expected:
            if isinstance(body, dict) and "error" in body:
                raise MarketplaceRefusal(str(body.get("message", "")), check=str(body["error"]),
                                         status=response.status)
            text = " ".join(response.body[:200].decode(errors="replace").split())
            raise MarketplaceRefusal(f"HTTP {response.status}: {text}", check="http", status=response.status)
        return body

    def _call(self, method: str, path: str, *, expected: int = 200, **options: Any) -> Any:
        with _as_refusal(method, path):
            return self.client.request(method, path, expected=(expected,), **options)

    def ping(self) -> dict[str, Any]:
        return dict(self._call("GET", "/v1/ping", timeout=30))

    def list(self, owner: str | None = None) -> list[dict[str, Any]]:
        params = {"owner": owner} if owner else None
        return list(self._call("GET", "/v1/artefacts", params=params, timeout=60)["artefacts"])

    def show(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/v1/artefacts/{name}", timeout=60))

    def close(self) -> None:
        self.client.close()

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
        headers = {"Content-Type": "application/x-tar", "Content-Length": str(size)}
        with path.open("rb") as handle:
            body: Any = _ProgressReader(handle, size, progress) if progress else handle
            if progress is None:
                return dict(self._call("POST", "/v1/artefacts", expected=201, params=params, body=body,
                                       headers=headers))
            return self._register_streamed(progress, params, body, headers)

    def register_image(self, image: str, name: str, policies: dict[str, Any] | None = None,
                       progress: Progress | None = None, *, engine: docker.DockerClient | None = None
                       ) -> dict[str, Any]:
        """Save ``image`` from this machine's Docker engine (``docker save``) and upload it.

        The archive goes to a private temporary directory and is removed afterwards.
        """
        with tempfile.TemporaryDirectory(prefix="bonseyes-upload-") as directory:
            archive = save_image(image, Path(directory) / "image.tar", engine=engine, progress=progress)
            return self.register_archive(archive, name, policies, progress)

    def _register_streamed(self, progress: Progress, params: dict[str, str], body: Any,
                           headers: dict[str, str]) -> dict[str, Any]:
        """The registration with ``Accept: application/x-ndjson``: progress events, then the outcome."""
        with _as_refusal("POST", "/v1/artefacts"), \
                self.client.stream("POST", "/v1/artefacts", params=params, body=body,
                                   headers={**headers, "Accept": "application/x-ndjson"}) as response:
            for event in _events(iter_lines(response, max_line_bytes=MAX_EVENT_BYTES,
                                            url=self.client.url("/v1/artefacts"))):
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
