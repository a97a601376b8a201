#!/usr/bin/env python
"""Parameters and FLOPs (fvcore, MACs) of every model config, next to the LGRNet paper's Res2Net-50 figure.

    python benchmarks/model_complexity.py [--configs configs/cardiac/lgrnet*.py ...] [--markdown]

For each config: parameters, GFLOPs of ``predict`` on one evaluation clip at the config's own eval size and clip
length (what ``model_info.json`` of a run reports; an in-context model's with its support slices), and GFLOPs per
frame at the paper's setting (clips of T = 6 frames at 352², divided by 6). The paper (LGRNet, MICCAI 2024, Tab. 1) reports 13.2 GFLOPs / 26.6 M parameters
for its Res2Net-50 model; it does not say whether its GFLOPs are per frame or per clip, so both columns are here.
The models are built with random weights on CPU; nothing is trained.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.config import load_config  # noqa: E402
from core.registry import MODELS, build  # noqa: E402
import models  # noqa: E402,F401  (registers the meta-architectures)
from models.complexity import count_flops, count_params  # noqa: E402
from main import flop_clip  # noqa: E402

PAPER = {"model": "LGRNet Res2Net-50 (paper Tab. 1)", "params_m": 26.6, "gflops": 13.2}
DEFAULT_CONFIGS = sorted(REPO.glob("configs/cardiac/*.py")) + sorted(REPO.glob("configs/cardiac/*/*.py"))


def measure(path: Path, paper_t: int = 6, paper_size: int = 352) -> dict:
    cfg = load_config(path)
    torch.manual_seed(0)
    model = build(MODELS, cfg.model).eval()
    clip_len, size, support = flop_clip(cfg)  # the clip a run's model_info.json is counted on
    clip = count_flops(model, clip_len, size, torch.device("cpu"), support)
    paper = count_flops(model, paper_t, (paper_size, paper_size), torch.device("cpu"), support)
    return {"config": str(path.relative_to(REPO)), "model": cfg.model.name,
            "backbone": cfg.model.get("backbone", {}).get("model", cfg.model.get("encoder", "")),
            "params_m": count_params(model)["params"] / 1e6, "clip": f"{clip_len}×{size[0]}²",
            "gflops_clip": clip, "gflops_frame_352": None if paper is None else paper / paper_t}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="*", type=Path, default=DEFAULT_CONFIGS)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    print("| config | model | backbone | #params | eval clip | GFLOPs/eval clip | GFLOPs/frame (T=6, 352²) |")
    print("|---|---|---|---|---|---|---|")
    for path in args.configs:
        r = measure(path.resolve())
        print(f"| `{r['config']}` | {r['model']} | {r['backbone']} | {r['params_m']:.2f} M | {r['clip']} | "
              f"{fmt(r['gflops_clip'])} | {fmt(r['gflops_frame_352'])} |", flush=True)
    print(f"| {PAPER['model']} | LGRNet | res2net50 | {PAPER['params_m']} M | 6×352² | – | {PAPER['gflops']} "
          f"(per frame or clip: not stated) |")


if __name__ == "__main__":
    main()
