"""Why, for classification: the class activation map a bundle carries, shared by two tasks.

Classification and multilabel bundles whose backbone ends in global average pooling and the
linear head get a ``cam`` graph output: the map of the top class, upsampled to the input and
stretched to 0..1 inside the graph (:mod:`visionops.models.cam`), so a server returns it with
``heatmap=true`` without torch. The bundle's ``cam`` record says where the map comes from, or
why there is none; a request for a map the bundle lacks is refused with that reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

import numpy as np
from numpy.typing import NDArray

from visionops.artifacts import ClassActivationRecord
from visionops.tasks._base import INPUT_KEY, PredictOptions, Task, TaskSource, meta_field
from visionops.tasks._heatmap import map_png

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["CAM_OUTPUT", "ExplainedByCam", "cam_record_of"]

CAM_OUTPUT: Final = "cam"
"""Name of the graph output holding the top class's activation map ``(B, H, W)``."""


def cam_record_of(meta: TaskSource) -> ClassActivationRecord | None:
    """The ``cam`` record of a bundle's metadata (None for other artifacts and old bundles)."""
    record = meta_field(meta, "cam")
    if record is None:
        return None
    return ClassActivationRecord.model_validate(record)


class ExplainedByCam(Task):
    """A task whose answers can carry the class activation map of their top class.

    Subclasses set ``self.cam`` from the bundle (:func:`cam_record_of`) in ``__init__`` or
    ``from_manifest``.
    """

    explains: ClassVar[bool] = True
    cam: ClassActivationRecord | None = None

    # ------------------------------------------------------------ torch-free half

    def check_options(self, options: PredictOptions, default_top_k: int = 5) -> str | None:
        """Refuses ``heatmap`` when the bundle has no map (with the reason), as well as the rest."""
        if options.heatmap:
            cam = self.cam
            if cam is None or not cam.available:
                why = (
                    cam.reason
                    if cam is not None and cam.reason
                    else "the bundle was exported before visionops put class activation maps"
                    " in bundles"
                )
                return (
                    f"'heatmap' needs the model's class activation map, and this {self.name}"
                    f" model has none: {why} — ask without heatmap=true"
                    + (
                        ", or re-export the run with `visionops export --force`"
                        if cam is None
                        else ", or train on a backbone with global pooling (resnet18, ...)"
                    )
                )
        rest = PredictOptions(
            top_k=options.top_k,
            threshold=options.threshold,
            heatmap=False,
            default_top_k=options.default_top_k,
        )
        return super().check_options(rest, default_top_k)

    def heatmap_support(self) -> dict[str, Any]:
        """A class activation map, when the bundle has one, else why not."""
        cam = self.cam
        if cam is not None and cam.available:
            size = "×".join(str(v) for v in cam.feature_size or [])
            return {
                "available": True,
                "kind": "class_activation_map",
                "detail": f"the top class's activation map from {cam.layer} ({size} cells),"
                " upsampled to the input",
            }
        reason = (
            cam.reason
            if cam is not None and cam.reason
            else "the bundle was exported without class activation maps (re-export it)"
        )
        return {"available": False, "kind": None, "detail": reason}

    def cam_answer(
        self,
        main: NDArray[np.float32],
        extra: Mapping[str, NDArray[Any]],
        options: PredictOptions,
    ) -> dict[str, Any] | None:
        """The ``heatmap`` of an answer: the top class's map as PNGs, or None when not asked."""
        if not options.heatmap or CAM_OUTPUT not in extra:
            return None
        values = np.asarray(extra[CAM_OUTPUT], np.float32)
        values = values.reshape(values.shape[-2:])
        heatmap = map_png(values, extra.get(INPUT_KEY), low=0.0, high=1.0)
        heatmap["label"] = self.labels[int(np.argmax(main))]
        return heatmap

    # ------------------------------------------------------------- training half

    def explained_model(
        self, model: nn.Module, *, channels: int, image_size: int
    ) -> tuple[nn.Module, ClassActivationRecord | None]:
        """The model with its class activation map when its backbone has one (export).

        Returns:
            ``(model to export, cam record)``: the model computes the map in the same pass
            when the record says it is available, else it is ``model`` unchanged.
        """
        from visionops.models.cam import activation_map_model

        explained, support = activation_map_model(model, channels=channels, image_size=image_size)
        record = ClassActivationRecord(
            available=support.available,
            output=CAM_OUTPUT if support.available else None,
            layer=support.layer,
            feature_size=list(support.feature_size) if support.feature_size else None,
            reason=support.reason,
        )
        return (explained if explained is not None else model), record

    def bundle_outputs(self, model: nn.Module | None) -> tuple[str, ...]:
        """``cam`` after the task's extra outputs when ``model`` computes the map."""
        from visionops.models.cam import ActivationMapModel

        maps = (CAM_OUTPUT,) if isinstance(model, ActivationMapModel) else ()
        return (*self.extra_outputs, *maps)

    def graph_outputs(self, model: nn.Module, normalised: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Post-processed outputs, the map of the top class (when the model has one), embedding."""
        from visionops.models.cam import ActivationMapModel

        if isinstance(model, ActivationMapModel):
            raw, embedding, maps = model.explain(normalised)
            return self.postprocess(raw.float()), maps, embedding
        return super().graph_outputs(model, normalised)
