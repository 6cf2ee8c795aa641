"""``visionops drift simulate``: shifted copies of images, for demos, tests and fire drills.

A shift spec is ``name=value`` pairs joined by commas, applied in the order given::

    brightness=1.3      multiply every pixel (1 = unchanged)
    contrast=0.7        scale around each image's mean grey level (1 = unchanged)
    blur=2              Gaussian blur radius in pixels
    noise=10            Gaussian noise, standard deviation in 0..255 pixel units
    rotation=15         rotate by degrees (corners filled with the edge colour's mean)
    jpeg=20             encode as JPEG at this quality (1..95); given last, the file keeps
                        the encoder's bytes
    occlusion=0.2       a grey square covering this share of the image, placed at random
    cast=0.1            colour cast: red up and blue down by this share of 255 (< 0: cooler)
    resize=0.5          scale both sides by this factor (Lanczos): a camera of another
                        resolution; ``resize=0.5,resize=2`` is a lower-resolution sensor
                        upscaled back to the same size

Examples:
    >>> shifts = parse_shifts("brightness=1.3,blur=2")
    >>> [s.name for s in shifts]
    ['brightness', 'blur']
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from visionops.errors import DriftError

__all__ = [
    "SHIFTS",
    "Shift",
    "SimulateResult",
    "apply_shifts",
    "parse_shifts",
    "shifted_file",
    "simulate_folder",
]

SHIFTS: dict[str, tuple[float, float, str]] = {
    "brightness": (0.0, 10.0, "multiply pixels by this factor"),
    "contrast": (0.0, 10.0, "scale around the mean grey level by this factor"),
    "blur": (0.0, 50.0, "Gaussian blur radius, pixels"),
    "noise": (0.0, 255.0, "Gaussian noise standard deviation, 0..255 units"),
    "rotation": (-360.0, 360.0, "rotation, degrees"),
    "jpeg": (1.0, 95.0, "JPEG quality"),
    "occlusion": (0.0, 1.0, "share of the image hidden by a grey square"),
    "cast": (-1.0, 1.0, "red up / blue down, share of 255"),
    "resize": (0.01, 10.0, "scale both sides by this factor"),
}
"""Shift name → (lowest value, highest value, meaning)."""
_ALIASES = {
    "colour_cast": "cast",
    "color_cast": "cast",
    "rotate": "rotation",
    "quality": "jpeg",
    "scale": "resize",
}


@dataclass(frozen=True)
class Shift:
    """One shift: a name from :data:`SHIFTS` and its value."""

    name: str
    value: float


def parse_shifts(text: str) -> list[Shift]:
    """Parse ``brightness=1.3,blur=2``.

    Raises:
        DriftError: An unknown name, a value that is not a number or is out of range.
    """
    import difflib

    shifts: list[Shift] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, raw = part.partition("=")
        name = _ALIASES.get(name.strip().lower(), name.strip().lower())
        if not sep or name not in SHIFTS:
            close = difflib.get_close_matches(name, list(SHIFTS), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise DriftError(
                f"--shift {part!r}: {hint}use name=value with a name among {', '.join(SHIFTS)}"
            )
        try:
            value = float(raw)
        except ValueError:
            raise DriftError(f"--shift {part!r}: {raw!r} is not a number") from None
        low, high, meaning = SHIFTS[name]
        if not low <= value <= high:
            raise DriftError(f"--shift {part!r}: {name} ({meaning}) must be in {low:g}..{high:g}")
        shifts.append(Shift(name, value))
    if not shifts:
        raise DriftError("--shift is empty — e.g. --shift brightness=1.3,blur=2")
    return shifts


def _to_uint8(values: NDArray[np.floating[Any]]) -> NDArray[np.uint8]:
    return np.asarray(np.clip(values, 0, 255).round(), dtype=np.uint8)


def _apply(pixels: NDArray[np.uint8], shift: Shift, rng: np.random.Generator) -> NDArray[np.uint8]:
    value = shift.value
    if shift.name == "brightness":
        return _to_uint8(pixels.astype(np.float32) * value)
    if shift.name == "contrast":
        floats = pixels.astype(np.float32)
        mean = floats.mean()
        return _to_uint8(mean + (floats - mean) * value)
    if shift.name == "noise":
        noisy = pixels.astype(np.float32) + rng.normal(0.0, value, pixels.shape)
        return np.clip(noisy, 0, 255).round().astype(np.uint8)
    if shift.name == "cast":
        floats = pixels.astype(np.float32)
        if floats.shape[-1] >= 3:
            floats[..., 0] += 255 * value
            floats[..., 2] -= 255 * value
        return np.clip(floats, 0, 255).round().astype(np.uint8)
    if shift.name == "occlusion":
        out = pixels.copy()
        height, width = pixels.shape[:2]
        side_h = max(1, round(height * np.sqrt(value)))
        side_w = max(1, round(width * np.sqrt(value)))
        top = int(rng.integers(0, height - side_h + 1))
        left = int(rng.integers(0, width - side_w + 1))
        out[top : top + side_h, left : left + side_w] = 128
        return out
    image = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
    if shift.name == "blur":
        image = image.filter(ImageFilter.GaussianBlur(radius=value))
    elif shift.name == "rotation":
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
        fill = tuple(int(v) for v in border.mean(axis=0).round())
        image = image.rotate(value, resample=Image.Resampling.BILINEAR, fillcolor=fill)
    elif shift.name == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=round(value))
        image = Image.open(io.BytesIO(buffer.getvalue()))
    elif shift.name == "resize":
        height, width = pixels.shape[:2]
        target = (max(1, round(width * value)), max(1, round(height * value)))
        image = image.resize(target, Image.Resampling.LANCZOS)
        return np.asarray(image, dtype=np.uint8).reshape(target[1], target[0], pixels.shape[2])
    out = np.asarray(image, dtype=np.uint8)
    return out.reshape(pixels.shape)


def apply_shifts(
    pixels: NDArray[np.uint8], shifts: Sequence[Shift], rng: np.random.Generator
) -> NDArray[np.uint8]:
    """Apply shifts in order to one ``(H, W, C)`` uint8 image.

    Args:
        pixels: The image.
        shifts: From :func:`parse_shifts`.
        rng: Random generator (noise, occlusion placement).

    Returns:
        A new ``(H, W, C)`` uint8 image (of another size after a ``resize`` shift).
    """
    out = np.asarray(pixels, dtype=np.uint8)
    if out.ndim == 2:
        out = out[..., None]
    for shift in shifts:
        out = _apply(out, shift, rng)
    return out


def shifted_file(
    pixels: NDArray[np.uint8], shifts: Sequence[Shift], rng: np.random.Generator
) -> tuple[bytes, str]:
    """The file a camera with these shifts would send: the shifted image, encoded.

    PNG (lossless, so only the asked-for shifts change the image) unless a ``jpeg`` shift
    asks for JPEG. A ``jpeg`` shift given last is the encoder itself: the file holds the
    bytes it produced at that quality (its quantisation tables and block edges, as a camera
    set to that quality writes them); an earlier one is re-encoded at quality 95 after the
    shifts that follow it.

    Args:
        pixels: The ``(H, W, C)`` uint8 image.
        shifts: From :func:`parse_shifts`.
        rng: Random generator (noise, occlusion placement).

    Returns:
        ``(file bytes, suffix)``: ``.png`` or ``.jpg``.
    """
    encoder = shifts[-1] if shifts and shifts[-1].name == "jpeg" else None
    shifted = apply_shifts(pixels, shifts[:-1] if encoder else shifts, rng)
    image = Image.fromarray(shifted.squeeze(-1) if shifted.shape[-1] == 1 else shifted)
    buffer = io.BytesIO()
    if encoder is not None:
        image.save(buffer, format="JPEG", quality=round(encoder.value))
    elif any(s.name == "jpeg" for s in shifts):
        image.save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue(), ".jpg" if any(s.name == "jpeg" for s in shifts) else ".png"


@dataclass
class SimulateResult:
    """What :func:`simulate_folder` wrote.

    Attributes:
        out_dir: The output folder.
        written: Images written.
        skipped: ``(path, reason)`` of files that could not be decoded.
    """

    out_dir: Path
    written: int
    skipped: list[tuple[Path, str]]


def simulate_folder(
    source: Path,
    shifts: Sequence[Shift],
    out_dir: Path,
    *,
    seed: int = 0,
    force: bool = False,
) -> SimulateResult:
    """Write a shifted copy of every image under ``source`` to ``out_dir``, same layout.

    Images keep their relative path (and their size, unless a ``resize`` shift asks); each is
    written as :func:`shifted_file` encodes it (PNG, or JPEG when a ``jpeg`` shift asks for it).
    The folder is built under a temporary name and appears whole, so a failure leaves no
    half-written copy.

    Args:
        source: An image file or a folder of images.
        shifts: The shifts to apply, in order.
        out_dir: The folder to write; it must not exist unless ``force``.
        seed: Seed of noise and occlusion.
        force: Replace an ``out_dir`` that exists.

    Raises:
        DriftError: No images in ``source``, ``out_dir`` inside ``source``, or ``out_dir``
            exists without ``force``.
    """
    from visionops._io import atomic_dir
    from visionops.errors import VisionOpsError
    from visionops.imaging import decode_image
    from visionops.inference.predict import find_images

    try:
        files = find_images([source])
    except VisionOpsError as exc:
        raise DriftError(str(exc)) from None
    root = source if source.is_dir() else source.parent
    if source.is_dir() and out_dir.resolve().is_relative_to(source.resolve()):
        raise DriftError(f"--out-dir {out_dir} is inside {source} — write the copies elsewhere")
    if out_dir.exists() and not force:
        raise DriftError(
            f"--out-dir {out_dir} already exists — pass --force to replace it, or name another"
            " folder"
        )
    rng = np.random.default_rng(seed)
    written = 0
    skipped: list[tuple[Path, str]] = []
    with atomic_dir(out_dir) as staging:
        for path in files:
            try:
                image = decode_image(path)
            except (VisionOpsError, OSError) as exc:
                skipped.append((path, str(exc)))
                continue
            data, suffix = shifted_file(np.asarray(image, dtype=np.uint8), shifts, rng)
            target = (staging / path.relative_to(root)).with_suffix(suffix)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            written += 1
        if not written:
            raise DriftError(f"none of the {len(files)} files in {source} could be decoded")
    return SimulateResult(out_dir, written, skipped)
