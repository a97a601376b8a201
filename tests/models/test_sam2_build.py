import pytest
import torch

from core.errors import CheckpointError, ConfigError
from models.sam2.build import build_sam2_video_model, count_parameters


def test_cpu_tiny_is_a_video_predictor_of_1_35m_params_built_without_global_hydra():
    from hydra.core.global_hydra import GlobalHydra

    model = build_sam2_video_model("cpu_tiny", image_size=64)
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    from models.sam2.samurai import MotionAwareSAM2

    assert type(model) is MotionAwareSAM2 and isinstance(model, SAM2VideoPredictor) and not model.training
    assert model.motion is None and model.memory_selector is None  # the package's model unless given them
    assert count_parameters(model) == 1_347_458
    assert model.image_size == 64 and model.num_maskmem == 3 and len(model.memory_attention.layers) == 1
    assert model.fill_hole_area == 0  # no post-processing on CPU
    assert not GlobalHydra.instance().is_initialized()


@pytest.mark.parametrize("size", [200, 0, 64.0])
def test_image_size_must_be_a_multiple_of_32(size):
    with pytest.raises(ConfigError, match=rf"image_size must be a positive multiple of 32.*got {size!r}") as e:
        build_sam2_video_model("cpu_tiny", image_size=size)
    assert "\n" not in str(e.value)


def test_unknown_config_and_misspelt_override_name_the_closest_keys():
    with pytest.raises(ConfigError, match="sam2.1_hiera_t"):
        build_sam2_video_model("sam2.1_hiera_x")
    with pytest.raises(ConfigError, match=r"'model.num_maskmen'.*closest: \['num_maskmem'\]"):
        build_sam2_video_model("cpu_tiny", image_size=64, overrides={"model.num_maskmen": 2})
    # a SAM2Base argument the yaml does not set is a valid override
    model = build_sam2_video_model("cpu_tiny", image_size=64, overrides={"model.max_cond_frames_in_attn": 2})
    assert model.max_cond_frames_in_attn == 2


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="sam2 checkpoint not found: .*nope.pt"):
        build_sam2_video_model("cpu_tiny", image_size=64, checkpoint=str(tmp_path / "nope.pt"))


def test_checkpoint_round_trip_and_checkpoint_of_another_config_names_its_keys(tmp_path):
    torch.manual_seed(0)
    two_layers = build_sam2_video_model("cpu_tiny", image_size=64, overrides={"model.memory_attention.num_layers": 2})
    torch.save({"model": two_layers.state_dict()}, tmp_path / "two.pt")
    same = build_sam2_video_model("cpu_tiny", image_size=64, checkpoint=str(tmp_path / "two.pt"),
                                  overrides={"model.memory_attention.num_layers": 2})
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), two_layers.state_dict().values()))
    with pytest.raises(CheckpointError, match=r"does not match config cpu_tiny: \d+ unexpected "
                                              r"\(memory_attention\.layers\.1\.") as e:
        build_sam2_video_model("cpu_tiny", image_size=64, checkpoint=str(tmp_path / "two.pt"))
    assert "\n" not in str(e.value) and "in all" in str(e.value)
