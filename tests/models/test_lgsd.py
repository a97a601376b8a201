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


class _Clock:
    """What a hook reads of the trainer: the model, the iteration, max_iter, the step outcome and scalars."""

    def __init__(self, model, max_iter):
        self.model, self.max_iter, self.iter = model, max_iter, 0
        self.step_outcome, self.step_scalars = "taken", {}


def _step(hook, clock, it, outcome="taken"):
    clock.iter, clock.step_outcome, clock.step_scalars = it, outcome, {}
    hook.before_step()
    hook.after_step()
    return clock.step_scalars


def test_teacher_is_the_ema_of_the_student_under_the_momentum_schedule_of_the_hook_it_contributes():
    from trainers.hooks import EMAHook

    model = _lgsd(momentum=0.9, momentum_final=1.0, teacher_temp=0.04, teacher_temp_final=0.07)
    (hook,) = model.hooks()
    assert isinstance(hook, EMAHook) and hook.priority < 90  # before the checkpoint / eval hooks
    clock = _Clock(model, 10)
    hook.trainer = clock
    hook.before_train()
    for pt, ps in zip(model.teacher.parameters(), model.student.parameters()):
        assert torch.equal(pt, ps)  # starts as a copy
    before = [p.clone() for p in model.teacher.parameters()]
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    s = _step(hook, clock, 0)
    assert s["lgsd_momentum"] == pytest.approx(0.9) and list(s)[:2] == ["lgsd_momentum", "lgsd_teacher_temp"]
    for b, pt, ps in zip(before, model.teacher.parameters(), model.student.parameters()):
        torch.testing.assert_close(pt, 0.9 * b + 0.1 * ps)
    moved = [p.clone() for p in model.teacher.parameters()]
    assert _step(hook, clock, 5, "amp_skipped")["lgsd_momentum"] == pytest.approx(0.95)  # half-way: 0.9 -> 1
    assert _step(hook, clock, 6, "dropped") == {}  # a dropped step logs nothing of the schedules
    assert all(torch.equal(a, b) for a, b in zip(moved, model.teacher.parameters()))  # skipped: not moved
    s = _step(hook, clock, 10)  # momentum 1 at the end: the teacher no longer moves
    assert all(torch.equal(a, b) for a, b in zip(moved, model.teacher.parameters()))
    assert s["lgsd_momentum"] == 1.0 and s["lgsd_teacher_temp"] == pytest.approx(0.07)
    _step(hook, clock, 0)
    assert model.teacher_temp() == pytest.approx(0.04)  # the hook drives the model's temperature schedule
    # the teacher moves by the EMA, so it is not part of a frozen base (trainable-only checkpoints keep it)
    assert not any(k.startswith("teacher") for k in model.frozen_state_keys())


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


def test_slot_tokens_distil_each_query_slot_into_the_same_slot_of_the_other_views():
    torch.manual_seed(0)
    model = _lgsd(tokens="slots", weight=1.0).train()
    n_q = model.student.encoder.query_feat.num_embeddings
    assert model.student_head.tokens == n_q and model.dino.center.shape == (n_q, 32)
    assert model.student_head.input_norm.num_features == n_q * model.student.encoder.d_model
    views = _views()
    feats = model._features(model.student, views["global"])
    assert feats.shape == (2 * 2, n_q, model.student.encoder.d_model)  # (B·V, n_q, C)
    loss = model.distillation_loss(views)
    assert 0 < float(loss.detach()) < math.log(32) + 2 / 0.1
    assert model.schedule_scalars()["lgsd_target_spread"] >= 0
    loss.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.student.encoder.parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in model.teacher.parameters())

    # the same loss by hand: teacher slot s of global view i against student slot s of every other view
    model.eval()  # no centre update, running statistics in both heads
    glob, loc = views["global"], views["local"]
    with torch.no_grad():
        s_all = model.student_head(torch.cat([model._features(model.student, glob),
                                              model._features(model.student, loc)]))
        t_all = model.teacher_head(model._features(model.teacher, glob))
        got = model.distillation_loss(views)
    s_views = [s_all[:4].view(2, 2, n_q, -1)[:, v] for v in range(2)] + [s_all[4:].view(2, 3, n_q, -1)[:, v]
                                                                         for v in range(3)]
    t_views = [t_all.view(2, 2, n_q, -1)[:, v] for v in range(2)]
    total, pairs = 0.0, 0
    for i, t in enumerate(t_views):
        q = ((t - model.dino.center) / model.teacher_temp()).softmax(-1)
        for j, s in enumerate(s_views):
            if j != i:
                total += float((-q * (s / 0.1).log_softmax(-1)).sum(-1).mean())
                pairs += 1
    assert float(got) == pytest.approx(total / pairs, rel=1e-5)
    # shuffling the teacher's slots changes the loss: slots are matched by index, not pooled
    perm = torch.roll(torch.arange(n_q), 1)
    shuffled = 0.0
    for i, t in enumerate(t_views):
        q = ((t[:, perm] - model.dino.center[perm]) / model.teacher_temp()).softmax(-1)
        shuffled += sum(float((-q * (s / 0.1).log_softmax(-1)).sum(-1).mean()) for j, s in enumerate(s_views)
                        if j != i)
    assert abs(shuffled / pairs - total / pairs) > 1e-4


def test_tokens_must_be_pooled_or_slots_and_the_pooled_head_keeps_its_checkpoint_shapes():
    with pytest.raises(ValueError, match="tokens must be 'pooled' or 'slots'"):
        _lgsd(tokens="patches")
    model = _lgsd()
    enc = model.student.encoder
    assert model.dino.center.shape == (1, 32)  # the shape every earlier LGSD checkpoint holds
    assert model.student_head.input_norm.num_features == enc.query_feat.num_embeddings * enc.d_model



def test_per_view_head_statistics_standardise_global_and_local_views_apart_in_student_and_teacher():
    torch.manual_seed(0)
    model = _lgsd(head_norm_stats="per_view").train()
    head, teacher_head = model.student_head, model.teacher_head
    assert head.input_norm.running_mean is None and teacher_head.input_norm.running_mean is None
    views = _views()
    with torch.no_grad():
        g = model._features(model.teacher, views["global"])
        # the eval-mode teacher head standardises its batch by that batch's own statistics
        z = (g - g.mean(0)) / g.var(0, unbiased=False).add(1e-5).sqrt()
        want = teacher_head.last(torch.nn.functional.normalize(teacher_head.mlp(z), dim=-1))
        torch.testing.assert_close(teacher_head(g), want, atol=1e-5, rtol=1e-4)
        model.eval()  # no centre update: the loss can be recomputed by hand
        got = model.distillation_loss(views)
        s_g = model.student_head(model._features(model.student, views["global"]))  # global views alone
        s_l = model.student_head(model._features(model.student, views["local"]))   # local views alone
        student = model._per_view(s_g, 2) + model._per_view(s_l, 2)
        want = model.dino(student, model._per_view(teacher_head(g), 2), model.teacher_temp())
        torch.testing.assert_close(got, want)
        joint = model.student_head(torch.cat([model._features(model.student, views["global"]),
                                              model._features(model.student, views["local"])]))
        assert not torch.allclose(joint[:len(s_g)], s_g, atol=1e-3)  # one joint call would mix the statistics
    with pytest.raises(ValueError, match="head_norm_stats must be 'running' or 'per_view'"):
        _lgsd(head_norm_stats="global")
