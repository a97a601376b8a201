#!/usr/bin/env python
"""In-context segmentation from k labelled examples: UniverSeg vs SAM2 in-context on the same queries and the same
support sets, support size 1-16, with a supervised U-Net (full training split) as the reference line.

    python benchmarks/incontext_comparison.py [--datasets ct_synth echo] [--sizes 1 2 4 8 16] [--draws 3]
        [--sam2_draws 1] [--out output/incontext_comparison]

Checkpoints (``model_final.pth`` of each run directory; ``--runs`` overrides, e.g.
``--runs ct_synth:UniverSeg=path/to/ckpt.pth``):

    dataset    UniverSeg                          SAM2InContext                            U-Net
    ct_synth   output/ct_synth/universeg_tiny     output/ct_synth/sam2_incontext_tiny      output/ct_synth/unet_tiny
    echo       output/cardiac/universeg_tiny      output/cardiac/sam2_incontext_tiny       output/cardiac/unet_tiny

Protocol. The queries and the support come from the UniverSeg run's ``InContextEvalMapper`` entry: the test split,
one sample per volume / video (``ct_synth``: every slice of the 4 test volumes, 3D Dice per organ; ``echo``: every
annotated frame of the 8 test videos, ``queries="annotated"``, 2D Dice per chamber), support slices drawn by its
sampler (``random_slices`` over the training split) with ``support_draw = d`` (d = 0 .. draws − 1): the draw's
generator is seeded by the query's video id, d and the class, so every method sees exactly the same support slices
(each at its own input size). Each draw is scored alone; "ensemble" averages the probabilities of all draws before
thresholding (UniverSeg's support ensembling). SAM2 in-context runs ``--sam2_draws`` draws (default 1, draw 0: the
same support as UniverSeg's draw 0). The U-Net runs on the same query samples at its own size and ignores the
support: one row, the reference line.

Reported per method and support size: Dice per class (draw 0), mean Dice over classes (draw 0; the mean and the
spread over draws), the ensemble's mean Dice, #params, GMACs per query frame (all classes, one support set,
support encoding amortised over the sample's frames; fvcore / torch's FLOP counter) and seconds per query frame
(all classes, one support set; wall time of ``predict`` on this machine, one process). Writes
``incontext_comparison.json`` / ``.md`` and ``incontext_comparison.png`` (Dice vs support size) into ``--out``, and
one ``incontext_comparison_<dataset>.json`` per dataset: a later call with other ``--datasets`` into the same
``--out`` adds its rows to those (so the two datasets can run as two processes).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _runs import load_run  # noqa: E402

RUNS = {
    "ct_synth": {"UniverSeg": "output/ct_synth/universeg_tiny", "SAM2InContext": "output/ct_synth/sam2_incontext_tiny",
                 "U-Net": "output/ct_synth/unet_tiny"},
    "echo": {"UniverSeg": "output/cardiac/universeg_tiny", "SAM2InContext": "output/cardiac/sam2_incontext_tiny",
             "U-Net": "output/cardiac/unet_tiny"},
}
IN_CONTEXT = ("UniverSeg", "SAM2InContext")


def _ckpt(path: str) -> Path:
    p = REPO / path if not Path(path).is_absolute() else Path(path)
    return p / "checkpoints" / "model_final.pth" if p.is_dir() else p


def _load(path: Path, device):
    if not path.exists():
        raise SystemExit(f"{path}: no such checkpoint; train it first (see the module docstring) or pass --runs")
    return load_run(path, device)


def _incontext_entry(cfg, path) -> dict:
    from trainers.evaluation import eval_entries

    for e in eval_entries(cfg.data):
        if (e["mapper"] or {}).get("name") == "InContextEvalMapper":
            return e
    raise SystemExit(f"{path}: its config has no data.evaluate entry with an InContextEvalMapper")


def _evaluator(entry: dict, folder: Path, n: int):
    from core.catalog import MetadataCatalog
    from core.registry import EVALUATORS, build

    meta = MetadataCatalog.get(entry["name"])
    ev_cfg = {**entry["evaluators"][0], **({"num_vis": 0} if "num_vis" in entry["evaluators"][0] else {})}
    return build(EVALUATORS, ev_cfg, key="evaluator", dataset_name=entry["name"], class_names=meta.classes,
                 colors=getattr(meta, "colors", None), output_dir=folder, num_samples=n, vis_ids=[])


def _metrics(res: dict, classes: list[str]) -> dict:
    return {"mDice": res.get("mDice"), **{c: res.get(f"Dice_{c}") for c in classes}}


def run_incontext(model, entry: dict, own: dict, size: int, draws: int, folder: Path, device) -> dict:
    """One method at one support size: ``draws`` support draws scored alone and their ensemble."""
    import torch

    from core.catalog import DatasetCatalog, MetadataCatalog
    from core.structures import to_device
    from data_schedule.build import build_test_loader
    from models.complexity import count_flops
    from trainers.evaluation import per_video_metas

    metas = per_video_metas(DatasetCatalog.get(entry["name"]))
    classes = list(MetadataCatalog.get(entry["name"]).classes)
    mapper = {**entry["mapper"], "size": own["size"], "transforms": own.get("transforms"), "support_size": size}
    loaders = [build_test_loader(entry["name"], {**mapper, "support_draw": d}, 1, 0, metas=metas)
               for d in range(draws)]
    evs = [_evaluator(entry, folder / f"draw{d}", len(metas)) for d in range(draws)]
    ens = _evaluator(entry, folder / "ensemble", len(metas)) if draws > 1 else None
    for ev in evs + ([ens] if ens else []):
        ev.reset()
    seconds, frames = 0.0, 0
    with torch.no_grad():
        for batches in zip(*loaders):
            probs, first = [], None
            for d, batch in enumerate(batches):
                batch = to_device(batch, device)
                first = batch if first is None else first
                if d and not torch.equal(batch["frame_idx"], first["frame_idx"]):
                    raise RuntimeError("support draws disagree on the query frames")
                t = time.perf_counter()
                out = model.predict(batch)
                seconds += time.perf_counter() - t
                frames += int(batch["video"].shape[1])
                out = {k: (v.float() if torch.is_tensor(v) else v) for k, v in out.items()}
                evs[d].process(batch, out)
                probs.append(out["probs"])
            if ens is not None:
                ens.process(first, {"probs": torch.stack(probs).mean(0)})
    per_draw = [_metrics(ev.evaluate(), classes) for ev in evs]
    mean_frames = max(round(frames / max(draws * len(metas), 1)), 1)
    gmacs = count_flops(model, mean_frames, tuple(own["size"]), device, support_size=size)
    m = [r["mDice"] for r in per_draw]
    mu = sum(m) / len(m)
    return {"support_size": size, "draws": draws, **per_draw[0], "mDice_draws": m, "mDice_mean": mu,
            "mDice_std": (sum((v - mu) ** 2 for v in m) / len(m)) ** 0.5,
            "mDice_ensemble": _metrics(ens.evaluate(), classes)["mDice"] if ens else None,
            "gmacs_per_frame": gmacs / mean_frames if gmacs else None, "s_per_frame": seconds / max(frames, 1)}


def _unet_size(cfg) -> list[int]:
    for e in cfg.data.evaluate:
        if not isinstance(e, str) and e.get("mapper") is not None and e.mapper.get("size") is not None:
            return list(e.mapper.size)
    return list(cfg.data.eval_mapper.size)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", default=list(RUNS), choices=list(RUNS))
    ap.add_argument("--sizes", type=int, nargs="*", default=[1, 2, 4, 8, 16], help="support slices per class")
    ap.add_argument("--draws", type=int, default=3, help="UniverSeg's support draws per size (ensemble over them)")
    ap.add_argument("--sam2_draws", type=int, default=1, help="SAM2 in-context's support draws per size")
    ap.add_argument("--runs", nargs="*", default=[], help="dataset:method=checkpoint overrides")
    ap.add_argument("--out", default="output/incontext_comparison")
    args = ap.parse_args(argv)

    import data_schedule  # noqa: F401
    import evaluators  # noqa: F401
    import models  # noqa: F401
    from core.catalog import MetadataCatalog
    from core.logger import setup_logger
    from models.complexity import count_params
    from trainers.train_loop import default_device

    runs = {d: dict(m) for d, m in RUNS.items()}
    for o in args.runs:
        key, _, path = o.partition("=")
        d, _, m = key.partition(":")
        if d not in runs or m not in runs[d] or not path:
            raise SystemExit(f"--runs {o!r}: expected dataset:method=path with dataset in {list(runs)} and method "
                             f"in {list(RUNS['ct_synth'])}")
        runs[d][m] = path
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup_logger(out, 0)
    device = default_device()
    report: dict = {"sizes": args.sizes, "draws": args.draws, "sam2_draws": args.sam2_draws, "datasets": {}}
    for ds in args.datasets:
        useg, ucfg, uckpt = _load(_ckpt(runs[ds]["UniverSeg"]), device)
        entry = _incontext_entry(ucfg, runs[ds]["UniverSeg"])
        classes = list(MetadataCatalog.get(entry["name"]).classes)
        rep = report["datasets"][ds] = {"dataset": entry["name"], "support": entry["mapper"].get("support"),
                                        "queries": entry["mapper"].get("queries", "all"), "classes": classes,
                                        "methods": {}}
        for method in (*IN_CONTEXT, "U-Net"):
            path = _ckpt(runs[ds][method])
            model, cfg, ckpt = (useg, ucfg, uckpt) if method == "UniverSeg" else _load(path, device)
            info = {"checkpoint": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
                    "iteration": ckpt.get("iteration"), "params": count_params(model)["params"], "rows": []}
            rep["methods"][method] = info
            if method == "U-Net":  # the same query samples through its predict (it ignores the support)
                own = {"size": _unet_size(cfg), "transforms": entry["mapper"].get("transforms")}
                row = run_incontext(model, entry, own, 1, 1, out / "eval" / ds / "unet", device)
                info["rows"].append({**row, "support_size": None, "draws": None, "mDice_draws": None,
                                     "mDice_mean": None, "mDice_std": None})
                print(f"{ds:8} U-Net            mDice {row['mDice']:.4f}  {row['s_per_frame']:.3f} s/frame", flush=True)
                continue
            own = _incontext_entry(cfg, path)["mapper"]
            for s in args.sizes:
                draws = args.draws if method == "UniverSeg" else args.sam2_draws
                row = run_incontext(model, entry, own, s, draws, out / "eval" / ds / f"{method}_s{s}", device)
                info["rows"].append(row)
                ens = row["mDice_ensemble"]
                print(f"{ds:8} {method:16} support {s:2}  mDice {row['mDice']:.4f}  draws {row['mDice_mean']:.4f} ± "
                      f"{row['mDice_std']:.4f}" + (f"  ensemble {ens:.4f}" if ens is not None else "") +
                      f"  {row['s_per_frame']:.3f} s/frame", flush=True)
            del model
        (out / f"incontext_comparison_{ds}.json").write_text(json.dumps(rep, indent=1) + "\n")
    for ds in RUNS:  # datasets of an earlier call into the same --out join the table and the plot
        path = out / f"incontext_comparison_{ds}.json"
        if ds not in report["datasets"] and path.exists():
            report["datasets"][ds] = json.loads(path.read_text())
            print(f"{ds}: from the earlier run {path}", flush=True)
    report["datasets"] = {ds: report["datasets"][ds] for ds in RUNS if ds in report["datasets"]}
    (out / "incontext_comparison.json").write_text(json.dumps(report, indent=1) + "\n")
    md = markdown(report)
    (out / "incontext_comparison.md").write_text(md)
    print(md)
    plot(report, out / "incontext_comparison.png")
    return 0


def markdown(report: dict) -> str:
    def f(v, d=3):
        return "–" if v is None else f"{v:.{d}f}"

    lines = []
    for ds, rep in report["datasets"].items():
        classes = rep["classes"]
        head = ["method", "support", *classes, "mDice", "mDice over draws", "ensemble", "params", "GMACs/frame",
                "s/frame"]
        lines += [f"**{ds}** (`{rep['dataset']}`, queries: {rep['queries']}, support: {rep['support']}; Dice per "
                  f"class and mDice of draw 0)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, info in rep["methods"].items():
            for r in info["rows"]:
                spread = (f"{r['mDice_mean']:.3f} ± {r['mDice_std']:.3f} ({r['draws']})" if r.get("draws") else "–")
                lines.append("| " + " | ".join([
                    f"{method} ({info['iteration']} it)", "full train split" if r["support_size"] is None else
                    str(r["support_size"]), *[f(r.get(c)) for c in classes], f(r["mDice"]), spread,
                    f(r.get("mDice_ensemble")), f"{info['params'] / 1e6:.2f} M", f(r.get("gmacs_per_frame"), 2),
                    f(r.get("s_per_frame"), 3)]) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ds_list = list(report["datasets"])
    fig, axes = plt.subplots(1, len(ds_list), figsize=(5.2 * len(ds_list), 4), squeeze=False)
    colors = {"UniverSeg": "tab:blue", "SAM2InContext": "tab:orange", "U-Net": "tab:green"}
    for ax, ds in zip(axes[0], ds_list):
        rep = report["datasets"][ds]
        for method, info in rep["methods"].items():
            rows = info["rows"]
            if method == "U-Net":
                ax.axhline(rows[0]["mDice"], color=colors[method], ls=":", label="U-Net (full train split)")
                continue
            xs = [r["support_size"] for r in rows]
            ax.errorbar(xs, [r["mDice_mean"] for r in rows], yerr=[r["mDice_std"] for r in rows], marker="o",
                        color=colors[method], capsize=3,
                        label=f"{method} ({rows[0]['draws']} draw{'s' if rows[0]['draws'] > 1 else ''})")
            if rows[0].get("mDice_ensemble") is not None:
                ax.plot(xs, [r["mDice_ensemble"] for r in rows], marker="s", ls="--", color=colors[method],
                        label=f"{method}, ensemble of {rows[0]['draws']}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1)
        ax.set_xticks(report["sizes"], [str(s) for s in report["sizes"]])
        ax.set_xlabel("support size (labelled slices per class)")
        ax.set_ylabel("mean Dice" + (" (3D)" if ds == "ct_synth" else ""))
        ax.set_title(f"{ds}: {rep['dataset']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
