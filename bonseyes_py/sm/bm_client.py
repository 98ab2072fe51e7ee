"""The SM's calls to Bonseyes Modules (step 3 of the paper), behind a small interface.

``BonseyesModuleClient`` is what the pipeline logic needs: tell a BM to fetch images by digest and
report the digests it computed, and tell it to remove them. ``HttpsBonseyesModuleClient`` speaks
HTTPS with the SM's own certificate as client identity, and pins the BM's server certificate to
the host it expects: the certificate must chain to the SM root and carry that host's name
(issued at host registration as a DNS SAN), so a BM cannot be impersonated by another host.

Wire format (the BM side implements it):

- ``POST /v1/images/fetch`` ``{"digests": ["sha256:..."]}`` -> ``{"digests": {"<requested>": "<computed>"}}``
- ``POST /v1/images/remove`` ``{"digests": [...]}`` -> ``{"removed": [...]}``
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import urllib3

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.web.tls import client_ssl_context

MAX_BM_RESPONSE_BYTES = 1024 * 1024


class BonseyesModuleError(BonseyesError):
    """A BM did not answer, or answered something other than the protocol says."""

    check = "bm-unreachable"
    http_status = 424


@dataclass(frozen=True)
class BonseyesModuleEndpoint:
    host_id: str
    ip: str
    port: int


class BonseyesModuleClient(Protocol):
    def fetch_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> dict[str, str]:
        """Have the BM pull ``digests`` and return {requested digest: digest the BM computed}."""
        ...

    def remove_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> None:
        """Have the BM delete ``digests`` from its local storage."""
        ...


class HttpsBonseyesModuleClient:
    """mTLS client of BMs; the TLS client context is built once and shared by all connections."""

    def __init__(self, certfile: Path | str, keyfile: Path | str, ca_file: Path | str,
                 timeout_seconds: float = 10.0) -> None:
        self.context = client_ssl_context(str(certfile), str(keyfile), str(ca_file), True)
        self.timeout = urllib3.Timeout(connect=min(timeout_seconds, 5.0), read=timeout_seconds)

    def _post(self, endpoint: BonseyesModuleEndpoint, path: str, body: dict[str, object]) -> dict[str, object]:
        url = f"https://{endpoint.ip}:{endpoint.port}{path}"
        pool = urllib3.HTTPSConnectionPool(endpoint.ip, endpoint.port, ssl_context=self.context,
                                           assert_hostname=endpoint.host_id, timeout=self.timeout, retries=False)
        try:
            response = pool.request("POST", path, body=json.dumps(body).encode(),
                                    headers={"Content-Type": "application/json"}, preload_content=False)
            raw = response.read(MAX_BM_RESPONSE_BYTES + 1)
            response.release_conn()
        except urllib3.exceptions.HTTPError as exc:
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} at {url} did not answer: {exc}") from exc
        finally:
            pool.close()
        if len(raw) > MAX_BM_RESPONSE_BYTES:
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} sent more than {MAX_BM_RESPONSE_BYTES} bytes")
        if response.status != 200:
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} answered {response.status} to {path}: "
                                      f"{raw[:200].decode(errors='replace')}")
        try:
            answer = safejson.loads(raw, what=f"answer of the BM of host {endpoint.host_id}",
                                    max_bytes=MAX_BM_RESPONSE_BYTES)
        except InputError as exc:
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} sent invalid JSON: {exc.args[0]}") from exc
        if not isinstance(answer, dict):
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} sent a non-object answer")
        return answer

    def fetch_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> dict[str, str]:
        answer = self._post(endpoint, "/v1/images/fetch", {"digests": digests})
        reported = answer.get("digests")
        if not isinstance(reported, dict) or not all(isinstance(v, str) for v in reported.values()):
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} did not report digests as an object")
        return {str(k): str(v) for k, v in reported.items()}

    def remove_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> None:
        self._post(endpoint, "/v1/images/remove", {"digests": digests})
