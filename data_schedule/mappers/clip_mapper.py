"""Mappers: a sample meta (from a register) -> a sample dict of tensors.

Output of both mappers, a ``core.structures.Sample`` (T = clip length, K = foreground classes, H×W = ``size``):
    video     float32 T×3×H×W in [0, 1] (grey repeated to 3 channels)
    masks     bool    T×K×H×W (class k = label value k + 1, or label ∈ the meta's ``class_values[k]``), all False
                      on frames without annotation
    has_ann   bool    T, which clip frames carry labels
    scored    bool    T, which frames evaluation scores: the reference frame (eval mapper), none (train mapper)
    frame_idx long    T, frame numbers in the video
    meta      dict    video_id, site, frame_idx (reference frame), num_frames, sample_id, and the register's
                      ``PASS_KEYS`` it has (spacing, phase, ed, es, ef, ...)
Frames come from ``meta["cache"]`` as uint8 T×H×W (grey, repeated to 3 channels) or T×H×W×3 (RGB).
The eval mapper adds ``gt_full`` (int64 S×H0×W0, S = 1): the scored frame's labels at native resolution (after the
mapper's ``transforms``, e.g. the fan crop), so metrics are computed at the data's own resolution, not the model's.
Augmentation parameters are drawn once per clip and applied to every frame (torchvision.transforms.v2 treats a
``tv_tensors.Video`` as one image), from a generator seeded by the sample's stream position (deterministic,
worker-count independent).
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from core.errors import ConfigError
from core.registry import MAPPERS, SAMPLERS, build
from data_schedule.transforms import build_transforms, transforms_for
from data_schedule.sources.nifti import DataError


# register facts the evaluators use, copied into the sample's meta when the register provides them: ``spacing``
# (dy, dx) mm of a native pixel (HD95 in mm), cardiac phases and clinical values (ejection fraction), a volume's
# ``voxel_spacing`` (dz, dy, dx) mm and ``class_values`` (the raw label values of each class: 3D metrics)
PASS_KEYS = ("spacing", "phase", "ed", "es", "ef", "edv", "esv", "fps", "view", "patient", "voxel_spacing",
             "class_values")


def _read_clip(meta: dict, indices: list[int], transforms=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                         dict]:
    """(T×C×H×W uint8 frames, C = 1 grey or 3 RGB; T×H×W int64 labels; T bool has_ann; the clip's meta) at native
    resolution (after any crop), from ``meta["cache"]`` (anything with ``image()`` T×H×W[×C] and ``labels()``
    {frame: H×W}), after the mapper's ``transforms`` (``data_schedule/transforms.py``; None: the register's
    defaults). The clip's meta is a copy of ``meta`` that a transform may update (``Resize`` scales ``spacing``)."""
    cache = meta["cache"]
    raw = np.ascontiguousarray(cache.image()[indices])
    labels_by_frame = cache.labels() if meta.get("labeled", True) else {}
    labels = np.zeros((len(indices), *raw.shape[1:3]), dtype=np.int64)
    has_ann = torch.zeros(len(indices), dtype=torch.bool)
    for t, f in enumerate(indices):
        if f in labels_by_frame:
            labels[t] = np.asarray(labels_by_frame[f], dtype=np.int64)
            has_ann[t] = True
    meta = dict(meta)
    for transform in transforms_for(meta, transforms):
        raw, labels = transform(raw, labels, meta)
    if raw.dtype != np.uint8:
        raise DataError(f"{meta['video_id']}: frames are {raw.dtype}; the clip mappers take uint8 frames (add "
                        f"an IntensityWindow transform to the mapper's transforms)")
    frames = torch.from_numpy(np.ascontiguousarray(raw))
    frames = frames[:, None] if frames.dim() == 3 else frames.permute(0, 3, 1, 2)
    if frames.shape[1] not in (1, 3):
        raise DataError(f"{meta['video_id']}: frames with {frames.shape[1]} channels; expected grey or RGB")
    return frames, torch.from_numpy(np.ascontiguousarray(labels)), has_ann, meta


def annotated_frames(meta: dict) -> list[int]:
    """The video's annotated frames, sorted: the register's ``annotated_frames``, else the cached labels' frames
    (none for an unlabelled video)."""
    annotated = meta.get("annotated_frames")
    if annotated is None:
        annotated = sorted(meta["cache"].labels()) if meta.get("labeled", True) else []
    return sorted(set(int(f) for f in annotated))


def _to_sample(frames: torch.Tensor, labels: torch.Tensor, has_ann: torch.Tensor, indices: list[int],
               num_classes: int, meta: dict, scored_t: list[int] | None) -> dict:
    video = frames.float().div_(255.0).expand(-1, 3, -1, -1).contiguous()  # grey repeated to 3 channels
    values = meta.get("class_values")
    if values is not None and len(values) != num_classes:
        raise ConfigError(f"{meta['video_id']}: the dataset has {len(values)} classes (class_values {values}), the "
                          f"mapper's num_classes is {num_classes}")
    if values is not None and list(values) != [[k] for k in range(1, num_classes + 1)]:
        # class k = label in class_values[k] (KiTS23's regions overlap: one voxel may be in several classes)
        masks = torch.stack([torch.isin(labels, torch.tensor(list(v), dtype=labels.dtype)) for v in values], 1)
    else:
        masks = labels.unsqueeze(1) == torch.arange(1, num_classes + 1).view(1, -1, 1, 1)  # T×K×H×W
    scored = torch.zeros(len(indices), dtype=torch.bool)
    if scored_t is not None:
        scored[scored_t] = True
    return dict(
        video=video,
        masks=masks,
        has_ann=has_ann,
        scored=scored,
        frame_idx=torch.tensor(indices, dtype=torch.long),
        meta=dict(video_id=meta["video_id"], site=meta.get("site", ""), frame_idx=meta["frame_idx"],
                  num_frames=meta["num_frames"], sample_id=meta["sample_id"],
                  **{k: meta[k] for k in PASS_KEYS if meta.get(k) is not None}),
    )


class _ClipMapper:
    def __init__(self, clip_len: int, size: list[int], num_classes: int = 4, frame_sampler: dict | None = None,
                 transforms: list[dict] | None = None):
        if clip_len < 1:
            raise ConfigError(f"mapper clip_len must be >= 1, got {clip_len}")
        self.clip_len, self.size, self.num_classes = clip_len, tuple(size), num_classes
        self.frame_sampler = build(SAMPLERS, frame_sampler or {}, key="frame_sampler", default="centered")
        # None (unset): the register's default_transforms (e.g. CardiacUDC's FanCrop); a list, even [], replaces them
        self.transforms = None if transforms is None else build_transforms(transforms)

    def _scored_sample(self, meta: dict, indices: list[int], scored: list[int]) -> dict:
        """The evaluation sample of frames ``indices`` resized to ``size``, scored at clip positions ``scored``,
        with ``gt_full`` (S×H0×W0) the labels of those positions at native resolution."""
        frames, labels, has_ann, meta = _read_clip(meta, indices, self.transforms)
        gt_full = labels[scored].clone()
        frames = v2.functional.resize(frames, list(self.size), antialias=True)
        labels = v2.functional.resize(labels[:, None], list(self.size),
                                      interpolation=v2.InterpolationMode.NEAREST)[:, 0]
        sample = _to_sample(frames, labels, has_ann, indices, self.num_classes, meta, scored)
        sample["gt_full"] = gt_full
        return sample


@MAPPERS.register()
class ClipTrainMapper(_ClipMapper):
    """Train clips with clip-consistent augmentation: random resized crop, small rotation/shift,
    brightness/contrast jitter (set any to 0/None to disable)."""

    def __init__(self, clip_len: int = 7, size: list[int] = (128, 128), num_classes: int = 4,
                 frame_sampler: dict | None = None, crop_scale: list[float] = (0.7, 1.0), rotate_deg: float = 10.0,
                 translate: float = 0.05, brightness: float = 0.2, contrast: float = 0.2,
                 transforms: list[dict] | None = None):
        super().__init__(clip_len, size, num_classes, frame_sampler, transforms)
        ops: list = [v2.RandomResizedCrop(self.size, scale=tuple(crop_scale), ratio=(0.75, 1.333), antialias=True)]
        if rotate_deg or translate:
            ops.append(v2.RandomAffine(degrees=rotate_deg, translate=(translate, translate)))
        if brightness or contrast:
            ops.append(v2.ColorJitter(brightness=brightness, contrast=contrast))
        self.augment = v2.Compose(ops)

    def __call__(self, meta: dict, seed: int) -> dict:
        rng = np.random.default_rng(seed)
        extra = {"annotated": meta.get("annotated_frames")} if getattr(self.frame_sampler, "uses_annotated", False) \
            else {}
        indices, t = self.frame_sampler(meta["frame_idx"], meta["num_frames"], self.clip_len, rng, **extra)
        frames, labels, has_ann, meta = _read_clip(meta, indices, self.transforms)
        with torch.random.fork_rng(devices=[]):  # torchvision v2 draws from the global RNG
            torch.manual_seed(seed)
            frames, labels = self.augment(tv_tensors.Video(frames), tv_tensors.Mask(labels))
        return _to_sample(frames.as_subclass(torch.Tensor), labels.as_subclass(torch.Tensor), has_ann, indices,
                          self.num_classes, meta, None)


@MAPPERS.register()
class ClipEvalMapper(_ClipMapper):
    """Deterministic clips resized to ``size``; adds ``gt_full`` for the scored (reference) frame."""

    def __init__(self, clip_len: int = 11, size: list[int] = (128, 128), num_classes: int = 4,
                 frame_sampler: dict | None = None, transforms: list[dict] | None = None):
        super().__init__(clip_len, size, num_classes, frame_sampler, transforms)

    def __call__(self, meta: dict, seed: int | None = None) -> dict:
        indices, t = self.frame_sampler(meta["frame_idx"], meta["num_frames"], self.clip_len, None)
        return self._scored_sample(meta, indices, [t])  # gt_full S×H0×W0, S = 1


@MAPPERS.register()
class VideoEvalMapper(_ClipMapper):
    """The whole video as one sample (the whole-video protocol): every frame resized to ``size``, scored on the
    meta's ``scored_frames`` (frame numbers; default: its ``frame_idx``). Evaluation metas come one per video
    with ``evaluate=[dict(name=..., per_video=True, mapper=dict(name="VideoEvalMapper", ...), window=...)]``
    (see ``trainers/evaluation.py``), and long videos go through the model in temporal windows. ``gt_full`` holds
    the scored frames' labels at native resolution, in frame order."""

    def __init__(self, size: list[int] = (128, 128), num_classes: int = 4, max_frames: int | None = None,
                 transforms: list[dict] | None = None, score: str = "samples"):
        """score: "samples" = the frames of the video's evaluation samples (``scored_frames``: CAMUS ED/ES,
        EchoNet's traced frames, CardiacUDC's annotated ones); "annotated" = every annotated frame of the video
        (CAMUS half sequences: every frame)."""
        super().__init__(1, size, num_classes, None, transforms)
        if score not in ("samples", "annotated"):
            raise ConfigError(f"VideoEvalMapper score must be 'samples' or 'annotated', got {score!r}")
        self.max_frames, self.score = max_frames, score

    def __call__(self, meta: dict, seed: int | None = None) -> dict:
        n = int(meta["num_frames"])
        if self.max_frames is not None and n > self.max_frames:
            raise DataError(f"{meta['video_id']}: {n} frames, more than the mapper's max_frames={self.max_frames}")
        scored_frames = sorted(set(meta.get("scored_frames", [meta["frame_idx"]])))
        if self.score == "annotated":
            scored_frames = annotated_frames(meta) or scored_frames
        if not all(0 <= f < n for f in scored_frames):
            raise DataError(f"{meta['video_id']}: scored frames {scored_frames} outside 0..{n - 1}")
        return self._scored_sample(meta, list(range(n)), scored_frames)  # clip positions = frame numbers
