#!/usr/bin/env python
"""AR-SEG against the U-Net and LGRNet-tiny at matched parameter counts on the embedded EchoSynth (issue 17, seed
000's question): the same iterations, then the same training wall-clock.

    python benchmarks/arseg_comparison.py [--iters 600] [--models ARSeg ARSeg-parallel ARSeg-video ARSeg-rle
        ARSeg-nocell UNetBaseline LGRNet] [--out output/bench/arseg] [--reuse] [key=value ...]

1. **Same iterations.** Every config in ``--models`` is trained for ``--iters`` iterations at its own batch (the
   U-Net and AR-SEG: 8 clips, one annotated frame each; LGRNet: 4 clips of 7 frames) with ``main.py
   --trainer_mode train_attmpt`` (no periodic evaluation), its wall-clock measured, and evaluated once with
   ``--trainer_mode eval`` on ``echo_synth_random_test``.
2. **Decoding variants of the AR-SEG checkpoints** (evaluation only, ``model.decode.*`` overrides): the consensus
   of 8 samples at temperature 1 and at 0.7, the decoded grid without the refiner (for AR-SEG and the parallel
   control: what next-token prediction itself gives, against the 16×16 grid's ceiling 0.831), and the whole-video
   protocol (every frame of each test video in windows of 16 frames, overlap 4, all annotated frames scored) for
   AR-SEG and its video variant.
3. **Same wall-clock.** The U-Net and LGRNet are trained again for as many iterations as fit in AR-SEG's training
   time (its steady s/it from the log windows × iterations; process start-up and FLOP counting excluded), at their
   own s/it from step 1, and evaluated.
4. **Decoding speed**: ms per frame of ``predict`` for one frame at a time and for a batch of 44 frames (the
   evaluation's 4 clips × 11), and tokens per mask, for every AR-SEG variant and decoding mode (a fixed-length
   grid decodes the same number of steps whatever the image; the rle model's length depends on the prediction,
   so its timing uses test-set frames).
5. **Exposure bias** of the grid models (AR-SEG, its first design without cell features, the parallel control):
   on the 42 scored test frames, the 16×16 grid's cell accuracy and grid mDice against the ground truth's grid
   when every position sees the ground-truth history (teacher forcing, as in training) and when it sees its own
   greedy history, and the share of cells that change between the two.

``--reuse`` keeps a run directory that already has ``checkpoints/model_final.pth`` and evaluations already
written (rerunning only what is missing).
Writes ``results.json`` and ``results.md`` (the tables) into ``--out``; overrides apply to every training run.
#params are the runs' ``model_info.json``; GFLOPs (MACs) per clip are counted again from each checkpoint with the
current ``count_flops``, so runs trained before a counting fix (ARSeg's, see ``ARSeg.fvcore_traceable``) are
reported with today's count.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _runs import QUIET, load_run, seconds_per_iter as _seconds_per_iter, train_run  # noqa: E402

CONFIGS = {"ARSeg": "configs/cardiac/arseg_tiny.py", "ARSeg-parallel": "configs/cardiac/arseg_tiny_parallel.py",
           "ARSeg-video": "configs/cardiac/arseg_tiny_video.py", "ARSeg-rle": "configs/cardiac/arseg_tiny_rle.py",
           "ARSeg-nocell": "configs/cardiac/arseg_tiny_nocell.py",
           "UNetBaseline": "configs/cardiac/unet_tiny.py", "LGRNet": "configs/cardiac/lgrnet_tiny.py"}
VARIANTS = {  # name -> (run, decode overrides)
    "ARSeg consensus-8 (T 1.0)": ("ARSeg", ["model.decode.mode=consensus", "model.decode.samples=8",
                                            "model.decode.temperature=1.0"]),
    "ARSeg consensus-8 (T 0.7)": ("ARSeg", ["model.decode.mode=consensus", "model.decode.samples=8",
                                            "model.decode.temperature=0.7"]),
    "ARSeg grid only (no refiner)": ("ARSeg", ["model.decode.refine=false"]),
    "ARSeg-parallel grid only (no refiner)": ("ARSeg-parallel", ["model.decode.refine=false"]),
    "ARSeg-nocell grid only (no refiner)": ("ARSeg-nocell", ["model.decode.refine=false"]),
    "ARSeg whole-video": ("ARSeg", ["data.evaluate=[{name: echo_synth_random_test, tag: video, per_video: true, "
                                    "mapper: {name: VideoEvalMapper, size: [128, 128], transforms: [{name: FanCrop}]}, "
                                    "window: {size: 16, overlap: 4}, evaluator: {name: VideoSegEvaluator, num_vis: 0}}]"]),
}
VARIANTS["ARSeg-video whole-video"] = ("ARSeg-video", VARIANTS["ARSeg whole-video"][1])


def _evaluate(run_dir: Path, out: Path, extra: list[str] = (), reuse: bool = False,
              tag: str = "echo_synth_random_test") -> dict:
    metrics = out / "eval" / tag / "metrics.json"
    if reuse and metrics.exists():
        return json.loads(metrics.read_text())
    subprocess.run([sys.executable, str(REPO / "main.py"), "--trainer_mode", "eval", "--eval_path",
                    str(run_dir / "checkpoints" / "model_final.pth"), "--output_dir", str(out), *QUIET, *extra],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return json.loads(metrics.read_text())


_INFO: dict[Path, dict] = {}


def _info(run: Path) -> dict:
    """The run's model_info.json with gflops_per_clip counted again from its final checkpoint (one count per run)."""
    if run not in _INFO:
        import torch

        from models.complexity import count_flops
        info = json.loads((run / "model_info.json").read_text())
        model, _, _ = load_run(run / "checkpoints" / "model_final.pth", torch.device("cpu"))
        info["gflops_per_clip"] = count_flops(model, info["clip_len"], tuple(info["size"]), torch.device("cpu"))
        _INFO[run] = info
    return _INFO[run]


def _row(metrics: dict, info: dict, **extra) -> dict:
    return dict(mDice=metrics["mDice"], mIoU=metrics["mIoU"], params=info["params"],
                gflops_per_clip=info["gflops_per_clip"],
                dice={c: metrics[f"Dice_{c}"] for c in metrics["class_names"]},
                iou={c: metrics[f"IoU_{c}"] for c in metrics["class_names"]}, **extra)


def _run(name: str, out: Path, iters: int, overrides: list[str], reuse: bool) -> dict:
    run = out / f"{name}_{iters}"
    final = run / "checkpoints" / "model_final.pth"
    times = out / "train_times.json"
    recorded = json.loads(times.read_text()) if times.exists() else {}
    reuse = reuse and final.exists() and run.name in recorded
    if not reuse:
        recorded[run.name] = train_run(CONFIGS[name], run, iters, overrides, log_period=10)
        times.write_text(json.dumps(recorded, indent=1))
    wall = recorded[run.name]
    metrics = _evaluate(run, run / "eval_run", reuse=reuse)
    info = _info(run)
    print(f"{name}: {iters} iterations, process {wall:.0f} s ({_seconds_per_iter(run):.3f} s/it), mDice "
          f"{metrics['mDice']:.4f}", flush=True)
    return _row(metrics, info, config=CONFIGS[name], iterations=iters, train_wall_s=wall,
                s_per_iter=_seconds_per_iter(run),
                run=str(run.relative_to(REPO) if run.is_relative_to(REPO) else run))


def _decode_speed(run: Path, decode: dict, frames) -> dict:
    import torch
    model, _, _ = load_run(run / "checkpoints" / "model_final.pth", torch.device("cpu"))
    model.decode_cfg.update(decode)
    out = {}
    with torch.no_grad():
        model.predict({"video": frames[:1, None]})  # warm-up
        for label, n in (("ms_per_frame_single", 8), ("ms_per_frame_batch44", 44)):
            t = time.perf_counter()
            if n == 8:
                for i in range(n):
                    model.predict({"video": frames[i:i + 1, None]})
            else:
                model.predict({"video": frames[:n, None]})
            out[label] = 1000 * (time.perf_counter() - t) / n
        model.predict({"video": frames[:44, None]})
        out["tokens_per_mask"] = model.last_decode["tokens_per_mask"]
    return out


def _test_frames(run: Path):
    """The scored frames of echo_synth_random_test at 128² (the run's evaluation mapper), their labels at 128², and
    how many there are; frames and labels are padded to 44 by repeating the first ones (the speed phase's batch)."""
    import torch
    from omegaconf import OmegaConf

    from data_schedule.build import build_test_loader
    from models.layers import masks_to_labels
    _, cfg, _ = load_run(run / "checkpoints" / "model_final.pth", torch.device("cpu"))
    loader = build_test_loader("echo_synth_random_test", OmegaConf.to_container(cfg.data.eval_mapper), 4, 0)
    frames, labels = [], []
    for batch in loader:
        scored = batch["scored"].bool()
        frames.append(batch["video"][scored])
        labels.append(masks_to_labels(batch["masks"])[scored])
    frames, labels = torch.cat(frames), torch.cat(labels)
    n, pad = len(frames), max(0, 44 - len(frames))
    return torch.cat([frames, frames[:pad]])[:44], torch.cat([labels, labels[:pad]])[:44], n


def _exposure(run: Path, frames, labels) -> dict:
    """What decoding its own tokens costs a grid model (exposure bias): on the scored test frames, the accuracy of
    the 16×16 grid against the ground truth's grid when every position sees the ground-truth history (teacher
    forcing, as in training) and when it sees its own greedy history (decoding), the grids' mDice, and the share
    of cells where the two disagree. The parallel control ignores the history, so its two grids are the same."""
    import torch
    import torch.nn.functional as F
    model, _, _ = load_run(run / "checkpoints" / "model_final.pth", torch.device("cpu"))
    model.decode_cfg.update(mode="greedy")
    tok, g = model.tokenizer, model.tokenizer.grid
    with torch.no_grad():
        prefix, _, cells = model._prefix(frames, None)
        seq, _ = model._encode(labels)
        logits = model.head(model.decoder(prefix, model._inputs(seq[:, :-1], 0, cells), model.order))
        forced = model._refiner_input(logits, labels)  # the teacher-forced argmax grid, as training computes it
        greedy = model.decode_frames(frames)["grid"]
    truth = seq[:, 1:g * g + 1].view(-1, g, g)

    def grid_mdice(pred):
        p, t = (F.one_hot(x, tok.num_labels)[..., 1:].flatten(1, 2).float() for x in (pred, truth))  # N×G²×K
        dice = (2 * (p * t).sum(1) + 1e-6) / (p.sum(1) + t.sum(1) + 1e-6)  # N×K
        return float(dice.mean())

    return dict(cell_acc_teacher_forced=float((forced == truth).float().mean()),
                cell_acc_greedy=float((greedy == truth).float().mean()),
                grid_mdice_teacher_forced=grid_mdice(forced), grid_mdice_greedy=grid_mdice(greedy),
                cells_changed=float((forced != greedy).float().mean()))


def _fmt_table(rows: dict, classes: list[str]) -> str:
    head = ["model", "iterations", "s/it", "train s", "#params", "GFLOPs/clip", "mDice", "mIoU",
            *(f"Dice {c}" for c in classes), *(f"IoU {c}" for c in classes)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        lines.append("| " + " | ".join([
            name, str(r.get("iterations", "")), f"{r['s_per_iter']:.3f}" if "s_per_iter" in r else "",
            f"{r['s_per_iter'] * r['iterations']:.0f}" if "s_per_iter" in r else "",
            f"{r['params'] / 1e6:.2f} M", f"{r['gflops_per_clip']:.2f}", f"{r['mDice']:.4f}", f"{r['mIoU']:.4f}",
            *(f"{r['dice'][c]:.4f}" for c in classes), *(f"{r['iou'][c]:.4f}" for c in classes)]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--models", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--out", type=Path, default=REPO / "output/bench/arseg")
    ap.add_argument("--reuse", action="store_true", help="keep runs that already have a final checkpoint")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    same_iters = {name: _run(name, args.out, args.iters, args.overrides, args.reuse) for name in args.models}

    variants = {}
    for label, (name, extra) in VARIANTS.items():
        if name in same_iters:
            run = REPO / same_iters[name]["run"]
            m = _evaluate(run, run / ("eval_" + re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")), extra,
                          args.reuse, tag="video" if "whole-video" in label else "echo_synth_random_test")
            info = _info(run)
            variants[label] = _row(m, info, iterations=args.iters, decode=extra)
            print(f"{label}: mDice {m['mDice']:.4f}", flush=True)

    equal_wall = {}
    if "ARSeg" in same_iters:
        budget = same_iters["ARSeg"]["s_per_iter"] * args.iters  # training time, without start-up
        for name in ("UNetBaseline", "LGRNet"):
            if name in same_iters:
                iters = max(10, round(budget / same_iters[name]["s_per_iter"]))
                if iters != args.iters:
                    equal_wall[name] = _run(name, args.out, iters, args.overrides, args.reuse)

    speed = {}
    speed_runs = [n for n in ("ARSeg", "ARSeg-parallel", "ARSeg-video", "ARSeg-rle") if n in same_iters]
    grid_runs = [n for n in (*speed_runs, "ARSeg-nocell") if n in same_iters]  # the models that need test frames
    frames, labels, n_scored = _test_frames(REPO / same_iters[grid_runs[0]]["run"]) if grid_runs else (None, None, 0)
    for label, name, decode in (("ARSeg greedy", "ARSeg", {}),
                                ("ARSeg consensus-8", "ARSeg", dict(mode="consensus", samples=8)),
                                ("ARSeg-parallel", "ARSeg-parallel", {}), ("ARSeg-video", "ARSeg-video", {}),
                                ("ARSeg-rle greedy", "ARSeg-rle", {})):
        if name in same_iters:
            speed[label] = _decode_speed(REPO / same_iters[name]["run"], decode, frames)
            print(f"{label}: {speed[label]}", flush=True)

    exposure = {}
    for name in ("ARSeg", "ARSeg-nocell", "ARSeg-parallel"):
        if name in same_iters:
            exposure[name] = _exposure(REPO / same_iters[name]["run"], frames[:n_scored], labels[:n_scored])
            print(f"{name} exposure: {exposure[name]}", flush=True)

    classes = list(next(iter(same_iters.values()))["dice"])
    md = [f"Same iterations ({args.iters}):", "", _fmt_table(same_iters, classes), "",
          "Decoding variants of the same checkpoints:", "", _fmt_table(variants, classes), "",
          "Same training wall-clock as AR-SEG:", "", _fmt_table(equal_wall, classes), "",
          "| model | ms/frame (one at a time) | ms/frame (batch of 44) | tokens per mask |", "|---|---|---|---|",
          *(f"| {k} | {v['ms_per_frame_single']:.0f} | {v['ms_per_frame_batch44']:.1f} | {v['tokens_per_mask']:.1f} |"
            for k, v in speed.items()), "",
          f"Exposure bias on the {n_scored} scored test frames (16×16 grid against the ground truth's grid):", "",
          "| model | cell acc. (teacher-forced) | cell acc. (greedy) | grid mDice (teacher-forced) | grid mDice "
          "(greedy) | cells changed |", "|---|---|---|---|---|---|",
          *(f"| {k} | {v['cell_acc_teacher_forced']:.3f} | {v['cell_acc_greedy']:.3f} | "
            f"{v['grid_mdice_teacher_forced']:.3f} | {v['grid_mdice_greedy']:.3f} | {v['cells_changed']:.3f} |"
            for k, v in exposure.items())]
    (args.out / "results.md").write_text("\n".join(md) + "\n")
    (args.out / "results.json").write_text(json.dumps(dict(iters=args.iters, overrides=args.overrides,
                                                           same_iterations=same_iters, decoding=variants,
                                                           equal_wall_clock=equal_wall, speed=speed,
                                                           exposure=exposure), indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    main()
