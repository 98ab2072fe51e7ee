"""Step 6 inside the container: the artefact licence from the SM, forwarded to and accepted by BM.

Called by BL's entrypoint after the host licence verified (step 5). Everything is checked with the
SM root and intermediate baked into the image, never with what the host handed in:

1. the runtime certificate BM mounted must be the one the host licence binds (``cnf``);
2. BL calls the SM over mutual TLS as that runtime (the server must be the SM: role ``sm``) with the
   host licence and its own artefact ID, and verifies the artefact licence it gets back;
3. BL forwards the licence to BM over mutual TLS; the server must be the BM of the host the licence
   names (role ``host``, that host ID, at that host IP), and must accept it.

Only then does the payload start, with its own copy of the runtime credentials (readable by the
payload's user only) so it can serve and call other stages over mutual TLS as a licensed runtime.

Standard library only for HTTP (``http.client`` + ``ssl``): BL is a self-contained executable.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bonseyes_py.bl import layout

RUNTIME_KEY = f"{layout.LICENCE_DIR}/runtime.key"
RUNTIME_CHAIN = f"{layout.LICENCE_DIR}/runtime.pem"
ENDPOINTS = f"{layout.LICENCE_DIR}/endpoints.json"
PAYLOAD_DIR = "/run/bonseyes-payload"
MAX_ANSWER_BYTES = 256 * 1024
ATTEMPTS = 5


class ProtocolError(Exception):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message


def _trust() -> Any:
    from bonseyes_py.pki.certs import read_certificate
    from bonseyes_py.pki.verify import TrustStore

    return TrustStore(root=read_certificate(layout.SM_ROOT), intermediates=[read_certificate(layout.SM_INTERMEDIATE)])


def _ca_file() -> str:
    """The baked root + intermediate as one CA file for ``ssl`` (written beside the payload dir)."""
    path = Path(PAYLOAD_DIR) / "ca.pem"
    if not path.exists():
        path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        path.write_bytes(Path(layout.SM_ROOT).read_bytes() + Path(layout.SM_INTERMEDIATE).read_bytes())
        path.chmod(0o644)
    return str(path)


def _context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cafile=_ca_file())
    context.load_cert_chain(certfile=RUNTIME_CHAIN, keyfile=RUNTIME_KEY)
    # The peer is checked below by role and name from its certificate, which is stronger than a hostname.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _post(url: str, path: str, body: dict[str, Any], *, role: Any, name: str | None, what: str) -> dict[str, Any]:
    """POST JSON over mTLS after checking the server certificate's role (and name) against the baked root."""
    from bonseyes_py.errors import BonseyesError
    from bonseyes_py.pki.certs import load_der_certificate
    from bonseyes_py.pki.verify import verify_certificate

    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ProtocolError("endpoint", f"{what} URL {url!r} is not https://HOST:PORT")
    last_error = ""
    for attempt in range(ATTEMPTS):
        connection = http.client.HTTPSConnection(parts.hostname, parts.port or 443, context=_context(), timeout=30)
        try:
            connection.connect()
            der = connection.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
            if not der:
                raise ProtocolError("peer", f"{what} at {url} presented no certificate")
            try:
                identity = verify_certificate(load_der_certificate(der), _trust(), roles=[role])
            except BonseyesError as exc:
                raise ProtocolError("peer", f"{what} at {url} is not who it must be: {exc}") from exc
            if name is not None and identity.name != name:
                raise ProtocolError("peer", f"{what} at {url} is {identity.uri}, not the licence's host {name}")
            connection.request("POST", path, body=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            raw = response.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5 * (attempt + 1))
            continue
        finally:
            connection.close()
        try:
            answer = json.loads(raw)
        except ValueError as exc:
            raise ProtocolError("answer", f"{what} answered {response.status} with non-JSON") from exc
        if response.status >= 400 or not isinstance(answer, dict):
            check = answer.get("error", "refused") if isinstance(answer, dict) else "refused"
            message = answer.get("message", "") if isinstance(answer, dict) else ""
            raise ProtocolError(f"{what}-refused", f"{what} refused ({response.status} {check}): {message}")
        return answer
    raise ProtocolError(f"{what}-unreachable", f"{what} at {url} did not answer after {ATTEMPTS} attempts: "
                        f"{last_error}")


def authorize(artefact: str, host_claims: dict[str, Any], host_licence: str, uid: int, gid: int) -> dict[str, str]:
    """Run step 6; return the environment the payload gets. Raises ``ProtocolError`` on any doubt."""
    from bonseyes_py.errors import BonseyesError
    from bonseyes_py.identity.ids import RuntimeID
    from bonseyes_py.licences import Expectations, LicenceKind, verify_licence
    from bonseyes_py.pki.certs import load_certificate_chain
    from bonseyes_py.pki.roles import Role

    try:
        endpoints = json.loads(Path(ENDPOINTS).read_text())
        chain = load_certificate_chain(Path(RUNTIME_CHAIN).read_bytes())
        runtime = RuntimeID.from_claim(host_claims["runtime"])
        trust = _trust()
        # 1. The key material BM handed in is the one the SM bound to this licence.
        verify_licence(host_licence, trust, kind=LicenceKind.HOST,
                       expect=Expectations(artefact_id=artefact, runtime_certificate=chain[0]))
    except (OSError, ValueError, KeyError, BonseyesError) as exc:
        raise ProtocolError("runtime-material", f"runtime credentials from the host are unusable: {exc}") from exc
    bm_url = str(endpoints.get("bm_url", ""))
    if urlsplit(bm_url).hostname != runtime.host_ip:
        raise ProtocolError("endpoint", f"BM URL {bm_url!r} is not at the licence's host IP {runtime.host_ip}")

    # 2. Artefact licence from the SM, as this runtime.
    answer = _post(str(endpoints.get("sm_url", "")), "/v1/licences/artefact",
                   {"host_licence": host_licence, "artefact_id": artefact},
                   role=Role.SECURITY_MANAGER, name=None, what="SM")
    try:
        licence = str(answer["licence"])
        claims = verify_licence(licence, trust, kind=LicenceKind.ARTEFACT, expect=Expectations(
            artefact_id=artefact, host_id=runtime.host_id, host_ip=runtime.host_ip, nonce=runtime.nonce,
            image_digest=runtime.image_digest, user_id=runtime.user_id, runtime_certificate=chain[0],
            host_licence_id=host_claims["jti"]))
    except (KeyError, BonseyesError) as exc:
        raise ProtocolError("artefact-licence", f"the SM's artefact licence does not verify: {exc}") from exc

    # 3. Forward to BM of the licence's host; its acceptance completes the mutual authentication.
    accepted = _post(bm_url, "/v1/runtimes/licence", {"licence": licence}, role=Role.HOST, name=runtime.host_id,
                     what="BM")
    if accepted.get("status") != "licensed" or accepted.get("artefact_licence_id") != claims["jti"]:
        raise ProtocolError("BM-refused", f"BM did not confirm the licence: {accepted}")
    return payload_credentials(runtime.name, uid, gid)


def payload_credentials(runtime_name: str, uid: int, gid: int) -> dict[str, str]:
    """Copy the runtime credentials where only the payload's user can read them; name them in its env."""
    directory = Path(PAYLOAD_DIR)
    directory.mkdir(mode=0o711, parents=True, exist_ok=True)
    private = directory / "tls"
    private.mkdir(mode=0o700, exist_ok=True)
    for source, target in ((RUNTIME_KEY, "runtime.key"), (RUNTIME_CHAIN, "runtime.pem")):
        destination = private / target
        shutil.copyfile(source, destination)
        os.chmod(destination, 0o600)
        os.chown(destination, uid, gid)
    os.chown(private, uid, gid)
    return {"BONSEYES_TLS_CERT": str(private / "runtime.pem"), "BONSEYES_TLS_KEY": str(private / "runtime.key"),
            "BONSEYES_TLS_CA": _ca_file(), "BONSEYES_RUNTIME_NAME": runtime_name}
