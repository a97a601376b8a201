#!/usr/bin/env python
"""BOX-SAM2 decomposed, from one trained checkpoint: predicted boxes against the GT-box upper bound, on the clip
and the whole-video protocol, the Dice-vs-box-noise curve, and the box head's own accuracy.

    python benchmarks/box_sam2.py --ckpt output/box_sam2/joint1500_seed0/checkpoints/model_final.pth \
        [--jitter 0 2 4 8 16] [--out output/box_sam2/report] [--no_video]

Rows (each the same weights, evaluated by ``trainers.evaluation.evaluate_all`` as ``--trainer_mode eval`` does):
- ``predicted``: every frame prompted with the box head's boxes (the method);
- ``gt``: the annotated frames prompted with the boxes of their ground-truth masks (what SAM2 gives when the
  boxes are right: the decomposition's upper bound; on a clip only the scored frame carries a GT box);
- ``gt + N px``: those GT boxes with Gaussian noise of N px per coordinate (seeded per sample);
- with the whole-video protocol (``*_video`` rows) a sample is a whole test video, all its annotated frames scored,
  run in windows of 16 frames (overlap 4).
Box head: over the scored frames, mean IoU of the predicted box with the GT-mask box and the centre error in
pixels (model input size), per present class; presence accuracy. Also params (all / trainable) and GMACs per
11-frame clip. Writes ``box_sam2.json`` and ``box_sam2.md`` into ``--out`` and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASET = "echo_synth_random_test"
WINDOW = dict(size=16, overlap=4)


def _video_entry(cfg) -> dict:
    size = list(cfg.data.eval_mapper.size)
    return dict(name=DATASET, tag=f"{DATASET}_video", per_video=True, window=WINDOW,
                mapper=dict(name="VideoEvalMapper", size=size, transforms=[dict(name="FanCrop")]))


@torch.no_grad()
def box_head_accuracy(model, cfg, device) -> dict:
    """Box IoU / centre error / presence accuracy of the box head on the scored frames of the clip protocol."""
    from torchvision.ops import box_iou

    from core.structures import to_device
    from data_schedule.build import build_test_loader
    from models.heads.box_head import boxes_from_masks

    loader = build_test_loader(DATASET, OmegaConf.to_container(cfg.data.eval_mapper), 4, 0)
    ious, centre, correct, total = [], [], 0, 0
    for batch in loader:
        batch = to_device(batch, device)
        out = model.box_head(batch["video"])
        gt, present = boxes_from_masks(batch["masks"])
        sel = batch["scored"].bool()
        pred_b, gt_b, pres = out["boxes"][sel], gt[sel], present[sel]  # N×K×4, N×K
        correct += int(((out["presence"][sel] > 0) == pres).sum())
        total += pres.numel()
        p, g = pred_b[pres], gt_b[pres]
        ious.append(box_iou(p, g).diagonal())
        centre.append((((p[:, :2] + p[:, 2:]) - (g[:, :2] + g[:, 2:])) / 2).norm(dim=1))
    ious, centre = torch.cat(ious), torch.cat(centre)
    return {"box_iou": float(ious.mean()), "box_iou_50": float((ious > 0.5).float().mean()),
            "centre_err_px": float(centre.mean()), "presence_acc": correct / max(total, 1), "boxes": len(ious)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="a BoxSAM2 checkpoint (its stored config builds the model)")
    ap.add_argument("--jitter", type=float, nargs="*", default=[2, 4, 8, 16], help="GT-box noise levels (px)")
    ap.add_argument("--out", default=None, help="default: <run>/box_sam2")
    ap.add_argument("--no_video", action="store_true", help="skip the whole-video protocol rows")
    args = ap.parse_args(argv)

    import data_schedule  # noqa: F401
    import evaluators  # noqa: F401
    import models  # noqa: F401
    from core.checkpoint import load_checkpoint
    from core.config import config_from_container
    from core.logger import setup_logger
    from main import set_roots
    from models.complexity import count_flops, count_params
    from trainers.evaluation import evaluate_all
    from trainers.train_loop import default_device, load_model

    ckpt_path = Path(args.ckpt)
    out = Path(args.out) if args.out else ckpt_path.parent.parent / "box_sam2"
    out.mkdir(parents=True, exist_ok=True)
    setup_logger(out, 0)
    ckpt = load_checkpoint(ckpt_path)
    cfg = config_from_container(ckpt["config"], f"checkpoint {ckpt_path}",
                                ["log.wandb.enabled=false", "log.tensorboard=false", "data.evaluator.num_vis=0"])
    set_roots(cfg)
    device = default_device()
    model = load_model(cfg, device, ckpt, ckpt_path)  # as --trainer_mode eval loads it (adapters-only too)
    model.eval()
    video_cfg = cfg.copy()
    video_cfg.data.evaluate = [_video_entry(cfg)]
    clip_cfg = cfg.copy()
    clip_cfg.data.evaluate = [DATASET]

    variants = [("predicted", "predicted", 0.0), ("gt", "gt", 0.0)]
    variants += [(f"gt + {j:g} px", "gt", float(j)) for j in args.jitter if j > 0]
    rows = {}
    for label, boxes, jitter in variants:
        model.boxes, model.box_jitter_px = boxes, jitter
        protocols = [("clip", clip_cfg)] + ([] if args.no_video or jitter else [("video", video_cfg)])
        for proto, pcfg in protocols:
            t = time.perf_counter()
            res = evaluate_all(model, pcfg, out / "eval" / f"{label.replace(' ', '')}_{proto}", device)
            r = next(iter(res.values()))
            rows[f"{label} ({proto})"] = {"mDice": r["mDice"], "mIoU": r["mIoU"],
                                          "scored_frames": r.get("num_scored_frames", r.get("num_samples")),
                                          "eval_s": round(time.perf_counter() - t, 1)}
            print(f"{label:>14} {proto:5}  mDice {r['mDice']:.4f}  mIoU {r['mIoU']:.4f}", flush=True)
    model.boxes, model.box_jitter_px = "predicted", 0.0
    heads = box_head_accuracy(model, cfg, device)
    size = tuple(cfg.data.eval_mapper.size)
    complexity = {**count_params(model), "gmacs_per_clip": count_flops(model, 11, size, device),
                  "iteration": ckpt.get("iteration")}
    report = {"checkpoint": str(ckpt_path), "rows": rows, "box_head": heads, "complexity": complexity}
    (out / "box_sam2.json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"BOX-SAM2 `{ckpt_path}` (iteration {complexity['iteration']}), {DATASET}", "",
             "| prompts (protocol) | mDice | mIoU | scored frames |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['mDice']:.4f} | {v['mIoU']:.4f} | {v['scored_frames']} |" for k, v in rows.items()]
    lines += ["", f"Box head on the scored frames: box IoU {heads['box_iou']:.3f} (IoU > 0.5: "
                  f"{heads['box_iou_50']:.1%}), centre error {heads['centre_err_px']:.1f} px at {size[0]}², presence "
                  f"accuracy {heads['presence_acc']:.1%} ({heads['boxes']} boxes).",
              f"Params {complexity['params'] / 1e6:.2f} M ({complexity['trainable_params'] / 1e6:.2f} M trainable), "
              f"{complexity['gmacs_per_clip'] or float('nan'):.2f} GMACs per 11-frame clip."]
    (out / "box_sam2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
