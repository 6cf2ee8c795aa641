"""Where a model's starting weights came from: a name, a file and its sha256.

``run.json`` and the bundle carry it, so a served answer can be traced back to the exact
ImageNet file (or state dict) its network started from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import visionops.models.timm_family as timm_family
import visionops.models.torchvision_family as torchvision_family

__all__ = ["WeightsSource", "file_sha256", "weights_source"]


@dataclass(frozen=True)
class WeightsSource:
    """The starting weights of a network.

    Attributes:
        name: torchvision's weights name (``MobileNet_V2_Weights.IMAGENET1K_V1``), the timm
            repository (``timm/mobilenetv2_100.ra_in1k``) or ``file`` for ``model.weights``.
        file: The file read.
        sha256: Its SHA-256.
    """

    name: str
    file: str
    sha256: str


@cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    del size, mtime_ns  # part of the cache key: a replaced file is hashed again
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of a weights file, computed once per version of the file."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def weights_source(
    name: str, *, pretrained: bool | str, weights: Path | None
) -> WeightsSource | None:
    """The weights a network built with these settings starts from (None: random init).

    The lookup is the one :func:`~visionops.models.build_backbone` makes, so it names the file
    that build reads; a pretrained file not yet in the cache gives None.

    Args:
        name: ``model.name``.
        pretrained: ``model.pretrained``.
        weights: ``model.weights`` as a path.

    Returns:
        The source, or None for a random initialisation.
    """
    if weights is not None:
        return WeightsSource("file", str(weights), file_sha256(weights))
    if not pretrained:
        return None
    if timm_family.is_timm(name):
        try:
            path, label = timm_family.pretrained_file(name)
        except Exception:  # any lookup failure already stopped the build with its message
            return None
    else:
        choice = torchvision_family.weights_choice(name, pretrained)
        path = torchvision_family.weights_file(choice)
        label = f"{type(choice).__name__}.{choice.name}"
    if not path.is_file():
        return None
    return WeightsSource(label, str(path), file_sha256(path))
