"""Inference over evaluation datasets: model.predict on every test clip, evaluator per dataset."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import torch

from core import comm
from core.catalog import DatasetCatalog, MetadataCatalog
from core.registry import EVALUATORS, build
from core.structures import to_device
from data_schedule.build import build_test_loader

logger = logging.getLogger(__name__)


def autocast_context(device: torch.device, amp_cfg) -> contextlib.AbstractContextManager:
    """fp16/bf16 autocast on CUDA when enabled; bf16 on CPU only when ``cpu_bf16`` is set."""
    if device.type == "cuda" and amp_cfg.enabled:
        return torch.autocast("cuda", dtype=getattr(torch, amp_cfg.dtype))
    if device.type == "cpu" and amp_cfg.get("cpu_bf16", False):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def inference_on_dataset(model: torch.nn.Module, loader, evaluator, device: torch.device, amp_cfg) -> dict:
    was_training = model.training
    model.eval()
    evaluator.reset()
    try:
        for batch in loader:
            batch = to_device(batch, device)
            with autocast_context(device, amp_cfg):
                outputs = model.predict(batch)
            evaluator.process(batch, {k: (v.float() if torch.is_tensor(v) else v) for k, v in outputs.items()})
        return evaluator.evaluate()
    finally:
        model.train(was_training)


def evaluate_all(model: torch.nn.Module, cfg, eval_root: str | Path, device: torch.device,
                 extra_info: dict | None = None) -> dict[str, dict]:
    """Evaluate on every dataset of ``cfg.data.evaluate``; writes ``<eval_root>/<dataset>/metrics.json``.

    Returns {dataset: {metric: value}} (identical on every rank after the evaluator's gather).
    """
    results = {}
    for name in cfg.data.evaluate:
        loader = build_test_loader(name, cfg.data.eval_mapper, cfg.data.eval_batch_size, cfg.data.num_workers)
        out_dir = Path(eval_root) / name
        metas = DatasetCatalog.get(name)
        evaluator = build(EVALUATORS, cfg.data.evaluator, dataset_name=name,
                          class_names=MetadataCatalog.get(name).classes,
                          colors=getattr(MetadataCatalog.get(name), "colors", None), output_dir=out_dir,
                          num_samples=len(metas),
                          vis_ids=first_sample_per_video(metas, cfg.data.evaluator.get("num_vis", 3)))
        res = comm.broadcast_object(inference_on_dataset(model, loader, evaluator, device, cfg.train.amp))
        results[name] = res
        if extra_info and comm.is_main_process() and (out_dir / "metrics.json").exists():
            _annotate(out_dir / "metrics.json", extra_info)
        summary = "  ".join(f"{k} {v:.4f}" for k, v in res.items() if k.startswith(("mDice", "mIoU", "Dice_")))
        logger.info(f"[eval {name}] {summary}  (num_samples {res.get('num_samples')})")
    return results


def first_sample_per_video(metas: list[dict], n: int) -> list[int]:
    """Sample ids of the first sample of each of the first ``n`` videos (overlays show different videos)."""
    seen: dict[str, int] = {}
    for m in metas:
        if len(seen) >= n:
            break
        seen.setdefault(m["video_id"], m["sample_id"])
    return list(seen.values())


def _annotate(path: Path, info: dict) -> None:
    data = json.loads(path.read_text())
    data.update(info)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
