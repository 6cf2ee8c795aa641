"""Read and write the self-describing bundle (``runs/<name>/bundle/``). Never imports torch.

``serve``, ``drift`` and ``export``'s parity check all read bundles through :func:`load_bundle`,
which verifies every file against the checksums recorded at export time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionops._io import atomic_write_json, file_sha256, read_json
from visionops.errors import ArtifactError

__all__ = [
    "BUNDLE_KIND",
    "BUNDLE_MANIFEST",
    "Bundle",
    "find_bundle",
    "load_bundle",
    "write_bundle_manifest",
]

BUNDLE_KIND = "visionops.bundle"
BUNDLE_MANIFEST = "visionops.json"
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Bundle:
    """A verified bundle.

    Attributes:
        path: The bundle folder.
        manifest: ``visionops.json`` as a dict.
        parity: ``parity.json`` as a dict (empty if missing and allowed).
    """

    path: Path
    manifest: dict[str, Any]
    parity: dict[str, Any]

    @property
    def task(self) -> str:
        """The task: classification, multilabel, regression or anomaly."""
        return str(self.manifest["task"])

    @property
    def model_path(self) -> Path:
        """The fp32 ONNX model."""
        return self.path / "model.onnx"

    @property
    def int8_model_path(self) -> Path | None:
        """The int8 model, if quantisation was accepted at export."""
        quantized = self.manifest.get("quantized") or {}
        if quantized.get("accepted"):
            return self.path / str(quantized.get("file", "model.int8.onnx"))
        return None

    @property
    def input(self) -> dict[str, Any]:
        """Input spec: name, dtype, layout, size, channels, resize, max_image_pixels."""
        return dict(self.manifest["input"])

    @property
    def labels(self) -> list[str]:
        """Class names (classification, multilabel) or target names (regression)."""
        names = self.manifest.get("class_names") or self.manifest.get("target_names") or []
        return [str(name) for name in names]

    @property
    def model_version(self) -> str:
        """Version string returned with every prediction."""
        return str(self.manifest["model_version"])


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


def write_bundle_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record the checksum of every other file in the folder and write ``visionops.json``.

    Args:
        bundle_dir: The (temporary) bundle folder with every other file already written.
        manifest: The manifest without ``files``.

    Returns:
        The manifest as written.
    """
    files = {
        entry.name: file_sha256(entry)
        for entry in sorted(bundle_dir.iterdir())
        if entry.is_file() and entry.name != BUNDLE_MANIFEST and not entry.name.startswith(".")
    }
    complete = {"schema_version": SCHEMA_VERSION, "kind": BUNDLE_KIND, **manifest, "files": files}
    atomic_write_json(bundle_dir / BUNDLE_MANIFEST, complete)
    return complete


def load_bundle(path: Path, *, verify: bool = True, allow_unverified: bool = False) -> Bundle:
    """Open a bundle, check its checksums and its parity record.

    Args:
        path: The bundle folder.
        verify: Check every file against the checksums in ``visionops.json``.
        allow_unverified: Accept a bundle without a passing parity record.

    Returns:
        The bundle.

    Raises:
        ArtifactError: Missing or foreign manifest, a file edited after export, or no passing
            parity record (unless ``allow_unverified``).
    """
    manifest_path = path / BUNDLE_MANIFEST
    try:
        manifest = read_json(manifest_path)
    except FileNotFoundError:
        raise ArtifactError(
            f"{path} is not a bundle (no {BUNDLE_MANIFEST}) — make one with `visionops export`"
        ) from None
    except ValueError:
        raise ArtifactError(
            f"{manifest_path} is not valid JSON — re-export with `visionops export --force`"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
        raise ArtifactError(f"{manifest_path} is not a visionops bundle manifest")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{manifest_path} has schema_version {manifest.get('schema_version')}; this"
            f" visionops reads {SCHEMA_VERSION} — re-export with this version"
        )
    if verify:
        for name, expected in manifest.get("files", {}).items():
            file_path = path / name
            if not file_path.is_file():
                raise ArtifactError(
                    f"bundle file {file_path} is missing"
                    " — re-export with `visionops export --force`"
                )
            if file_sha256(file_path) != expected:
                raise ArtifactError(
                    f"bundle file {file_path} was modified after export (checksum mismatch)"
                    " — re-export with `visionops export --force`"
                )
    parity: dict[str, Any] = {}
    parity_path = path / "parity.json"
    if parity_path.is_file():
        parity = read_json(parity_path)
    if not parity.get("passed") and not allow_unverified:
        raise ArtifactError(
            f"bundle {path} has no passing parity record (parity.json) — re-export with"
            " `visionops export --force`, or pass --allow-unverified to use it anyway"
        )
    return Bundle(path=path, manifest=manifest, parity=parity)
