"""Step 6 inside the container: the artefact licence from the SM, forwarded to and accepted by BM.

Called by BL's entrypoint after the host licence verified (step 5), and again by BL's renewal loop
before each artefact licence expires. Everything is checked with the SM root and intermediate baked
into the image, never with what the host handed in:

1. the runtime certificate BM mounted must be the one the host licence binds (``cnf``);
2. BL calls the SM over mutual TLS as that runtime (the server must be the SM: role ``sm``) with the
   host licence and its own artefact ID, and verifies the artefact licence it gets back;
3. BL forwards the licence to BM over mutual TLS; the server must be the BM of the host the licence
   names (role ``host``, that host ID, at that host IP), and must accept it.

The runtime key stays with BL: the payload never gets a copy (BL terminates and originates the
stages' mutual TLS itself, see ``relay.py``). The material BM mounts at ``/run/bonseyes`` is 0700
root, so a payload running as the image's non-root user cannot read it.

Standard library only for HTTP (``http.client`` + ``ssl``): BL is a self-contained executable.
"""

from __future__ import annotations

import base64
import functools
import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bonseyes_py import safejson
from bonseyes_py.bl import layout
from bonseyes_py.errors import InputError

RUNTIME_KEY = f"{layout.LICENCE_DIR}/runtime.key"
RUNTIME_CHAIN = f"{layout.LICENCE_DIR}/runtime.pem"
ENDPOINTS = f"{layout.LICENCE_DIR}/endpoints.json"
MAX_ANSWER_BYTES = 256 * 1024
MAX_LICENCE_BYTES = 64 * 1024
ATTEMPTS = 5
# SM answers a retry will not change: the artefact, host or user is revoked, unknown or denied.
FINAL_SM_STATUSES = (400, 403, 404, 422)


class ProtocolError(Exception):
    def __init__(self, check: str, message: str, *, final: bool = True) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.message = message
        self.final = final


@functools.cache
def ca_pem() -> str:
    """The baked SM root + intermediate, as ``ssl`` takes them (``cadata``): no file outside the image."""
    return Path(layout.SM_ROOT).read_text() + Path(layout.SM_INTERMEDIATE).read_text()


@functools.cache
def trust() -> Any:
    from bonseyes_py.pki.certs import read_certificate
    from bonseyes_py.pki.verify import TrustStore

    return TrustStore(root=read_certificate(layout.SM_ROOT), intermediates=[read_certificate(layout.SM_INTERMEDIATE)])


def client_context() -> ssl.SSLContext:
    """mTLS client context with the runtime certificate BM mounted; peers are checked by role afterwards."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=ca_pem())
    context.load_cert_chain(certfile=RUNTIME_CHAIN, keyfile=RUNTIME_KEY)
    # The peer is checked by role and name from its certificate, which is stronger than a hostname.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context


@functools.cache
def relay_sockets() -> dict[str, str]:
    """BM's relay map (``host:port`` or ``listen`` -> socket path); empty when the container has a network."""
    try:
        relay = safejson.load_object_file(ENDPOINTS, what="endpoints file").get("relay") or {}
    except InputError:
        return {}
    if not isinstance(relay, dict):
        return {}
    return {str(key): f"{layout.NET_DIR}/{Path(str(name)).name}" for key, name in relay.items()}


def relay_socket(host: str, port: int) -> str | None:
    return relay_sockets().get(f"{host}:{port}")


class RelayedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS over BM's relay socket: TLS (and the peer checks) end to end with the server, BM moves bytes."""

    def __init__(self, host: str, port: int, *, path: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self.relay_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.relay_path)
            self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
        except BaseException:
            sock.close()
            raise


def https_connection(host: str, port: int, context: ssl.SSLContext, timeout: float = 30) -> http.client.HTTPSConnection:
    """A connection to ``host:port``: through BM's relay when BM runs the container without a network."""
    path = relay_socket(host, port)
    if path is not None:
        return RelayedHTTPSConnection(host, port, path=path, context=context, timeout=timeout)
    return http.client.HTTPSConnection(host, port, context=context, timeout=timeout)


def read_host_licence() -> str:
    with open(layout.HOST_LICENCE, "rb") as handle:
        token = handle.read(MAX_LICENCE_BYTES + 1)
    if len(token) > MAX_LICENCE_BYTES:
        raise ProtocolError("licence", f"host licence exceeds {MAX_LICENCE_BYTES} bytes")
    return token.strip().decode()


def _unverified_claims(payload: str) -> dict[str, Any]:
    """The decoded (never verified) claims of a licence payload segment, bounded like every JSON read."""
    return safejson.loads_object(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)),
                                 what="host licence payload", max_bytes=MAX_LICENCE_BYTES)


def current_host_licence_id() -> str:
    """The ``jti`` of the host licence BM mounted now (unverified: only to notice that BM renewed it)."""
    try:
        payload = read_host_licence().split(".")[1]
        claims = _unverified_claims(payload)
        return str(claims.get("jti", ""))
    except (OSError, ValueError, IndexError, AttributeError, ProtocolError, InputError):
        return ""  # unreadable now: the renewal itself reports why


def verify_peer(der: bytes | None, role: Any, what: str) -> Any:
    """The peer's leaf certificate, verified against the baked root for ``role``; returns (identity, cert)."""
    from bonseyes_py.errors import BonseyesError
    from bonseyes_py.pki.certs import load_der_certificate
    from bonseyes_py.pki.verify import verify_certificate

    if not der:
        raise ProtocolError("peer", f"{what} presented no certificate")
    certificate = load_der_certificate(der)
    try:
        return verify_certificate(certificate, trust(), roles=[role]), certificate
    except BonseyesError as exc:
        raise ProtocolError("peer", f"{what} is not who it must be: {exc}") from exc


def _exchange(connection: http.client.HTTPSConnection, url: str, path: str, body: dict[str, Any], *, role: Any,
              name: str | None, what: str) -> dict[str, Any]:
    """On a connected mTLS connection: check the server's role (and name), then POST JSON and read the answer.

    Nothing is sent before the server certificate verified. ``OSError``/``HTTPException`` mean the
    transport failed (the caller may try again on a new connection); ``ProtocolError`` is an answer.
    """
    identity, _ = verify_peer(connection.sock.getpeercert(binary_form=True),  # type: ignore[union-attr]
                              role, f"{what} at {url}")
    if name is not None and identity.name != name:
        raise ProtocolError("peer", f"{what} at {url} is {identity.uri}, not the licence's host {name}")
    connection.request("POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    raw = response.read(MAX_ANSWER_BYTES + 1)
    try:
        answer = safejson.loads(raw, what=f"answer of {what}", max_bytes=MAX_ANSWER_BYTES)
    except InputError as exc:
        raise ProtocolError("answer", f"{what} answered {response.status} with unusable JSON: {exc.args[0]}",
                            final=False) from exc
    if response.status >= 400 or not isinstance(answer, dict):
        check = answer.get("error", "refused") if isinstance(answer, dict) else "refused"
        message = answer.get("message", "") if isinstance(answer, dict) else ""
        final = what == "SM" and response.status in FINAL_SM_STATUSES
        raise ProtocolError(f"{what}-refused", f"{what} refused ({response.status} {check}): {message}", final=final)
    return answer


def _post(url: str, path: str, body: dict[str, Any], *, role: Any, name: str | None, what: str,
          context: ssl.SSLContext | None = None) -> dict[str, Any]:
    """POST JSON over mTLS after checking the server certificate's role (and name) against the baked root."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ProtocolError("endpoint", f"{what} URL {url!r} is not https://HOST:PORT")
    last_error = ""
    context = context or client_context()
    for attempt in range(ATTEMPTS):
        connection = https_connection(parts.hostname, parts.port or 443, context)
        try:
            connection.connect()
            return _exchange(connection, url, path, body, role=role, name=name, what=what)
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2 * (attempt + 1))
        finally:
            connection.close()
    raise ProtocolError(f"{what}-unreachable", f"{what} at {url} did not answer after {ATTEMPTS} attempts: "
                        f"{last_error}", final=False)


class EarlySMRequest:
    """Step 6's SM call, and the TLS handshake with BM, started while BL still imports its crypto stack for step 5.

    The call needs only ``ssl`` (already loaded), so it runs in a thread while the interpreter
    imports ``cryptography`` and verifies the host licence, and the SM's round trip stops adding
    to BL's start. Nothing is trusted early: OpenSSL checks the server's chain against the baked
    root, and ``answer_for`` returns the answer only once the server certificate verified with
    role ``sm`` and only for the host licence step 5 then verified; anything else, and
    ``authorize`` makes the call itself. Sending the host licence before verifying it reveals
    nothing: BM, which wrote it, already holds it, and the SM verifies it anyway.

    After the SM call the thread also opens the mutual-TLS connection to BM's URL, so that step 6's
    last leg is one request on a ready connection. Only the handshake happens early: nothing is sent
    on it until ``authorize`` has verified the artefact licence and checked, on this connection, that
    the server is the BM of the licence's host (role ``host``, its host ID, at the licence's host IP);
    a connection that is unusable by then is dropped and ``authorize`` connects again.
    """

    def __init__(self, artefact: str) -> None:
        self.artefact = artefact
        self.token = ""
        self.status = 0
        self.answer: Any = None
        self.der: bytes | None = None
        self.error = ""
        self.bm: http.client.HTTPSConnection | None = None
        self.bm_url = ""
        self.bm_error = ""
        self.context: ssl.SSLContext | None = None
        self._sm_done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bl-early-sm", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._sm_call()
        finally:
            self._sm_done.set()
        if self.context is not None:  # set once BM's URL passed the precheck, whatever the SM answered
            self._bm_connect()

    def _bm_connect(self) -> None:
        connection = None
        try:
            parts = urlsplit(self.bm_url)
            if parts.scheme != "https" or not parts.hostname or self.context is None:
                return
            connection = https_connection(parts.hostname, parts.port or 443, self.context)
            connection.connect()
            self.bm = connection
        except Exception as exc:  # any failure: authorize() connects itself and reports it
            self.bm_error = f"{type(exc).__name__}: {exc}"
            if connection is not None:
                connection.close()

    def _sm_call(self) -> None:
        try:
            self.token = read_host_licence()
            endpoints = safejson.load_object_file(ENDPOINTS, what="endpoints file")
            # The cheap precheck authorize() repeats: BM's URL must be at the licence's host IP
            # (decoded, not verified: it only spares the SM a call that would be thrown away).
            payload = self.token.split(".")[1]
            claims = _unverified_claims(payload)
            self.bm_url = str(endpoints.get("bm_url", ""))
            if urlsplit(self.bm_url).hostname != claims["runtime"]["host_ip"]:
                self.error = "BM URL is not at the licence's host IP"
                return
            self.context = client_context()
            parts = urlsplit(str(endpoints.get("sm_url", "")))
            if parts.scheme != "https" or not parts.hostname:
                self.error = "SM URL is not https"
                return
            connection = https_connection(parts.hostname, parts.port or 443, self.context)
            try:
                connection.connect()
                self.der = connection.sock.getpeercert(binary_form=True)  # type: ignore[union-attr]
                connection.request("POST", "/v1/licences/artefact", headers={"Content-Type": "application/json"},
                                   body=json.dumps({"host_licence": self.token, "artefact_id": self.artefact}).encode())
                response = connection.getresponse()
                raw = response.read(MAX_ANSWER_BYTES + 1)
                self.status = response.status
                self.answer = safejson.loads(raw, what="answer of SM", max_bytes=MAX_ANSWER_BYTES)
            finally:
                connection.close()
        except Exception as exc:  # any failure: authorize() makes the call itself and reports it
            self.error = f"{type(exc).__name__}: {exc}"

    def answer_for(self, host_licence: str, timeout: float = 35.0) -> dict[str, Any] | None:
        """The SM's answer if it was for ``host_licence`` and came from the SM; ``None`` to call again."""
        from bonseyes_py.pki.roles import Role

        if (not self._sm_done.wait(timeout) or self.token != host_licence or not self.der
                or not isinstance(self.answer, dict)):
            return None
        verify_peer(self.der, Role.SECURITY_MANAGER, "SM")  # raises ProtocolError for any other server
        if self.status >= 400:
            check, message = self.answer.get("error", "refused"), self.answer.get("message", "")
            raise ProtocolError("SM-refused", f"SM refused ({self.status} {check}): {message}",
                                final=self.status in FINAL_SM_STATUSES)
        return dict(self.answer)

    def bm_connection_for(self, bm_url: str, timeout: float = 35.0) -> http.client.HTTPSConnection | None:
        """The early connection if it was opened to ``bm_url`` itself (the caller takes it); ``None`` otherwise."""
        self._thread.join(timeout)
        connection, self.bm = self.bm, None
        if connection is not None and (self._thread.is_alive() or self.bm_url != bm_url):
            connection.close()
            return None
        return connection


@dataclass
class ArtefactLicence:
    """What step 6 leaves BL with: the artefact licence, its claims, and the host licence it rests on."""

    token: str
    claims: dict[str, Any]
    host_licence: str
    host_claims: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def expires(self) -> float:
        return float(self.claims["exp"])

    @property
    def issued(self) -> float:
        return float(self.claims.get("iat") or self.claims["nbf"])


def authorize(artefact: str, host_claims: dict[str, Any], host_licence: str,
              timings: dict[str, float] | None = None, early: EarlySMRequest | None = None) -> ArtefactLicence:
    """Run step 6 for the host licence BM mounted, already verified (``host_claims``); ``ProtocolError`` on doubt."""
    from bonseyes_py.errors import BonseyesError, LicenceError
    from bonseyes_py.identity.ids import RuntimeID
    from bonseyes_py.licences import Expectations, LicenceKind, certificate_thumbprint, verify_licence
    from bonseyes_py.pki.certs import load_certificate_chain
    from bonseyes_py.pki.roles import Role

    timings = dict(timings or {})
    began = time.perf_counter()
    try:
        endpoints = safejson.load_object_file(ENDPOINTS, what="endpoints file")
        chain = load_certificate_chain(Path(RUNTIME_CHAIN).read_bytes())
        runtime = RuntimeID.from_claim(host_claims["runtime"])
        # 1. The key material BM handed in is the one the SM bound to this licence (the licence itself
        # was verified by the caller: step 5 at start, ``renew`` later).
        if host_claims["cnf"]["x5t#S256"] != certificate_thumbprint(chain[0]):
            raise LicenceError("the runtime certificate BM mounted is not the one the host licence binds",
                               check="runtime-key")
    except (OSError, ValueError, KeyError, TypeError, BonseyesError) as exc:
        raise ProtocolError("runtime-material", f"runtime credentials from the host are unusable: {exc}",
                            final=False) from exc
    bm_url = str(endpoints.get("bm_url", ""))
    if urlsplit(bm_url).hostname != runtime.host_ip:
        raise ProtocolError("endpoint", f"BM URL {bm_url!r} is not at the licence's host IP {runtime.host_ip}")
    timings["bl_material"] = time.perf_counter() - began

    # 2. Artefact licence from the SM, as this runtime (the answer of the early call when it was made
    # for this very licence and the server proves to be the SM; otherwise the call is made now).
    began = time.perf_counter()
    answer = early.answer_for(host_licence) if early is not None else None
    if answer is None:
        answer = _post(str(endpoints.get("sm_url", "")), "/v1/licences/artefact",
                       {"host_licence": host_licence, "artefact_id": artefact},
                       role=Role.SECURITY_MANAGER, name=None, what="SM")
    try:
        licence = str(answer["licence"])
        claims = verify_licence(licence, trust(), kind=LicenceKind.ARTEFACT, expect=Expectations(
            artefact_id=artefact, host_id=runtime.host_id, host_ip=runtime.host_ip, nonce=runtime.nonce,
            image_digest=runtime.image_digest, user_id=runtime.user_id, runtime_certificate=chain[0],
            host_licence_id=host_claims["jti"]))
    except (KeyError, BonseyesError) as exc:
        raise ProtocolError("artefact-licence", f"the SM's artefact licence does not verify: {exc}") from exc
    timings["bl_sm"] = time.perf_counter() - began

    # 3. Forward to BM of the licence's host; its acceptance completes the mutual authentication.
    began = time.perf_counter()
    body = {"licence": licence, "timings": timings}
    accepted: dict[str, Any] | None = None
    connection = early.bm_connection_for(bm_url) if early is not None else None
    if connection is not None:
        try:
            accepted = _exchange(connection, bm_url, "/v1/runtimes/licence", body, role=Role.HOST,
                                 name=runtime.host_id, what="BM")
        except (OSError, http.client.HTTPException):
            accepted = None  # e.g. BM closed the idle connection: a fresh one below
        finally:
            connection.close()
    if accepted is None:
        accepted = _post(bm_url, "/v1/runtimes/licence", body, role=Role.HOST, name=runtime.host_id, what="BM",
                         context=early.context if early is not None else None)
    if accepted.get("status") != "licensed" or accepted.get("artefact_licence_id") != claims["jti"]:
        raise ProtocolError("BM-refused", f"BM did not confirm the licence: {accepted}", final=False)
    timings["bl_bm"] = time.perf_counter() - began
    return ArtefactLicence(licence, claims, host_licence, host_claims, timings)


def renew(artefact: str) -> ArtefactLicence:
    """A fresh artefact licence for the host licence BM holds now (BM renews that one on its own schedule).

    The current host licence is verified again exactly as at start (step 5), then step 6 runs again.
    """
    from bonseyes_py.errors import BonseyesError
    from bonseyes_py.licences import Expectations, LicenceKind, verify_licence

    try:
        token = read_host_licence()
        claims = verify_licence(token, trust(), kind=LicenceKind.HOST, expect=Expectations(artefact_id=artefact))
    except OSError as exc:
        raise ProtocolError("licence", f"cannot read the host licence: {exc}", final=False) from exc
    except BonseyesError as exc:
        raise ProtocolError("licence", f"current host licence refused: {exc}", final=False) from exc
    return authorize(artefact, claims, token)
