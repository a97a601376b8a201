"""configs/sunseg/lgrnet_pvt_v2_b2.py, the paper's SUN-SEG setup: it builds on CPU (random weights, nothing
trained) and models/complexity.py counts its parameters and FLOPs. The count runs on a 2-frame clip at 352² (about
5 s here, against about 20 s for the full 6-frame clip, whose per-frame count agrees to 0.03 %)."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.registry import MODELS, build
from models.complexity import count_flops, count_params

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "sunseg" / "lgrnet_pvt_v2_b2.py"


def test_sunseg_pvt_config_builds_and_its_flops_are_counted():
    cfg = load_config(CONFIG)
    assert cfg.model.backbone.model == "pvt_v2_b2" and cfg.model.num_classes == 1 and cfg.model.d_model == 64
    assert (cfg.model.encoder.num_layers, cfg.model.encoder.num_queries, cfg.model.decoder.num_queries) == (3, 20, 10)
    for mapper in (cfg.data.train_mapper, cfg.data.eval_mapper):
        assert mapper.clip_len == 6 and list(mapper.size) == [352, 352]  # T = 6 at 352² (REFERENCE §3.6)
    assert list(cfg.data.train) == ["sunseg_train"] and len(cfg.data.evaluate) == 4

    importlib.import_module("models")  # registers the meta-architectures
    torch.manual_seed(0)
    model = build(MODELS, cfg.model)
    assert count_params(model)["params"] / 1e6 == pytest.approx(27.66, rel=5e-3)  # measured: 27,655,458
    t = 2
    gflops = count_flops(model, t, (352, 352), torch.device("cpu"))
    assert gflops is not None
    assert gflops / t == pytest.approx(12.58, rel=0.02)  # measured per frame: 12.58 (T = 2 and T = 6 alike)
