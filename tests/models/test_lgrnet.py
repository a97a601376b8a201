"""LGRNet: shapes, the scan block follows its curve, the original quirks are not reproduced, and a short
overfit-one-clip run drives the loss down."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from core.config import load_config
from core.registry import MODELS, build
from models.decoders.mask2former_video import VideoMask2FormerDecoder
from models.encoders.hilbert_scan import HilbertSelectiveScan
from models.ops.hilbert import curve_order

REPO = Path(__file__).resolve().parents[2]
TINY = dict(d_model=32,
            encoder=dict(num_layers=1, n_heads=4, ffn_dim=64, num_queries=4,
                         scan=dict(num_layers=1, ffn_dim=64, d_inner=32, d_state=8, dt_rank=2)),
            decoder=dict(num_queries=6, n_heads=4, ffn_dim=64, num_layers=3),
            loss=dict(num_points=256, matcher=dict(num_points=256)))


def _model(**over) -> torch.nn.Module:
    cfg = load_config(REPO / "configs/cardiac/lgrnet_tiny.py").model
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(cfg, OmegaConf.create(TINY), OmegaConf.create(over))  # nested dicts merge
    return build(MODELS, merged)


def _batch(b=2, t=4, size=64, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(b, t, 3, size, size, generator=g)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = torch.zeros(b, t, k, size, size, dtype=torch.bool)  # B×T×K×H×W
    for c in range(k):  # four quadrants, one class each, brighter in the image
        sel = ((yy < size // 2) == (c < 2)) & ((xx < size // 2) == (c % 2 == 0))
        masks[:, :, c, sel] = True
        video[:, :, :, sel] = video[:, :, :, sel] * 0.3 + 0.2 * c
    has_ann = torch.zeros(b, t, dtype=torch.bool)
    has_ann[:, t // 2] = True
    masks[~has_ann] = False
    return {"video": video, "masks": masks, "has_ann": has_ann}


def test_forward_returns_weighted_named_losses_and_predict_gives_class_probabilities():
    torch.manual_seed(0)
    model = _model()
    batch = _batch()
    losses = model(batch)
    assert {"loss_class", "loss_mask_bce", "loss_mask_dice"} <= set(losses)
    assert sum(k.startswith("loss_class") for k in losses) == 4  # final + 3 auxiliary (before and between layers)
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    probs = model.predict(batch)["probs"]
    assert probs.shape == (2, 4, 4, 64, 64)
    assert probs.min() >= 0 and probs.max() <= 1


def test_predict_is_independent_of_other_clips_in_the_batch():
    torch.manual_seed(0)
    model = _model(backbone=dict(norm="group")).eval()
    batch = _batch(b=2)
    both = model.predict(batch)["probs"]
    one = model.predict({k: v[1:] for k, v in batch.items()})["probs"]
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=1e-4)


def test_overfitting_one_clip_drives_the_loss_down():
    torch.manual_seed(0)
    model = _model(backbone=dict(norm="group"))
    batch = _batch(b=1, t=3, size=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    totals = []
    for _ in range(40):
        loss = sum(model(batch).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        totals.append(loss.item())
    assert sum(totals[-5:]) / 5 < 0.5 * sum(totals[:3]) / 3, totals


def test_scan_block_follows_its_curve_order():
    """With one direction and an identity depthwise conv, output cell k on the curve depends only on cells <= k."""
    torch.manual_seed(0)
    t, q = 5, 6
    block = HilbertSelectiveScan(16, d_inner=8, d_state=4, dt_rank=2, directions=1, scan_order="hilbert")
    with torch.no_grad():
        block.conv.weight.zero_()
        block.conv.weight[:, 0, 1, 1] = 1.0
        block.conv.bias.zero_()
    x = torch.randn(1, t, q, 16)
    perm = curve_order((t, q), "hilbert")
    k = 13
    x2 = x.clone()
    cell = perm[k].item()
    x2[0, cell // q, cell % q] += 1.0
    d = (block(x2) - block(x)).abs().sum(-1).flatten()[perm]  # change per curve position
    assert d[:k].max() == 0 and d[k:].min() > 0
    block2 = HilbertSelectiveScan(16, d_inner=8, d_state=4, dt_rank=2, directions=2)
    with torch.no_grad():
        block2.conv.weight.zero_()
        block2.conv.weight[:, 0, 1, 1] = 1.0
    d2 = (block2(x2) - block2(x)).abs().sum(-1).flatten()
    assert d2.min() > 0  # forward + backward scan: every cell sees the change


def test_scan_orientation_stays_query_major_when_the_clip_outgrows_the_queries():
    """As the original (n_q always the curve's major axis): 7-frame training and 11-frame evaluation clips with 10
    queries are walked alike (the default major axis, the longer side, would turn the curve at T > n_q)."""
    block = HilbertSelectiveScan(16, d_inner=8, d_state=4, dt_rank=2)
    q = 10
    for t in (3, 7, 10, 11, 16):
        order = block.visit_order(t, q)
        assert sorted(order.tolist()) == list(range(t * q))
        first, last = divmod(order[0].item(), q), divmod(order[-1].item(), q)
        assert first == (0, 0) and last == (0, q - 1), t  # an x (query) major curve ends at the far query
    assert torch.equal(block.visit_order(7, q), curve_order((7, q), "hilbert"))  # training clips: unchanged
    assert not torch.equal(block.visit_order(11, q), curve_order((11, q), "hilbert"))


def test_encoder_xavier_init_keeps_the_scan_initialisation():
    """The original code's global xavier init overwrote A_log, dt bias and the projections (REFERENCE.md 3.8.4)."""
    torch.manual_seed(0)
    model = _model()
    scan = next(m for m in model.modules() if isinstance(m, HilbertSelectiveScan))
    n = scan.d_state
    torch.testing.assert_close(scan.A_logs.data, torch.log(torch.arange(1, n + 1.0)).expand_as(scan.A_logs))
    torch.testing.assert_close(scan.Ds.data, torch.ones_like(scan.Ds))
    dt = torch.nn.functional.softplus(scan.dt_projs_bias.data)
    assert dt.min() >= 1e-4 - 1e-9 and dt.max() <= 0.1 + 1e-6
    bound = scan.dt_rank ** -0.5
    assert scan.dt_projs_weight.abs().max() <= bound + 1e-6


def test_decoder_attention_mask_thresholds_the_sigmoid_and_unmasks_empty_rows():
    dec = VideoMask2FormerDecoder(d_model=8, num_classes=4, num_queries=2, n_heads=2)
    mask_features = torch.zeros(1, 1, 8, 4, 4)
    queries = torch.zeros(1, 2, 8)
    with torch.no_grad():
        for lin in dec.mask_embed.layers:
            lin.weight.zero_()
            lin.bias.zero_()
        dec.mask_embed.layers[-1].bias[0] = 0.3  # logit 0.3 everywhere: sigmoid 0.57 -> attended
    mask_features[0, 0, 0] = 1.0
    _, masks, attn = dec._predict(queries, mask_features, (4, 4))
    torch.testing.assert_close(masks, torch.full_like(masks, 0.3))
    assert not attn.any()  # the original's "logit < 0.5" would have masked every position
    with torch.no_grad():
        dec.mask_embed.layers[-1].bias[0] = -5.0  # predicts nothing: the row is left unmasked, not all -inf
    _, _, attn = dec._predict(queries, mask_features, (4, 4))
    assert not attn.any()


@pytest.mark.parametrize("path", sorted((REPO / "configs/cardiac").glob("lgrnet*.py"))
                         + sorted((REPO / "configs/cardiac/lgrnet_ablations").glob("*.py")), ids=lambda p: p.stem)
def test_every_lgrnet_config_loads(path):
    cfg = load_config(path)
    assert cfg.model.name == ("LGSD" if "lgsd" in path.stem else "LGRNet")  # LGSD wraps an LGRNet student


def test_ablation_switches_remove_their_modules():
    from models.encoders.local_global import LocalGlobalLayer

    no_cnp = _model(encoder=dict(use_cnp=False))
    no_scan = _model(encoder=dict(use_scan=False))
    layer = next(m for m in no_cnp.modules() if isinstance(m, LocalGlobalLayer))
    assert layer.cnp is None and layer.scan is not None
    layer = next(m for m in no_scan.modules() if isinstance(m, LocalGlobalLayer))
    assert layer.scan is None and layer.condense is None and layer.cnp is not None
    full, part = sum(p.numel() for p in _model().parameters()), sum(p.numel() for p in no_scan.parameters())
    assert part < full
    assert math.isfinite(sum(no_scan(_batch()).values()).item())


def test_mask_stride_2_predicts_masks_at_half_resolution_and_trains():
    torch.manual_seed(0)
    model = _model(mask_stride=2)
    assert "res1" in model.backbone.channels
    batch = _batch(b=1, t=3, size=64)
    outputs, _ = model._run(batch["video"])
    assert outputs["pred_masks"].shape[-2:] == (32, 32)  # stride 4 would give 16×16
    assert math.isfinite(sum(model(batch).values()).item())
    assert model.eval().predict(batch)["probs"].shape == (1, 3, 4, 64, 64)
    with pytest.raises(ValueError, match="mask_stride"):
        _model(mask_stride=8)


def test_lgrnet_tiny_pads_small_maps_as_the_original_and_old_configs_keep_clamp():
    from omegaconf import OmegaConf

    from models.ops.cnp import CyclicNeighbourhoodPropagation

    cfg = load_config(REPO / "configs/cardiac/lgrnet_tiny.py").model
    model = build(MODELS, cfg)
    cnps = [m for m in model.modules() if isinstance(m, CyclicNeighbourhoodPropagation)]
    assert cnps and all(m.small_maps == "pad" for m in cnps)
    # a checkpoint's stored config from before the switch has no small_maps: it builds with the code default
    old = OmegaConf.to_container(cfg)
    del old["encoder"]["cnp"]["small_maps"]
    assert all(m.small_maps == "clamp" for m in build(MODELS, OmegaConf.create(old)).modules()
               if isinstance(m, CyclicNeighbourhoodPropagation))
