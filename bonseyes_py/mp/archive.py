"""Read a ``docker save`` archive without trusting it: its manifest, image config and merged file list.

Vetting reads the archive rather than a running container, so nothing of the uploaded image ever
executes on the MP. Both archive layouts are accepted: the legacy one (``<id>/layer.tar``) that
Docker 20.10 writes and the OCI layout (``blobs/sha256/...``) that Docker 25+ writes; both carry a
``manifest.json`` naming the config and the layers in order.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bonseyes_py.mp.errors import RegistrationError

MAX_MANIFEST_BYTES = 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class FileEntry:
    """One path of the merged image filesystem, as the last layer that wrote it left it."""

    path: str  # normalised, no leading "./" or "/"
    mode: int
    size: int
    type: bytes
    linkname: str
    layer: int


@dataclass
class ImageArchive:
    path: Path
    config: dict[str, Any]
    config_name: str
    layers: list[str]
    repo_tags: list[str]
    files: dict[str, FileEntry] = field(default_factory=dict)

    @property
    def container_config(self) -> dict[str, Any]:
        return self.config.get("config") or {}

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.container_config.get("Labels") or {})

    @property
    def image_id(self) -> str:
        """The engine's image ID: the sha256 of the config blob, named by the config file."""
        name = posixpath.basename(self.config_name).removesuffix(".json")
        return name if name.startswith("sha256:") else f"sha256:{name}"

    @property
    def uncompressed_size(self) -> int:
        return sum(entry.size for entry in self.files.values())


def _fail(archive: Path, message: str) -> RegistrationError:
    return RegistrationError(f"archive {archive.name}: {message}", check="archive")


def _read_member(tar: tarfile.TarFile, name: str, limit: int, archive: Path) -> bytes:
    try:
        member = tar.getmember(name)
    except KeyError as exc:
        raise _fail(archive, f"lacks {name}") from exc
    if not member.isfile() or member.size > limit:
        raise _fail(archive, f"{name} is not a regular file under {limit} bytes")
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read()


def _normalise(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def _merge_layer(files: dict[str, FileEntry], layer: tarfile.TarFile, index: int) -> None:
    """Apply one layer to the merged view, honouring AUFS/OCI whiteouts as the engine does."""
    for member in layer:
        path = _normalise(member.name)
        directory, base = posixpath.split(path)
        if base == ".wh..wh..opq":
            prefix = directory + "/"
            for existing in [p for p in files if p.startswith(prefix)]:
                del files[existing]
            continue
        if base.startswith(".wh."):
            target = posixpath.join(directory, base[4:])
            for existing in [p for p in files if p == target or p.startswith(target + "/")]:
                del files[existing]
            continue
        if path == "":
            continue
        files[path] = FileEntry(path=path, mode=member.mode, size=member.size if member.isfile() else 0,
                                type=member.type, linkname=member.linkname, layer=index)


def _iter_layers(tar: tarfile.TarFile, layers: list[str], archive: Path) -> Iterator[tuple[int, tarfile.TarFile]]:
    for index, name in enumerate(layers):
        try:
            member = tar.getmember(name)
        except KeyError as exc:
            raise _fail(archive, f"manifest names layer {name} that the archive lacks") from exc
        if member.issym() or member.islnk():
            # Docker 25+ links legacy layer paths to blobs; follow inside the archive only.
            target = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
            member = tar.getmember(target)
        handle = tar.extractfile(member)
        if handle is None:
            raise _fail(archive, f"layer {name} is not a file")
        # Layers may be compressed in the OCI layout; "r:*" detects it.
        with tarfile.open(fileobj=handle, mode="r:*") as layer:
            yield index, layer


def read_archive(path: Path | str) -> ImageArchive:
    """Parse and walk a ``docker save`` archive; raise ``RegistrationError`` check ``archive`` if unreadable."""
    archive = Path(path)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            manifest = json.loads(_read_member(tar, "manifest.json", MAX_MANIFEST_BYTES, archive))
            if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
                raise _fail(archive, "manifest.json must describe exactly one image")
            entry = manifest[0]
            config_name, layers = entry.get("Config"), entry.get("Layers")
            if not isinstance(config_name, str) or not isinstance(layers, list) or not layers:
                raise _fail(archive, "manifest.json lacks Config or Layers")
            config = json.loads(_read_member(tar, config_name, MAX_CONFIG_BYTES, archive))
            if not isinstance(config, dict):
                raise _fail(archive, "image config is not a JSON object")
            image = ImageArchive(path=archive, config=config, config_name=config_name, layers=list(layers),
                                 repo_tags=list(entry.get("RepoTags") or []))
            for index, layer in _iter_layers(tar, image.layers, archive):
                _merge_layer(image.files, layer, index)
            return image
    except RegistrationError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as exc:
        # ValueError covers bad JSON; EOFError and TarError a truncated or corrupt tar.
        raise _fail(archive, f"not a readable docker save archive ({type(exc).__name__}: {exc})") from exc
