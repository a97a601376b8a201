"""SAMURAI on our SAM2: the motion-aware mask choice, the memory selectors, their exactness against the package's
own rules, per-object and per-video state, reverse propagation, and the SAM2/SAMURAI meta-architectures."""
from __future__ import annotations

import math

import pytest
import torch

import models  # noqa: F401  (registers the models)
from core.errors import ConfigError
from core.registry import MEMORY_SELECTORS, MODELS, build
from models.sam2.build import build_sam2_video_model
from models.sam2.samurai import MotionAwareSAM2, SamuraiMotion, mask_boxes
from models.sam2.video import SAM2VideoAdapter, normalize

S = 64  # SAM2 image size of these tests


def _net(seed: int = 0) -> MotionAwareSAM2:
    torch.manual_seed(seed)
    return build_sam2_video_model("cpu_tiny", image_size=S)


def _video(t: int = 10, k: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A T-frame clip with K moving squares (brighter than the background) and their masks T×K×S×S."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(t, 3, S, S, generator=g) * 0.2
    masks = torch.zeros(t, k, S, S, dtype=torch.bool)
    for i in range(t):
        for c in range(k):
            y, x = 8 + 24 * c, 6 + 2 * i
            masks[i, c, y:y + 14, x:x + 14] = True
            video[i, :, y:y + 14, x:x + 14] += 0.6
    return video.clamp(0, 1), masks


def _out(iou: list[float], obj: list[float], kf: list[float] | None = None) -> dict:
    k = len(iou)
    return {"best_iou": torch.tensor(iou), "object_score_logits": torch.tensor(obj).view(k, 1),
            "kf_score": torch.tensor(kf if kf is not None else [math.nan] * k)}


# ---------------------------------------------------------------------------------------------- mask choice
def test_mask_boxes_are_the_boxes_of_the_positive_pixels():
    logits = torch.full((2, 3, 8, 10), -1.0)
    logits[0, 0, 2:5, 3:7] = 1.0
    logits[0, 1, 7, 9] = 1.0
    boxes = mask_boxes(logits)
    assert boxes[0, 0].tolist() == [3, 2, 6, 4]
    assert boxes[0, 1].tolist() == [9, 7, 9, 7]
    assert boxes[1].abs().sum() == 0  # empty masks: (0, 0, 0, 0), as SAMURAI


def _candidates(centres: list[tuple[int, int]], size: int = 10) -> torch.Tensor:
    """1×M×S×S logits: one square candidate per centre."""
    out = torch.full((1, len(centres), S, S), -5.0)
    for m, (cx, cy) in enumerate(centres):
        out[0, m, cy - size // 2:cy + size // 2, cx - size // 2:cx + size // 2] = 5.0
    return out


def test_motion_picks_the_candidate_on_the_kalman_track_once_stable():
    motion = SamuraiMotion(1, kf_score_weight=0.25, stable_frames=3, stable_iou=0.3)
    ious_far_best = torch.tensor([[0.55, 0.60]])
    for t in range(4):  # a square moving 2 px/frame to the right: the predicted-IoU winner is always on track
        scores, kf = motion.choose(_candidates([(20 + 2 * t, 30), (50, 50)]), torch.tensor([[0.9, 0.2]]))
        assert scores.argmax().item() == 0
    assert motion.stable[0] == 3 and not math.isnan(kf[0])  # the 4th frame was scored with the track
    # now a distant candidate has the higher predicted IoU; the motion term (0.25 * IoU with the track) wins
    scores, kf = motion.choose(_candidates([(28, 30), (50, 50)]), ious_far_best)
    assert scores.argmax().item() == 0 and kf[0] > 0.5
    assert torch.allclose(scores[0, 1], torch.tensor(0.75 * 0.60), atol=1e-6)  # no overlap with the track
    # without the motion model SAM2 takes the other one
    assert ious_far_best.argmax().item() == 1


def test_motion_resets_a_track_whose_mask_is_poor_and_keeps_objects_apart():
    motion = SamuraiMotion(2, stable_frames=2, stable_iou=0.3)
    two = torch.cat([_candidates([(20, 20), (40, 40)]), _candidates([(20, 40), (40, 20)])])
    motion.choose(two, torch.tensor([[0.9, 0.1], [0.9, 0.1]]))
    motion.choose(two, torch.tensor([[0.9, 0.1], [0.1, 0.2]]))  # object 1: best IoU 0.2 < 0.3 -> reset
    assert motion.stable == [2, 0]
    assert motion.tracks[0].mean is not motion.tracks[1].mean
    motion.reset()
    assert motion.stable == [0, 0] and not motion.tracks[0].initialized


# ---------------------------------------------------------------------------------------------- memory choice
def test_samurai_selector_keeps_confident_frames_and_always_the_previous_one():
    sel = build(MEMORY_SELECTORS, dict(name="samurai"))
    history = [(9, _out([0.4, 0.9], [1.0, 1.0])),            # t-1: object 0 fails IoU but is kept (previous)
               (8, _out([0.9, 0.9], [-1.0, 1.0])),           # object 0: object score < 0
               (7, _out([0.9, 0.9], [1.0, 1.0], [0.1, -0.2])),  # object 1: motion score < 0
               (6, _out([0.9, 0.6], [1.0, 1.0]))]
    assert sel.select(10, history, num_objects=2, num_slots=6) == [[9, 7, 6], [9, 8, 6]]
    assert sel.select(10, history, num_objects=2, num_slots=2) == [[9, 7], [9, 8]]
    short = build(MEMORY_SELECTORS, dict(name="samurai", max_look_back=2))
    assert short.select(10, history, 2, 6) == [[9], [9, 8]]
    assert build(MEMORY_SELECTORS, dict(name="recent")).select(10, history, 2, 3) == [[9, 8, 7], [9, 8, 7]]
    with pytest.raises(ConfigError, match="closest|did you mean"):
        build(MEMORY_SELECTORS, dict(name="samura"))


def _segment(net, video, masks, prompt_frame=0, motion=None, kind="masks"):
    adapter = SAM2VideoAdapter(net, motion=motion)
    p = masks[prompt_frame][None].float() if kind == "masks" else None
    prompts = {"masks": p} if kind == "masks" else {"boxes": _boxes(masks[prompt_frame])[None]}
    return adapter.segment(normalize(video), prompts, [prompt_frame])


def _boxes(m: torch.Tensor) -> torch.Tensor:
    from models.heads.box_head import boxes_from_masks

    return boxes_from_masks(m[None, None])[0][0, 0]


def test_a_selector_that_keeps_everything_reproduces_sam2_bit_for_bit():
    video, masks = _video(t=9)
    net = _net()
    ref, _ = _segment(net, video, masks)
    net.memory_selector = build(MEMORY_SELECTORS, dict(name="samurai", iou_threshold=-1e9, obj_score_threshold=-1e9,
                                                       kf_score_threshold=-1e9))
    mine, _ = _segment(net, video, masks)
    assert torch.equal(ref, mine)
    # the view machinery is used: a selector that drops all but the previous frame changes the result
    net.memory_selector = build(MEMORY_SELECTORS, dict(name="samurai", iou_threshold=2.0))
    other, _ = _segment(net, video, masks)
    assert not torch.equal(ref[3:], other[3:]) and torch.equal(ref[:2], other[:2])


class _OnlyObjectOne:
    """Object 0 gets SAM2's memories, object 1 only the previous frame."""

    def select(self, frame_idx, history, num_objects, num_slots):
        frames = [f for f, _ in history[:num_slots]]
        return [frames, frames[:1]]


def test_memory_is_chosen_per_object_and_objects_do_not_interact():
    video, masks = _video(t=8)
    net = _net()
    ref, _ = _segment(net, video, masks)
    net.memory_selector = _OnlyObjectOne()
    mine, _ = _segment(net, video, masks)
    assert torch.equal(mine[:, 0], ref[:, 0])  # object 0's memories are SAM2's: identical
    assert not torch.equal(mine[3:, 1], ref[3:, 1])


def test_motion_with_zero_weight_is_sam2_and_reverse_propagation_works(monkeypatch):
    video, masks = _video(t=10)
    net = _net()
    ref, _ = _segment(net, video, masks, prompt_frame=9)
    made = []
    real = SamuraiMotion.__init__

    def counting(self, *a, **kw):
        made.append(1)
        real(self, *a, **kw)

    monkeypatch.setattr(SamuraiMotion, "__init__", counting)
    mine, aux = _segment(net, video, masks, prompt_frame=9, motion=dict(kf_score_weight=0.0, stable_frames=2))
    assert torch.equal(ref, mine)  # alpha 0: the predicted IoU alone decides, as SAM2
    assert len(made) == 2 and net.motion is None  # a fresh track set per pass (forward, backward), then removed
    assert aux["object_score_logits"].shape == (10, 2)
    moved, _ = _segment(net, video, masks, prompt_frame=9, motion=dict(kf_score_weight=1.0, stable_frames=2))
    assert moved.shape == ref.shape and torch.isfinite(moved).all()


def test_state_does_not_leak_between_videos():
    v1, m1 = _video(t=8, seed=1)
    v2, m2 = _video(t=8, seed=2)
    net = _net()
    net.memory_selector = build(MEMORY_SELECTORS, dict(name="samurai"))
    motion = dict(kf_score_weight=0.25, stable_frames=2)
    fresh, _ = _segment(net, v2, m2, motion=motion)
    _segment(net, v1, m1, motion=motion)
    again, _ = _segment(net, v2, m2, motion=motion)
    assert torch.equal(fresh, again)


def test_every_tracked_frame_records_its_choice():
    video, masks = _video(t=6)
    net = _net()
    net.memory_selector = build(MEMORY_SELECTORS, dict(name="recent"))
    seen = []
    real = net._prepare_memory_conditioned_features

    def spy(**kw):
        out = real(**kw)
        if not kw["is_init_cond_frame"]:
            hist = net._history(kw["frame_idx"], kw["output_dict"], kw["num_frames"], kw["track_in_reverse"])
            seen.append([(f, tuple(o["best_iou"].shape), tuple(o["kf_score"].shape)) for f, o in hist])
        return out

    net._prepare_memory_conditioned_features = spy
    _segment(net, video, masks, prompt_frame=2)
    assert seen[0] == []  # frame 3: only the prompt before it
    assert seen[1] == [(3, (2,), (2,))]
    assert [f for f, *_ in seen[2]] == [4, 3]  # frame 5, nearest first
    assert seen[3] == []  # frame 1, backward: the prompt is next; the forward pass's frames are not read
    assert [f for f, *_ in seen[4]] == [1]


# ---------------------------------------------------------------------------------------------- meta-architecture
def _tracker(name: str, **kw):
    torch.manual_seed(0)
    return build(MODELS, dict(name=name, num_classes=2, sam2=dict(config="cpu_tiny", image_size=S), **kw))


def _batch(t: int = 8):
    video, masks = _video(t=t)
    has_ann = torch.zeros(t, dtype=torch.bool)
    has_ann[[2, 5, 7]] = True
    masks[~has_ann] = False
    return {"video": video[None], "masks": masks[None], "has_ann": has_ann[None], "scored": has_ann[None].clone(),
            "frame_idx": torch.arange(10, 10 + t)[None], "meta": [{"sample_id": 0, "ed": 15}]}


def test_sam2_and_samurai_share_weights_and_leave_the_prompt_frame_unscored():
    a, b = _tracker("SAM2"), _tracker("SAMURAI")
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert b.sam2.model.memory_selector is not None and b.sam2.motion["kf_score_weight"] == 0.15
    batch = _batch()
    out = a.eval().predict(batch)
    assert out["scored"][0].nonzero().flatten().tolist() == [5, 7]  # frame 2 carried the GT mask prompt
    ed = _tracker("SAM2", prompt_frame="ed").eval().predict(batch)  # meta ed 15 = clip position 5
    assert ed["scored"][0].nonzero().flatten().tolist() == [2, 7]
    assert _tracker("SAM2", prompt_frame=-1).eval().predict(batch)["scored"][0].nonzero().flatten().tolist() == [2, 5]
    with pytest.raises(ConfigError, match="prompt_frame"):
        _tracker("SAM2", prompt_frame="last")


def test_samurai_trains_as_sam2():
    a, b = _tracker("SAM2"), _tracker("SAMURAI")
    batch = _batch()
    torch.manual_seed(3)
    la = a.train()(batch)
    torch.manual_seed(3)
    lb = b.train()(batch)
    assert la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)
    assert b.sam2.model.memory_selector is not None and b.sam2.motion is not None  # restored after training


def test_lora_preset_trains_only_the_adapters():
    from models.sam2.lora import lora_targets

    net = _net()
    names = lora_targets(net, "samurai")
    assert len(names) == 24 + 8  # cpu_tiny: 2 decoder layers x 3 attentions x q/k/v/out + 1 memory layer x 2 x 4
    assert all(".layers.0." in n or ".layers.1." in n for n in names)
    model = _tracker("SAMURAI", sam2_train="lora")
    trainable = dict(model.trainable_parameters())
    assert trainable and all("lora_" in n for n in trainable)
    linears = dict(net.named_modules())
    expected = sum(8 * (linears[n].in_features + linears[n].out_features) for n in names)  # r 8: A r×in, B out×r
    assert sum(p.numel() for p in trainable.values()) == expected
    before = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    opt = torch.optim.SGD(trainable.values(), lr=0.1)
    sum(model.train()(_batch()).values()).backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items() if k in before)


def test_mixed_training_prompts_use_masks_and_boxes(monkeypatch):
    model = _tracker("SAM2", train_prompt="mixed").train()
    kinds = []
    real = model._prompts
    monkeypatch.setattr(model, "_prompts", lambda masks, kind, *a, **kw: kinds.append(kind) or real(masks, kind, *a,
                                                                                                      **kw))
    torch.manual_seed(0)
    batch = _batch(t=8)
    for _ in range(6):
        losses = model(batch)
        assert all(torch.isfinite(v) for v in losses.values())
    assert set(kinds) == {"mask", "box"}
    with pytest.raises(ConfigError, match="train_prompt"):
        _tracker("SAM2", train_prompt="points")


def test_video_api_matches_predict_and_takes_boxes():
    """init_video / add_prompts / propagate: the GT-mask prompt of predict's first annotated frame gives predict's
    probabilities; boxes with a NaN row mark a class absent on that frame."""
    from trainers.video_inference import _propagate_all

    model = _tracker("SAMURAI").eval()
    batch = _batch()
    ref = model.predict(batch)["probs"][0]
    state = model.init_video(batch["video"][0], batch["meta"][0])
    model.add_prompts(state, 2, {"masks": batch["masks"][0, 2]})
    assert torch.equal(_propagate_all(model, state, 8), ref)
    assert [t for t, _ in model.propagate(state, reverse=True)] == [1, 0]
    boxes = _boxes(batch["masks"][0, 2])
    boxes[1] = float("nan")
    state = model.init_video(batch["video"][0], {})
    model.add_prompts(state, 2, {"boxes": boxes})
    probs = _propagate_all(model, state, 8)
    assert probs.shape == ref.shape and torch.isfinite(probs).all()
    with pytest.raises(ConfigError, match="one kind per video"):
        model.add_prompts(state, 5, {"masks": batch["masks"][0, 5]})
    with pytest.raises(ConfigError, match="no prompts"):
        list(model.propagate(model.init_video(batch["video"][0], {})))


def test_the_rules_count_what_they_change():
    motion = SamuraiMotion(1, kf_score_weight=0.25, stable_frames=3)
    for t in range(4):
        motion.choose(_candidates([(20 + 2 * t, 30), (50, 50)]), torch.tensor([[0.9, 0.2]]))
    motion.choose(_candidates([(28, 30), (50, 50)]), torch.tensor([[0.55, 0.60]]))
    assert motion.counts == {"frames": 5, "stable": 2, "changed": 1}
    sel = build(MEMORY_SELECTORS, dict(name="samurai"))
    history = [(9, _out([0.9], [1.0])), (8, _out([0.4], [1.0])), (7, _out([0.9], [1.0]))]
    assert sel.select(10, history, 1, 2) == [[9, 7]]
    assert sel.counts == {"examined": 3, "rejected": 1, "choices": 1, "differs": 1}


def test_an_empty_mask_starts_no_track_and_resets_a_stable_one():
    motion = SamuraiMotion(1, stable_frames=2)
    empty = torch.full((1, 2, S, S), -5.0)
    motion.choose(empty, torch.tensor([[0.9, 0.1]]))  # object lost on the first tracked frame
    assert motion.stable == [0] and not motion.tracks[0].initialized
    for t in range(3):
        motion.choose(_candidates([(20 + t, 30), (50, 50)]), torch.tensor([[0.9, 0.2]]))
    assert motion.stable == [2]
    scores, kf = motion.choose(empty, torch.tensor([[0.9, 0.1]]))  # lost again while stable: count reset
    assert motion.stable == [0] and kf[0] == 0


def test_importing_the_samurai_module_leaves_no_global_hydra():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import models.sam2.samurai\nfrom hydra.core.global_hydra import GlobalHydra\n"
            "print(GlobalHydra.instance().is_initialized())")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-500:]
