import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from core import comm
from core.registry import LOSSES, build
from models.losses.mask_set_criterion import (HungarianVideoMatcher, VideoSetCriterion, build_video_targets,
                                              point_sample, semantic_inference)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def random_targets(B, T, H, W, K, n_per_clip, seed=0, frame_valid=None):
    """Clips with rectangle tubes of distinct classes (a moving box per object)."""
    g = gen(seed)
    targets = []
    for b in range(B):
        n = n_per_clip[b]
        labels = torch.randperm(K, generator=g)[:n]
        masks = torch.zeros(n, T, H, W, dtype=torch.bool)
        for j in range(n):
            for t in range(T):
                y0, x0 = torch.randint(0, H // 2, (2,), generator=g).tolist()
                masks[j, t, y0:y0 + H // 3 + 2, x0:x0 + W // 3 + 2] = True
        fv = torch.ones(T, dtype=torch.bool) if frame_valid is None else frame_valid[b].clone()
        targets.append({"labels": labels, "masks": masks, "frame_valid": fv})
    return targets


def outputs_from_targets(targets, Q, K, perms, scale=20.0, noise=0.0, seed=0):
    """Predictions whose query perms[b][j] copies target j (mask ±scale, class logit +scale), others no-object."""
    g = gen(seed)
    T, H, W = targets[0]["masks"].shape[1:]
    B = len(targets)
    logits = torch.full((B, Q, K + 1), -scale)
    logits[:, :, K] = scale
    masks = torch.full((B, Q, T, H, W), -scale)
    for b, tgt in enumerate(targets):
        for j, lab in enumerate(tgt["labels"].tolist()):
            q = perms[b][j]
            logits[b, q] = -scale
            logits[b, q, lab] = scale
            masks[b, q] = scale * (2 * tgt["masks"][j].float() - 1)
    masks = masks + noise * torch.randn(masks.shape, generator=g)
    return {"pred_logits": logits, "pred_masks": masks}


# ---------------------------------------------------------------- point_sample
def test_point_sample_matches_manual_bilinear():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7)
    pts = [(0.31, 0.52), (0.5, 0.5), (0.77, 0.13), (0.2, 0.9)]
    coords = torch.tensor([pts, pts[::-1]])  # (2, 4, 2)
    out = point_sample(x, coords)
    assert out.shape == (2, 3, 4)
    H, W = 5, 7
    for n in range(2):
        for p, (cx, cy) in enumerate(coords[n].tolist()):
            px, py = cx * W - 0.5, cy * H - 0.5  # pixel centres at i + 0.5 (align_corners=False)
            x0, y0 = math.floor(px), math.floor(py)
            ax, ay = px - x0, py - y0
            v = ((1 - ax) * (1 - ay) * x[n, :, y0, x0] + ax * (1 - ay) * x[n, :, y0, x0 + 1]
                 + (1 - ax) * ay * x[n, :, y0 + 1, x0] + ax * ay * x[n, :, y0 + 1, x0 + 1])
            assert torch.allclose(out[n, :, p], v, atol=1e-5)


def test_point_sample_border_does_not_fade_full_masks():
    ones = torch.ones(1, 2, 4, 6)
    corners = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.01, 0.99]]])
    assert torch.allclose(point_sample(ones, corners), torch.ones(1, 2, 3))
    assert point_sample(ones, corners, padding_mode="zeros")[0, 0, 0] < 0.5  # what Mask2Former's default does


# ---------------------------------------------------------------- matcher
def test_pairwise_cost_matches_loops():
    torch.manual_seed(1)
    m = HungarianVideoMatcher(cost_class=1.5, cost_mask=3.0, cost_dice=0.7)
    prob = torch.randn(4, 3).softmax(-1)
    labels = torch.tensor([1, 0])
    xp, tp = torch.randn(4, 30) * 3, torch.rand(2, 30).round()
    C = m.pairwise_cost(prob, labels, xp, tp)
    for q in range(4):
        for j in range(2):
            bce = F.binary_cross_entropy_with_logits(xp[q], tp[j])
            p = xp[q].sigmoid()
            dice = 1 - (2 * (p * tp[j]).sum() + 1) / (p.sum() + tp[j].sum() + 1)
            expect = -1.5 * prob[q, labels[j]] + 3.0 * bce + 0.7 * dice
            assert C[q, j].item() == pytest.approx(expect.item(), rel=1e-5, abs=1e-6)


def test_matcher_recovers_known_permutation():
    K, Q, T = 4, 6, 3
    targets = random_targets(2, T, 16, 16, K, [3, 4])
    perms = [[4, 0, 2], [1, 5, 3, 0]]
    outputs = outputs_from_targets(targets, Q, K, perms, scale=4.0, noise=0.5)
    idx = HungarianVideoMatcher(num_points=500)(outputs, targets, gen())
    for b, (pi, ti) in enumerate(idx):
        assert pi.dtype == ti.dtype == torch.long
        assert dict(zip(ti.tolist(), pi.tolist())) == dict(enumerate(perms[b]))


def test_matcher_and_criterion_ignore_invalid_frames():
    K, Q, T = 3, 5, 4
    fv = torch.tensor([[True, False, True, True], [False, True, True, False]])
    targets = random_targets(2, T, 16, 16, K, [2, 3], frame_valid=fv)
    out = outputs_from_targets(targets, Q, K, [[3, 1], [0, 4, 2]], scale=3.0, noise=1.0)
    m = HungarianVideoMatcher(num_points=400)
    crit = VideoSetCriterion(K, matcher=m, num_points=400)
    bad = {k: v.clone() for k, v in out.items()}
    bad_t = [{k: v.clone() for k, v in t.items()} for t in targets]
    for b in range(2):
        inv = (~fv[b]).nonzero().squeeze(1)
        bad["pred_masks"][b][:, inv] = torch.randn(Q, len(inv), 16, 16) * 50 + 7.0
        bad_t[b]["masks"][:, inv] = ~bad_t[b]["masks"][:, inv]
    C0, C1 = m.cost_matrices(out, targets, gen()), m.cost_matrices(bad, bad_t, gen())
    for a, b in zip(C0, C1):
        assert torch.equal(a, b)
    assert [tuple(map(torch.Tensor.tolist, x)) for x in m(out, targets, gen())] == \
           [tuple(map(torch.Tensor.tolist, x)) for x in m(bad, bad_t, gen())]
    l0, l1 = crit(out, targets, gen()), crit(bad, bad_t, gen())
    for k in l0:
        assert l0[k].item() == pytest.approx(l1[k].item(), rel=1e-6, abs=1e-7)
    # control: the same corruption on a valid frame does change the costs (so the test can fail)
    worse = {k: v.clone() for k, v in out.items()}
    worse["pred_masks"][0][:, 0] = torch.randn(Q, 16, 16) * 50 + 7.0
    assert not torch.equal(m.cost_matrices(worse, targets, gen())[0], C0[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matcher_equals_bruteforce(seed):
    torch.manual_seed(seed)
    Q, K, n, T = 5, 3, 3, 2
    outputs = {"pred_logits": torch.randn(1, Q, K + 1) * 2, "pred_masks": torch.randn(1, Q, T, 8, 8) * 2}
    targets = [{"labels": torch.tensor([0, 2, 2]), "masks": torch.rand(n, T, 8, 8) > 0.5,
                "frame_valid": torch.tensor([True, True])}]
    m = HungarianVideoMatcher(num_points=64)
    C = m.cost_matrices(outputs, targets, gen(seed))[0]
    pi, ti = m(outputs, targets, gen(seed))[0]
    assert len(pi) == n and sorted(ti.tolist()) == list(range(n))
    best = min(sum(C[p[j], j].item() for j in range(n)) for p in itertools.permutations(range(Q), n))
    assert C[pi, ti].sum().item() == pytest.approx(best, abs=1e-5)


def test_matcher_zero_targets():
    outputs = {"pred_logits": torch.randn(2, 4, 3), "pred_masks": torch.randn(2, 4, 2, 8, 8)}
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 2, 8, 8, dtype=torch.bool)},
               {"labels": torch.tensor([1]), "masks": torch.ones(1, 2, 8, 8, dtype=torch.bool)}]
    idx = HungarianVideoMatcher(num_points=32)(outputs, targets)
    assert len(idx[0][0]) == 0 and len(idx[0][1]) == 0 and len(idx[1][0]) == 1


# ---------------------------------------------------------------- criterion
def setup_case(seed=0, Q=5, K=3, T=3, aux=0):
    torch.manual_seed(seed)
    targets = random_targets(2, T, 16, 16, K, [2, 1], seed=seed,
                             frame_valid=torch.tensor([[True, False, True], [True, True, False]]))
    out = {"pred_logits": torch.randn(2, Q, K + 1), "pred_masks": torch.randn(2, Q, T, 8, 8)}
    out["aux_outputs"] = [{"pred_logits": torch.randn(2, Q, K + 1), "pred_masks": torch.randn(2, Q, T, 8, 8)}
                          for _ in range(aux)]
    return out, targets


def test_keys_finite_and_registry_build():
    out, targets = setup_case(aux=2)
    crit = build(LOSSES, {"name": "VideoSetCriterion", "num_classes": 3, "num_points": 256,
                          "matcher": {"cost_class": 1.0}})
    assert crit.matcher.cost_class == 1.0 and crit.matcher.num_points == 256
    assert crit.weights == {"loss_class": 2.0, "loss_mask_bce": 2.0, "loss_mask_dice": 5.0}
    losses = crit(out, targets, gen())
    base = ["loss_class", "loss_mask_bce", "loss_mask_dice"]
    assert set(losses) == set(base + [f"{k}_aux{i}" for k in base for i in range(2)])
    assert all(torch.isfinite(v) and v.dim() == 0 and v.dtype == torch.float32 for v in losses.values())
    assert crit.loss_weight("loss_mask_dice_aux1") == 5.0


def test_weights_scale_linearly_and_zero_drops():
    out, targets = setup_case(aux=1)
    ref = VideoSetCriterion(3, num_points=256)(out, targets, gen())
    scaled = VideoSetCriterion(3, num_points=256, weight_class=6.0, weight_bce=1.0, weight_dice=0.0,
                               aux_weight=0.5)(out, targets, gen())
    assert scaled["loss_class"].item() == pytest.approx(3 * ref["loss_class"].item(), rel=1e-5)
    assert scaled["loss_mask_bce"].item() == pytest.approx(0.5 * ref["loss_mask_bce"].item(), rel=1e-5)
    assert ref["loss_mask_dice"].item() > 0 and scaled["loss_mask_dice"].item() == 0.0
    assert scaled["loss_class_aux0"].item() == pytest.approx(1.5 * ref["loss_class_aux0"].item(), rel=1e-5)
    assert scaled["loss_mask_dice_aux0"].item() == 0.0


def test_perfect_predictions_give_near_zero_losses():
    K, Q, T = 2, 4, 3
    on = lambda frames: torch.tensor(frames, dtype=torch.bool).view(T, 1, 1).expand(T, 8, 8).clone()
    # whole-frame on/off tubes: sampled targets are exactly 0/1, so perfect logits give ~0 loss at every point
    targets = [{"labels": torch.tensor([0, 1]), "masks": torch.stack([on([1, 0, 1]), on([0, 1, 1])]),
                "frame_valid": torch.ones(T, dtype=torch.bool)}]
    out = outputs_from_targets(targets, Q, K, [[2, 0]], scale=20.0)
    crit = VideoSetCriterion(K, num_points=256)
    losses = crit(out, targets, gen())
    for k, v in losses.items():
        assert v.item() < 1e-4, k
    # realistic boxes: only points within half a pixel of an edge see fractional (interpolated) targets. Uniform
    # points here: importance sampling deliberately concentrates on exactly those edge points.
    crit = VideoSetCriterion(K, num_points=256, importance_sample_ratio=0.0)
    tg = random_targets(1, T, 64, 64, K, [2])
    l2 = crit(outputs_from_targets(tg, Q, K, [[3, 1]], scale=20.0), tg, gen())
    rand = crit({"pred_logits": torch.randn(1, Q, K + 1), "pred_masks": torch.randn(1, Q, T, 64, 64)}, tg, gen())
    assert l2["loss_class"].item() < 1e-4
    assert l2["loss_mask_bce"].item() < 0.05 * rand["loss_mask_bce"].item()
    assert l2["loss_mask_dice"].item() < 0.05 * rand["loss_mask_dice"].item()


def test_hand_values_normalisation_and_valid_frames():
    """Per-frame constant logits and whole-frame targets make the losses independent of the sampled points."""
    T, K, P = 3, 2, 128
    c = torch.tensor([1.5, -0.5, 2.0])
    tt = torch.tensor([1.0, 0.0, 0.0])
    fv = torch.tensor([True, True, False])
    mask_logits = c.view(T, 1, 1).expand(T, 8, 8)
    tgt_mask = tt.view(T, 1, 1).expand(T, 8, 8).bool()
    tgt = {"labels": torch.tensor([1]), "masks": tgt_mask[None], "frame_valid": fv}
    out = {"pred_logits": torch.tensor([[[0.0, 3.0, -1.0]]]), "pred_masks": mask_logits[None, None].clone()}
    crit = VideoSetCriterion(K, num_points=P, weight_class=1.0, weight_bce=1.0, weight_dice=1.0)
    losses = crit(out, [tgt], gen())
    bce = F.binary_cross_entropy_with_logits(c[:2], tt[:2]).item()
    s = c[:2].sigmoid()
    dice = 1 - (2 * P * (s * tt[:2]).sum() + 1) / (P * s.sum() + P * tt[:2].sum() + 1)
    assert losses["loss_mask_bce"].item() == pytest.approx(bce, rel=1e-5)
    assert losses["loss_mask_dice"].item() == pytest.approx(dice.item(), rel=1e-5)
    # two clips with 1 + 2 objects: mask losses are the sum over objects / 3
    tgt2 = {"labels": torch.tensor([0, 1]), "masks": torch.stack([tgt_mask, ~tgt_mask]), "frame_valid": fv}
    out2 = {"pred_logits": torch.zeros(1, 2, 3), "pred_masks": torch.stack([mask_logits, -mask_logits])[None]}
    both = {"pred_logits": torch.cat([F.pad(out["pred_logits"], (0, 0, 0, 1)), out2["pred_logits"]]),
            "pred_masks": torch.cat([F.pad(out["pred_masks"], (0, 0, 0, 0, 0, 0, 0, 1), value=-30.0),
                                     out2["pred_masks"]])}
    l2 = crit(out2, [tgt2], gen())
    lb = crit(both, [tgt, tgt2], gen())
    for k in ("loss_mask_bce", "loss_mask_dice"):
        assert lb[k].item() == pytest.approx((losses[k].item() + 2 * l2[k].item()) / 3, rel=1e-5)


def test_num_masks_is_all_reduced(monkeypatch):
    out, targets = setup_case()
    crit = VideoSetCriterion(3, num_points=256)
    ref = crit(out, targets, gen())
    monkeypatch.setattr(comm, "all_reduce_mean", lambda t: t * 2)  # as if other ranks had twice the objects
    dbl = crit(out, targets, gen())
    assert dbl["loss_mask_bce"].item() == pytest.approx(ref["loss_mask_bce"].item() / 2, rel=1e-5)
    assert dbl["loss_mask_dice"].item() == pytest.approx(ref["loss_mask_dice"].item() / 2, rel=1e-5)
    assert dbl["loss_class"].item() == pytest.approx(ref["loss_class"].item(), rel=1e-6)


@pytest.mark.parametrize("eos", [0.1, 1.0])
def test_eos_coef_weights_the_class_loss(eos):
    K, T = 2, 2
    tgt = {"labels": torch.tensor([1]), "masks": torch.ones(1, T, 8, 8, dtype=torch.bool)}
    logits = torch.tensor([[[0.5, 1.0, -0.2], [0.3, 0.1, 0.4]]])
    masks = torch.stack([torch.full((T, 8, 8), 10.0), torch.full((T, 8, 8), -10.0)])[None]  # query 0 matches
    loss = VideoSetCriterion(K, eos_coef=eos, num_points=64, weight_class=1.0)(
        {"pred_logits": logits, "pred_masks": masks}, [tgt])["loss_class"]
    ce = F.cross_entropy(logits[0], torch.tensor([1, K]), reduction="none")
    expect = (ce[0] + eos * ce[1]) / (1 + eos)
    assert loss.item() == pytest.approx(expect.item(), rel=1e-6)


def test_clip_without_targets_pushes_to_no_object():
    K, Q, T = 2, 3, 2
    tgt = [{"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, T, 8, 8, dtype=torch.bool),
            "frame_valid": torch.tensor([True, False])}]
    logits = torch.zeros(1, Q, K + 1, requires_grad=True)
    masks = torch.randn(1, Q, T, 4, 4, requires_grad=True)
    losses = VideoSetCriterion(K, num_points=64)({"pred_logits": logits, "pred_masks": masks}, tgt)
    assert losses["loss_class"].item() == pytest.approx(2.0 * math.log(K + 1), rel=1e-6)
    assert losses["loss_mask_bce"].item() == 0.0 and losses["loss_mask_dice"].item() == 0.0
    sum(losses.values()).backward()
    assert (logits.grad[..., K] < 0).all() and (logits.grad[..., :K] > 0).all()
    assert masks.grad is not None and (masks.grad == 0).all()  # connected for DDP, contributes nothing


def test_gradients_flow():
    out, targets = setup_case(aux=1)
    for d in [out] + out["aux_outputs"]:
        for k in ("pred_logits", "pred_masks"):
            d[k].requires_grad_(True)
    losses = VideoSetCriterion(3, num_points=256)(out, targets, gen())
    sum(losses.values()).backward()
    for d in [out] + out["aux_outputs"]:
        assert d["pred_logits"].grad.abs().sum() > 0 and d["pred_masks"].grad.abs().sum() > 0
        assert torch.isfinite(d["pred_masks"].grad).all()
    # unannotated frames get no gradient (clip 0 frame 1, clip 1 frame 2)
    assert (out["pred_masks"].grad[0, :, 1] == 0).all() and (out["pred_masks"].grad[1, :, 2] == 0).all()


def test_importance_sampling_prefers_uncertain_points_on_valid_frames():
    crit = VideoSetCriterion(2, num_points=400, oversample_ratio=3.0, importance_sample_ratio=0.75)
    logits = torch.full((1, 2, 16, 16), 20.0)
    logits[0, 0, :, :8] = 0.0   # uncertain stripe x < 0.5 on frame 0 (valid)
    logits[0, 1, :, 12:] = 0.0  # uncertain stripe x > 0.75 on frame 1 (invalid: must be ignored)
    coords = crit._sample_points(logits, torch.tensor([[True, False]]), gen())
    assert coords.shape == (1, 400, 2)
    assert (coords[0, :300, 0] < 0.5 + 1 / 32).all()  # importance points all in the valid frame's stripe
    assert (coords[0, :, 0] > 0.8).float().mean() < 0.15  # only random points there


def test_optimisation_drives_loss_down():
    torch.manual_seed(0)
    K, Q, T = 2, 4, 3
    # targets at 32², predictions at 16² (stride-like mismatch, bridged by the normalised point coordinates)
    targets = random_targets(2, T, 32, 32, K, [2, 1], frame_valid=torch.tensor([[1, 0, 1], [1, 1, 1]]).bool())
    logits = torch.zeros(2, Q, K + 1, requires_grad=True)
    masks = (0.1 * torch.randn(2, Q, T, 16, 16)).requires_grad_(True)
    crit = VideoSetCriterion(K, num_points=256)
    opt = torch.optim.Adam([logits, masks], lr=0.5)
    g = gen()
    first = None
    for _ in range(100):
        loss = sum(crit({"pred_logits": logits, "pred_masks": masks}, targets, g).values())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = sum(crit({"pred_logits": logits, "pred_masks": masks}, targets, gen(1)).values()).item()
    assert final < 0.2 * first, (first, final)


# ---------------------------------------------------------------- inference / targets
def test_semantic_inference():
    torch.manual_seed(0)
    B, Q, K, T = 2, 3, 2, 4
    probs = semantic_inference(torch.randn(B, Q, K + 1) * 3, torch.randn(B, Q, T, 5, 6) * 3)
    assert probs.shape == (B, T, K, 5, 6) and probs.min() >= 0 and probs.max() <= 1
    pattern = torch.rand(T, 5, 6) > 0.5
    logits = torch.full((1, Q, K + 1), -30.0)
    logits[0, :, K] = 30.0        # queries 1, 2: no object
    logits[0, 0] = torch.tensor([-30.0, 30.0, -30.0])  # query 0: class 1
    masks = torch.randn(1, Q, T, 5, 6)
    masks[0, 0] = 30.0 * (2 * pattern.float() - 1)
    probs = semantic_inference(logits, masks)
    assert torch.allclose(probs[0, :, 1], pattern.float(), atol=1e-6)
    assert probs[0, :, 0].max() < 1e-6
    big = semantic_inference(logits, masks, out_size=(10, 12))
    assert big.shape == (1, T, K, 10, 12)


def test_build_video_targets():
    B, K, T, H, W = 2, 3, 4, 6, 6
    m = torch.zeros(B, K, T, H, W, dtype=torch.bool)
    m[0, 0, 0, :2, :2] = True   # class 0 on annotated frame 0
    m[0, 0, 1, 3:, 3:] = True   # ...and on unannotated frame 1 (must be zeroed)
    m[0, 1, 1] = True           # class 1 only on an unannotated frame: not present
    m[0, 2, 2, 1, 1] = True     # class 2 on annotated frame 2
    m[1, 1, 3] = True           # clip 1 has nothing annotated where class 1 is
    has_ann = torch.tensor([[True, False, True, False], [True, True, False, False]])
    tg = build_video_targets(m.transpose(1, 2), has_ann)  # the batch layout B×T×K×H×W
    assert tg[0]["labels"].tolist() == [0, 2] and tg[0]["labels"].dtype == torch.long
    assert tg[0]["masks"].shape == (2, T, H, W) and tg[0]["masks"].dtype == torch.bool
    assert tg[0]["masks"][0, 0].sum() == 4 and not tg[0]["masks"][:, 1].any()
    assert torch.equal(tg[0]["frame_valid"], has_ann[0])
    assert tg[1]["labels"].numel() == 0 and tg[1]["masks"].shape == (0, T, H, W)
    # round trip through the criterion
    out = {"pred_logits": torch.randn(B, 3, K + 1), "pred_masks": torch.randn(B, 3, T, 3, 3)}
    losses = VideoSetCriterion(K, num_points=64)(out, tg, gen())
    assert all(torch.isfinite(v) for v in losses.values())
