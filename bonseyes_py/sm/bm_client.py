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

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bonseyes_py.errors import BonseyesError
from bonseyes_py.web.client import ClientError, MTLSClient, ServerRefused
from bonseyes_py.web.tls import new_client_ssl_context

MAX_BM_RESPONSE_BYTES = 1024 * 1024
# Kept-alive clients (one per BM endpoint) an SM worker holds; the least recently used is closed first.
MAX_BM_CLIENTS = 256


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


class BMConnections:
    """One ``MTLSClient`` per BM endpoint, all with the SM's identity and one TLS context.

    A BM is reached by IP, but its certificate names the host ID (issued at host registration as a
    DNS SAN), so each client checks that name (``assert_hostname``) and a BM cannot be impersonated
    by another host. Clients are kept so that the calls of a pipeline to one BM reuse its connection.
    """

    def __init__(self, certfile: Path | str, keyfile: Path | str, ca_file: Path | str, *, timeout: float,
                 max_response_bytes: int = MAX_BM_RESPONSE_BYTES) -> None:
        # A context of its own: urllib3 turns check_hostname off on contexts used with assert_hostname
        # (it then matches the name itself), which must not leak into a context shared with other code.
        self.context = new_client_ssl_context(str(ca_file), certfile=str(certfile), keyfile=str(keyfile))
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._clients: OrderedDict[BonseyesModuleEndpoint, MTLSClient] = OrderedDict()
        self._lock = threading.Lock()

    def client(self, endpoint: BonseyesModuleEndpoint) -> MTLSClient:
        with self._lock:
            client = self._clients.get(endpoint)
            if client is not None:
                self._clients.move_to_end(endpoint)
                return client
            client = MTLSClient(f"https://{endpoint.ip}:{endpoint.port}", ca_file=None, ssl_context=self.context,
                                assert_hostname=endpoint.host_id, timeout=self.timeout,
                                max_response_bytes=self.max_response_bytes)
            self._clients[endpoint] = client
            if len(self._clients) > MAX_BM_CLIENTS:
                _, oldest = self._clients.popitem(last=False)
                oldest.close()
            return client

    def post(self, endpoint: BonseyesModuleEndpoint, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to a BM and return its JSON object; every failure is one ``BonseyesModuleError``.

        A refusal keeps the BM's own check (``error`` of its answer), so the SM can report it.
        """
        try:
            answer = self.client(endpoint).request("POST", path, json=body, expected=range(200, 300))
        except ServerRefused as exc:
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} refused {path} ({exc.status}"
                                      f"{' ' + exc.error if exc.error else ''}): {exc.message}",
                                      check=exc.error or "bm-refused") from exc
        except ClientError as exc:
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} did not answer {path}: {exc.args[0]}") from exc
        if not isinstance(answer, dict):
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} sent a non-object answer to {path}")
        return answer

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


class HttpsBonseyesModuleClient:
    """Step 3 calls to BMs over mutual TLS, pinned to each host's certificate name (``BMConnections``)."""

    def __init__(self, certfile: Path | str, keyfile: Path | str, ca_file: Path | str,
                 timeout_seconds: float = 10.0) -> None:
        self.connections = BMConnections(certfile, keyfile, ca_file, timeout=timeout_seconds)

    def fetch_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> dict[str, str]:
        answer = self.connections.post(endpoint, "/v1/images/fetch", {"digests": digests})
        reported = answer.get("digests")
        if not isinstance(reported, dict) or not all(isinstance(v, str) for v in reported.values()):
            raise BonseyesModuleError(f"BM of host {endpoint.host_id} did not report digests as an object")
        return {str(k): str(v) for k, v in reported.items()}

    def remove_images(self, endpoint: BonseyesModuleEndpoint, digests: list[str]) -> None:
        self.connections.post(endpoint, "/v1/images/remove", {"digests": digests})
