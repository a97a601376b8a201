#!/usr/bin/env python
"""How much mDice can a model keep whose masks live on a coarse grid? An oracle on the real evaluation protocol.

    python benchmarks/mask_resolution_oracle.py [--dataset echo_synth_random_test] [--size 128] [--grids 32 64 128]

For every test sample the ground truth (fan-cropped, native resolution) is one-hot encoded, resized to the model
input (``--size``², bilinear, as the mapper resizes images), area-averaged to a g×g grid (what a perfect
mask-classification model with masks at stride size/g could at best represent as soft masks), upsampled back
bilinearly to the input and then to native resolution (as ``predict`` and the evaluator do), and scored with
the evaluator's per-class Dice. An upper bound for soft masks on that grid; a model with sharp logits can place
edges between grid points and do somewhat better. This is why ``lgrnet_tiny`` (128² input) uses mask stride 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import data_schedule  # noqa: E402,F401  (registers the datasets)
from core.catalog import DatasetCatalog  # noqa: E402
from evaluators.metrics import dice_iou, seg_stats  # noqa: E402


def oracle_dice(samples: list[dict], size: int, grid: int, num_classes: int = 4) -> float:
    per_class = [[] for _ in range(num_classes)]
    for s in samples:
        gt = torch.from_numpy(np.asarray(s["cache"].labels()[s["frame_idx"]], dtype=np.int64))
        h, w = gt.shape
        onehot = F.one_hot(gt, num_classes + 1).permute(2, 0, 1)[None].float()
        x = F.interpolate(onehot, size=(size, size), mode="bilinear", align_corners=False)
        x = F.interpolate(x, size=(grid, grid), mode="area")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        pred = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).argmax(1)[0]
        dice, _ = dice_iou(*seg_stats(pred, gt, num_classes))
        for k, d in enumerate(dice):
            if not np.isnan(d):  # absent from both: left out, as the evaluator does
                per_class[k].append(d)
    return float(np.mean([np.mean(c) for c in per_class]))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="echo_synth_random_test")
    ap.add_argument("--size", type=int, default=128, help="model input size (square)")
    ap.add_argument("--grids", type=int, nargs="+", default=[32, 64, 128])
    args = ap.parse_args(argv)
    samples = DatasetCatalog.get(args.dataset)
    print(f"| mask grid at {args.size}² input | stride | oracle mDice ({args.dataset}, {len(samples)} samples) |")
    print("|---|---|---|")
    for g in args.grids:
        print(f"| {g}×{g} | {args.size // g} | {oracle_dice(samples, args.size, g):.4f} |", flush=True)


if __name__ == "__main__":
    main()
