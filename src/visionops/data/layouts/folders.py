"""Class folders: ``<class>/<image>``.

Optionally under split folders (``train``, ``val``/``valid``/``validation``, ``test``, any
case), optionally one wrapper folder deeper.
"""

from __future__ import annotations

from visionops.config import Task
from visionops.data.layouts._base import (
    SPLIT_ALIASES,
    FolderScan,
    LayoutReader,
    RawItem,
    RawListing,
    ReadOptions,
    Rejection,
    children,
    is_image,
    not_an_image,
    relative,
    under,
)

__all__ = ["ClassFoldersReader"]


class ClassFoldersReader(LayoutReader):
    """One folder per class; a ``good`` folder also makes it an anomaly dataset."""

    layout = "class-folders"

    def read(self, scan: FolderScan, options: ReadOptions) -> RawListing | None:
        """List ``<class>/<image>`` files; None when no image sits in a class folder."""
        files, prefix = scan.files, scan.prefix
        dirs, _ = children(files, prefix)
        split_dirs = {d: SPLIT_ALIASES[d.lower()] for d in dirs if d.lower() in SPLIT_ALIASES}
        rejected: list[Rejection] = []
        found: list[tuple[str, str, int | None]] = []  # (path, class name, split)
        for path in files:
            parts = relative(prefix, path).split("/") if under(prefix, path) else [path]
            if split_dirs and parts[0] in split_dirs:
                if len(parts) < 3:
                    rejected.append(
                        Rejection(path, f"outside a class folder: put it in {parts[0]}/<class>/")
                    )
                elif is_image(path):
                    found.append((path, parts[1], split_dirs[parts[0]]))
                else:
                    rejected.append(not_an_image(path))
            elif not is_image(path):
                rejected.append(not_an_image(path))
            elif split_dirs:
                rejected.append(Rejection(path, "outside a split folder: not under train/val/test"))
            elif len(parts) >= 2:
                found.append((path, parts[0], None))
            else:
                rejected.append(Rejection(path, "outside a class folder: put it in <class>/"))
        if not found:
            return None

        class_names = sorted({name for _, name, _ in found})
        index = {name: i for i, name in enumerate(class_names)}
        sources = {split for _, _, split in found}
        items = [
            RawItem(path=path, target=index[name], split=split, stratum=name)
            for path, name, split in sorted(found)
        ]
        has_good = any(name.lower() == "good" for name in class_names)
        tasks: tuple[Task, ...] = ("classification", "anomaly") if has_good else ("classification",)
        where = (
            f"split folders {', '.join(sorted(split_dirs))}" if split_dirs else "no split folders"
        )
        return RawListing(
            root=scan.root,
            layout=self.layout,
            task="classification",
            tasks=tasks,
            items=items,
            rejected=rejected,
            class_names=class_names,
            splits_from_source=bool(split_dirs) and sources != {0},
            notes=[f"class folders: {len(class_names)} classes, {where}"],
        )

    def retask(self, listing: RawListing, task: Task) -> RawListing:
        """Re-label as good (0) versus defect (1) for ``task="anomaly"``."""
        if task != "anomaly":  # pragma: no cover - detect() only asks for listed tasks
            return super().retask(listing, task)
        listing.items = [
            RawItem(
                path=item.path,
                target=0 if item.stratum.lower() == "good" else 1,
                split=item.split,
                stratum=item.stratum,
            )
            for item in listing.items
        ]
        listing.class_names = ["good", "defect"]
        listing.task = "anomaly"
        return listing
