"""Which prepared dataset a run trains on, and the settings the run really used.

Training never prepares data its own way: every DATASET argument goes through
:func:`visionops.data.resolve.resolve_prepared`, the data stage's public function that
fetches and prepares as ``visionops data fetch`` / ``data preprocess`` would, and refuses (or
with ``--reprepare`` redoes) a prepared dataset whose pixels differ from the requested
``data.image_size``, ``channels`` or ``resize``.
"""

from __future__ import annotations

import os
from pathlib import Path

from visionops.config import Settings
from visionops.data.prepared import PreparedDataset

__all__ = ["effective_settings", "shown"]


def shown(path: Path) -> str:
    """``path`` relative to the working folder when inside it (run.json stays portable)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)
    return str(path) if relative.startswith("..") else relative


def effective_settings(settings: Settings, dataset: PreparedDataset) -> Settings:
    """``settings`` with the image settings the dataset really has.

    ``config.yaml`` records what the run used: the dataset's image size, channels and resize
    policy, never a default or a request that the dataset did not follow.
    """
    actual = {
        "image_size": dataset.image_size,
        "channels": dataset.channels,
        "resize": dataset.resize,
    }
    return settings.model_copy(update={"data": settings.data.model_copy(update=actual)})
