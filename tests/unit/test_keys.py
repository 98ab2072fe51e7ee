"""Key files: 0600 from birth, passphrases enforced, unsafe modes and malformed input refused."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from bonseyes_py.errors import InputError, KeyFileError
from bonseyes_py.pki.keys import (
    MAX_PEM_BYTES,
    KeyAlgorithm,
    algorithm_of,
    generate_private_key,
    load_private_key_pem,
    private_key_pem,
    read_private_key,
    write_private_key,
    write_public_file,
    write_secret_file,
)


def _same_key(a: object, b: object) -> bool:
    return private_key_pem(a) == private_key_pem(b)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm), ids=[a.value for a in KeyAlgorithm])
def test_written_key_is_0600_and_reads_back(tmp_path: Path, algorithm: KeyAlgorithm) -> None:
    key = generate_private_key(algorithm)
    path = write_private_key(tmp_path / "sub" / "k.pem", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert algorithm_of(read_private_key(path)) is algorithm
    assert _same_key(read_private_key(path), key)
    assert [p.name for p in path.parent.iterdir()] == ["k.pem"]  # no temporary file left behind


def test_overwrite_keeps_0600_even_from_0644(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_private_key(path, generate_private_key())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secret_and_public_file_modes(tmp_path: Path) -> None:
    assert stat.S_IMODE(write_secret_file(tmp_path / "s", b"x").stat().st_mode) == 0o600
    assert stat.S_IMODE(write_public_file(tmp_path / "p", b"x").stat().st_mode) == 0o644


def test_encrypted_key_needs_its_passphrase(tmp_path: Path) -> None:
    key = generate_private_key()
    path = write_private_key(tmp_path / "k.pem", key, b"s3cret passphrase")
    assert b"ENCRYPTED" in path.read_bytes()
    assert _same_key(read_private_key(path, b"s3cret passphrase"), key)
    with pytest.raises(KeyFileError) as exc:
        read_private_key(path)
    assert exc.value.check == "key-file"
    assert "passphrase" in str(exc.value)
    with pytest.raises(KeyFileError) as exc:
        read_private_key(path, b"wrong passphrase")
    assert exc.value.check == "key-file"


def test_passphrase_for_plain_key_refused(tmp_path: Path) -> None:
    path = write_private_key(tmp_path / "k.pem", generate_private_key())
    with pytest.raises(KeyFileError) as exc:
        read_private_key(path, b"unneeded")
    assert exc.value.check == "key-file"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o700 | 0o020])
def test_group_or_world_accessible_key_refused(tmp_path: Path, mode: int) -> None:
    path = write_private_key(tmp_path / "k.pem", generate_private_key())
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as exc:
        read_private_key(path)
    assert exc.value.check == "key-file"
    assert f"chmod 600 {path}" in str(exc.value)
    os.chmod(path, 0o600)
    assert read_private_key(path)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as exc:
        read_private_key(tmp_path / "absent.pem")
    assert exc.value.check == "key-file"


@pytest.mark.parametrize("content", [
    b"",
    b"not a key",
    b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
    b"-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n",
    b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
], ids=["empty", "text", "bad-base64", "bad-der", "wrong-label"])
def test_malformed_pem_refused(tmp_path: Path, content: bytes) -> None:
    path = write_secret_file(tmp_path / "k.pem", content)
    with pytest.raises(KeyFileError) as exc:
        read_private_key(path)
    assert exc.value.check == "key-file"


def test_oversized_key_refused(tmp_path: Path) -> None:
    pem = private_key_pem(generate_private_key())
    path = write_secret_file(tmp_path / "k.pem", pem + b"\n" * (MAX_PEM_BYTES + 1 - len(pem)))
    with pytest.raises(InputError) as exc:
        read_private_key(path)
    assert exc.value.check == "input"
    assert "limit" in str(exc.value)


def test_unsupported_curve_refused() -> None:
    pem = private_key_pem(ec.generate_private_key(ec.SECP384R1()))  # type: ignore[arg-type]
    with pytest.raises(InputError) as exc:
        load_private_key_pem(pem)
    assert exc.value.check == "key-algorithm"


def test_unknown_algorithm_name_refused() -> None:
    with pytest.raises(InputError, match="dsa-1024") as caught:
        generate_private_key("dsa-1024")
    assert caught.value.check == "key-algorithm"
