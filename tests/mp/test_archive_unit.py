"""The archive reader, libc detection and BL's environment handling, without a Docker engine."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest

from bonseyes_py.bl.main import Original, payload_environment
from bonseyes_py.mp.archive import read_archive, write_canonical
from bonseyes_py.mp.errors import RegistrationError
from bonseyes_py.mp.service import check_policies, repository_for
from bonseyes_py.mp.vetting import detect_libc


def _layer(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _archive(path: Path, layers: list[dict[str, bytes]], config: dict[str, Any], *,
             config_name: str | None = None, diff_ids: list[str] | None = None,
             manifest_extra: dict[str, Any] | None = None) -> Path:
    """A docker save archive (legacy layout); the config's diff IDs are the layers' unless given."""
    blobs = [_layer(files) for files in layers]
    config = {**config, "rootfs": {"type": "layers", "diff_ids": diff_ids or [_sha(blob) for blob in blobs]}}
    config_bytes = json.dumps(config).encode()
    config_name = config_name or f"{_sha(config_bytes)[7:]}.json"
    names = [f"layer{index}/layer.tar" for index in range(len(blobs))]
    manifest = [{"Config": config_name, "Layers": names, "RepoTags": ["x:1"], **(manifest_extra or {})}]
    return _tar(path, {**dict(zip(names, blobs, strict=True)), config_name: config_bytes,
                       "manifest.json": json.dumps(manifest).encode()})


GLIBC = {"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": b"x"}
CMD = {"config": {"Cmd": ["/bin/true"]}}


def test_whiteouts_remove_files_and_opaque_directories(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.tar", [
        {**GLIBC, "etc/secret": b"s", "data/a": b"a", "data/b": b"b"},
        {"etc/.wh.secret": b"", "data/.wh..wh..opq": b"", "data/c": b"c"},
    ], CMD)
    image = read_archive(archive)
    assert set(image.files) == {"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "data/c"}
    assert image.image_id == _sha(image.config_bytes)
    assert image.config_name == f"{image.image_id[7:]}.json"


def test_image_id_is_the_configs_digest_and_a_name_claiming_another_is_refused(tmp_path: Path) -> None:
    other = "sha256:" + "ab" * 32
    for name in (f"{other[7:]}.json", f"blobs/sha256/{other[7:]}"):
        archive = _archive(tmp_path / "claim.tar", [GLIBC], CMD, config_name=name)
        with pytest.raises(RegistrationError) as info:
            read_archive(archive)
        assert info.value.check == "archive-digest"
        assert other in str(info.value)
    # A name that claims no digest is no claim: the ID is still the config's digest.
    image = read_archive(_archive(tmp_path / "plain.tar", [GLIBC], CMD, config_name="config.json"))
    assert image.image_id == _sha(image.config_bytes)


def test_a_layer_must_hash_to_its_diff_id(tmp_path: Path) -> None:
    borrowed = "sha256:" + "cd" * 32
    archive = _archive(tmp_path / "borrowed.tar", [GLIBC], CMD, diff_ids=[borrowed])
    with pytest.raises(RegistrationError) as info:
        read_archive(archive)
    assert info.value.check == "archive-digest"
    assert borrowed in str(info.value)
    uneven = _archive(tmp_path / "uneven.tar", [GLIBC], CMD, diff_ids=[_sha(_layer(GLIBC)), borrowed])
    with pytest.raises(RegistrationError) as info:
        read_archive(uneven)
    assert (info.value.check, "names 1 layers, the image config 2 diff IDs" in str(info.value)) == ("archive", True)


def test_foreign_layer_sources_are_refused(tmp_path: Path) -> None:
    diff_id = _sha(_layer(GLIBC))
    source = {diff_id: {"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "size": 1,
                        "digest": "sha256:" + "ef" * 32, "urls": ["https://example.invalid/layer"]}}
    archive = _archive(tmp_path / "foreign.tar", [GLIBC], CMD, manifest_extra={"LayerSources": source})
    with pytest.raises(RegistrationError) as info:
        read_archive(archive)
    assert info.value.check == "archive"
    assert "foreign layer sources" in str(info.value)


def test_oci_blobs_compressed_layers_and_the_canonical_repack(tmp_path: Path) -> None:
    """Docker 25+ names blobs by digest and may compress layers: the diff ID covers the uncompressed stream,
    the blob name the stored bytes. The re-pack holds the uncompressed layers, the config bytes, no tags."""
    plain = _layer({**GLIBC, "bin/app": b"app"})
    packed = gzip.compress(plain)
    config = json.dumps({**CMD, "rootfs": {"type": "layers", "diff_ids": [_sha(plain)]}}).encode()
    blob = f"blobs/sha256/{_sha(packed)[7:]}"
    manifest = [{"Config": f"blobs/sha256/{_sha(config)[7:]}", "Layers": [blob], "RepoTags": ["victim/tag:1"]}]
    archive = _tar(tmp_path / "oci.tar", {blob: packed, f"blobs/sha256/{_sha(config)[7:]}": config,
                                          "manifest.json": json.dumps(manifest).encode()})
    image = read_archive(archive)
    assert image.diff_ids == [_sha(plain)]
    assert "bin/app" in image.files
    canonical = write_canonical(image, tmp_path / "canonical.tar")
    with tarfile.open(canonical) as tar:
        [entry] = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert entry["RepoTags"] is None
        assert tar.extractfile(entry["Config"]).read() == config  # type: ignore[union-attr]
        assert tar.extractfile(entry["Layers"][0]).read() == plain  # type: ignore[union-attr]
    # The stored blob must hash to the digest its name claims, too.
    lying = f"blobs/sha256/{'0' * 64}"
    manifest[0]["Layers"] = [lying]
    with pytest.raises(RegistrationError) as info:
        read_archive(_tar(tmp_path / "lying.tar", {lying: packed, f"blobs/sha256/{_sha(config)[7:]}": config,
                                                    "manifest.json": json.dumps(manifest).encode()}))
    assert info.value.check == "archive-digest"


def test_the_repack_refuses_a_layer_changed_after_the_check(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.tar", [GLIBC], CMD)
    image = read_archive(archive)
    _archive(archive, [{**GLIBC, "bin/late": b"swapped"}], CMD)  # same names, other bytes
    with pytest.raises(RegistrationError) as info:
        write_canonical(image, tmp_path / "canonical.tar")
    assert info.value.check == "archive-digest"


def test_manifest_naming_a_missing_layer_or_config_is_an_archive_error(tmp_path: Path) -> None:
    config = json.dumps({**CMD, "rootfs": {"type": "layers", "diff_ids": [_sha(b"")]}}).encode()
    path = _tar(tmp_path / "bad.tar", {"manifest.json": json.dumps([{"Config": "c.json",
                                                                     "Layers": ["missing/layer.tar"]}]).encode(),
                                       "c.json": config})
    with pytest.raises(RegistrationError) as info_:
        read_archive(path)
    assert info_.value.check == "archive"
    assert "missing/layer.tar" in str(info_.value)
    no_config = _tar(tmp_path / "no-config.tar", {"manifest.json": json.dumps(
        [{"Config": f"{'ab' * 32}.json", "Layers": ["l/layer.tar"]}]).encode(), "l/layer.tar": _layer(GLIBC)})
    with pytest.raises(RegistrationError) as info_:
        read_archive(no_config)
    assert info_.value.check == "archive"
    assert "lacks" in str(info_.value)


@pytest.mark.parametrize(("files", "expected"), [
    (["usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"], "glibc"),
    (["lib64/ld-linux-x86-64.so.2"], "glibc"),
    (["lib/ld-linux-aarch64.so.1"], "glibc"),
    (["lib/ld-musl-x86_64.so.1", "bin/busybox"], "musl"),
    (["bin/busybox"], "none"),
    (["home/user/ld-linux-x86-64.so.2"], "none"),  # a loader outside library directories does not count
])
def test_detect_libc(files: list[str], expected: str) -> None:
    assert detect_libc(files) == expected


def test_payload_environment_drops_bootloader_variables() -> None:
    original = Original(entrypoint=["a"], cmd=[], env=["PATH=/usr/bin", "GREETING=hi"], workdir="/", user="")
    env = payload_environment(original, {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/opt/bonseyes/bl/_internal",
                                         "_PYI_APPLICATION_HOME_DIR": "/x", "_MEIPASS2": "/y", "HOSTNAME": "c1"})
    assert env == {"PATH": "/usr/bin", "HOSTNAME": "c1", "GREETING": "hi"}
    restored = payload_environment(original, {"LD_LIBRARY_PATH": "/bl", "LD_LIBRARY_PATH_ORIG": "/app/lib"})
    assert restored["LD_LIBRARY_PATH"] == "/app/lib"
    assert "LD_LIBRARY_PATH_ORIG" not in restored


def test_repository_names_are_registry_safe_and_distinct() -> None:
    upper, lower = repository_for("Face-Det"), repository_for("face-det")
    assert upper != lower
    assert upper.startswith("artefacts/face-det-")
    assert repository_for("a:b@c+d").startswith("artefacts/a-b-c-d-")


def test_policies_must_be_a_json_object() -> None:
    assert check_policies('{"gpu": true}') == {"gpu": True}
    for bad in ("[1]", "{", 3):
        with pytest.raises(RegistrationError) as info:
            check_policies(bad)
        assert info.value.check == "policies"
