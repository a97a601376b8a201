"""LGSD's self-distillation pieces: DINO loss values, centering, collapse guard, EMA teacher, schedules, head."""
from __future__ import annotations

import math

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from models.losses.dino import DINOHead, DINOLoss, SyncBatchNorm1d, cosine_schedule, ema_update, linear_warmup


def test_loss_matches_a_hand_computation_and_skips_same_view_pairs():
    torch.manual_seed(0)
    loss_fn = DINOLoss(5, student_temp=0.1).eval()  # eval: no centre update
    s = [torch.randn(3, 5) for _ in range(3)]
    t = [torch.randn(3, 5) for _ in range(2)]
    got = loss_fn(s, t, teacher_temp=0.04)
    pairs = [(i, j) for i in range(2) for j in range(3) if i != j]
    want = sum((-(t[i] / 0.04).softmax(-1) * (s[j] / 0.1).log_softmax(-1)).sum(-1).mean() for i, j in pairs)
    torch.testing.assert_close(got, want / len(pairs))


def test_centre_moves_to_the_teacher_batch_mean_in_training_only():
    loss_fn = DINOLoss(4, center_momentum=0.9)
    t = [torch.tensor([[1.0, 0, 0, 0], [3.0, 0, 0, 0]])]
    s = [torch.zeros(2, 4), torch.zeros(2, 4)]
    loss_fn(s, t, 0.04)
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.2, 0, 0, 0]]))  # 0.9·0 + 0.1·mean(1, 3)
    loss_fn.eval()
    loss_fn(s, t, 0.04)
    torch.testing.assert_close(loss_fn.center, torch.tensor([[0.2, 0, 0, 0]]))


def test_collapse_guard_centering_flattens_a_dominant_dimension_and_entropy_stays_above_a_floor():
    torch.manual_seed(0)
    k = 64
    loss_fn = DINOLoss(k, center_momentum=0.0)  # centre = last batch mean
    collapsed = torch.zeros(16, k)
    collapsed[:, 3] = 10.0  # every sample puts all mass on dimension 3
    loss_fn([torch.zeros(16, k)] * 2, [collapsed], 0.04)
    q = ((collapsed - loss_fn.center) / 0.04).softmax(-1)
    torch.testing.assert_close(q, torch.full_like(q, 1 / k))  # centring removes the dominant dimension
    def batch_entropy(t, center):  # entropy of the batch-mean target: collapse = all mass on one dimension
        q = ((t - center) / 0.07).softmax(-1).mean(0)
        return float(-(q * q.clamp_min(1e-12).log()).sum())

    loss_fn = DINOLoss(k)
    for _ in range(40):  # random teacher logits drifting towards the last dimensions
        t = torch.randn(256, k) + torch.linspace(0, 2, k)
        loss_fn([torch.randn(256, k)] * 2, [t], 0.07)
    centred, raw = batch_entropy(t, loss_fn.center), batch_entropy(t, torch.zeros(1, k))
    assert centred > 0.9 * math.log(k) and raw < centred - 0.5


def test_minimising_the_loss_makes_the_student_follow_the_teacher():
    torch.manual_seed(0)
    loss_fn = DINOLoss(8).eval()
    target = torch.randn(4, 8) * 3
    s = torch.zeros(4, 8, requires_grad=True)
    opt = torch.optim.SGD([s], lr=0.05)
    for _ in range(200):
        loss = loss_fn([s, s], [target], 0.04)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ((s / 0.1).argmax(-1) == target.argmax(-1)).all()


def test_ema_update_and_schedules():
    student, teacher = nn.Linear(3, 2), nn.Linear(3, 2)
    before = teacher.weight.detach().clone()
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher.weight, 0.9 * before + 0.1 * student.weight.detach())
    ema_update(teacher, student, 0.0)
    torch.testing.assert_close(teacher.weight, student.weight)
    assert cosine_schedule(0.996, 1.0, 0, 100) == pytest.approx(0.996)
    assert cosine_schedule(0.996, 1.0, 50, 100) == pytest.approx(0.998)
    assert cosine_schedule(0.996, 1.0, 100, 100) == 1.0
    assert linear_warmup(0.04, 0.07, 15, 30) == pytest.approx(0.055) and linear_warmup(0.04, 0.07, 99, 30) == 0.07


def test_head_shapes_bounded_logits_and_view_count_errors():
    head = DINOHead(16, out_dim=32, hidden_dim=24, bottleneck_dim=8)
    out = head(torch.randn(5, 16) * 100)
    assert out.shape == (5, 32) and out.abs().max() <= 1.0 + 1e-5  # unit-norm features · unit-norm rows
    assert not head.last.parametrizations.weight.original0.requires_grad
    with pytest.raises(ValueError, match="teacher"):
        DINOLoss(4)([torch.zeros(1, 4)], [torch.zeros(1, 4)], 0.04)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_sync_batchnorm_in_one_process_is_batchnorm1d_bit_for_bit(momentum):
    torch.manual_seed(0)
    ours, ref = SyncBatchNorm1d(6, affine=False, momentum=momentum), nn.BatchNorm1d(6, affine=False, momentum=momentum)
    assert list(ours.state_dict()) == list(ref.state_dict())  # checkpoints of the plain BatchNorm head still load
    for step in range(3):  # training mode: batch statistics, running statistics updated
        x = (torch.randn(5, 6) * 3 + 10).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        y, y_ref = ours(x), ref(x_ref)
        assert torch.equal(y, y_ref)
        w = torch.randn(5, 6)
        (y * w).sum().backward()
        (y_ref * w).sum().backward()
        assert torch.equal(x.grad, x_ref.grad)
        for k, v in ref.state_dict().items():
            assert torch.equal(ours.state_dict()[k], v), (step, k)
    ours.eval()  # eval mode (the teacher head): running statistics
    ref.eval()
    x = torch.randn(4, 6)
    assert torch.equal(ours(x), ref(x))
    assert int(ours.num_batches_tracked) == 3
    head = DINOHead(6, out_dim=8, hidden_dim=8, bottleneck_dim=4, input_norm=True)
    assert isinstance(head.input_norm, SyncBatchNorm1d)
    assert {"input_norm.running_mean", "input_norm.running_var", "input_norm.num_batches_tracked"} <= set(
        head.state_dict())


def _sync_bn_rank(rank: int, init_file: str) -> None:
    """One of two gloo ranks: rank 0 holds 3 samples, rank 1 holds 2, of a batch of 5 that a plain BatchNorm1d
    (in this process) sees whole; outputs, input gradients and running statistics must agree."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        ours, ref = SyncBatchNorm1d(6, affine=False), nn.BatchNorm1d(6, affine=False)
        rows = slice(0, 3) if rank == 0 else slice(3, 5)
        for _ in range(2):
            x = torch.randn(5, 6) * 3 + 10  # the same global batch on both ranks (same seed)
            w = torch.randn(5, 6)
            x_ref, mine = x.clone().requires_grad_(), x[rows].clone().requires_grad_()
            y_ref, y = ref(x_ref), ours(mine)
            (y_ref * w).sum().backward()
            (y * w[rows]).sum().backward()  # the global loss is the sum over ranks: all_reduce's backward sums
            torch.testing.assert_close(y, y_ref[rows], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(mine.grad, x_ref.grad[rows], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-6, rtol=1e-6)
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 2
        ours.eval()
        ref.eval()
        torch.testing.assert_close(ours(x[rows]), ref(x)[rows], atol=1e-5, rtol=1e-5)
    finally:
        dist.destroy_process_group()


def test_sync_batchnorm_over_two_processes_is_batchnorm1d_on_the_whole_batch(tmp_path):
    mp.spawn(_sync_bn_rank, args=(str(tmp_path / "rendezvous"),), nprocs=2)  # raises if a rank's check fails


def test_per_token_loss_is_the_mean_of_one_pooled_loss_per_token_each_with_its_own_centre():
    torch.manual_seed(0)
    b, n_tok, k = 3, 4, 6
    tokens = DINOLoss(k, student_temp=0.1, center_momentum=0.5, tokens=n_tok)
    assert tokens.center.shape == (n_tok, k)
    pooled = [DINOLoss(k, student_temp=0.1, center_momentum=0.5) for _ in range(n_tok)]
    for _ in range(3):  # three training calls: the centres move, token by token
        s = [torch.randn(b, n_tok, k) for _ in range(3)]
        t = [torch.randn(b, n_tok, k) + torch.arange(n_tok).view(1, -1, 1) for _ in range(2)]
        got = tokens(s, t, 0.04)
        want = sum(p([x[:, i] for x in s], [x[:, i] for x in t], 0.04) for i, p in enumerate(pooled)) / n_tok
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(tokens.center, torch.cat([p.center for p in pooled]))
    assert tokens.center[3, 0] - tokens.center[0, 0] > 2  # each token's own offset is in its own centre


def test_target_spread_is_zero_for_identical_targets_and_log_n_for_distinct_one_hot_targets():
    k = 8
    loss_fn = DINOLoss(k).eval()
    same = torch.randn(1, k).expand(4, k)
    loss_fn([torch.zeros(4, k)] * 2, [same], 0.04)
    assert loss_fn.last_target_spread == pytest.approx(0.0, abs=1e-5)
    assert loss_fn.last_target_entropy > 0
    distinct = torch.eye(k)[:4] * 100  # four samples, four different sharp targets
    loss_fn([torch.zeros(4, k)] * 2, [distinct], 0.04)
    assert loss_fn.last_target_entropy == pytest.approx(0.0, abs=1e-5)
    assert loss_fn.last_target_spread == pytest.approx(math.log(4), abs=1e-5)


def test_token_head_standardises_per_token_so_a_token_offset_does_not_reach_the_mlp():
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=32, hidden_dim=24, bottleneck_dim=8, input_norm=True, tokens=5).train()
    assert head.input_norm.num_features == 5 * 16
    x = torch.randn(6, 5, 16)
    out = head(x)
    assert out.shape == (6, 5, 32) and out.abs().max() <= 1.0 + 1e-5
    offset = torch.randn(1, 5, 16) * 50  # a per-(token, feature) constant, the same for every sample
    torch.testing.assert_close(head(x + offset), out, atol=1e-4, rtol=1e-4)
    # one token's features are standardised over the batch alone: another token's values do not change them
    y = x.clone()
    y[:, 1:] = torch.randn(6, 4, 16) * 7
    torch.testing.assert_close(head(y)[:, 0], out[:, 0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"tokens=5 expects \(B, 5, D\)"):
        head(torch.randn(6, 80))
