#!/usr/bin/env python
"""Memory selector × support size for SAM2 in-context segmentation, one trained checkpoint, whole test volumes.

    python benchmarks/incontext_ablation.py --ckpt output/ct_synth/sam2_incontext_tiny/checkpoints/model_final.pth \
        [--out output/incontext_ablation] [--selectors recent score similarity oracle] [--support 1 2 4 8] \
        [--baseline output/ct_synth/unet_tiny/checkpoints/model_final.pth]

Every cell evaluates the checkpoint with ``trainers.evaluation.evaluate_all`` (the protocol of
``--trainer_mode eval``) on the checkpoint's own evaluation entry (``InContextEvalMapper``: the whole query
volume, every class in turn, ``support_size`` support slices per class from the entry's support sampler), with
the support size and the memory selector of the cell: ``recent`` (SAM2's rule), ``score`` (predicted IoU, object
score, mask confidence, recency: seed 001's scorer as ``models/sam2/memory.py`` defines it), ``similarity``
(image embedding), ``oracle`` (memories scored against the ground truth: the upper bound). The selectors are
inference rules: the weights are the same in every cell. ``--baseline`` adds the per-frame model's row (a
U-Net trained on the slices, no support) on the same volumes.

Writes ``incontext_ablation.json`` / ``.md`` into ``--out`` and prints the tables: per class 3D Dice, mean 3D
Dice, HD95 (mm), slice Dice, how often the selector's choice differed from SAM2's nearest slices, and per volume
the mean 3D Dice over classes.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _runs import load_run  # noqa: E402

SELECTORS = {"recent": {"name": "recent"}, "score": {"name": "score"}, "similarity": {"name": "similarity"},
             "oracle": {"name": "oracle"}}


def _entry(cfg) -> dict:
    from omegaconf import OmegaConf

    entries = [OmegaConf.to_container(e, resolve=True) if OmegaConf.is_config(e) else e for e in cfg.data.evaluate]
    for e in entries:
        if isinstance(e, dict) and (e.get("mapper") or {}).get("name") == "InContextEvalMapper":
            return e
    raise SystemExit("the checkpoint's config has no data.evaluate entry with an InContextEvalMapper")


def _per_volume(folder: Path) -> dict[str, float]:
    """{volume: mean 3D Dice over its classes} from the evaluator's per-volume CSV (if it wrote one)."""
    files = sorted(folder.glob("*.csv"))
    if not files:
        return {}
    out: dict[str, list[float]] = {}
    with open(files[0]) as f:
        for row in csv.DictReader(f):
            vid = row.get("video_id") or row.get("volume")
            vals = [float(v) for k, v in row.items() if k.startswith("Dice3D") and v not in ("", "nan", None)]
            if "dice3d" in row and row["dice3d"] not in ("", "nan"):
                vals.append(float(row["dice3d"]))
            if vid is not None and vals:
                out.setdefault(vid, []).extend(vals)
    return {k: sum(v) / len(v) for k, v in out.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="a SAM2InContext checkpoint (its stored config builds it)")
    ap.add_argument("--out", default="output/incontext_ablation")
    ap.add_argument("--selectors", nargs="*", default=list(SELECTORS), choices=list(SELECTORS))
    ap.add_argument("--support", type=int, nargs="*", default=[1, 2, 4, 8], help="support slices per class")
    ap.add_argument("--baseline", default=None, help="checkpoint of a per-frame model on the same dataset")
    args = ap.parse_args(argv)

    import data_schedule  # noqa: F401
    import evaluators  # noqa: F401
    import models  # noqa: F401
    from core.logger import setup_logger
    from core.registry import MEMORY_SELECTORS, build
    from trainers.evaluation import evaluate_all
    from trainers.train_loop import default_device

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup_logger(out, 0)
    device = default_device()
    model, cfg, ckpt = load_run(Path(args.ckpt), device)
    entry = _entry(cfg)
    rows: dict[str, dict] = {}

    def run(label: str, runner, pcfg) -> None:
        folder = out / "eval" / label.replace(" ", "_").replace("=", "")
        t = time.perf_counter()
        res = next(iter(evaluate_all(runner, pcfg, folder, device).values()))
        res = {k: v for k, v in res.items() if isinstance(v, (int, float))}
        res["eval_s"] = round(time.perf_counter() - t, 1)
        res["per_volume"] = _per_volume(folder / entry["tag"]) if entry.get("tag") else {}
        rows[label] = res
        print(f"{label:24} mDice3D {res.get('mDice3D', float('nan')):.4f}  mHD95 {res.get('mHD95', float('nan')):.2f}"
              f"  ({res['eval_s']} s)", flush=True)

    if args.baseline:
        base, bcfg, _ = load_run(Path(args.baseline), device)
        bcfg = bcfg.copy()
        bcfg.data.evaluate = [dict(name=entry["name"], tag=entry.get("tag", entry["name"]), per_video=True,
                                   mapper=dict(name="VideoEvalMapper", size=entry["mapper"]["size"], score="annotated",
                                               transforms=entry["mapper"].get("transforms")),
                                   evaluator=entry["evaluator"], window=dict(size=16, overlap=0))]
        run("per-frame U-Net", base, bcfg)
    for s in args.support:
        pcfg = cfg.copy()
        pcfg.data.evaluate = [{**entry, "mapper": {**entry["mapper"], "support_size": s}}]
        for name in args.selectors:
            model.sam2.model.memory_selector = build(MEMORY_SELECTORS, SELECTORS[name])
            run(f"{name} support={s}", model, pcfg)
            counts = getattr(model.sam2.model.memory_selector, "counts", {})
            rows[f"{name} support={s}"]["memory_differs"] = counts["differs"] / counts["choices"] \
                if counts.get("choices") else None

    from core.catalog import MetadataCatalog

    classes = list(MetadataCatalog.get(entry["name"]).classes)
    report = {"checkpoint": args.ckpt, "iteration": ckpt.get("iteration"), "dataset": entry["name"],
              "support_sampler": entry["mapper"].get("support"), "rows": rows}
    (out / "incontext_ablation.json").write_text(json.dumps(report, indent=1) + "\n")

    def f(v, d=3):
        return "n/a" if v is None or v != v else f"{v:.{d}f}"

    head = ["row", "mDice3D", *classes, "mHD95 (mm)", "mSliceDice", "memory differs", "eval s"]
    lines = [f"SAM2InContext `{args.ckpt}` (iteration {ckpt.get('iteration')}) on `{entry['name']}`, whole volumes, "
             f"support from {entry['mapper'].get('support')}", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for label, r in rows.items():
        lines.append("| " + " | ".join([label, f(r.get("mDice3D")), *[f(r.get(f"Dice3D_{c}")) for c in classes],
                                        f(r.get("mHD95"), 1), f(r.get("mSliceDice")), f(r.get("memory_differs")),
                                        str(r["eval_s"])]) + " |")
    vols = sorted({v for r in rows.values() for v in r.get("per_volume", {})})
    if vols:
        lines += ["", "Per volume, mean 3D Dice over classes:", "",
                  "| row | " + " | ".join(vols) + " |", "|" + "---|" * (len(vols) + 1)]
        for label, r in rows.items():
            lines.append(f"| {label} | " + " | ".join(f(r.get("per_volume", {}).get(v)) for v in vols) + " |")
    lines += ["", "*memory differs*: share of the memory choices that differ from SAM2's nearest slices."]
    (out / "incontext_ablation.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
