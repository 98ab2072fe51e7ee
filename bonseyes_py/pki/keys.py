"""Private keys: generation for the selectable algorithms, and files that are 0600 from birth.

Keys are written through a descriptor opened with mode 0600 and renamed into place, so there is no
window in which another user could read them, and a crash never leaves half a key behind.
"""

from __future__ import annotations

import enum
import os
import stat
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bonseyes_py.errors import InputError, KeyFileError

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey

MAX_PEM_BYTES = 64 * 1024


class KeyAlgorithm(enum.StrEnum):
    """Key algorithms a CA, host, user or runtime may use. ECDSA P-256 is the default."""

    EC_P256 = "ec-p256"
    ED25519 = "ed25519"
    RSA_3072 = "rsa-3072"


def generate_private_key(algorithm: KeyAlgorithm | str = KeyAlgorithm.EC_P256) -> PrivateKey:
    try:
        algorithm = KeyAlgorithm(algorithm)
    except ValueError as exc:
        choices = ", ".join(a.value for a in KeyAlgorithm)
        raise InputError(f"unknown key algorithm {algorithm!r} (choose {choices})", check="key-algorithm") from exc
    if algorithm is KeyAlgorithm.EC_P256:
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm is KeyAlgorithm.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=3072)


def algorithm_of(key: PrivateKey | PublicKey) -> KeyAlgorithm:
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if key.curve.name != "secp256r1":
            raise InputError(f"unsupported EC curve {key.curve.name}; use P-256", check="key-algorithm")
        return KeyAlgorithm.EC_P256
    if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        return KeyAlgorithm.ED25519
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        if key.key_size < 3072:
            raise InputError(f"RSA key of {key.key_size} bits is too small; use 3072 or more", check="key-algorithm")
        return KeyAlgorithm.RSA_3072
    raise InputError(f"unsupported key type {type(key).__name__}", check="key-algorithm")


def signature_hash(key: PrivateKey | PublicKey) -> hashes.SHA256 | None:
    """The hash X.509 signing needs for this key (Ed25519 hashes internally, so None)."""
    return None if algorithm_of(key) is KeyAlgorithm.ED25519 else hashes.SHA256()


def private_key_pem(key: PrivateKey, passphrase: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def write_private_key(path: Path | str, key: PrivateKey, passphrase: bytes | None = None) -> Path:
    """Write a key as PKCS#8 PEM, mode 0600, atomically; optionally passphrase-encrypted."""
    return write_secret_file(path, private_key_pem(key, passphrase))


def write_secret_file(path: Path | str, content: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def write_public_file(path: Path | str, content: bytes) -> Path:
    """Atomic write of a non-secret file (certificates, CRLs), mode 0644."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_private_key_pem(pem: bytes, passphrase: bytes | None = None) -> PrivateKey:
    if len(pem) > MAX_PEM_BYTES:
        raise InputError(f"private key of {len(pem)} bytes exceeds the {MAX_PEM_BYTES}-byte limit")
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as exc:
        raise KeyFileError("the key is encrypted: give its passphrase" if passphrase is None
                           else "the key is not encrypted but a passphrase was given") from exc
    except ValueError as exc:
        raise KeyFileError(f"cannot load private key (malformed PEM or wrong passphrase): {exc}") from exc
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey)):
        raise KeyFileError(f"unsupported private key type {type(key).__name__}")
    algorithm_of(key)
    return key


def check_private_file(path: Path | str, what: str = "key file") -> Path:
    """Refuse a secret file that group or others may read, naming the fix."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        raise KeyFileError(f"{what} {path} does not exist") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"{what} {path} has mode {stat.S_IMODE(mode):04o}, readable by others;"
                           f" run chmod 600 {path}")
    return path


MAX_PASSPHRASE_BYTES = 4096


def read_passphrase_file(path: Path | str) -> bytes:
    """A passphrase from a file of mode 0600 (or stricter): one line, trailing newline dropped, not empty."""
    path = check_private_file(path, "passphrase file")
    content = path.read_bytes()
    if len(content) > MAX_PASSPHRASE_BYTES:
        raise KeyFileError(f"passphrase file {path} is larger than {MAX_PASSPHRASE_BYTES} bytes")
    passphrase = content.rstrip(b"\r\n")
    if not passphrase:
        raise KeyFileError(f"passphrase file {path} is empty; write the passphrase into it (mode 0600)")
    return passphrase


def key_file_is_encrypted(path: Path | str) -> bool:
    """Whether a PEM key file is passphrase-encrypted (PKCS#8 ``ENCRYPTED PRIVATE KEY`` or a legacy header)."""
    head = Path(path).read_bytes()[:MAX_PEM_BYTES]
    return b"ENCRYPTED PRIVATE KEY" in head or b"Proc-Type: 4,ENCRYPTED" in head


def read_private_key(path: Path | str, passphrase: bytes | None = None) -> PrivateKey:
    """Read a key file, refusing one that group or others can read."""
    return load_private_key_pem(check_private_file(path, "key file").read_bytes(), passphrase)
