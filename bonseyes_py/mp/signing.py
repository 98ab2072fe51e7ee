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

from bonseyes_py import safejson
from bonseyes_py.errors import BonseyesError, InputError
from bonseyes_py.identity import ids
from bonseyes_py.licences import LicenceIssuer
from bonseyes_py.mp.errors import RegistrationError
from bonseyes_py.pki.ca import CertificateAuthority
from bonseyes_py.pki.certs import load_certificate_chain
from bonseyes_py.pki.verify import TrustStore

# How many (artefact name, owner) pairs an HTTPS signer remembers between the phases of registrations.
_OWNERS_KEPT = 4096


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
    into an image. ``cert=`` and ``verify=`` go with every request because ``REQUESTS_CA_BUNDLE``
    in the environment would override a session's ``verify``.
    """

    def __init__(self, sm_url: str, *, client_certificate: Path | str, client_key: Path | str, sm_root: Path | str,
                 timeout: float = 30.0) -> None:
        self.sm_url = sm_url.rstrip("/")
        self.session = requests.Session()
        self.cert = (str(client_certificate), str(client_key))
        self.verify = str(sm_root)
        self.timeout = timeout
        self._root = load_certificate_chain(Path(sm_root).read_bytes())[0]
        self._chain: list[x509.Certificate] | None = None
        # {artefact name: owner} of the artefact IDs this signer had signed (the owner later requests name).
        self._owners: dict[str, str] = {}

    def request(self, method: str, path: str, body: dict[str, str] | None = None, *,
                params: dict[str, str] | None = None) -> requests.Response:
        try:
            return self.session.request(method, f"{self.sm_url}{path}", json=body, params=params, cert=self.cert,
                                        verify=self.verify, timeout=self.timeout)
        except requests.RequestException as exc:
            raise RegistrationError(f"SM at {self.sm_url} unreachable: {exc}", check="signing") from exc

    def _post(self, path: str, body: dict[str, str], field: str) -> str:
        response = self.request("POST", path, body)
        if response.status_code != 201:
            raise _refusal(path, response)
        try:
            answer = safejson.loads_object(response.content, what=f"SM reply to {path}", max_bytes=64 * 1024)
        except InputError as exc:
            raise RegistrationError(str(exc.args[0]), check="signing") from exc
        token = answer.get(field)
        if not isinstance(token, str):
            raise RegistrationError(f"SM reply to {path} carries no {field}", check="signing")
        return token

    def _trust(self) -> TrustStore:
        return TrustStore(root=self._root, intermediates=self.sm_certificates()[1:])

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
        response = self.request("DELETE", f"/v1/artefact-ids/{name}", params={"owner": self._owner_of(name, owner)})
        if response.status_code not in (200, 404):
            raise _refusal(f"/v1/artefact-ids/{name}", response)
        self._owners.pop(name, None)

    def sm_certificates(self) -> list[x509.Certificate]:
        if self._chain is None:
            response = self.request("GET", "/v1/ca/chain")
            if response.status_code != 200:
                raise _refusal("/v1/ca/chain", response)
            certificates = load_certificate_chain(response.content)
            intermediates = [c for c in certificates if c.subject != c.issuer]
            if not intermediates:
                raise RegistrationError("the SM chain holds no intermediate", check="signing")
            self._chain = [self._root, *intermediates]
        return self._chain


def _refusal(path: str, response: requests.Response) -> RegistrationError:
    """The SM's refusal as a registration error that keeps the SM's check (``name-taken``, ``revoked``...)."""
    try:
        body = safejson.loads_object(response.content, what=f"SM refusal of {path}", max_bytes=64 * 1024)
        check, message = str(body["error"]), str(body.get("message", ""))
    except (InputError, KeyError):
        check, message = "signing", response.text[:200]
    if check not in ("name-taken", "artefact-exists", "revoked", "not-found"):
        check = "signing"
    return RegistrationError(f"SM refused {path} ({response.status_code}): {message}", check=check)
