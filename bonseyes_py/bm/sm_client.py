"""The BM's calls to the SM over mutual TLS with the host certificate (steps 2 and 4).

Connections leave from the BM's own address (``bind_ip``): the SM takes the host's IP from the TLS
peer address, never from a claim, so a BM on 127.0.0.2 must also connect from 127.0.0.2.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter

from bonseyes_py import safejson
from bonseyes_py.bm.config import BMConfig
from bonseyes_py.errors import BonseyesError, CertificateError, InputError, LicenceError, PolicyDenied

MAX_ANSWER_BYTES = 1024 * 1024


class SMUnavailable(BonseyesError):
    """The SM did not answer; retrying later may succeed."""

    check = "sm-unreachable"


class SMRefused(BonseyesError):
    """The SM answered with an error; ``check`` is the SM's own check name."""

    def __init__(self, message: str, *, check: str, status: int) -> None:
        super().__init__(message, check=check)
        self.status = status


class _SourceAddressAdapter(HTTPAdapter):
    def __init__(self, source_ip: str, **kwargs: Any) -> None:
        self.source_ip = source_ip
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.source_ip, 0)
        super().init_poolmanager(*args, **kwargs)


class SMClient:
    def __init__(self, config: BMConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        self.base = config.sm_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.mount("https://", _SourceAddressAdapter(config.bind_ip, pool_maxsize=16))

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            # verify= and cert= on every call: REQUESTS_CA_BUNDLE would override a Session default.
            response = self.session.request(method, self.base + path, json=body, timeout=self.timeout,
                                            cert=(str(self.config.certificate), str(self.config.key)),
                                            verify=str(self.config.ca_bundle))
        except requests.exceptions.SSLError as exc:
            raise CertificateError(f"TLS with the SM at {self.base} failed: {exc}", check="tls") from exc
        except requests.RequestException as exc:
            raise SMUnavailable(f"SM at {self.base} did not answer {method} {path}: {exc}") from exc
        if len(response.content) > MAX_ANSWER_BYTES:
            raise SMUnavailable(f"SM answer to {path} exceeds {MAX_ANSWER_BYTES} bytes")
        if response.status_code >= 400:
            try:
                error = safejson.loads_object(response.content, what=f"SM error answer to {path}")
                check, message = str(error.get("error", "http")), str(error.get("message", ""))
            except InputError:
                check, message = "http", response.text[:200]
            raise SMRefused(f"SM refused {method} {path} ({response.status_code}): {message}", check=check,
                            status=response.status_code)
        if response.headers.get("Content-Type", "").startswith("application/json"):
            return safejson.loads(response.content, what=f"SM answer to {method} {path}")
        return response.content

    def heartbeat(self) -> dict[str, Any]:
        """Step 2: show up with the host identity; the SM marks the host available at this address."""
        return dict(self._request("POST", "/v1/hosts/heartbeat", {"bm_port": self.config.port}))

    def host_licence(self, *, image_digest: str, artefact_id: str, user_id: str, nonce: str,
                     renews: str | None = None) -> dict[str, Any]:
        """Step 4: (image digest, host ID from the certificate, user ID, nonce) -> host licence."""
        body: dict[str, Any] = {"image_digest": image_digest, "artefact_id": artefact_id, "user_id": user_id,
                                "nonce": nonce}
        if renews is not None:
            body["renews"] = renews
        answer = self._request("POST", "/v1/licences/host", body)
        if not isinstance(answer, dict) or not isinstance(answer.get("licence"), str):
            raise InputError("SM answer to a host licence request carries no licence", check="sm-answer")
        return answer

    def crl_pem(self) -> bytes:
        return bytes(self._request("GET", "/v1/crl"))

    def revoked_licence_ids(self) -> list[str]:
        return list(self._request("GET", "/v1/licences/revoked").get("licence_ids", []))


def is_final_refusal(error: BonseyesError) -> bool:
    """A refusal that a retry will not change (revoked, denied, unknown), as opposed to an outage."""
    if isinstance(error, SMRefused):
        return error.status in (400, 403, 404, 409, 422)
    return isinstance(error, PolicyDenied | LicenceError | CertificateError)
