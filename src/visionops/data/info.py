"""``visionops data info``: describe a prepared or raw dataset without changing it."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionops.artifacts import PreparedManifest, SourceRecord
from visionops.config import Settings, Task
from visionops.data.fetch import read_source_info
from visionops.data.layouts import SPLIT_NAMES, count_reasons, detect
from visionops.data.prepared import PreparedDataset
from visionops.errors import ArtifactError, DatasetNotFoundError, LayoutError
from visionops.tasks import get_task

__all__ = ["PreparedInfo", "RawInfo", "dataset_info"]


@dataclass(frozen=True)
class PreparedInfo:
    """A prepared dataset, described.

    Attributes:
        path: The folder.
        manifest: Its manifest.
        rejected: Rejected files counted by reason category, most common first.
    """

    path: Path
    manifest: PreparedManifest
    rejected: dict[str, int]

    kind = "prepared"

    @property
    def class_balance(self) -> dict[str, dict[str, int]]:
        """Images (or positive labels) per class, per split."""
        return self.manifest.class_counts or {}

    def to_json(self) -> dict[str, Any]:
        """What ``visionops data info --json`` prints."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "manifest": self.manifest.to_json(),
            "class_balance": self.class_balance,
            "rejected": self.rejected,
        }


@dataclass(frozen=True)
class RawInfo:
    """A raw dataset, as preprocess would read it.

    Attributes:
        path: The folder.
        layout: ``class-folders``, ``csv``, ``mvtec`` or ``nutrition5k``.
        task: The task it would be prepared for.
        tasks: Every task its layout provides.
        images: Candidate images.
        class_names: Label order (classification, multilabel, anomaly).
        target_names: Regression target names.
        splits_from_source: Whether the folder says which split each image is in.
        splits: Images per source split (``unsplit`` when the source gives none).
        class_balance: Images (or positive labels) per class, per split.
        rejected: Files that would be skipped, counted by reason category.
        source: Its ``source.json``, when it was fetched.
        notes: How the layout was read.
        prepared: The prepared dataset made from it, if any.
    """

    path: Path
    layout: str
    task: Task
    tasks: tuple[Task, ...]
    images: int
    class_names: list[str] | None
    target_names: list[str] | None
    splits_from_source: bool
    splits: dict[str, int]
    class_balance: dict[str, dict[str, int]]
    rejected: dict[str, int]
    source: SourceRecord | None
    notes: list[str] = field(default_factory=list)
    prepared: Path | None = None

    kind = "raw"

    def to_json(self) -> dict[str, Any]:
        """What ``visionops data info --json`` prints."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "layout": self.layout,
            "task": self.task,
            "tasks": list(self.tasks),
            "images": self.images,
            "class_names": self.class_names,
            "target_names": self.target_names,
            "splits_from_source": self.splits_from_source,
            "splits": self.splits,
            "class_balance": self.class_balance,
            "rejected": self.rejected,
            "source": self.source.to_json() if self.source is not None else None,
            "notes": self.notes,
            "prepared": str(self.prepared) if self.prepared is not None else None,
        }


def _prepared_info(path: Path) -> PreparedInfo:
    dataset = PreparedDataset.open(path)
    return PreparedInfo(
        path=path,
        manifest=dataset.manifest,
        rejected=dict(count_reasons(dataset.read_rejected()).most_common()),
    )


def _raw_info(path: Path, settings: Settings) -> RawInfo:
    try:
        listing = detect(path, task=settings.data.task, camera=settings.data.camera)
    except LayoutError as exc:
        raise DatasetNotFoundError(
            f"{path} is neither a prepared dataset nor a raw one visionops can read ({exc}) —"
            " `visionops data fetch` makes raw datasets, `visionops data preprocess` prepared ones"
        ) from None
    names = listing.class_names or []
    balance: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    split_counts: Counter[str] = Counter()
    for item in listing.items:
        split = (
            SPLIT_NAMES[item.split]
            if listing.splits_from_source and item.split is not None
            else "unsplit"
        )
        split_counts[split] += 1
        if isinstance(item.target, int):
            balance[split][names[item.target]] += 1
        elif get_task(listing.task).target_kind == "multi_hot":
            for label, flag in zip(names, item.target, strict=True):
                balance[split][label] += flag
    prepared = settings.data.prepared_root / path.resolve().name
    return RawInfo(
        path=path,
        layout=listing.layout,
        task=listing.task,
        tasks=listing.tasks,
        images=len(listing.items),
        class_names=listing.class_names,
        target_names=listing.target_names,
        splits_from_source=listing.splits_from_source,
        splits=dict(split_counts),
        class_balance={s: {k: int(v) for k, v in b.items()} for s, b in balance.items()},
        rejected=dict(count_reasons(listing.rejected).most_common()),
        source=read_source_info(path),
        notes=listing.notes,
        prepared=prepared if PreparedManifest.exists(prepared) else None,
    )


def dataset_info(path: Path, settings: Settings) -> PreparedInfo | RawInfo:
    """Describe a prepared or raw dataset folder (what ``visionops data info`` prints).

    Args:
        path: A prepared dataset, a raw dataset folder, or a bare name under
            ``data.prepared_root`` / ``data.raw_root``.
        settings: Resolved settings (roots, task and camera for raw folders).

    Returns:
        The description; ``to_json()`` gives the ``--json`` form.

    Raises:
        DatasetNotFoundError: Nothing there, or a folder that is neither kind.
        ArtifactError: A prepared dataset that is corrupt.
    """
    if not path.exists() and len(path.parts) == 1:
        for root in (settings.data.prepared_root, settings.data.raw_root):
            if (root / path).exists():
                path = root / path
                break
    if not path.exists():
        raise DatasetNotFoundError(
            f"no dataset at {path} — make a raw one with `visionops data fetch SOURCE` and a"
            " prepared one with `visionops data preprocess data/raw/<name>`"
        )
    if (path / PreparedManifest.FILENAME).is_file():
        if not PreparedManifest.exists(path):
            try:
                PreparedManifest.read(path)
            except ArtifactError as exc:
                raise DatasetNotFoundError(
                    f"{path} is not a prepared dataset ({exc}) — pass data/prepared/<name>"
                    " (`visionops data preprocess` makes one) or data/raw/<name>"
                ) from None
        return _prepared_info(path)
    return _raw_info(path, settings)
