#!/usr/bin/env python
"""Does whole-video inference in temporal windows keep memory bounded as videos get longer?

    python benchmarks/long_video_memory.py [--config_file configs/cardiac/unet_tiny.py] [--frames 100 300]
                                           [--window 16] [--overlap 4] [--one_pass 100] [--threads N]

Builds a synthetic echo video (an EchoSynth video from ``render_video``, looped to T frames, about 200×240 uint8),
saves it as ``.npy`` in a temporary folder and, for each T of ``--frames``, runs
``trainers.video_inference.predict_video`` on the memory-mapped file with the config's model (random init, CPU) and
input size, windowed (``--window``/``--overlap``), plus one pass (window = T) for each T of ``--one_pass``. Every
run is a fresh subprocess, so its peak RSS (``ru_maxrss``) is its own. Prints a markdown table:

- peak RSS: the process's high-water resident set (torch, the model, everything);
- extra: peak RSS minus the RSS just before ``predict_video`` (model built, video opened, nothing read yet);
- T·H·W: the uint8 output size. The resident pages of the input memmap count in RSS too (another T·H·W once
  every frame has been read), so a windowed run's "extra" is expected to be a constant plus about 2·T·H·W;

and the ratio peak RSS(T_max) / RSS(T_min) of the windowed runs (≈ 1: memory does not grow with T beyond the
uint8 output and the read pages of the input).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def child(args) -> None:
    """One measured run; prints a JSON line."""
    import numpy as np
    import torch

    import models  # noqa: F401
    from core.config import load_config
    from trainers.train_loop import build_model
    from trainers.video_inference import predict_video

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config_file)
    torch.manual_seed(0)
    model = build_model(cfg, torch.device("cpu")).eval()
    size = tuple(cfg.data.eval_mapper.size)
    frames = np.load(args.video, mmap_mode="r", allow_pickle=False)
    rss_before = _rss_kib()
    t0 = time.perf_counter()
    labels = predict_video(model, frames, size=size, window=args.window, overlap=args.overlap,
                           num_classes=cfg.model.num_classes)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps(dict(frames=int(frames.shape[0]), window=args.window, overlap=args.overlap, peak_kib=peak,
                          before_kib=rss_before, wall_s=wall, out_bytes=int(labels.nbytes),
                          fg=float((labels > 0).mean()))))


def make_video(num_frames: int, seed: int = 0):
    """An EchoSynth video (Site_G_100 style) looped forwards and backwards to ``num_frames`` frames."""
    import numpy as np

    from data_schedule.synthetic.echo_synth import render_video, resolve_params

    params, styles = resolve_params()
    image, _, _ = render_video("Site_G_100", np.random.default_rng(seed), params, styles["Site_G_100"],
                               labeled=False)
    loop = np.concatenate([image, image[::-1]])  # ping-pong: no jump at the seam
    reps = -(-num_frames // len(loop))
    return np.ascontiguousarray(np.concatenate([loop] * reps)[:num_frames])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config_file", default="configs/cardiac/unet_tiny.py")
    p.add_argument("--frames", type=int, nargs="+", default=[100, 300])
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--overlap", type=int, default=4)
    p.add_argument("--one_pass", type=int, nargs="*", default=[100], help="T values to also run with window = T")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--video", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        return child(args)

    import numpy as np

    runs = [(t, args.window, args.overlap, "windowed") for t in args.frames] + \
        [(t, t, 0, "one pass") for t in args.one_pass]
    results = []
    with tempfile.TemporaryDirectory(prefix="long_video_memory-") as tmp:
        full = make_video(max(r[0] for r in runs))
        for t in sorted({r[0] for r in runs}):
            np.save(Path(tmp) / f"video_{t}.npy", full[:t])
        shape = full.shape[1:]
        del full
        for t, window, overlap, kind in runs:
            cmd = [sys.executable, __file__, "--_child", "--video", str(Path(tmp) / f"video_{t}.npy"),
                   "--config_file", args.config_file, "--window", str(window), "--overlap", str(overlap),
                   "--threads", str(args.threads)]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                sys.exit(f"run T={t} window={window} failed:\n{proc.stderr}")
            results.append(dict(json.loads(proc.stdout.strip().splitlines()[-1]), kind=kind))
            print(f"done: T={t} window={window} overlap={overlap}", file=sys.stderr)

    mib = 1024.0
    print(f"\nconfig {args.config_file}, video {shape[0]}×{shape[1]} uint8 (memmap), CPU, "
          f"torch threads {args.threads or 'default'}\n")
    print("| T | window / overlap | peak RSS (MiB) | extra (MiB) | T·H·W (MiB) | wall (s) | ms / frame |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        mode = r["kind"] if r["kind"] == "one pass" else f"{r['window']} / {r['overlap']}"
        print(f"| {r['frames']} | {mode} | {r['peak_kib'] / mib:.1f} | {(r['peak_kib'] - r['before_kib']) / mib:.1f} "
              f"| {r['out_bytes'] / 2**20:.1f} | {r['wall_s']:.1f} | {1000 * r['wall_s'] / r['frames']:.0f} |")
    windowed = [r for r in results if r["kind"] == "windowed"]
    if len(windowed) >= 2:
        lo = min(windowed, key=lambda r: r["frames"])
        hi = max(windowed, key=lambda r: r["frames"])
        print(f"\nwindowed peak RSS ratio T={hi['frames']} / T={lo['frames']}: {hi['peak_kib'] / lo['peak_kib']:.3f} "
              f"(extra: {(hi['peak_kib'] - hi['before_kib']) / mib:.1f} vs "
              f"{(lo['peak_kib'] - lo['before_kib']) / mib:.1f} MiB)")


if __name__ == "__main__":
    main()
