"""Read a ``docker save`` archive without trusting it, and re-pack exactly what was checked for the engine.

Vetting reads the archive rather than a running container, so nothing of the uploaded image ever
executes on the MP. Both archive layouts are accepted: the legacy one (``<id>/layer.tar``) that
Docker 20.10 writes and the OCI layout (``blobs/sha256/...``) that Docker 25+ writes; both carry a
``manifest.json`` naming the config and the layers in order.

Every name the archive gives its content is a claim, checked against the bytes it holds:

- the image config must hash to the digest its name carries (``<hex>.json``, ``blobs/sha256/<hex>``);
  the image ID is the digest of the config's bytes, never its name;
- there is one layer per diff ID of the config (``rootfs.diff_ids``), each held by the archive, and
  each layer's tar stream (decompressed) must hash to its diff ID; a layer named
  ``blobs/sha256/<hex>`` must also hash, as stored, to that digest;
- foreign layer sources (``LayerSources``: a layer to be fetched from elsewhere) are refused.

The engine never loads the upload itself: ``write_canonical`` writes a new archive from the checked
config bytes and the layers (hashed again as they are copied), with a manifest of its own and no
``RepoTags``. So the engine sees no name the uploader chose (no tag of the engine can be moved), and
when ``docker load`` reuses a layer the engine already holds, it does so only under the same diff ID,
that is, for the very bytes that were uploaded and vetted. Nothing of an upload is resolved from
what the engine or the registry already holds by a name or digest the uploader merely wrote down.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import json
import lzma
import posixpath
import re
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

from bonseyes_py import safejson
from bonseyes_py.errors import InputError
from bonseyes_py.mp.errors import RegistrationError

MAX_MANIFEST_BYTES = 1024 * 1024
MAX_CONFIG_BYTES = 4 * 1024 * 1024
MAX_LINK_HOPS = 8
CHUNK = 1024 * 1024
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_DIFF_ID = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class FileEntry:
    """One path of the merged image filesystem, as the last layer that wrote it left it."""

    path: str  # normalised, no leading "./" or "/"
    mode: int
    size: int
    type: bytes
    linkname: str
    layer: int


@dataclass(frozen=True)
class Layer:
    """One checked layer: the archive member holding it, its diff ID and its uncompressed size."""

    member: str  # the regular file in the archive (links followed)
    diff_id: str  # sha256 of the uncompressed tar stream, equal to the config's rootfs.diff_ids entry
    size: int  # bytes of the uncompressed tar stream


@dataclass
class ImageArchive:
    path: Path
    config: dict[str, Any]
    config_bytes: bytes = field(repr=False)
    config_name: str
    layers: list[Layer]
    files: dict[str, FileEntry] = field(default_factory=dict)

    @property
    def container_config(self) -> dict[str, Any]:
        return self.config.get("config") or {}

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.container_config.get("Labels") or {})

    @property
    def image_id(self) -> str:
        """The engine's image ID: the sha256 of the config's bytes (whatever the archive named it)."""
        return "sha256:" + hashlib.sha256(self.config_bytes).hexdigest()

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def uncompressed_size(self) -> int:
        return sum(entry.size for entry in self.files.values())


def _fail(archive: Path, message: str, check: str = "archive") -> RegistrationError:
    return RegistrationError(f"archive {archive.name}: {message}", check=check)


def _claimed_digest(name: str) -> str | None:
    """The digest a member name claims for its bytes (``<hex>.json``, ``blobs/sha256/<hex>``), if any."""
    base = posixpath.basename(name).removesuffix(".json")
    return f"sha256:{base}" if _HEX_DIGEST.fullmatch(base) else None


def _regular_member(tar: tarfile.TarFile, name: str, archive: Path, what: str) -> tarfile.TarInfo:
    """The regular file ``name`` stands for, following symbolic links inside the archive only."""
    current = name
    for _ in range(MAX_LINK_HOPS):
        try:
            member = tar.getmember(current)
        except KeyError as exc:
            raise _fail(archive, f"manifest names {what} {name} that the archive lacks") from exc
        if member.issym():
            # Docker 25+ links legacy layer paths to blobs; a link leaving the archive names nothing.
            current = posixpath.normpath(posixpath.join(posixpath.dirname(current), member.linkname))
            if current.startswith("../") or current.startswith("/"):
                raise _fail(archive, f"{what} {name} links outside the archive")
            continue
        if member.isfile():
            return member
        raise _fail(archive, f"{what} {name} is not a regular file")
    raise _fail(archive, f"{what} {name} is a chain of more than {MAX_LINK_HOPS} links")


def _read_member(tar: tarfile.TarFile, name: str, limit: int, archive: Path, what: str) -> tuple[str, bytes]:
    """The bytes of a small member, and the name of the regular file that holds them."""
    member = _regular_member(tar, name, archive, what)
    if member.size > limit:
        raise _fail(archive, f"{what} {name} is over {limit} bytes")
    handle = tar.extractfile(member)
    assert handle is not None
    return member.name, handle.read()


def _json(data: bytes, archive: Path, what: str, limit: int) -> Any:
    try:
        return safejson.loads(data, what=what, max_bytes=limit)
    except InputError as exc:
        raise _fail(archive, str(exc)) from exc


class _Hashing(io.RawIOBase):
    """A read-only stream that hashes (and counts) every byte read through it."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self.stream = stream
        self.sha256 = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.stream.read(CHUNK if size is None or size < 0 else size)
        self.sha256.update(data)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


@contextmanager
def _layer_stream(tar: tarfile.TarFile, member: tarfile.TarInfo, archive: Path
                  ) -> Iterator[tuple[_Hashing, _Hashing]]:
    """The stored bytes of a layer and its uncompressed tar stream, each hashed as it is read."""
    handle = tar.extractfile(member)
    if handle is None:
        raise _fail(archive, f"layer {member.name} is not a file")
    head = handle.read(6)
    handle.seek(0)
    stored = _Hashing(handle)
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        raise _fail(archive, f"layer {member.name} is zstd-compressed; upload it as docker save writes it")
    raw = cast("IO[bytes]", stored)
    with ExitStack() as stack:
        plain: Any = raw
        if head.startswith(b"\x1f\x8b"):
            plain = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
        elif head.startswith(b"BZh"):
            plain = stack.enter_context(bz2.BZ2File(raw))
        elif head.startswith(b"\xfd7zXZ\x00"):
            plain = stack.enter_context(lzma.LZMAFile(raw))
        yield stored, stored if plain is raw else _Hashing(plain)


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


def _normalise(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def _check_stored(archive: Path, what: str, names: tuple[str, ...], actual: str) -> None:
    for name in names:
        claimed = _claimed_digest(name)
        if claimed is not None and claimed != actual:
            raise _fail(archive, f"{what} {name} hashes to {actual}, not to {claimed} its name claims",
                        check="archive-digest")


def _diff_ids(config: dict[str, Any], count: int, archive: Path) -> list[str]:
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" or not isinstance(rootfs.get("diff_ids"), list):
        raise _fail(archive, "image config lacks rootfs.diff_ids")
    diff_ids = rootfs["diff_ids"]
    if not all(isinstance(d, str) and _DIFF_ID.fullmatch(d) for d in diff_ids):
        raise _fail(archive, "image config has a malformed rootfs.diff_ids entry")
    if len(diff_ids) != count:
        raise _fail(archive, f"manifest.json names {count} layers, the image config {len(diff_ids)} diff IDs")
    return list(diff_ids)


def read_archive(path: Path | str) -> ImageArchive:
    """Parse, check and walk a ``docker save`` archive.

    Raises ``RegistrationError`` check ``archive`` if it is unreadable or incomplete, and check
    ``archive-digest`` if a config or layer does not hash to the digest it is named by.
    """
    archive = Path(path)
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            _, manifest_bytes = _read_member(tar, "manifest.json", MAX_MANIFEST_BYTES, archive, "manifest")
            manifest = _json(manifest_bytes, archive, "manifest.json", MAX_MANIFEST_BYTES)
            if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
                raise _fail(archive, "manifest.json must describe exactly one image")
            entry = manifest[0]
            config_name, layer_names = entry.get("Config"), entry.get("Layers")
            if (not isinstance(config_name, str) or not isinstance(layer_names, list) or not layer_names
                    or not all(isinstance(name, str) for name in layer_names)):
                raise _fail(archive, "manifest.json lacks Config or Layers")
            if entry.get("LayerSources"):
                raise _fail(archive, "manifest.json names foreign layer sources; the archive must hold every layer")
            held_by, config_bytes = _read_member(tar, config_name, MAX_CONFIG_BYTES, archive, "config")
            config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
            _check_stored(archive, "config", (config_name, held_by), config_digest)
            config = _json(config_bytes, archive, "image config", MAX_CONFIG_BYTES)
            if not isinstance(config, dict):
                raise _fail(archive, "image config is not a JSON object")
            diff_ids = _diff_ids(config, len(layer_names), archive)
            image = ImageArchive(path=archive, config=config, config_bytes=config_bytes, config_name=config_name,
                                 layers=[])
            for index, (name, diff_id) in enumerate(zip(layer_names, diff_ids, strict=True)):
                image.layers.append(_walk_layer(tar, name, diff_id, index, image.files, archive))
            return image
    except RegistrationError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError, lzma.LZMAError) as exc:
        # EOFError and TarError: a truncated or corrupt tar; OSError/LZMAError: a corrupt compressed layer.
        raise _fail(archive, f"not a readable docker save archive ({type(exc).__name__}: {exc})") from exc


def _walk_layer(tar: tarfile.TarFile, name: str, diff_id: str, index: int, files: dict[str, FileEntry],
                archive: Path) -> Layer:
    """Merge one layer's files into ``files`` while hashing it; check it against its diff ID."""
    member = _regular_member(tar, name, archive, "layer")
    with _layer_stream(tar, member, archive) as (stored, plain):
        with tarfile.open(fileobj=plain, mode="r|") as layer:
            _merge_layer(files, layer, index)
        plain.drain()  # the end-of-archive blocks and any padding are part of what the diff ID covers
        stored.drain()
    _check_stored(archive, "layer", (name, member.name), stored.digest)
    if plain.digest != diff_id:
        raise _fail(archive, f"layer {name} hashes to {plain.digest}, not to its diff ID {diff_id} in the image "
                             "config", check="archive-digest")
    return Layer(member=member.name, diff_id=diff_id, size=plain.count)


def write_canonical(image: ImageArchive, destination: Path) -> Path:
    """Write the archive the engine loads: the checked config and layers (uncompressed), no ``RepoTags``.

    Each layer is hashed again as it is copied, so the engine gets the bytes that were vetted.
    """
    archive = image.path
    config_name = f"{image.image_id.removeprefix('sha256:')}.json"
    names = [f"{index:04d}/layer.tar" for index in range(len(image.layers))]
    try:
        with tarfile.open(archive, mode="r:*") as source, tarfile.open(destination, mode="w") as out:
            for layer, name in zip(image.layers, names, strict=True):
                with _layer_stream(source, source.getmember(layer.member), archive) as (_stored, plain):
                    info = tarfile.TarInfo(name)
                    info.size, info.mode = layer.size, 0o644
                    out.addfile(info, plain)
                    plain.drain()
                if plain.count != layer.size or plain.digest != layer.diff_id:
                    raise _fail(archive, f"layer {layer.member} changed while it was registered",
                                check="archive-digest")
            _add_bytes(out, config_name, image.config_bytes)
            manifest = [{"Config": config_name, "RepoTags": None, "Layers": names}]
            _add_bytes(out, "manifest.json", json.dumps(manifest).encode())
    except RegistrationError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError, lzma.LZMAError) as exc:
        raise _fail(archive, f"could not be re-read ({type(exc).__name__}: {exc})") from exc
    return destination


def _add_bytes(out: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    out.addfile(info, io.BytesIO(data))

