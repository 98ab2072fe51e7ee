"""How the MP gets the SM's signatures on artefact and image IDs.

The MP never holds the SM's signing key in a deployment: ``ArtefactSigner`` is the seam. The
in-process implementation wraps the SM's CA directory (all-in-one installs and tests); the HTTPS
one asks a running SM, authenticated with the marketplace certificate.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import requests
from cryptography import x509

from bonseyes_py.errors import BonseyesError
from bonseyes_py.identity import ids
from bonseyes_py.licences import LicenceIssuer
from bonseyes_py.mp.errors import RegistrationError
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import load_certificate_chain
from bonseyes_py.pki.verify import TrustStore


class ArtefactSigner(Protocol):
    def sign_artefact_id(self, name: str, owner: str) -> str:
        """The artefact ID: the human-readable name (and owner) signed by the SM."""

    def sign_image_id(self, digest: str, name: str) -> str:
        """The image ID: the OCI manifest digest of the published image signed by the SM."""

    def sm_certificates(self) -> list[x509.Certificate]:
        """SM root then intermediate: what is baked into each image for BL to verify licences."""


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


class HttpsArtefactSigner:
    """Asks the SM over mutual TLS, as the marketplace identity, to sign IDs.

    NOT YET WIRED to the SM service: the SM's ``POST /v1/artefacts`` signs the artefact ID and the
    image ID together from a digest, but the artefact ID must be baked into the image *before*
    the digest exists. This client assumes two separate marketplace-only endpoints
    (``POST /v1/artefact-ids`` -> ``{"token"}``, ``POST /v1/image-ids`` -> ``{"token"}``,
    ``GET /v1/ca/chain``) and is untested until the SM exposes them.
    Each returned token is verified against the SM root the MP was configured with, so a
    misbehaving endpoint cannot make the MP bake an unsigned ID into an image.
    """

    def __init__(self, sm_url: str, *, client_certificate: Path, client_key: Path, sm_root: Path,
                 timeout: float = 30.0) -> None:
        self.sm_url = sm_url.rstrip("/")
        self.session = requests.Session()
        self.session.cert = (str(client_certificate), str(client_key))
        self.session.verify = str(sm_root)
        self.timeout = timeout
        self._root = load_certificate_chain(Path(sm_root).read_bytes())[0]

    def _post(self, path: str, body: dict[str, str]) -> str:
        try:
            response = self.session.post(f"{self.sm_url}{path}", json=body, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RegistrationError(f"SM at {self.sm_url} unreachable: {exc}", check="signing") from exc
        if response.status_code != 200:
            raise RegistrationError(f"SM refused {path}: {response.status_code} {response.text[:200]}",
                                    check="signing")
        token = response.json().get("token")
        if not isinstance(token, str):
            raise RegistrationError(f"SM reply to {path} carries no token", check="signing")
        return token

    def _trust(self) -> TrustStore:
        return TrustStore(root=self._root, intermediates=self.sm_certificates()[1:])

    def sign_artefact_id(self, name: str, owner: str) -> str:
        token = self._post("/v1/artefact-ids", {"name": name, "owner": owner})
        try:
            ids.verify_artefact_id(token, self._trust(), expect_name=name)
        except BonseyesError as exc:
            raise RegistrationError(f"SM returned an invalid artefact ID: {exc}", check="signing") from exc
        return token

    def sign_image_id(self, digest: str, name: str) -> str:
        token = self._post("/v1/image-ids", {"digest": digest, "artefact": name})
        try:
            ids.verify_image_id(token, self._trust(), expect_digest=digest, expect_artefact=name)
        except BonseyesError as exc:
            raise RegistrationError(f"SM returned an invalid image ID: {exc}", check="signing") from exc
        return token

    def sm_certificates(self) -> list[x509.Certificate]:
        try:
            response = self.session.get(f"{self.sm_url}/v1/ca/chain", timeout=self.timeout)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise RegistrationError(f"cannot fetch the SM chain: {exc}", check="signing") from exc
        certificates = load_certificate_chain(response.content)
        intermediates = [c for c in certificates if c.subject != c.issuer]
        return [self._root, *intermediates]
