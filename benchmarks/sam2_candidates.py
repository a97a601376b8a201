#!/usr/bin/env python
"""How much a mask-choice rule (SAMURAI's motion term, or any other) could gain: SAM2's three candidate masks on
every tracked frame against the one it chooses, on densely labelled whole videos.

    python benchmarks/sam2_candidates.py --ckpt output/sam2_tiny_site_mixed/checkpoints/model_final.pth \
        [--root datasets/echo_synth_dense]

Per tracked object-frame (GT-mask prompt on the first annotated frame, as benchmarks/samurai_vs_sam2.py, whose
``dense`` data this reads): the Dice of the chosen candidate (highest predicted IoU), of the best candidate by
Dice with the ground truth (an oracle choice: the ceiling of every re-scoring rule), the share of object-frames
where the oracle's candidate differs from SAM2's, and the gap between the top two predicted IoUs. Dice at the
model's input size (128²), not at native resolution, so it differs slightly from the evaluator's.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SETS = ["echo_synth_site_val", "echo_synth_site_test"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--root", default=str(REPO / "datasets" / "echo_synth_dense"))
    args = ap.parse_args(argv)
    import data_schedule  # noqa: F401
    import evaluators  # noqa: F401
    from benchmarks.samurai_vs_sam2 import _load
    from core.catalog import DatasetCatalog, DatasetRoots
    from data_schedule.build import build_test_loader
    from models.sam2.video import normalize
    from trainers.evaluation import per_video_metas

    model, cfg, _ = _load(Path(args.ckpt), torch.device("cpu"))
    model.sam2.motion, model.sam2.model.memory_selector = None, None
    DatasetRoots.set("echo_synth", args.root)
    chosen, oracle, differs, gaps = [], [], 0, []
    for name in SETS:
        metas = per_video_metas(DatasetCatalog.get(name))
        mapper = dict(name="VideoEvalMapper", size=list(cfg.data.train_mapper.size), transforms=[dict(name="FanCrop")])
        for batch in build_test_loader(name, mapper, 1, 0, metas=metas):
            masks, has_ann = batch["masks"][0], batch["has_ann"][0]
            p = model._prompt_frame(has_ann, batch["frame_idx"][0], batch["meta"][0])
            with torch.no_grad():
                _, aux = model.sam2.segment(normalize(batch["video"][0]), {"masks": masks[p][None].float()}, [p])
            for t in has_ann.nonzero().flatten().tolist():
                if t == p:
                    continue
                cand = aux["multimask_logits"][t] > 0  # K×M×H×W
                gt = masks[t][:, None]  # K×1×H×W
                inter = (cand & gt).flatten(2).sum(2).float()
                dice = 2 * inter / (cand.flatten(2).sum(2) + gt.flatten(2).sum(2)).clamp(min=1)  # K×M
                present = gt.flatten(1).any(1)
                pick = aux["ious"][t].argmax(1)
                top2 = aux["ious"][t].topk(2, dim=1).values
                for k in present.nonzero().flatten().tolist():
                    chosen.append(float(dice[k, pick[k]]))
                    oracle.append(float(dice[k].max()))
                    differs += int(dice[k].argmax() != pick[k])
                    gaps.append(float(top2[k, 0] - top2[k, 1]))
    n = len(chosen)
    g = torch.tensor(gaps)
    print(f"{n} tracked object-frames: Dice of SAM2's choice {sum(chosen) / n:.4f}, of the oracle candidate "
          f"{sum(oracle) / n:.4f}; the oracle differs on {differs / n:.1%}; top-2 predicted-IoU gap median "
          f"{g.median():.3f} (10 % below {g.quantile(0.1):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
