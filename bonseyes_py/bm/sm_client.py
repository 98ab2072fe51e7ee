"""The BM's calls to the SM over mutual TLS with the host certificate (steps 2 and 4).

Connections leave from the BM's own address (``bind_ip``): the SM takes the host's IP from the TLS
peer address, never from a claim, so a BM on 127.0.0.2 must also connect from 127.0.0.2.
"""

from __future__ import annotations

from typing import Any

from bonseyes_py import safejson
from bonseyes_py.bm.config import BMConfig
from bonseyes_py.errors import BonseyesError, CertificateError, InputError, LicenceError, PolicyDenied
from bonseyes_py.web.client import ClientError, MTLSClient, ServerRefused, TLSFailure

MAX_ANSWER_BYTES = 1024 * 1024


class SMUnavailable(BonseyesError):
    """The SM did not answer; retrying later may succeed."""

    check = "sm-unreachable"


class SMRefused(BonseyesError):
    """The SM answered with an error; ``check`` is the SM's own check name."""

    def __init__(self, message: str, *, check: str, status: int) -> None:
        super().__init__(message, check=check)
        self.status = status


class SMClient:
    """The BM's one connection pool to the SM, kept alive between heartbeats and licence requests."""

    def __init__(self, config: BMConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        self.base = config.sm_url.rstrip("/")
        self.client = MTLSClient(self.base, ca_file=config.ca_bundle, cert_file=config.certificate,
                                 key_file=config.key, timeout=timeout, max_response_bytes=MAX_ANSWER_BYTES,
                                 source_address=config.bind_ip)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """The SM's answer: parsed JSON when it says it is JSON, else the bytes (the CRL's PEM).

        The client's errors become the BM's own: TLS -> ``CertificateError``, a refusal -> ``SMRefused``
        with the SM's check, no (or an oversized) answer -> ``SMUnavailable``, which the agent retries.
        """
        try:
            answer = self.client.raw(method, path, json=body, expected=range(200, 300))
            if answer.headers.get("Content-Type", "").startswith("application/json"):
                return safejson.loads(answer.body, what=f"SM answer to {method} {path}", max_bytes=MAX_ANSWER_BYTES)
            return answer.body
        except TLSFailure as exc:
            raise CertificateError(f"TLS with the SM at {self.base} failed: {exc.args[0]}", check="tls") from exc
        except ServerRefused as exc:
            raise SMRefused(f"SM refused {method} {path} ({exc.status}): {exc.message}", check=exc.error or "http",
                            status=exc.status) from exc
        except ClientError as exc:
            raise SMUnavailable(f"SM at {self.base} did not answer {method} {path}: {exc.args[0]}") from exc

    def close(self) -> None:
        self.client.close()

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
