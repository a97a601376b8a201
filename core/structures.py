"""The one declared structure of a sample and of a batch, and the two functions that move them: ``collate`` (samples
-> batch) and ``to_device``. Every mapper produces a ``Sample``, every model and evaluator reads a ``Batch``.

Time-major everywhere (T = clip or video length, K = foreground classes, label value k + 1 = class k):

    field       Sample (one clip)        Batch (B clips)              meaning
    video       float32 T×C×H×W [0, 1]   B×T×C×H×W                    frames at the model's size (C = 3: grey repeated)
    masks       bool    T×K×H×W          B×T×K×H×W                    per-class masks, all False where not annotated
    has_ann     bool    T                B×T                          which frames carry an annotation (an annotated
                                                                      frame may be empty)
    scored      bool    T                B×T                          which frames count in evaluation (⊆ has_ann)
    frame_idx   long    T                B×T                          frame numbers in the source video
    meta        dict                     list of B dicts              video_id, sample_id, frame_idx (reference frame),
                                                                      num_frames, site, ...
  optional
    gt_full     int64   S×H0×W0          list of B tensors            labels of the S scored frames (in clip order) at
                                                                      the data's native resolution (metrics use it)
    spacing     float32 2                B×2                          (dy, dx) of a native pixel in mm
    support     dict                     dict of stacked tensors      in-context examples (images/masks of other cases)
    prompts     dict                     dict of stacked tensors      boxes / points / masks per frame
    unlabeled   dict                     dict                         views for semi-supervised losses (LGSD:
                                                                      ``global`` B×V×T×C×H×W, ``local`` B×V'×T×C×h×w)

``collate`` stacks *every* tensor field whose shapes agree over the batch (recursing into dicts of tensors), and
keeps any other field as a list (e.g. ``gt_full`` of videos with different native sizes, ``meta``); it never drops
a field.
"""
from __future__ import annotations

from typing import Any, TypedDict

import torch


class Sample(TypedDict, total=False):
    video: torch.Tensor      # T×C×H×W float32
    masks: torch.Tensor      # T×K×H×W bool
    has_ann: torch.Tensor    # T bool
    scored: torch.Tensor     # T bool
    frame_idx: torch.Tensor  # T long
    meta: dict
    gt_full: torch.Tensor    # S×H0×W0 int64
    spacing: torch.Tensor    # 2 float32 (dy, dx) mm
    support: dict
    prompts: dict


class Batch(TypedDict, total=False):
    video: torch.Tensor      # B×T×C×H×W
    masks: torch.Tensor      # B×T×K×H×W
    has_ann: torch.Tensor    # B×T
    scored: torch.Tensor     # B×T
    frame_idx: torch.Tensor  # B×T
    meta: list[dict]
    gt_full: list[torch.Tensor] | torch.Tensor
    spacing: torch.Tensor    # B×2
    support: dict
    prompts: dict
    unlabeled: dict


def _tensor_tree(x: Any) -> bool:
    """A tensor, or a dict whose values are all tensor trees (LGSD's views, prompts): what collate recurses into.
    A dict holding anything else (``meta``: ids, names, numbers) stays one item of a list."""
    return torch.is_tensor(x) or (isinstance(x, dict) and bool(x) and all(_tensor_tree(v) for v in x.values()))


def _stack(vals: list[Any]) -> Any:
    first = vals[0]
    if isinstance(first, dict) and all(isinstance(v, dict) and v.keys() == first.keys() and _tensor_tree(v)
                                       for v in vals):
        return {k: _stack([v[k] for v in vals]) for k in first}
    if all(torch.is_tensor(v) for v in vals) and all(v.shape == first.shape and v.dtype == first.dtype
                                                        for v in vals):
        return torch.stack(vals)
    return list(vals)


def collate(samples: list[dict]) -> dict[str, Any]:
    """A batch from samples: tensors of equal shape and dtype are stacked (a new leading B axis), dicts of them
    per key; anything else (``meta``, tensors whose shapes differ) becomes a list of B items. Every sample must
    have the same keys (a mapper that emits a field sometimes only is a bug worth a clear error)."""
    if not samples:
        raise ValueError("collate needs at least one sample")
    keys = list(samples[0])
    for i, s in enumerate(samples[1:], 1):
        if list(s) != keys:
            raise ValueError(f"collate: sample {i} has fields {sorted(s)}, sample 0 has {sorted(keys)}")
    return {k: _stack([s[k] for s in samples]) for k in keys}


def to_device(obj: Any, device: torch.device | str, non_blocking: bool = True) -> Any:
    """Tensors anywhere inside ``obj`` (dicts, lists, tuples) moved to ``device``; everything else unchanged."""
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, dict):
        return {k: to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device, non_blocking) for v in obj)
    return obj
