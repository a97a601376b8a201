"""LGSD meta-architecture: distillation loss wiring (gradients reach the student only), EMA teacher under the
momentum schedule, teacher/student evaluation switch, config errors."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from core.config import load_config
from core.registry import MODELS, build
from tests.models.test_lgrnet import TINY, _batch

REPO = Path(__file__).resolve().parents[2]


def _lgsd(**lgsd) -> torch.nn.Module:
    cfg = load_config(REPO / "configs/cardiac/lgrnet_tiny_lgsd.py").model
    over = OmegaConf.create({**TINY, "backbone": {"norm": "group"}, "lgsd": {"out_dim": 32, "hidden_dim": 32,
                                                                             "bottleneck_dim": 16, **lgsd}})
    return build(MODELS, OmegaConf.merge(OmegaConf.to_container(cfg), over))


def _views(b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return {"global": torch.rand(b, 2, 3, 3, 64, 64, generator=g), "local": torch.rand(b, 3, 3, 3, 32, 32, generator=g)}


def test_distillation_loss_trains_the_student_and_head_only_and_moves_the_centre():
    torch.manual_seed(0)
    model = _lgsd(weight=0.5).train()
    assert not model.teacher.training and not model.teacher_head.training  # the teacher stays in eval mode
    batch = {**_batch(b=2, t=3), "unlabeled": _views()}
    losses = model(batch)
    assert {"loss_class", "loss_mask_dice", "loss_lgsd"} <= set(losses)
    # -log softmax(s / τ)_k ≤ log K + 2 / τ for logits in [-1, 1] (the head's unit-norm last layer)
    assert 0 < float(losses["loss_lgsd"].detach()) < 0.5 * (math.log(32) + 2 / 0.1)
    assert float(model.dino.center.abs().sum()) > 0  # centre updated in training
    losses["loss_lgsd"].backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is None for p in model.teacher_head.parameters())
    enc_grad = sum(float(p.grad.abs().sum()) for p in model.student.encoder.parameters() if p.grad is not None)
    head_grad = sum(float(p.grad.abs().sum()) for p in model.student_head.parameters() if p.grad is not None)
    assert enc_grad > 0 and head_grad > 0
    assert all(p.grad is None for p in model.student.decoder.parameters())  # queries do not need the decoder
    without = model({k: v for k, v in batch.items() if k != "unlabeled"})
    assert "loss_lgsd" not in without


def test_teacher_is_the_ema_of_the_student_under_the_momentum_schedule():
    model = _lgsd(momentum=0.9, momentum_final=1.0, teacher_temp=0.04, teacher_temp_final=0.07)
    for pt, ps in zip(model.teacher.parameters(), model.student.parameters()):
        assert torch.equal(pt, ps)  # starts as a copy
    before = [p.clone() for p in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    model.before_step(0, 10)
    assert model.momentum() == pytest.approx(0.9)
    model.after_optimizer_step()
    for b, pt, ps in zip(before, model.teacher.parameters(), model.student.parameters()):
        torch.testing.assert_close(pt, 0.9 * b + 0.1 * ps)
    model.before_step(5, 10)
    assert model.momentum() == pytest.approx(0.95)  # half-way along the cosine from 0.9 to 1
    model.before_step(10, 10)
    frozen = [p.clone() for p in model.teacher.parameters()]
    model.after_optimizer_step()  # momentum 1 at the end: the teacher no longer moves
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.teacher.parameters()))
    s = model.schedule_scalars()
    assert s["lgsd_momentum"] == 1.0 and s["lgsd_teacher_temp"] == pytest.approx(0.07)
    model.before_step(0, 10)
    assert model.teacher_temp() == pytest.approx(0.04)


def test_evaluation_runs_the_student_or_the_teacher_as_configured():
    torch.manual_seed(0)
    batch = _batch(b=1, t=3)
    student_eval = _lgsd().eval()
    torch.manual_seed(0)
    teacher_eval = _lgsd(eval_with="teacher").eval()
    with torch.no_grad():
        for m in (student_eval, teacher_eval):
            for p in m.teacher.parameters():
                p.mul_(0.5)  # teacher now differs from the student
    s = student_eval.predict(batch)["probs"]
    t = teacher_eval.predict(batch)["probs"]
    torch.testing.assert_close(s, student_eval.student.predict(batch)["probs"])
    torch.testing.assert_close(t, teacher_eval.teacher.predict(batch)["probs"])
    assert not torch.allclose(s, t)
    assert teacher_eval.inference_model() is teacher_eval.teacher


def test_config_errors_name_the_key():
    with pytest.raises(KeyError, match="model.lgsd: unknown keys \\['wieght'\\].*weight"):
        _lgsd(wieght=1.0)
    with pytest.raises(ValueError, match="eval_with must be 'student' or 'teacher'"):
        _lgsd(eval_with="ema")
