#!/usr/bin/env python
"""CPU speed of the SAM2 adapter: inference frames/s for 4 objects (one box each on frame 0, propagated over the
clip) at 128² and 256², for the ``cpu_tiny`` preset and ``sam2.1_hiera_t`` (random weights), and training s/it at
``cpu_tiny`` (forward with autograd + SAM2Loss + backward + Adam step).

    python benchmarks/sam2_adapter.py [--frames 8] [--repeats 2] [--train_size 128] [--markdown]

Frames per second count the whole ``segment`` call (image encoder on every frame + tracking), the median of
``--repeats`` runs after one warm-up. At 128² the package's own predictor does the same job for comparison
(``add_new_points_or_box`` per object + ``propagate_in_video``, tqdm bar on stderr). Set OMP_NUM_THREADS to the cores you mean to use.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._table import time_ms  # noqa: E402
from models.sam2.build import build_sam2_video_model, count_parameters  # noqa: E402
from models.sam2.loss import SAM2Loss  # noqa: E402
from models.sam2.video import SAM2VideoAdapter, init_state_from_tensor, normalize  # noqa: E402


def _package_predictor(model, video: torch.Tensor, boxes: torch.Tensor) -> None:
    """The same job through the package's own API: one box per object, then propagate_in_video."""
    state = init_state_from_tensor(model, video)
    for k in range(boxes.shape[1]):
        model.add_new_points_or_box(state, frame_idx=0, obj_id=k + 1, box=boxes[0, k])
    for _ in model.propagate_in_video(state):
        pass


def _clip(t: int, size: int, k: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(normalised video T×3×S×S, boxes 1×K×4 on frame 0, masks T×K×S×S): K boxes on a 2×2 grid."""
    g = torch.Generator().manual_seed(0)
    video = normalize(torch.rand(t, 3, size, size, generator=g))
    h = size // 2
    corners = [(0, 0), (h, 0), (0, h), (h, h)][:k]
    boxes = torch.tensor([[[x + 4, y + 4, x + h - 4, y + h - 4] for x, y in corners]], dtype=torch.float)
    masks = torch.zeros(t, k, size, size, dtype=torch.bool)
    for i, (x, y) in enumerate(corners):
        masks[:, i, y + 8:y + h - 8, x + 8:x + h - 8] = True
    return video, boxes, masks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--train_size", type=int, default=128)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    for config in ("cpu_tiny", "sam2.1_hiera_t"):
        for size in (128, 256):
            adapter = SAM2VideoAdapter(build_sam2_video_model(config, image_size=size))
            video, boxes, _ = _clip(args.frames, size)
            ms = time_ms(lambda: adapter.segment(video, {"boxes": boxes}, [0]), args.repeats)
            rows.append((config, f"{count_parameters(adapter) / 1e6:.2f} M", f"{size}²", "inference, 4 objects",
                         f"{args.frames * 1e3 / ms:.2f} frames/s", f"{ms / 1e3:.2f} s / {args.frames} frames"))
            if size == 128:  # the package predictor on the same clip, for comparison (objects one at a time)
                ms = time_ms(lambda: _package_predictor(adapter.model, video, boxes), args.repeats)
                rows.append((config, "", f"{size}²", "package predictor, 4 objects",
                             f"{args.frames * 1e3 / ms:.2f} frames/s", f"{ms / 1e3:.2f} s / {args.frames} frames"))
    adapter = SAM2VideoAdapter(build_sam2_video_model("cpu_tiny", image_size=args.train_size)).train()
    video, boxes, masks = _clip(args.frames, args.train_size)
    opt, crit = torch.optim.AdamW(adapter.parameters(), lr=1e-4), SAM2Loss()

    def step() -> None:
        _, aux = adapter.segment(video, {"boxes": boxes}, [0], train=True)
        opt.zero_grad()
        sum(crit(aux, masks).values()).backward()
        opt.step()

    ms = time_ms(step, args.repeats)
    rows.append(("cpu_tiny", f"{count_parameters(adapter) / 1e6:.2f} M", f"{args.train_size}²",
                 "training (all params), 4 objects", f"{ms / 1e3:.2f} s/it", f"{args.frames} frames per clip"))
    header = ("config", "params", "size", "what", "speed", "note")
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        for r in (header, *rows):
            print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
