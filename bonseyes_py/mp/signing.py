"""How the MP gets the SM's signatures on artefact and image IDs.

The MP never holds the SM's signing key in a deployment: ``ArtefactSigner`` is the seam. The
in-process implementation wraps the SM's CA directory (all-in-one installs and tests); the HTTPS
one asks a running SM, authenticated with the marketplace certificate.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from cryptography import x509

from bonseyes_py.errors import BonseyesError
from bonseyes_py.identity import ids
from bonseyes_py.licences import LicenceIssuer
from bonseyes_py.mp.errors import RegistrationError
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import load_certificate_chain
from bonseyes_py.pki.verify import TrustStore
from bonseyes_py.web.client import ClientError, MTLSClient, ServerRefused

# How many (artefact name, owner) pairs an HTTPS signer remembers between the phases of registrations.
_OWNERS_KEPT = 4096
# A signed ID or the CA chain: a few KiB.
MAX_SM_ANSWER_BYTES = 64 * 1024


class ArtefactSigner(Protocol):
    def sign_artefact_id(self, name: str, owner: str) -> str:
        """The artefact ID: the human-readable name (and owner) signed by the SM."""

    def sign_image_id(self, digest: str, name: str) -> str:
        """The image ID: the OCI manifest digest of the published image signed by the SM."""

    def sm_certificates(self) -> list[x509.Certificate]:
        """SM root then intermediate: what is baked into each image for BL to verify licences."""

    def release_artefact_id(self, name: str) -> None:
        """Undo ``sign_artefact_id`` (and ``sign_image_id``) after a failed registration."""


class LocalArtefactSigner:
    """Signs with the SM's licence-signer key in-process, through the core's ID functions."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca
        self.issuer = LicenceIssuer(ca)

    def sign_artefact_id(self, name: str, owner: str) -> str:
        return ids.sign_artefact_id(self.issuer.signer, self.issuer.issuer_uri, name, owner)

    def sign_image_id(self, digest: str, name: str) -> str:
        return ids.sign_image_id(self.issuer.signer, self.issuer.issuer_uri, digest, name)

    def sm_certificates(self) -> list[x509.Certificate]:
        return [self.ca.root, self.ca.intermediate]

    def release_artefact_id(self, name: str) -> None:
        """Nothing to undo: the in-process signer records no reservation."""


class HttpsArtefactSigner:
    """Asks a running SM over mutual TLS, as the marketplace identity, to sign IDs.

    Two phases (``bonseyes_py/sm/artefact_signing.py``): ``POST /v1/artefact-ids`` signs the
    artefact ID and reserves the name before the image is built; ``POST /v1/artefacts/<name>/images``
    signs the image ID once the digest exists; ``DELETE /v1/artefact-ids/<name>`` releases the
    reservation when the registration fails. The SM lets a marketplace act only on artefacts it
    reserved itself and only for their owner, so the last two name the owner the first one was
    signed for (remembered per name). Each returned token is verified against the SM root
    the MP was configured with, so a misbehaving endpoint cannot make the MP bake an unsigned ID
    into an image. Calls go through the core's ``MTLSClient`` (one kept-alive pool, answers capped
    at 64 KiB); its errors become ``RegistrationError`` in ``_signing_errors``.
    """

    def __init__(self, sm_url: str, *, client_certificate: Path | str, client_key: Path | str, sm_root: Path | str,
                 timeout: float = 30.0) -> None:
        self.sm_url = sm_url.rstrip("/")
        self.client = MTLSClient(self.sm_url, ca_file=sm_root, cert_file=client_certificate, key_file=client_key,
                                 timeout=timeout, max_response_bytes=MAX_SM_ANSWER_BYTES)
        self._root = load_certificate_chain(Path(sm_root).read_bytes())[0]
        self._chain: list[x509.Certificate] | None = None
        self._trust_store: TrustStore | None = None
        # {artefact name: owner} of the artefact IDs this signer had signed (the owner later requests name).
        self._owners: dict[str, str] = {}

    def _post(self, path: str, body: dict[str, str], field: str) -> str:
        with _signing_errors(path):
            answer = self.client.request("POST", path, json=body, expected=(201,))
        token = answer.get(field) if isinstance(answer, dict) else None
        if not isinstance(token, str):
            raise RegistrationError(f"SM reply to {path} carries no {field}", check="signing")
        return token

    def _trust(self) -> TrustStore:
        # One store per client, so the SM signer's chain is verified once, not on every registration.
        if self._trust_store is None:
            self._trust_store = TrustStore(root=self._root, intermediates=self.sm_certificates()[1:])
        return self._trust_store

    def sign_artefact_id(self, name: str, owner: str) -> str:
        token = self._post("/v1/artefact-ids", {"name": name, "owner": owner}, "token")
        try:
            claims = ids.verify_artefact_id(token, self._trust(), expect_name=name)
        except BonseyesError as exc:
            raise RegistrationError(f"SM returned an invalid artefact ID: {exc}", check="signing") from exc
        if claims.get("owner") != owner:
            raise RegistrationError(f"SM signed artefact {name} for {claims.get('owner')}, not {owner}",
                                    check="signing")
        if len(self._owners) >= _OWNERS_KEPT:
            self._owners.pop(next(iter(self._owners)))
        self._owners[name] = owner
        return token

    def _owner_of(self, name: str, owner: str | None) -> str:
        owner = owner or self._owners.get(name)
        if owner is None:
            raise RegistrationError(f"no artefact ID of {name} was signed through this signer: its owner is unknown",
                                    check="signing")
        return owner

    def sign_image_id(self, digest: str, name: str, owner: str | None = None) -> str:
        """The image ID, asked for the owner ``sign_artefact_id`` named (or ``owner``)."""
        token = self._post(f"/v1/artefacts/{name}/images", {"digest": digest, "owner": self._owner_of(name, owner)},
                           "image_id_token")
        try:
            ids.verify_image_id(token, self._trust(), expect_digest=digest, expect_artefact=name)
        except BonseyesError as exc:
            raise RegistrationError(f"SM returned an invalid image ID: {exc}", check="signing") from exc
        return token

    def release_artefact_id(self, name: str, owner: str | None = None) -> None:
        """Drop the SM's reservation (and image ID) of a registration that failed; absent is fine."""
        path = f"/v1/artefact-ids/{name}"
        with _signing_errors(path):
            self.client.raw("DELETE", path, params={"owner": self._owner_of(name, owner)}, expected=(200, 404))
        self._owners.pop(name, None)

    def crl_pem(self) -> bytes:
        """The SM's current CRL (PEM), for the MP's trust store; ``RegistrationError`` if the SM does not give it."""
        with _signing_errors("/v1/crl"):
            return self.client.raw("GET", "/v1/crl").body

    def sm_certificates(self) -> list[x509.Certificate]:
        if self._chain is None:
            with _signing_errors("/v1/ca/chain"):
                chain = self.client.raw("GET", "/v1/ca/chain").body
            certificates = load_certificate_chain(chain)
            intermediates = [c for c in certificates if c.subject != c.issuer]
            if not intermediates:
                raise RegistrationError("the SM chain holds no intermediate", check="signing")
            self._chain = [self._root, *intermediates]
        return self._chain


@contextmanager
def _signing_errors(path: str) -> Iterator[None]:
    """The client's errors as registration errors; a refusal keeps the SM's check when the MP acts on it
    (``name-taken``, ``artefact-exists``, ``revoked``, ``not-found``)."""
    try:
        yield
    except ServerRefused as exc:
        check = exc.error if exc.error in ("name-taken", "artefact-exists", "revoked", "not-found") else "signing"
        raise RegistrationError(f"SM refused {path} ({exc.status}): {exc.message}", check=check) from exc
    except ClientError as exc:
        raise RegistrationError(f"SM signing call failed: {exc.args[0]}", check="signing") from exc
