"""The archive reader, libc detection and BL's environment handling, without a Docker engine."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from bonseyes_py.bl.main import Original, payload_environment
from bonseyes_py.mp.archive import read_archive
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


def _archive(path: Path, layers: list[dict[str, bytes]], config: dict[str, object]) -> Path:
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        names = []
        for index, files in enumerate(layers):
            names.append(f"layer{index}/layer.tar")
            add(names[-1], _layer(files))
        add("abc123.json", json.dumps(config).encode())
        add("manifest.json", json.dumps([{"Config": "abc123.json", "Layers": names, "RepoTags": ["x:1"]}]).encode())
    return path


def test_whiteouts_remove_files_and_opaque_directories(tmp_path: Path) -> None:
    archive = _archive(tmp_path / "a.tar", [
        {"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2": b"x", "etc/secret": b"s", "data/a": b"a", "data/b": b"b"},
        {"etc/.wh.secret": b"", "data/.wh..wh..opq": b"", "data/c": b"c"},
    ], {"config": {"Cmd": ["/bin/true"]}})
    image = read_archive(archive)
    assert set(image.files) == {"usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "data/c"}
    assert image.image_id == "sha256:abc123"
    assert image.repo_tags == ["x:1"]


def test_manifest_naming_a_missing_layer_is_an_archive_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        data = json.dumps([{"Config": "c.json", "Layers": ["missing/layer.tar"]}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("c.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    with pytest.raises(RegistrationError) as info_:
        read_archive(path)
    assert info_.value.check == "archive"
    assert "missing/layer.tar" in str(info_.value)


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
