#!/usr/bin/env python
"""SAM2 against SAMURAI with the same weights and the same first-frame prompts, on whole EchoSynth v2 videos.

    python benchmarks/samurai_vs_sam2.py --ckpt output/sam2_tiny_site/checkpoints/model_final.pth \
        [--out output/samurai_vs_sam2] [--dropout 0 4 8] [--no_dense]

Every row evaluates one checkpoint (a SAM2 or SAMURAI run; they share the state dict) with
``trainers.evaluation.evaluate_all``, the protocol of ``--trainer_mode eval``: each chamber prompted by its GT mask
on the video's first annotated frame, tracked forwards and backwards through the whole video, every other annotated
frame scored (the prompted one is not). Rows: ``SAM2``; ``SAMURAI`` (alpha 0.15, the code's default) and alpha
0.25 (its t/s/b+ configs); ``motion only`` (Kalman mask choice, SAM2's memory) and ``memory only`` (SAMURAI's
memory selection, SAM2's mask choice), to separate the two parts.

Data: ``sparse`` = the held-out sites of the cross-site split (``echo_synth_site_val`` + ``_test``: Site_G_20,
Site_R_52, Site_G_29; 5-7 annotated frames per video, as CardiacUDC), and ``dense`` = a fresh EchoSynth v2 draw
(seed 1, 4 videos per site, 48 frames, every frame annotated; written once under ``datasets/echo_synth_dense``)
on the same held-out sites, where the tracking metrics (lost rate, area consistency and jitter) see every frame.
Recovery: on the dense videos, ``--dropout N`` blanks the N frames after the prompt (a full echo dropout: the
probe loses contact) and scores only the frames after the gap, so the row says how well each tracker
re-acquires the chambers.

``--baseline CKPT`` adds a ``per-frame`` row: a model without prompts (the U-Net of ``unet_tiny_site.py``) on the
same frames (the trackers' prompt frame left out), in windows of 16 frames: the reference a tracker must beat.

Writes ``samurai_vs_sam2.json`` / ``.md`` into ``--out`` and prints the table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _runs import load_run  # noqa: E402

DENSE = dict(seed=1, videos_per_site=4, frames=(48, 48), annotated_frames=(48, 48), annotation_margin=0)
SPARSE_SETS = ["echo_synth_site_val", "echo_synth_site_test"]
ROWS = {  # label -> (motion settings or None, memory selector or None)
    "SAM2": (None, None),
    "SAMURAI": ({"kf_score_weight": 0.15}, {"name": "samurai"}),
    "SAMURAI alpha 0.25": ({"kf_score_weight": 0.25}, {"name": "samurai"}),
    "SAMURAI alpha 0.5": ({"kf_score_weight": 0.5}, {"name": "samurai"}),  # sensitivity, not a published value
    "motion only": ({"kf_score_weight": 0.15}, None),
    "memory only": (None, {"name": "samurai"}),
}
METRICS = ("mDice", "Dice_LV", "Dice_LA", "Dice_RA", "Dice_RV", "mLost", "mAreaConsistency", "mAreaJitter")


class GapModel(torch.nn.Module):
    """Wraps a tracker: the ``gap`` frames after its prompt frame are blanked, and only frames after them scored."""

    def __init__(self, model, gap: int):
        super().__init__()
        self.model, self.gap = model, gap

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)

    @torch.no_grad()
    def predict(self, batch: dict) -> dict:
        b = dict(batch)
        video = batch["video"].clone()
        after = torch.zeros_like(batch["has_ann"], dtype=torch.bool)
        for i in range(video.shape[0]):
            p = self.model._prompt_frame(batch["has_ann"][i].bool(), batch["frame_idx"][i], batch["meta"][i])
            if p is None:
                continue
            video[i, p + 1:p + 1 + self.gap] = 0.0
            after[i, p + 1 + self.gap:] = True
        b["video"] = video
        out = self.model.predict(b)
        out["scored"] = out["scored"].bool() & after
        return out


class SameFrames(torch.nn.Module):
    """A per-frame model (no prompt) scored on the trackers' frames: the first annotated frame of every video (the
    trackers' prompt) is left out; the model runs in windows of 16 frames (overlap 4)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def predict(self, batch: dict) -> dict:
        from trainers.video_inference import predict_in_windows

        out = predict_in_windows(self.model, batch, 16, 4)
        scored = batch["scored"].bool().clone()
        for i in range(scored.shape[0]):
            ann = batch["has_ann"][i].nonzero().flatten()
            if len(ann):
                scored[i, int(ann[0])] = False
        return {"probs": out["probs"], "scored": scored}


def _entries(names: list[str], size: list[int]) -> list[dict]:
    mapper = dict(name="VideoEvalMapper", size=size, transforms=[dict(name="FanCrop")])
    ev = [dict(name="VideoSegEvaluator", num_vis=0), dict(name="TrackingEvaluator")]
    return [dict(name=n, tag=n, per_video=True, mapper=mapper, evaluator=ev) for n in names]


def _pool(results: dict[str, dict]) -> dict:
    """Frame-weighted mean over the evaluated sets of each metric (sets differ in size)."""
    out = {}
    for key in METRICS:
        vals = [(r[key], r.get("num_scored_frames", 1)) for r in results.values() if r.get(key) is not None]
        vals = [(v, n) for v, n in vals if v == v]
        out[key] = sum(v * n for v, n in vals) / sum(n for _, n in vals) if vals else None
    out["scored_frames"] = sum(r.get("num_scored_frames", 0) for r in results.values())
    out["videos"] = sum(r.get("num_videos", 0) for r in results.values())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="a SAM2 or SAMURAI checkpoint (its stored config builds it)")
    ap.add_argument("--out", default="output/samurai_vs_sam2")
    ap.add_argument("--dropout", type=int, nargs="*", default=[0, 4, 8], help="blanked frames after the prompt")
    ap.add_argument("--dense_root", default=str(REPO / "datasets" / "echo_synth_dense"))
    ap.add_argument("--sparse_root", default=str(REPO / "datasets" / "echo_synth"),
                    help="the standard EchoSynth v2 (seed 0) folder, for the sparse rows")
    ap.add_argument("--no_dense", action="store_true")
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS), help="trackers to evaluate")
    ap.add_argument("--baseline", default=None, help="checkpoint of a per-frame model (e.g. the U-Net of "
                    "unet_tiny_site.py), scored on the same frames without a prompt (a row 'per-frame')")
    args = ap.parse_args(argv)

    import data_schedule  # noqa: F401
    import evaluators  # noqa: F401
    import models  # noqa: F401
    from core.catalog import DatasetCatalog, DatasetRoots
    from core.logger import setup_logger
    from core.registry import MEMORY_SELECTORS, build
    from data_schedule.synthetic.echo_synth import generate_echo_synth
    from trainers.evaluation import evaluate_all
    from trainers.train_loop import default_device

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup_logger(out, 0)
    ckpt_path = Path(args.ckpt)
    device = default_device()
    baseline = load_run(Path(args.baseline), device)[0] if args.baseline else None
    model, cfg, ckpt = load_run(ckpt_path, device)
    size = list(cfg.data.train_mapper.size)
    protocols = [("sparse", SPARSE_SETS, Path(args.sparse_root), 0)]
    if not args.no_dense:
        dense = Path(args.dense_root)
        if not (dense / "cardiacUDC_dataset").is_dir():
            generate_echo_synth(dense, preset="v2", **DENSE)
        protocols += [(f"dense, gap {g}" if g else "dense", SPARSE_SETS, dense, g) for g in args.dropout]

    rows: dict[str, dict] = {}
    for proto, names, root, gap in protocols:
        DatasetRoots.set("echo_synth", str(root))  # whatever root the checkpoint was trained on
        DatasetCatalog.clear_cache()
        pcfg = cfg.copy()
        pcfg.data.evaluate = _entries(names, size)
        for label in (["per-frame"] if baseline is not None and not gap else []) + args.rows:
            if label == "per-frame":
                runner = SameFrames(baseline)
            else:
                motion, selector = ROWS[label]
                model.sam2.motion = dict(motion) if motion else None
                model.sam2.model.memory_selector = build(MEMORY_SELECTORS, selector) if selector else None
                runner = GapModel(model, gap) if gap else model
            t = time.perf_counter()
            res = evaluate_all(runner, pcfg, out / "eval" / f"{proto}_{label}".replace(" ", "_").replace(",", ""),
                               device)
            row = {**_pool(res), "eval_s": round(time.perf_counter() - t, 1)}
            if label != "per-frame":  # how often each rule changed anything
                mc, sel = model.sam2.motion_counts, model.sam2.model.memory_selector
                row["motion_changed"] = mc["changed"] / mc["stable"] if motion and mc["stable"] else None
                row["motion_stable_share"] = mc["stable"] / mc["frames"] if motion and mc["frames"] else None
                sc = getattr(sel, "counts", None)
                row["memory_differs"] = sc["differs"] / sc["choices"] if sc and sc["choices"] else None
                row["memory_rejected"] = sc["rejected"] / sc["examined"] if sc and sc["examined"] else None
                model.sam2.motion_counts = {"frames": 0, "stable": 0, "changed": 0}
            rows[f"{label} ({proto})"] = row
            print(f"{proto:14} {label:20} " + "  ".join(f"{k} {row[k]:.4f}" for k in METRICS if row[k] is not None),
                  flush=True)
    report = {"checkpoint": str(ckpt_path), "iteration": ckpt.get("iteration"), "rows": rows,
              "dense": DENSE, "sparse_sets": SPARSE_SETS}
    (out / "samurai_vs_sam2.json").write_text(json.dumps(report, indent=1) + "\n")
    head = ("| tracker (videos) | mDice | LV | LA | RA | RV | lost | area consistency | area jitter | frames | "
            "motion changed choice | memory differs | eval s |")
    lines = [f"SAM2 vs SAMURAI, `{ckpt_path}` (iteration {ckpt.get('iteration')}), GT-mask prompt on the first "
             "annotated frame, the prompted frame not scored", "", head, "|" + "---|" * 13]

    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    for k, r in rows.items():
        lines.append(f"| {k} | {f(r['mDice'])} | {f(r['Dice_LV'])} | {f(r['Dice_LA'])} | {f(r['Dice_RA'])} | "
                     f"{f(r['Dice_RV'])} | {f(r['mLost'])} | {f(r['mAreaConsistency'])} | {f(r['mAreaJitter'])} | "
                     f"{r['scored_frames']} | {f(r.get('motion_changed'))} | {f(r.get('memory_differs'))} | "
                     f"{r['eval_s']} |")
    lines += ["", "*motion changed choice*: share of the object-frames with a stable Kalman track where the motion "
              "term picked another candidate than SAM2's predicted IoU; *memory differs*: share of memory choices "
              "that differ from SAM2's nearest frames."]
    (out / "samurai_vs_sam2.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
