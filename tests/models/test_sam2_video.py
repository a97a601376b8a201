import pytest
import torch

from models.sam2.build import build_sam2_video_model
from models.sam2.loss import SAM2Loss
from models.sam2.video import PromptError, SAM2VideoAdapter, init_state_from_tensor, normalize

T, H, W = 5, 48, 80  # input frames are not square and not at the model's 64² size


@pytest.fixture(scope="module")
def adapter():
    torch.manual_seed(0)
    return SAM2VideoAdapter(build_sam2_video_model("cpu_tiny", image_size=64), frame_batch=2)  # 3 encoder calls


def _video(seed=0, t=T, h=H, w=W):
    g = torch.Generator().manual_seed(seed)
    return normalize(torch.rand(t, 3, h, w, generator=g))


def _chambers(t=T, h=H, w=W):  # four rectangles, as the four cardiac chambers
    masks = torch.zeros(t, 4, h, w, dtype=torch.bool)
    for k, (y0, y1, x0, x1) in enumerate([(4, 22, 8, 36), (4, 22, 44, 72), (26, 44, 8, 36), (26, 44, 44, 76)]):
        masks[:, k, y0:y1, x0:x1] = True
    return masks


BOXES = torch.tensor([[[8, 4, 36, 22], [44, 4, 72, 22], [8, 26, 36, 44], [44, 26, 76, 44]]], dtype=torch.float)


def test_box_prompts_match_the_package_predictor_on_every_frame(adapter):
    """Four objects, a box on frame 2: forward and backward propagation equal the package's own
    add_new_points_or_box + propagate_in_video (forward, then reverse) on an inference state built from the tensor."""
    video = _video()
    logits, aux = adapter.segment(video, {"boxes": BOXES}, [2])
    assert logits.shape == (T, 4, H, W) and aux["object_score_logits"].shape == (T, 4)
    assert [x.shape[1] for x in aux["multimask_logits"]] == [3, 3, 1, 3, 3]  # 1 mask on the box frame
    assert aux["prompted"].tolist() == [False, False, True, False, False] and not aux["mask_prompted"].any()
    predictor = adapter.model
    state = init_state_from_tensor(predictor, video)
    for k in range(4):
        predictor.add_new_points_or_box(state, frame_idx=2, obj_id=k + 1, box=BOXES[0, k])
    ref = {}
    for reverse in (False, True):
        for f, obj_ids, masks in predictor.propagate_in_video(state, reverse=reverse):
            assert obj_ids == [1, 2, 3, 4]
            ref[f] = masks[:, 0]
    assert sorted(ref) == list(range(T))
    # the predictor stores memories as bf16; ours stay fp32
    torch.testing.assert_close(logits, torch.stack([ref[i] for i in range(T)]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("frames", [[0], [T - 1], [1, 3]])
def test_propagation_covers_every_frame_from_any_prompt_frames(adapter, frames):
    masks = _chambers()
    logits, aux = adapter.segment(_video(1), {"masks": masks[frames]}, frames)
    assert logits.shape == (T, 4, H, W) and torch.isfinite(logits).all()
    assert aux["mask_prompted"].nonzero()[:, 0].tolist() == frames
    for f in frames:  # a prompted frame's output is the given mask
        assert torch.equal(logits[f] > 0, masks[f])
    assert len(aux["multimask_logits"]) == len(aux["ious"]) == T


def test_a_given_mask_is_encoded_into_memory_at_full_resolution(adapter):
    seen = []
    model = adapter.model
    encode = type(model)._encode_new_memory

    def spy(self, current_vision_feats, feat_sizes, pred_masks_high_res, object_score_logits, is_mask_from_pts):
        seen.append(pred_masks_high_res.detach().clone())
        return encode(self, current_vision_feats, feat_sizes, pred_masks_high_res, object_score_logits,
                      is_mask_from_pts)

    masks = torch.zeros(1, 2, 64, 64, dtype=torch.bool)
    masks[0, 0, 10:13, 20:21] = True  # a 3×1 sliver: lost at the 16² resolution of the predictor's path
    model._encode_new_memory = spy.__get__(model)
    try:
        adapter.segment(_video(2, t=2, h=64, w=64), {"masks": masks}, [0])
    finally:
        del model._encode_new_memory
    assert seen[0].shape == (2, 1, 64, 64)
    assert torch.equal(seen[0][:, 0] > 0, masks[0])


@pytest.mark.parametrize("mode", ["eval", "train"])  # train(): dropout and SAM2's training-time memory rules
def test_training_path_is_differentiable_into_mask_decoder_and_memory_attention(adapter, mode):
    model = adapter.model
    model.zero_grad()
    masks = _chambers()
    getattr(adapter, mode)()
    try:
        logits, aux = adapter.segment(_video(3), {"boxes": BOXES}, [0], train=True)
    finally:
        adapter.eval()
    losses = SAM2Loss()(aux, masks)
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("sam_mask_decoder.output_hypernetworks_mlps") for n in grads)
    assert any(n.startswith("sam_mask_decoder.iou_prediction_head") for n in grads)
    assert any(n.startswith("memory_attention.layers") for n in grads)
    assert any(n.startswith("memory_encoder") for n in grads)
    assert any(n.startswith("image_encoder.trunk") for n in grads)
    model.zero_grad()
    with torch.no_grad():
        assert not adapter.segment(_video(3), {"boxes": BOXES}, [0])[0].requires_grad


def test_box_prompt_learns_its_mask_in_a_few_steps():
    """The training path is sound: 30 Adam steps on one frame fit the mask of a box (Dice > 0.9)."""
    torch.manual_seed(0)
    adapter = SAM2VideoAdapter(build_sam2_video_model("cpu_tiny", image_size=64))
    video, masks = _video(4, t=1, h=64, w=64), torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    masks[0, 0, 16:40, 12:44] = True
    box = torch.tensor([[[12, 16, 44, 40]]], dtype=torch.float)
    opt = torch.optim.Adam(adapter.parameters(), lr=3e-3)
    crit = SAM2Loss()
    for _ in range(30):
        logits, aux = adapter.segment(video, {"boxes": box}, [0], train=True)
        opt.zero_grad()
        sum(crit(aux, masks).values()).backward()
        opt.step()
    pred = adapter.segment(video, {"boxes": box}, [0])[0] > 0
    dice = 2 * (pred & masks).sum() / (pred.sum() + masks.sum())
    assert dice > 0.9


@pytest.mark.parametrize("prompts, frames, match", [
    ({"boxes": BOXES}, [T], r"prompt_frames \[5\] outside the video \(frames 0..4\)"),
    ({"boxes": BOXES}, [-1], r"prompt_frames \[-1\] outside the video"),
    ({"boxes": BOXES.expand(2, 4, 4)}, [1, 1], "distinct"),
    ({"boxes": BOXES[:, :, :2]}, [0], r"prompts\['boxes'\] must be P×K×4"),
    ({"masks": torch.zeros(1, 4, 8, 8)}, [0], r"P×K×48×80"),
    ({"boxes": BOXES, "masks": torch.zeros(1, 4, H, W)}, [0], "prompts must be"),
    ({"boxes": torch.full((1, 4, 4), float("nan"))}, [0], "non-finite"),
])
def test_bad_prompts_are_one_line_prompt_errors(adapter, prompts, frames, match):
    with pytest.raises(PromptError, match=match) as e:
        adapter.segment(_video(), prompts, frames)
    assert "\n" not in str(e.value)


def test_batch_of_two_videos_is_refused(adapter):
    with pytest.raises(PromptError, match="B=1"):
        adapter.segment(_video().expand(2, -1, -1, -1, -1), {"boxes": BOXES}, [0])
