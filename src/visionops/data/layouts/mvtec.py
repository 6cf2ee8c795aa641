"""MVTec AD: ``train/good``, ``test/<defect|good>``, ``ground_truth/<defect>/<name>_mask.png``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

from visionops.data.layouts._base import (
    FolderScan,
    LayoutReader,
    RawItem,
    RawListing,
    ReadOptions,
    Rejection,
    children,
    is_image,
    join,
    not_an_image,
    relative,
    under,
)
from visionops.errors import LayoutError

__all__ = ["MvtecReader", "is_mvtec"]


def is_mvtec(files: Sequence[str], prefix: str) -> bool:
    """Whether the folder ``prefix`` holds one MVTec AD category."""
    dirs, _ = children(files, prefix)
    lower = {d.lower(): d for d in dirs}
    if "test" not in lower:
        return False
    # ground_truth/ marks the tree even when train/good is empty or missing, so preprocess
    # can say that the good training images are what is missing.
    if "ground_truth" in lower:
        return True
    if "train" not in lower:
        return False
    train_dirs, _ = children(files, join(prefix, lower["train"]))
    return {d.lower() for d in train_dirs} == {"good"}


class MvtecReader(LayoutReader):
    """One MVTec AD category: good training images, good and defect test images, masks."""

    layout = "mvtec"

    def read(self, scan: FolderScan, options: ReadOptions) -> RawListing | None:
        """List one category; None when the folder is not MVTec AD.

        Raises:
            LayoutError: The folder holds several categories (prepare them one at a time).
        """
        files, prefix = scan.files, scan.prefix
        if not is_mvtec(files, prefix):
            categories = sorted(
                d for d in children(files, prefix)[0] if is_mvtec(files, join(prefix, d))
            )
            if len(categories) > 1:
                raise LayoutError(
                    f"{scan.root} holds {len(categories)} MVTec AD categories"
                    f" ({', '.join(categories)}) — prepare one at a time, e.g."
                    f" `visionops data preprocess {scan.root / categories[0]}`"
                )
            return None
        dirs, _ = children(files, prefix)
        lower = {d.lower(): d for d in dirs}
        train_prefix = join(prefix, lower.get("train", "train"))
        test_prefix = join(prefix, lower["test"])
        truth_prefix = join(prefix, lower["ground_truth"]) if "ground_truth" in lower else None
        masks = {path.lower(): path for path in files if truth_prefix and under(truth_prefix, path)}
        items: list[RawItem] = []
        rejected: list[Rejection] = []
        missing_masks = 0
        for path in files:
            if truth_prefix and under(truth_prefix, path):
                continue
            if not is_image(path):
                rejected.append(not_an_image(path))
                continue
            parts = relative(prefix, path).split("/")
            if under(train_prefix, path):
                if len(parts) >= 3 and parts[1].lower() == "good":
                    items.append(RawItem(path=path, target=0, split=0, stratum="good"))
                else:
                    rejected.append(
                        Rejection(path, "outside train/good: MVTec training images must be good")
                    )
            elif under(test_prefix, path) and len(parts) >= 3:
                defect = parts[1]
                if defect.lower() == "good":
                    items.append(RawItem(path=path, target=0, split=2, stratum="good"))
                    continue
                mask = None
                if truth_prefix is not None:
                    stem = PurePosixPath(path).stem
                    mask = masks.get(f"{truth_prefix}/{defect}/{stem}_mask.png".lower())
                if mask is None:
                    missing_masks += 1
                items.append(RawItem(path=path, target=1, split=2, stratum=defect, mask=mask))
            else:
                rejected.append(Rejection(path, "outside train/good and test/<defect> folders"))
        defects = sorted({item.stratum for item in items if item.target == 1})
        notes = [f"MVTec AD: {len(defects)} defect types ({', '.join(defects) or 'none'})"]
        if missing_masks:
            notes.append(f"{missing_masks} defect images have no ground-truth mask (zeros stored)")
        return RawListing(
            root=scan.root,
            layout=self.layout,
            task="anomaly",
            tasks=("anomaly",),
            items=sorted(items, key=lambda item: item.path),
            rejected=rejected,
            class_names=["good", "defect"],
            splits_from_source=True,
            carve_val_from=2,
            notes=notes,
        )
