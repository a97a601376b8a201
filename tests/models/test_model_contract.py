"""Every model registered in ``MODELS`` follows the model protocol (models/base.py), as timm runs one test over
``list_models()``: built at its CPU config it is a ``MetaArch``; one forward gives finite named losses whose
backward reaches trainable parameters only; ``predict`` gives probabilities B×T×K×H×W in [0, 1] (boxes and scores
in their shapes); what it ``requires`` from the data is used (removing a required field changes the losses, and
``check_batch`` names it); its hooks, parameter sets and video API are well formed. A new model needs an entry in
``CPU_CONFIGS``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import models  # noqa: F401  (registers the meta-architectures)
from core.config import load_config
from core.errors import ConfigError
from core.registry import HOOKS, MODELS, build
from models.base import REQUIREMENTS, MetaArch, check_batch
from tests.models.test_lgrnet import TINY, _batch
from trainers.hooks import HookBase
from trainers.video_inference import predict_with_video_api

REPO = Path(__file__).resolve().parents[2]
# name -> (config file, model overrides that make it CPU-sized)
CPU_CONFIGS = {
    "UNetBaseline": ("configs/cardiac/unet_tiny.py", dict(decoder_channels=[16, 16, 8, 8, 8], norm="group")),
    "LGRNet": ("configs/cardiac/lgrnet_tiny.py", dict(TINY, backbone=dict(norm="group"))),
    "LGSD": ("configs/cardiac/lgrnet_tiny_lgsd.py",
             dict(TINY, backbone=dict(norm="group"), lgsd=dict(out_dim=32, hidden_dim=32, bottleneck_dim=16))),
    "BoxSAM2": ("configs/cardiac/box_sam2_tiny.py",
                dict(box_head=dict(dim=32, num_heads=2), sam2=dict(config="cpu_tiny", image_size=64))),
    "SAM2": ("configs/cardiac/sam2_tiny.py", dict(sam2=dict(config="cpu_tiny", image_size=64))),
    "SAMURAI": ("configs/cardiac/samurai_tiny.py", dict(sam2=dict(config="cpu_tiny", image_size=64))),
    "SAM2InContext": ("configs/ct_synth/sam2_incontext_tiny.py", dict(sam2=dict(config="cpu_tiny", image_size=64))),
    "UniverSeg": ("configs/ct_synth/universeg_tiny.py", dict(encoder=[8, 8, 8], decoder=[8, 8])),
    "ARSeg": ("configs/cardiac/arseg_tiny.py", dict(dim=32, depth=2, heads=2, stem=[8, 8, 8], tokenizer=dict(grid=4),
                                                    refiner=dict(channels=8))),
}
B, T, SIZE = 2, 3, 64


def _fields(k: int) -> dict:
    """Generic stand-ins for the optional batch fields (core/structures.py)."""
    g = torch.Generator().manual_seed(1)
    return {"unlabeled": {"global": torch.rand(B, 2, T, 3, SIZE, SIZE, generator=g),
                          "local": torch.rand(B, 2, T, 3, SIZE // 2, SIZE // 2, generator=g)},
            "support": {"images": torch.rand(B, 2, 3, SIZE, SIZE, generator=g),
                        "masks": torch.rand(B, 2, k, SIZE, SIZE, generator=g) > 0.5,
                        "classes": torch.zeros(B, 2, dtype=torch.long)},
            "prompts": {"boxes": torch.tensor([4.0, 4.0, 40.0, 40.0]).expand(B, T, k, 4).clone(),
                        "frames": torch.ones(B, T, dtype=torch.bool)}}


def _build(name: str) -> tuple[MetaArch, int]:
    if name not in CPU_CONFIGS:
        pytest.fail(f"model {name!r} is registered but has no CPU config: add it to CPU_CONFIGS in {__file__}")
    path, over = CPU_CONFIGS[name]
    cfg = OmegaConf.merge(OmegaConf.to_container(load_config(REPO / path).model), OmegaConf.create(over))
    assert cfg.name == name
    torch.manual_seed(0)
    return build(MODELS, cfg), int(cfg.num_classes)


@pytest.mark.parametrize("name", MODELS.names())
def test_registered_model_follows_the_protocol(name):
    model, k = _build(name)
    assert isinstance(model, MetaArch), f"{name} must derive from models.base.MetaArch"
    assert model.requires <= REQUIREMENTS and isinstance(model.trains, bool)
    batch = {**_batch(b=B, t=T, size=SIZE, k=k),
             **{f: v for f, v in _fields(k).items() if f in model.requires}}
    check_batch(model, batch, training=True)

    # parameter sets: trainable and frozen are disjoint parts of the model's state
    names = dict(model.named_parameters())
    trainable = dict(model.trainable_parameters())
    frozen = model.frozen_state_keys()
    assert set(trainable) <= set(names) and not set(trainable) & frozen
    assert frozen <= set(model.state_dict())
    assert isinstance(model.inference_model(), torch.nn.Module)
    for h in model.hooks():
        assert isinstance(h, HookBase) or h["name"] in HOOKS.names(), h

    if model.trains:
        model.train()
        losses = model(batch)
        assert losses and all(key.startswith("loss") for key in losses), sorted(losses)
        assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values()), losses
        sum(losses.values()).backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable.values())
        assert all(p.grad is None for n, p in names.items() if n not in trainable)  # frozen: never a gradient
        # each declared requirement is used: without it the losses change (or the model refuses)
        for field in model.requires:
            without = {f: v for f, v in batch.items() if f != field}
            with pytest.raises(ConfigError, match=field):
                check_batch(model, without, training=True)
            torch.manual_seed(0)
            try:
                other = model(without)
            except Exception:
                continue
            assert set(other) != set(losses) or any(not torch.equal(other[n], losses[n]) for n in losses), field

    model.eval()
    out = model.predict(batch)
    probs = out["probs"]
    assert probs.shape == (B, T, k, SIZE, SIZE) and probs.is_floating_point()
    assert torch.isfinite(probs).all() and probs.min() >= 0 and probs.max() <= 1
    if "boxes" in out:
        assert out["boxes"].shape == (B, T, k, 4)
    if "scores" in out:
        assert out["scores"].shape == (B, T, k)
    if model.has_video_api:  # prompted by the caller (every frame, a box per class)
        prompted = {**batch, "prompts": _fields(k)["prompts"]}
        assert predict_with_video_api(model, prompted)["probs"].shape == probs.shape


def test_the_protocol_refuses_unknown_requirements_and_models_outside_it():
    with pytest.raises(TypeError, match=r"requires: unknown requirement\(s\) \['labels'\]"):
        type("Bad", (MetaArch,), {"requires": {"labels", "prompts"}})
    from trainers.train_loop import build_model

    class Plain(torch.nn.Module):
        def __init__(self, num_classes: int = 4):
            super().__init__()

    MODELS.register(Plain)
    try:
        cfg = OmegaConf.create({"model": {"name": "Plain"}})
        with pytest.raises(ConfigError, match="not a models.base.MetaArch"):
            build_model(cfg, torch.device("cpu"))
    finally:
        MODELS._obj_map.pop("Plain")
