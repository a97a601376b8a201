"""Inference over evaluation datasets: model.predict on every test clip (or, for whole videos and a model with the
stateful video API, ``init_video`` / ``add_prompts`` / ``propagate``), evaluator per dataset."""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from core import comm
from core.catalog import DatasetCatalog, MetadataCatalog
from core.errors import ConfigError
from core.registry import EVALUATORS, build, did_you_mean
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
def inference_on_dataset(model: torch.nn.Module, loader, evaluators: list, device: torch.device, amp_cfg,
                         window: dict | None = None, video_api: bool = False) -> dict:
    """Run the model on every batch and feed every evaluator; returns their merged results (a metric two
    evaluators both report is an error). The model runs ``predict`` (in temporal windows when ``window =
    dict(size=, overlap=)``), or, with ``video_api`` and a model that has it (``MetaArch.has_video_api``), its
    stateful video API (:func:`trainers.video_inference.predict_with_video_api`) for batches that carry
    ``prompts`` or when the model requires them (otherwise ``predict``: SAM2 and SAMURAI prompt themselves from
    the ground truth). A model's evaluation requirements (``support``, ``prompts``) are checked on every batch."""
    from models.base import MetaArch, check_batch
    from trainers.video_inference import predict_in_windows, predict_with_video_api

    protocol = isinstance(model, MetaArch)
    video_api = video_api and protocol and model.has_video_api

    evaluators = evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]
    was_training = model.training
    model.eval()
    for ev in evaluators:
        ev.reset()
    try:
        for batch in loader:
            batch = to_device(batch, device)
            if protocol:
                check_batch(model, batch, training=False)
            with autocast_context(device, amp_cfg):
                if video_api and ("prompts" in batch or "prompts" in model.requires):
                    outputs = predict_with_video_api(model, batch)
                elif window:
                    outputs = predict_in_windows(model, batch, int(window["size"]), int(window.get("overlap", 0)))
                else:
                    outputs = model.predict(batch)
            outputs = {k: (v.float() if torch.is_tensor(v) else v) for k, v in outputs.items()}
            for ev in evaluators:
                ev.process(batch, outputs)
        merged: dict = {}
        for ev in evaluators:
            res = ev.evaluate()
            clash = sorted(set(res) & set(merged) - {"num_samples"})
            if clash:
                raise ConfigError(f"evaluators {[type(e).__name__ for e in evaluators]} both report {clash}")
            merged.update(res)
        return merged
    finally:
        model.train(was_training)


ENTRY_KEYS = ("name", "tag", "mapper", "evaluator", "per_video", "window")


def eval_entries(data_cfg) -> list[dict]:
    """``data.evaluate`` as a list of entries. An entry is a dataset name (the defaults ``data.eval_mapper`` and
    ``data.evaluator``) or ``dict(name=..., tag=..., mapper=..., evaluator=..., per_video=..., window=...)``:

    - ``tag``: the results' name and output folder (default: the dataset name); two entries on one dataset need
      different tags;
    - ``evaluator``: one evaluator dict or a list of them (all see the same predictions; results merged);
    - ``per_video=True``: one sample per video (its samples' frames become its ``scored_frames``), for the
      whole-video protocol (``mapper=dict(name="VideoEvalMapper", ...)``), one video per batch; a model with the
      stateful video API (``MetaArch.has_video_api``) runs it there instead of ``predict``;
    - ``window=dict(size=16, overlap=4)``: run the model in temporal windows of that many frames (models without
      the video API).
    """
    out = []
    for i, e in enumerate(data_cfg.evaluate):
        if isinstance(e, str):
            e = {"name": e}
        else:
            e = OmegaConf.to_container(e, resolve=True) if OmegaConf.is_config(e) else dict(e)
            unknown = [k for k in e if k not in ENTRY_KEYS]
            if unknown:
                raise ConfigError(f"data.evaluate[{i}]: unknown key {unknown[0]!r}; "
                                  f"{did_you_mean(unknown[0], ENTRY_KEYS)}")
            if "name" not in e:
                raise ConfigError(f"data.evaluate[{i}]: an entry needs a dataset 'name', got {e}")
        mapper = e.get("mapper") or data_cfg.eval_mapper
        evaluator = e.get("evaluator") or data_cfg.evaluator
        out.append(dict(name=e["name"], tag=e.get("tag") or e["name"],
                        mapper=OmegaConf.to_container(mapper) if OmegaConf.is_config(mapper) else mapper,
                        evaluators=[OmegaConf.to_container(v) if OmegaConf.is_config(v) else v
                                    for v in (evaluator if isinstance(evaluator, (list, tuple)) or
                                              OmegaConf.is_list(evaluator) else [evaluator])],
                        per_video=bool(e.get("per_video", False)), window=e.get("window")))
    tags = [e["tag"] for e in out]
    dup = sorted({t for t in tags if tags.count(t) > 1})
    if dup:
        raise ConfigError(f"data.evaluate: {dup} appear more than once; give the entries different 'tag's")
    return out


def per_video_metas(metas: list[dict]) -> list[dict]:
    """One meta per video (the first of its samples), its samples' reference frames as ``scored_frames``,
    sample ids renumbered 0..V-1 in order of first appearance."""
    videos: dict[str, dict] = {}
    for m in metas:
        v = videos.setdefault(m["video_id"], {**m, "scored_frames": []})
        v["scored_frames"].append(int(m["frame_idx"]))
    return [{**v, "sample_id": i} for i, v in enumerate(videos.values())]


def evaluate_all(model: torch.nn.Module, cfg, eval_root: str | Path, device: torch.device,
                 extra_info: dict | None = None) -> dict[str, dict]:
    """Evaluate every entry of ``cfg.data.evaluate`` (see :func:`eval_entries`); writes
    ``<eval_root>/<tag>/metrics.json`` (and each evaluator's files).

    Returns {tag: {metric: value}} (identical on every rank after the evaluators' gather).
    """
    results = {}
    for entry in eval_entries(cfg.data):
        name, tag = entry["name"], entry["tag"]
        metas = DatasetCatalog.get(name)
        if entry["per_video"]:
            metas = per_video_metas(metas)
        # whole videos differ in length: one per batch (collate stacks equal shapes only)
        batch_size = 1 if entry["per_video"] else cfg.data.eval_batch_size
        loader = build_test_loader(name, entry["mapper"], batch_size, cfg.data.num_workers, metas=metas)
        out_dir = Path(eval_root) / tag
        meta = MetadataCatalog.get(name)
        num_vis = (entry["evaluators"][0] or {}).get("num_vis", 3)
        evaluators = [build(EVALUATORS, ev_cfg, key=f"data.evaluate[{tag}].evaluator", dataset_name=name,
                            class_names=meta.classes, colors=getattr(meta, "colors", None),
                            output_dir=out_dir, num_samples=len(metas),
                            vis_ids=first_sample_per_video(metas, num_vis))
                      for ev_cfg in entry["evaluators"]]
        res = comm.broadcast_object(inference_on_dataset(model, loader, evaluators, device, cfg.train.amp,
                                                         entry["window"], video_api=entry["per_video"]))
        results[tag] = res
        if comm.is_main_process() and (out_dir / "metrics.json").exists():
            first = set(evaluators[0].results) if hasattr(evaluators[0], "results") else set()
            others = {k: v for k, v in res.items() if k not in first}  # what the other evaluators report
            if extra_info or others:
                _annotate(out_dir / "metrics.json", {**others, **(extra_info or {})})
        summary = "  ".join(f"{k} {v:.4f}" for k, v in res.items() if k.startswith(("mDice", "mIoU", "Dice_")))
        logger.info(f"[eval {tag}] {summary}  (num_samples {res.get('num_samples')})")
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
