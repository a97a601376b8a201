"""SAM2InContext (seed 001) and the in-context memory selectors: the selectors' choices on known histories, the
``recent`` selector and a recency-only ``score`` reproducing SAM2's own memory rule bit for bit, support handling
(only the class's own support slices matter, ``max_support``), the single-class loss, and a selector that changes
the memories changing the output."""
from __future__ import annotations

import math

import pytest
import torch

import models  # noqa: F401
from core.errors import ConfigError
from core.registry import MEMORY_SELECTORS, MODELS, build

SIZE, K = 64, 2


def _model(selector=None, **kw):
    torch.manual_seed(0)
    m = build(MODELS, dict(name="SAM2InContext", num_classes=K, memory_selector=selector,
                           sam2=dict(config="cpu_tiny", image_size=SIZE, overrides={"model.num_maskmem": 4}), **kw))
    return m.eval()


def _batch(t=9, s=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(1, t, K, SIZE, SIZE, dtype=torch.bool)
    masks[..., 10:30, 12:34] = True
    smasks = torch.zeros(1, K * s, K, SIZE, SIZE, dtype=torch.bool)
    smasks[..., 8:28, 10:30] = True
    return dict(video=torch.rand(1, t, 3, SIZE, SIZE, generator=g), masks=masks,
                has_ann=torch.ones(1, t, dtype=torch.bool),
                support=dict(images=torch.rand(1, K * s, 3, SIZE, SIZE, generator=g), masks=smasks,
                             classes=torch.tensor([[c for c in range(K) for _ in range(s)]])))


def _out(iou=0.9, obj=2.0, logit=5.0, emb=(1.0, 0.0)):
    lo = torch.full((1, 1, 4, 4), -5.0)
    lo[..., :2, :2] = logit
    return {"best_iou": torch.tensor([iou]), "object_score_logits": torch.tensor([[obj]]), "pred_masks": lo,
            "pred_masks_high_res": lo.repeat_interleave(4, -1).repeat_interleave(4, -2),
            "image_embed": torch.tensor([list(emb)])}


def test_score_selector_terms_and_choice():
    sel = build(MEMORY_SELECTORS, dict(name="score", recency_weight=0.0))
    history = [(9, _out(iou=0.2)), (8, _out(iou=0.9)), (7, _out(iou=0.95)), (6, _out(iou=0.1, obj=-3.0))]
    assert sel.select(10, history, 1, 2) == [[8, 7]]  # the two best, nearest first
    t = sel.terms(0, _out(iou=0.5, obj=0.0, logit=math.log(3)), 0)  # p = 0.75 on the foreground: 2p - 1 = 0.5
    assert t == pytest.approx({"iou_weight": 0.5, "object_weight": 0.5, "confidence_weight": 0.5,
                               "recency_weight": 1.0})
    assert sel.counts == {"choices": 1, "differs": 1}
    recency_only = build(MEMORY_SELECTORS, dict(name="score", iou_weight=0, object_weight=0, confidence_weight=0))
    assert recency_only.select(10, history, 1, 3) == [[9, 8, 7]]
    with pytest.raises(ConfigError, match="weights must be >= 0 and not all 0"):
        build(MEMORY_SELECTORS, dict(name="score", iou_weight=0, object_weight=0, confidence_weight=0,
                                     recency_weight=0))


def test_similarity_and_oracle_selectors():
    sim = build(MEMORY_SELECTORS, dict(name="similarity"))
    history = [(5, _out(emb=(0.0, 1.0))), (4, _out(emb=(1.0, 0.1))), (3, _out(emb=(-1.0, 0.0)))]
    assert sim.select(6, history, 1, 1, current=torch.tensor([[1.0, 0.0]])) == [[4]]
    with pytest.raises(ValueError, match="current frame's embedding"):
        sim.select(6, history, 1, 1)
    ora = build(MEMORY_SELECTORS, dict(name="oracle"))
    targets = torch.zeros(7, 1, 16, 16, dtype=torch.bool)
    targets[4, 0, :8, :8] = True        # frame 4's prediction (the top-left 8×8 corner) is exactly right
    targets[5, 0, 8:, 8:] = True        # frame 5's is wrong
    ora.targets = targets
    assert ora.select(6, history, 1, 1) == [[4]]
    ora.targets = None
    with pytest.raises(ValueError, match="no targets"):
        ora.select(6, history, 1, 1)


def test_recent_and_recency_score_reproduce_sam2():
    batch = _batch()
    ref = _model(None).predict(batch)["probs"]
    for sel in (dict(name="recent"), dict(name="score", iou_weight=0, object_weight=0, confidence_weight=0)):
        assert torch.equal(_model(sel).predict(batch)["probs"], ref)


def _logits(m, batch, c=0):
    images, smasks = m._support_of(batch["support"], 0, c)
    with torch.no_grad():
        _, aux = m._segment(images, smasks, batch["video"][0], train=False, targets=batch["masks"][0][:, c:c + 1])
    return torch.cat([aux["object_score_logits"].flatten(), torch.cat([i.flatten() for i in aux["ious"]])])  # masks: all empty


def test_selectors_change_memories_and_oracle_clears_targets():
    batch = _batch(t=10)
    batch["masks"][:, :5] = False  # early slices empty: the oracle prefers them (a random model predicts nothing)
    ref = _logits(_model(None), batch)
    for name in ("oracle", "similarity"):
        m = _model(dict(name=name))
        logits = _logits(m, batch)
        sel = m.sam2.model.memory_selector
        assert sel.counts["choices"] > 0 and logits.shape == ref.shape
        assert sel.counts["differs"] > 0  # 10 query slices, 3 slots: some choices differ from the nearest ones
        assert not torch.equal(logits, ref)
        assert getattr(sel, "targets", None) is None
        assert m.predict(batch)["probs"].shape == (1, 10, K, SIZE, SIZE)


def test_support_per_class_and_max_support():
    m = _model(None)
    batch = _batch()
    other = _batch()
    other["support"]["images"][0, :2] = 0.5  # class 0's support slices changed, class 1's kept
    assert torch.equal(_logits(m, other, 1), _logits(m, batch, 1))
    assert not torch.equal(_logits(m, other, 0), _logits(m, batch, 0))
    none = _batch()
    none["support"]["classes"][:] = 0  # no support for class 1: probability 0
    assert m.predict(none)["probs"][:, :, 1].abs().sum() == 0
    one = _model(None, max_support=1)
    assert one._support_of(batch["support"], 0, 1)[0].shape[0] == 1
    assert _model(None, max_support=2)._support_of(batch["support"], 0, 1)[0].shape[0] == 2
    with pytest.raises(ConfigError, match="needs batch\\['support'\\]"):
        m.predict({k: v for k, v in batch.items() if k != "support"})


def test_single_class_loss_and_gradients():
    m = _model(None).train()
    batch = _batch(t=4)
    batch["support"]["classes"][:] = 1  # the training mapper draws every slice for one class
    losses = m(batch)
    assert set(losses) == {"loss_mask", "loss_dice", "loss_iou", "loss_class"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    # class 0's query masks do not enter the loss of a class-1 sample
    changed = {**batch, "masks": batch["masks"].clone()}
    changed["masks"][:, :, 0] = False
    torch.manual_seed(0)
    again = _model(None).train()(changed)
    torch.manual_seed(0)
    first = _model(None).train()(batch)
    assert all(torch.equal(again[k], first[k]) for k in first)
