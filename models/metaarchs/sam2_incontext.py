"""SAM2 in-context segmentation (seed 001): labelled support slices enter SAM2's memory bank as conditioning
memories, and the query volume's slices are propagated through them, with a memory selector choosing which of the
query's own past slices fill the remaining memory slots.

    model = dict(name="SAM2InContext", num_classes=4, sam2=dict(config="cpu_tiny", image_size=128,
                 overrides={"model.num_maskmem": 7}), memory_selector=dict(name="score"))

Per class c (seed 001's single-class protocol; every class in turn at evaluation): the support slices drawn for c
(``batch["support"]``: ``images`` S×3×H×W, ``masks`` S×K×H×W, ``classes`` S, see
``data_schedule/mappers/incontext.py``) are put in front of the query slices, as frames 0..S−1 of one video, each
prompted by its ground-truth mask of c. The adapter (``models/sam2/video.py``) encodes a prompted mask into memory
at full resolution (``_encode_new_memory`` with the mask itself — seed 001's trick: GT masks, not predictions, and
not the 1/4-resolution logits of the package's ``add_new_mask``); every support slice is a conditioning frame, so
SAM2 attends to all of them (``max_cond_frames_in_attn`` = −1) on every query slice. The query slices are then
tracked in order from the first, each attending to the support memories, up to ``num_maskmem − 1`` memories of
its own past slices (chosen by the memory selector: ``recent`` = SAM2's rule, ``score``, ``similarity``,
``oracle``; ``models/sam2/memory.py``) and the object pointers. The selector's history ends at the support, so it
only ever chooses among query slices.

Training (``forward``): each sample's support is drawn for one class (``InContextTrainMapper``); SAM2's loss
(``models/sam2/loss.py``) on every query slice of that class, with SAM2's own memory rule (selectors are inference
rules, so one trained model is evaluated with every selector). ``predict``: ``probs`` B×T×K×H×W over the query
slices — per class the sigmoid of SAM2's logits, zeroed where its object score is < 0; classes are predicted
independently (they may overlap, e.g. KiTS23's regions). A class without support slices in the batch gets
probability 0. ``oracle`` is given the query's ground truth (``batch["masks"]``) before each pass: an upper
bound, not a method.
"""
from __future__ import annotations

import torch

from core.errors import ConfigError
from core.registry import MODELS
from models.metaarchs.sam2_tracker import SAM2Family
from models.sam2 import memory  # noqa: F401  (registers the memory selectors)
from models.sam2.video import normalize


@MODELS.register()
class SAM2InContext(SAM2Family):
    """SAM2 in-context segmentation with a memory selector (see the module docstring)."""

    requires = frozenset({"support"})

    def __init__(self, num_classes: int = 4, sam2: dict | None = None, memory_selector: dict | None = None,
                 sam2_train: str = "full", lora: dict | None = None, sam2_loss: dict | None = None,
                 frame_batch: int = 8, max_support: int | None = None):
        """memory_selector: a ``MEMORY_SELECTORS`` entry (None: SAM2's own rule, the same frames as ``recent``).
        max_support: use at most this many of the batch's support slices per class (None: all), evenly spaced:
        the support-size ablation on one data setting."""
        super().__init__()
        self.num_classes = int(num_classes)
        if max_support is not None and int(max_support) < 1:
            raise ConfigError(f"model.max_support must be >= 1 or None, got {max_support}")
        self.max_support = None if max_support is None else int(max_support)
        self._init_sam2(sam2, sam2_train, lora, sam2_loss, None, memory_selector, frame_batch)

    # ------------------------------------------------------------------------------------------------ support
    @staticmethod
    def _check_support(batch: dict) -> dict:
        sup = batch.get("support")
        if not isinstance(sup, dict) or not {"images", "masks", "classes"} <= set(sup):
            got = sorted(sup) if isinstance(sup, dict) else type(sup).__name__
            raise ConfigError(f"SAM2InContext needs batch['support'] with images, masks and classes (an in-context "
                              f"mapper: InContextTrainMapper / InContextEvalMapper), got {got}")
        return sup

    def _support_of(self, sup: dict, i: int, c: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Sample i's support slices for class c: (images S×3×H×W, masks S×1×H×W), or None."""
        idx = (sup["classes"][i] == c).nonzero()[:, 0]
        if len(idx) == 0:
            return None
        if self.max_support is not None and len(idx) > self.max_support:
            keep = torch.linspace(0, len(idx) - 1, self.max_support + 2)[1:-1].round().long().unique()
            if len(keep) < self.max_support:
                keep = torch.linspace(0, len(idx) - 1, self.max_support).round().long().unique()
            idx = idx[keep]
        return sup["images"][i][idx], sup["masks"][i][idx, c:c + 1].float()

    def _segment(self, images: torch.Tensor, masks: torch.Tensor, query: torch.Tensor, train: bool,
                 targets: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Support (S×3×H×W, S×1×H×W) + query T×3×H×W -> the adapter's (logits, aux) over all S + T frames."""
        s = images.shape[0]
        video = normalize(torch.cat([images, query]))
        selector = self.sam2.model.memory_selector
        oracle = selector is not None and hasattr(selector, "targets")
        if oracle:
            selector.targets = None if targets is None else torch.cat([masks.bool(), targets.bool()])
        try:
            return self.sam2.segment(video, {"masks": masks}, list(range(s)), train=train)
        finally:
            if oracle:
                selector.targets = None

    # ------------------------------------------------------------------------------------------------ training
    def _losses(self, batch: dict) -> dict[str, torch.Tensor]:
        sup = self._check_support(batch)
        video, masks, has_ann = batch["video"], batch["masks"], batch["has_ann"]
        b = video.shape[0]
        total: dict[str, torch.Tensor] = {}
        for i in range(b):
            for c in sup["classes"][i].unique().tolist():
                got = self._support_of(sup, i, int(c))
                images, smasks = got
                _, aux = self._segment(images, smasks, video[i], train=True)
                s = images.shape[0]
                target = torch.cat([smasks.bool(), masks[i][:, c:c + 1]])
                ann = torch.cat([torch.zeros(s, dtype=torch.bool, device=has_ann.device), has_ann[i]])
                for key, v in self.sam2_criterion(aux, target, ann).items():
                    total[key] = total.get(key, 0) + v / b
        return total or self.sam2_criterion.zeros(self.sam2.parameters(), video)

    # ------------------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, batch: dict) -> dict[str, torch.Tensor]:
        sup = self._check_support(batch)
        video = batch["video"]
        b, t, _, h, w = video.shape
        probs = video.new_zeros(b, t, self.num_classes, h, w)
        for i in range(b):
            for c in range(self.num_classes):
                got = self._support_of(sup, i, c)
                if got is None:
                    continue
                images, smasks = got
                targets = batch["masks"][i][:, c:c + 1] if "masks" in batch else None
                logits, aux = self._segment(images, smasks, video[i], train=False, targets=targets)
                s = images.shape[0]
                visible = (aux["object_score_logits"][s:, 0] > 0).float()
                probs[i, :, c] = logits[s:, 0].sigmoid() * visible[:, None, None]
        return {"probs": probs}
