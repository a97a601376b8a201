#!/usr/bin/env python
"""How much LGSD's view embeddings (pooled frame queries) differ between clips and between views of one clip.

    python benchmarks/lgsd_feature_spread.py output/ablation/basic_seed0 [--clips 16]
    python benchmarks/lgsd_feature_spread.py output/ablation/lgsd_seed0 --head

Loads ``<run>/checkpoints/model_final.pth`` (LGRNet, or LGSD's student), draws the views of
``configs/cardiac/lgrnet_tiny_lgsd.py`` (2 global, 2 local) of ``--clips`` unlabelled clips spread over echo_synth_random_unlabeled and prints the mean cosine
similarity of the features LGSD's head sees: two global views of one clip, a global and a local view of one
clip, and global views of different clips, plus the across-clip spread (|x − mean| / |x|). Cosines near 1
between different clips mean the features carry little clip identity for self-distillation to work with.

``--head`` (an LGSD run): how far the teacher head's running mean sits from the global views' mean (in their
standard deviations), and the teacher targets' logit spread, entropy and spread between clips, as trained and with
the global views' own batch statistics.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import data_schedule  # noqa: E402,F401  (registers mappers and datasets)
import models  # noqa: E402,F401
from omegaconf import OmegaConf  # noqa: E402

from core.catalog import DatasetCatalog  # noqa: E402
from core.checkpoint import load_checkpoint  # noqa: E402
from core.config import load_config  # noqa: E402
from core.registry import MAPPERS, MODELS, build  # noqa: E402
from data_schedule.build import collate  # noqa: E402


@torch.no_grad()
def spread(run: Path, clips: int) -> dict[str, float]:
    ckpt = load_checkpoint(run / "checkpoints" / "model_final.pth")
    model = build(MODELS, ckpt["config"]["model"]).eval()
    model.load_state_dict(ckpt["model"])
    net = getattr(model, "student", model)
    views = OmegaConf.to_container(load_config(REPO / "configs/cardiac/lgrnet_tiny_lgsd.py").data.unlabeled.mapper)
    mapper = build(MAPPERS, {**views, "num_local": 2})  # the +LGSD views, 2 local ones per clip
    metas = DatasetCatalog.get("echo_synth_random_unlabeled")
    picked = [metas[i] for i in range(0, len(metas), max(1, len(metas) // clips))][:clips]
    batch = collate([mapper(m, seed=i) for i, m in enumerate(picked)])

    def feats(views):  # (N, V, T, 3, H, W) -> (N, V, n_q·C), as LGSD pools them
        q = net.frame_queries(views.flatten(0, 1))
        return q.mean(1).flatten(1).unflatten(0, views.shape[:2])

    g, loc = feats(batch["global"]), feats(batch["local"])
    gn, ln = F.normalize(g, dim=-1), F.normalize(loc, dim=-1)
    cross = gn[:, 0] @ gn[:, 0].T
    off_diag = cross[~torch.eye(len(picked), dtype=torch.bool)]
    centred = g[:, 0] - g[:, 0].mean(0)
    return {"cos two global views, same clip": float((gn[:, 0] * gn[:, 1]).sum(-1).mean()),
            "cos global vs local view, same clip": float((gn[:, 0] * ln[:, 0]).sum(-1).mean()),
            "cos global views, different clips": float(off_diag.mean()),
            "across-clip spread |x - mean| / |x|": float(centred.norm(dim=-1).mean() / g[:, 0].norm(dim=-1).mean())}


@torch.no_grad()
def head_statistics(run: Path, clips: int) -> dict[str, float]:
    """For an LGSD run: how the eval-mode teacher head standardises the global views of ``clips`` clips, and
    what targets it gives. The running statistics are those of the student head's training batches (global and
    local views together, or per view group with ``head_norm_stats="per_view"``, which keeps none)."""
    ckpt = load_checkpoint(run / "checkpoints" / "model_final.pth")
    model = build(MODELS, ckpt["config"]["model"]).eval()
    model.load_state_dict(ckpt["model"])
    if not hasattr(model, "teacher_head"):
        raise SystemExit(f"{run} is not an LGSD run (no teacher head)")
    views = OmegaConf.to_container(load_config(REPO / "configs/cardiac/lgrnet_tiny_lgsd.py").data.unlabeled.mapper)
    mapper = build(MAPPERS, views)
    metas = DatasetCatalog.get("echo_synth_random_unlabeled")
    picked = [metas[i] for i in range(0, len(metas), max(1, len(metas) // clips))][:clips]
    batch = collate([mapper(m, seed=i) for i, m in enumerate(picked)])
    g = model._features(model.teacher, batch["global"])  # (N·G, D) or (N·G, n_q, C)
    flat = g.flatten(1)
    head, out = model.teacher_head, {}
    bn = head.input_norm
    if getattr(bn, "running_mean", None) is not None:
        offset = (bn.running_mean - flat.mean(0)) ** 2 / flat.var(0)
        out["running mean - global-view mean, in global-view SDs (median)"] = float(offset.median().sqrt())

    def targets(logits: torch.Tensor, name: str) -> None:
        q = ((logits - model.dino.center) / model.teacher_temp()).softmax(-1)
        ent = -(q * q.clamp_min(1e-12).log()).sum(-1)
        qm = q.mean(0)
        out[f"{name}: teacher logit SD across clips"] = float(logits.std(0).mean())
        out[f"{name}: target entropy (log K = {math.log(logits.shape[-1]):.3f})"] = float(ent.mean())
        out[f"{name}: target spread"] = float(-(qm * qm.clamp_min(1e-12).log()).sum(-1).mean() - ent.mean())

    model.set_progress(ckpt.get("iteration", 0), ckpt.get("iteration", 0))  # the final teacher temperature
    targets(head(g), "as trained")
    if getattr(bn, "running_mean", None) is not None:
        saved = {k: v.clone() for k, v in bn.state_dict().items()}
        head.train()
        targets(head(g), "batch statistics of the global views")
        head.eval()
        bn.load_state_dict(saved)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--head", action="store_true", help="an LGSD run: the teacher head's statistics and targets")
    args = ap.parse_args(argv)
    for k, v in (head_statistics if args.head else spread)(args.run, args.clips).items():
        print(f"{k}: {v:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
