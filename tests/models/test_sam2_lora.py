import pytest
import torch

from core.errors import CheckpointError, ConfigError
from models.sam2.build import build_sam2_video_model, count_parameters
from models.sam2.lora import add_lora, load_lora_state_dict, lora_state_dict, lora_targets
from models.sam2.video import SAM2VideoAdapter, normalize

BOXES = torch.tensor([[[4, 4, 40, 40], [20, 24, 60, 60]]], dtype=torch.float)


def _tiny(seed=0):
    torch.manual_seed(seed)
    return build_sam2_video_model("cpu_tiny", image_size=64)


def test_presets_target_the_attention_projections_and_freeze_the_rest():
    model = _tiny()
    assert len(lora_targets(model, "memory_attention")) == 8  # 1 layer × (self, cross) × q, k, v, out
    assert len(lora_targets(model, "mask_decoder")) == 28
    linears = dict(model.named_modules())
    expected = sum(4 * (linears[n].in_features + linears[n].out_features) for n in lora_targets(model, "attention"))
    add_lora(model, "attention", r=4)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert count_parameters(model, trainable_only=True) == expected == 15_616  # A: r×in, B: out×r per Linear
    unfrozen = _tiny()
    unfrozen.image_encoder.requires_grad_(False)
    add_lora(unfrozen, "mask_decoder", freeze_base=False)  # the base keeps its own flags
    flags = {n: p.requires_grad for n, p in unfrozen.named_parameters()}
    assert flags["sam_mask_decoder.transformer.layers.0.self_attn.q_proj.base_layer.weight"]
    assert flags["memory_attention.layers.0.self_attn.q_proj.weight"]
    assert not any(v for n, v in flags.items() if n.startswith("image_encoder"))


def test_adapters_saved_alone_reload_to_identical_predictions(tmp_path):
    video = normalize(torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    trained = add_lora(_tiny(), "attention")
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if "lora_B" in n:  # B starts at zero (adapter = identity); make it count
                p.normal_(std=0.1)
    expected = SAM2VideoAdapter(trained).segment(video, {"boxes": BOXES}, [1])[0]
    torch.save(lora_state_dict(trained), tmp_path / "lora.pt")
    state = torch.load(tmp_path / "lora.pt", weights_only=True)
    assert state and all("lora_" in k for k in state)
    fresh = add_lora(_tiny(), "attention")  # same base weights (seed), fresh adapters
    before = SAM2VideoAdapter(fresh).segment(video, {"boxes": BOXES}, [1])[0]
    assert not torch.allclose(before, expected)
    load_lora_state_dict(fresh, state)
    assert torch.equal(SAM2VideoAdapter(fresh).segment(video, {"boxes": BOXES}, [1])[0], expected)
    with pytest.raises(CheckpointError, match=r"16 unexpected \(memory_attention\.layers\.0"):
        load_lora_state_dict(add_lora(_tiny(), "mask_decoder"), state)
    with pytest.raises(CheckpointError, match="size mismatch"):
        load_lora_state_dict(add_lora(_tiny(), "attention", r=4), state)


@pytest.mark.parametrize("target, closest", [
    (r"memory_attention\..*\.qq_proj", "memory_attention.layers.0."),
    (["q_prj"], "q_proj"),
    ("conv_s0", ""),  # a Conv2d, not a Linear
])
def test_a_target_matching_no_linear_layer_names_the_closest(target, closest):
    with pytest.raises(ConfigError, match=r"matches no Linear layer of MotionAwareSAM2; closest: ") as e:
        add_lora(_tiny(), target)
    assert closest in str(e.value) and "\n" not in str(e.value)
