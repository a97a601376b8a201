#!/usr/bin/env python
"""The ceiling of each mask tokeniser (AR-SEG, issue 17): the Dice of the ground truth encoded and decoded, i.e. what
a perfect autoregressive predictor would score, and the tokens per mask.

    python benchmarks/tokenizer_ceiling.py [--dataset echo_synth_random_test] [--size 128] [--grids 16 32 64]

Every annotated frame of ``--dataset`` (fan-cropped as the echo configs do, labels nearest-resized to
``--size``²) is encoded by each tokeniser of ``models/arseg/tokenizers.py`` (grid, rle) with each resampling
(nearest, majority), decoded back to ``--size``², and scored against the resized labels: mean Dice over frames and
classes, per class, and the mean / max sequence length (BOS and EOS included). REFERENCE §5.6 computes 0.853 /
0.944 / 0.966 for 16² / 32² / 64² grids on one A4C layout.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="echo_synth_random_test")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--grids", type=int, nargs="*", default=[16, 32, 64])
    ap.add_argument("--num_classes", type=int, default=4)
    args = ap.parse_args(argv)

    import torch
    from torchvision.transforms import v2

    import data_schedule  # noqa: F401
    import models  # noqa: F401
    from core.catalog import DatasetCatalog, MetadataCatalog
    from core.registry import MASK_TOKENIZERS, build
    from data_schedule.mappers.clip_mapper import _read_clip
    from data_schedule.transforms import build_transforms

    crop = build_transforms([dict(name="FanCrop")]) if "echo" in args.dataset else None
    labels = []
    for m in DatasetCatalog.get(args.dataset):  # one meta per annotated frame
        _, lab, has, _ = _read_clip(m, [int(m["frame_idx"])], crop)
        if has[0]:
            labels.append(v2.functional.resize(lab[:, None], [args.size, args.size],
                                               interpolation=v2.InterpolationMode.NEAREST)[0, 0])
    classes = list(getattr(MetadataCatalog.get(args.dataset), "classes", range(1, args.num_classes + 1)))
    print(f"{args.dataset}: {len(labels)} annotated frames at {args.size}²")
    print("| tokeniser | grid | resample | ceiling mDice | " + " | ".join(map(str, classes)) +
          " | tokens / mask (mean, max) |")
    print("|---|---|---|---|" + "---|" * len(classes) + "---|")
    for g in args.grids:
        for name in ("grid", "rle"):
            for resample in ("nearest", "majority"):
                tok = build(MASK_TOKENIZERS, dict(name=name, grid=g, num_classes=args.num_classes, resample=resample))
                dice = torch.zeros(args.num_classes)
                lengths = []
                for lab in labels:
                    seq = tok.encode(lab)
                    lengths.append(len(seq))
                    back = tok.decode(seq, lab.shape)
                    for k in range(args.num_classes):
                        a, b = lab == k + 1, back == k + 1
                        dice[k] += 2 * (a & b).sum() / max(int(a.sum() + b.sum()), 1)
                dice /= len(labels)
                print(f"| {name} | {g} | {resample} | {dice.mean():.3f} | " +
                      " | ".join(f"{d:.3f}" for d in dice.tolist()) +
                      f" | {sum(lengths) / len(lengths):.0f}, {max(lengths)} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
