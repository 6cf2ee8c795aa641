"""Read and write the self-describing bundle (``runs/<name>/bundle/``). Never imports torch.

``serve``, ``drift``, ``benchmark`` and ``export``'s own checks read bundles through
:func:`load_bundle`, which verifies, before anything is used, every file that can change an
answer:

- ``visionops.json`` records the SHA-256 of every other file (the graphs, ``parity.json``,
  ``parity.npz``, ``reference.npz``);
- ``visionops.json`` itself (class names, thresholds, input size, ...) must equal the copy
  written into ``model.onnx``'s ``metadata_props`` (key ``visionops``), whose bytes are
  checksummed above. Editing either file alone is refused on load.

Both files are written by :func:`write_bundle_manifest` only, from one :class:`BundleMeta`.
The checks catch edits and damage, not a forger who rewrites the graph's metadata and the
checksums together: that would need a signing key, which visionops does not manage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final

from pydantic import ValidationError

from visionops._io import file_sha256, read_json
from visionops.artifacts import BundleMeta, ParityRecord
from visionops.errors import ArtifactError

__all__ = [
    "BUNDLE_KIND",
    "BUNDLE_MANIFEST",
    "METADATA_KEY",
    "Bundle",
    "find_bundle",
    "load_bundle",
    "read_onnx_metadata",
    "write_bundle_manifest",
]

BUNDLE_KIND: Final = BundleMeta.KIND
BUNDLE_MANIFEST: Final = BundleMeta.FILENAME
SCHEMA_VERSION: Final = BundleMeta.SCHEMA_VERSION
METADATA_KEY: Final = "visionops"
"""Key of ``model.onnx``'s ``metadata_props`` entry holding ``visionops.json`` (less ``files``)."""
_REEXPORT: Final = "re-export with `visionops export --force`"


@dataclass(frozen=True)
class Bundle:
    """A verified bundle.

    Attributes:
        path: The bundle folder.
        meta: ``visionops.json``.
        parity: ``parity.json`` (None when missing and allowed).
    """

    path: Path
    meta: BundleMeta
    parity: ParityRecord | None

    @property
    def task(self) -> str:
        """The task: classification, multilabel, regression or anomaly."""
        return self.meta.task

    @property
    def model_path(self) -> Path:
        """The fp32 ONNX model."""
        return self.path / "model.onnx"

    @property
    def int8_model_path(self) -> Path | None:
        """The int8 model, if quantisation was accepted at export."""
        int8 = self.meta.int8_file
        return self.path / int8 if int8 is not None else None

    @property
    def labels(self) -> list[str]:
        """Class names (classification, multilabel) or target names (regression)."""
        return self.meta.labels

    @property
    def model_version(self) -> str:
        """Version string returned with every prediction."""
        return self.meta.model_version


def find_bundle(target: Path | None, runs_root: Path) -> Path:
    """Find a bundle folder from a bundle path, a run folder/name, or ``runs/latest``.

    Raises:
        ArtifactError: Nothing there; the message names `visionops export`.
    """
    from visionops.runs import resolve_run

    if target is not None and (target / BUNDLE_MANIFEST).is_file():
        return target
    run_dir = resolve_run(target, runs_root)
    bundle_dir = run_dir / "bundle"
    if not (bundle_dir / BUNDLE_MANIFEST).is_file():
        raise ArtifactError(
            f"run {run_dir} has no bundle — export it with `visionops export {run_dir}`"
        )
    return bundle_dir


def _embedded(meta: BundleMeta) -> dict[str, Any]:
    """What goes into the graphs' metadata: the manifest less the checksums of the files."""
    data = meta.to_json()
    data.pop("files", None)
    return data


def _embed_metadata(path: Path, meta: BundleMeta) -> None:
    """Put ``meta`` (JSON, less the checksums) under ``metadata_props['visionops']`` of a graph."""
    import onnx

    proto = onnx.load(str(path))
    kept = [prop for prop in proto.metadata_props if prop.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(_embedded(meta), sort_keys=False, default=str)
    proto.doc_string = (
        f"visionops {meta.task} model {meta.model_version}: uint8 pixels in,"
        f" {', '.join(meta.outputs.values())} out"
    )
    onnx.save_model(proto, str(path))


def write_bundle_manifest(bundle_dir: Path, meta: BundleMeta) -> BundleMeta:
    """Seal a bundle: embed ``meta`` in its graphs, checksum every file, write the manifest.

    Args:
        bundle_dir: The (temporary) bundle folder with every other file already written,
            including ``model.onnx``.
        meta: The manifest; its ``files`` are replaced.

    Returns:
        The manifest as written.
    """
    for graph in sorted(bundle_dir.glob("*.onnx")):
        _embed_metadata(graph, meta)
    files = {
        entry.name: file_sha256(entry)
        for entry in sorted(bundle_dir.iterdir())
        if entry.is_file() and entry.name != BUNDLE_MANIFEST and not entry.name.startswith(".")
    }
    sealed = meta.model_copy(update={"files": files})
    sealed.write(bundle_dir)
    return sealed


# ------------------------------------------------------------------ reading ONNX metadata
#
# Checking visionops.json against the graph only needs ModelProto's metadata_props (field
# 14). Parsing the whole graph with `onnx.load` costs a second and a half per process
# (importing onnx, then 45 MB of weights for a ResNet-18) in every server worker; reading the
# top-level protobuf fields and seeking past the others costs microseconds.

_METADATA_PROPS_FIELD: Final = 14


def _varint(stream: IO[bytes]) -> int | None:
    value, shift = 0, 0
    while True:
        byte = stream.read(1)
        if not byte:
            if shift:
                raise ValueError("truncated varint")
            return None
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _entry(data: bytes) -> tuple[str, str]:
    """Decode a ``StringStringEntryProto`` (key = field 1, value = field 2)."""
    import io

    stream = io.BytesIO(data)
    fields = {1: "", 2: ""}
    while (tag := _varint(stream)) is not None:
        number, wire = tag >> 3, tag & 7
        if wire != 2:
            raise ValueError(f"unexpected wire type {wire} in a metadata entry")
        length = _varint(stream) or 0
        value = stream.read(length)
        if number in fields:
            fields[number] = value.decode("utf-8")
    return fields[1], fields[2]


def read_onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, read without loading its graph.

    Args:
        path: An ``.onnx`` file (weights embedded or not).

    Returns:
        Key → value of every metadata entry.

    Raises:
        ArtifactError: The file is not a readable ONNX model.
    """
    props: dict[str, str] = {}
    skip = {0: None, 1: 8, 5: 4}
    try:
        with path.open("rb") as stream:
            while (tag := _varint(stream)) is not None:
                number, wire = tag >> 3, tag & 7
                if wire == 2:
                    length = _varint(stream) or 0
                    if number == _METADATA_PROPS_FIELD:
                        key, value = _entry(stream.read(length))
                        props[key] = value
                    else:
                        stream.seek(length, 1)
                elif wire == 0:
                    _varint(stream)
                elif wire in skip:
                    stream.seek(skip[wire] or 0, 1)
                else:
                    raise ValueError(f"unexpected wire type {wire}")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ArtifactError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}) — {_REEXPORT}"
        ) from None
    return props


# ---------------------------------------------------------------------------- loading


def _verify_files(path: Path, meta: BundleMeta) -> None:
    required = ["model.onnx"]
    if meta.int8_file is not None:
        required.append(meta.int8_file)
    for name in required:
        if name not in meta.files:
            raise ArtifactError(
                f"{path / BUNDLE_MANIFEST} records no checksum for {name} — the manifest was"
                f" edited after export; {_REEXPORT}"
            )
    for name, expected in meta.files.items():
        file_path = path / name
        if not file_path.is_file():
            raise ArtifactError(f"bundle file {file_path} is missing — {_REEXPORT}")
        if file_sha256(file_path) != expected:
            raise ArtifactError(
                f"bundle file {file_path} was modified after export (checksum mismatch)"
                f" — {_REEXPORT}"
            )


def _verify_manifest(path: Path) -> None:
    """``visionops.json`` (less ``files``) must be the copy sealed inside ``model.onnx``."""
    manifest_path = path / BUNDLE_MANIFEST
    written = dict(read_json(manifest_path))
    written.pop("files", None)
    sealed = read_onnx_metadata(path / "model.onnx").get(METADATA_KEY)
    if sealed is None:
        raise ArtifactError(
            f"{path / 'model.onnx'} carries no visionops metadata to check {BUNDLE_MANIFEST}"
            f" against — {_REEXPORT}"
        )
    try:
        embedded = json.loads(sealed)
    except ValueError:
        raise ArtifactError(
            f"the visionops metadata inside {path / 'model.onnx'} is not JSON — {_REEXPORT}"
        ) from None
    changed = sorted(
        key for key in set(written) | set(embedded) if written.get(key) != embedded.get(key)
    )
    if changed:
        raise ArtifactError(
            f"{manifest_path} was modified after export ({', '.join(changed)} differ from the"
            f" copy sealed in model.onnx) — {_REEXPORT}"
        )


def load_bundle(path: Path, *, verify: bool = True, allow_unverified: bool = False) -> Bundle:
    """Open a bundle, check every file that can change an answer and its parity record.

    Args:
        path: The bundle folder.
        verify: Check every file against the checksums in ``visionops.json``, and
            ``visionops.json`` against the copy sealed in ``model.onnx``.
        allow_unverified: Accept a bundle without a passing parity record.

    Returns:
        The bundle.

    Raises:
        ArtifactError: Missing or foreign manifest, a file or the manifest edited after
            export, or no passing parity record (unless ``allow_unverified``).
    """
    meta = BundleMeta.read(path)
    if verify:
        _verify_files(path, meta)
        _verify_manifest(path)
    parity: ParityRecord | None = None
    parity_path = path / "parity.json"
    if parity_path.is_file():
        try:
            parity = ParityRecord.model_validate(read_json(parity_path))
        except (ValueError, ValidationError):
            raise ArtifactError(f"{parity_path} is not a parity record — {_REEXPORT}") from None
    if (parity is None or not parity.passed) and not allow_unverified:
        raise ArtifactError(
            f"bundle {path} has no passing parity record (parity.json) — {_REEXPORT}, or pass"
            " --allow-unverified to use it anyway"
        )
    return Bundle(path=path, meta=meta, parity=parity)
