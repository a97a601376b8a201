"""BOX-SAM2 (models/metaarchs/box_sam2.py) at the CPU-tiny SAM2 size: losses per stage and what they train, the
prediction contract (probabilities that leave background ≥ 0, the prompts used), GT boxes on annotated frames,
seeded evaluation jitter, prompt-frame choice, LoRA training only adapters, and bad settings named."""
import pytest
import torch

from core.errors import CheckpointError, ConfigError
from models.heads.box_head import boxes_from_masks
from models.metaarchs.box_sam2 import BoxSAM2

SIZE = 64


def _model(**kw) -> BoxSAM2:
    torch.manual_seed(0)
    return BoxSAM2(num_classes=2, box_head=dict(dim=32, num_heads=2),
                   sam2=dict(config="cpu_tiny", image_size=SIZE), **kw)


def _batch(b=2, t=4):
    masks = torch.zeros(b, t, 2, SIZE, SIZE, dtype=torch.bool)
    masks[:, :, 0, 10:30, 8:40] = True
    masks[:, :, 1, 36:60, 20:50] = True
    has_ann = torch.zeros(b, t, dtype=torch.bool)
    has_ann[:, 1] = True
    masks[~has_ann] = False  # labels only on the annotated frame
    scored = has_ann.clone()
    meta = [dict(sample_id=i) for i in range(b)]
    return dict(video=torch.rand(b, t, 3, SIZE, SIZE), masks=masks, has_ann=has_ann, scored=scored, meta=meta)


def _grads(model):
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_joint_losses_reach_both_stages_and_stages_train_only_their_part():
    model = _model().train()
    losses = model(_batch())
    assert set(losses) == {"loss_box_l1", "loss_box_giou", "loss_box_presence", "loss_mask_sam2",
                           "loss_dice_sam2", "loss_iou_sam2", "loss_class_sam2"}
    sum(losses.values()).backward()
    got = _grads(model)
    assert any(n.startswith("box_head.backbone") for n in got)
    assert any("sam_mask_decoder" in n for n in got) and any("image_encoder" in n for n in got)
    box_only = _model(stage="box_head").train()
    assert set(box_only(_batch())) == {"loss_box_l1", "loss_box_giou", "loss_box_presence"}
    assert not any(p.requires_grad for p in box_only.sam2.parameters())
    sam_only = _model(stage="sam2", sam2_train="frozen").train()
    assert not any(p.requires_grad for p in sam_only.parameters())  # nothing left to train
    sam_only = _model(stage="sam2").train()
    assert set(sam_only(_batch())) == {"loss_mask_sam2", "loss_dice_sam2", "loss_iou_sam2", "loss_class_sam2"}
    assert not any(p.requires_grad for p in sam_only.box_head.parameters())


def test_predict_contract_and_gt_boxes_on_annotated_frames():
    batch = _batch()
    model = _model().eval()
    out = model.predict(batch)
    assert out["probs"].shape == (2, 4, 2, SIZE, SIZE) and out["boxes"].shape == (2, 4, 2, 4)
    assert out["scores"].shape == (2, 4, 2) and 0 <= out["probs"].min() and out["probs"].sum(2).max() <= 1 + 1e-5
    gt_model = _model(boxes="gt").eval()
    gt_model.load_state_dict(model.state_dict())
    gt = gt_model.predict(batch)
    boxes, _ = boxes_from_masks(batch["masks"])
    assert torch.equal(gt["boxes"][:, 1], boxes[:, 1])  # the annotated frame is prompted with its GT boxes
    assert torch.equal(gt["scores"][:, 1], torch.ones(2, 2))
    with pytest.raises(ConfigError, match="needs ground-truth masks"):
        gt_model.predict({"video": batch["video"], "has_ann": batch["has_ann"]})


def test_evaluation_jitter_is_seeded_per_sample():
    batch = _batch(b=1)
    model = _model(boxes="gt", box_jitter_px=6.0).eval()
    a, b = model.predict(batch), model.predict(batch)
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["probs"], b["probs"])
    clean, _ = boxes_from_masks(batch["masks"])
    shift = (a["boxes"][0, 1] - clean[0, 1]).abs()
    assert 0 < shift.mean() < 20


def test_prompt_frames():
    avail = torch.ones(9, dtype=torch.bool)
    scored = torch.zeros(9, dtype=torch.bool)
    scored[6] = True
    assert _model()._prompt_frames(9, avail, scored) == list(range(9))
    assert _model(prompt_frames="reference")._prompt_frames(9, avail, scored) == [6]
    assert _model(prompt_frames="reference")._prompt_frames(9, avail, None) == [4]  # the clip's centre
    assert _model(prompt_frames="every", prompt_every=4)._prompt_frames(9, avail, None) == [0, 4, 8]
    only = torch.zeros(9, dtype=torch.bool)
    only[2] = True  # GT boxes on frame 2 only: the nearest frame that has one
    assert _model(prompt_frames="reference")._prompt_frames(9, only, scored) == [2]


def test_lora_trains_only_adapters_in_sam2_and_bad_settings_are_named(tmp_path):
    model = _model(sam2_train="lora", lora=dict(target="mask_decoder", r=2))
    trainable = [n for n, p in model.sam2.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with pytest.raises(ConfigError, match=r"model.boxes must be one of predicted, gt; got 'box'"):
        _model(boxes="box")
    with pytest.raises(ConfigError, match="model.stage must be one of joint, box_head, sam2"):
        _model(stage="two")
    with pytest.raises(ConfigError, match="use sam2_train='lora'"):
        _model(lora=dict(r=4))
    with pytest.raises(CheckpointError, match="init_from: checkpoint not found"):
        _model(init_from=str(tmp_path / "none.pth"))
    torch.save({"model": {"other.weight": torch.zeros(1)}}, tmp_path / "x.pth")
    with pytest.raises(CheckpointError, match="not a BoxSAM2 checkpoint"):
        _model(init_from=str(tmp_path / "x.pth"))


def test_init_from_loads_stage_one(tmp_path):
    first = _model(stage="box_head")
    path = str(tmp_path / "stage1.pth")
    torch.save({"model": first.state_dict()}, path)
    second = BoxSAM2(num_classes=2, box_head=dict(dim=32, num_heads=2), sam2=dict(config="cpu_tiny", image_size=SIZE),
                     stage="sam2", init_from=path)
    assert all(torch.equal(second.state_dict()[k], v) for k, v in first.state_dict().items())


def test_flops_are_counted_although_predict_cannot_be_traced():
    from models.complexity import count_flops

    model = _model()
    one, two = (count_flops(model, t, (SIZE, SIZE), torch.device("cpu")) for t in (2, 4))
    assert one and 1.6 < two / one < 2.4  # per-frame work: twice the frames, about twice the MACs
    assert all(p.requires_grad for p in model.parameters())  # the count froze them only while counting


def test_paper_size_config_builds_with_lora_and_counts_its_parameters(monkeypatch):
    from core.config import load_config
    from core.registry import MODELS, build
    from models.sam2.build import count_parameters

    monkeypatch.delenv("SAM2_CHECKPOINT", raising=False)  # random init: no weights here
    cfg = load_config("configs/cardiac/box_sam2_hiera_t.py")
    assert cfg.model.sam2.config == "sam2.1_hiera_t" and cfg.model.sam2.image_size == 512
    torch.manual_seed(0)
    model = build(MODELS, cfg.model)
    lora = sum(p.numel() for n, p in model.sam2.named_parameters() if "lora_" in n)
    assert count_parameters(model.sam2.model) - lora == 38_962_498  # Hiera-T as released (REFERENCE 5.1)
    assert lora == 212_992  # r 8 on the 60 attention projections
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.sam2.named_parameters())
