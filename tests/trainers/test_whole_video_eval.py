"""The whole-video protocol: data.evaluate entries (name or dict with tag / mapper / evaluator list / per_video /
window), one sample per video scored on all its annotated frames, windowed prediction equal to the model on the
whole clip when windows do not overlap a temporal model's context, and the same metrics as the clip protocol for a
per-frame model."""
import json

import pytest
import torch
from omegaconf import OmegaConf

from core.errors import ConfigError
from trainers.evaluation import eval_entries, per_video_metas
from trainers.video_inference import predict_in_windows


class FrameModel(torch.nn.Module):
    """Per-frame: probs depend on each frame only, so any windowing gives the same answer."""

    def predict(self, batch):
        v = batch["video"]  # B×T×3×H×W
        return {"probs": torch.stack([v[:, :, 0], 1 - v[:, :, 0]], 2)}


class ClipMeanModel(torch.nn.Module):
    """Temporal: every frame gets the clip's mean frame (so windows change the answer)."""

    def predict(self, batch):
        v = batch["video"][:, :, :1].mean(1, keepdim=True).expand_as(batch["video"][:, :, :1])
        return {"probs": torch.cat([v, 1 - v], 2)}


def test_windowed_prediction_averages_overlaps_and_matches_a_per_frame_model():
    torch.manual_seed(0)
    batch = {"video": torch.rand(2, 10, 3, 4, 4), "has_ann": torch.ones(2, 10, dtype=torch.bool),
             "meta": [{}, {}]}
    whole = FrameModel().predict(batch)["probs"]
    torch.testing.assert_close(predict_in_windows(FrameModel(), batch, 4, 1)["probs"], whole)
    got = predict_in_windows(ClipMeanModel(), batch, 4, 0)["probs"]  # windows (0,4) (4,8) (6,10)
    v = batch["video"][:, :, 0]
    w0, w1, w2 = v[:, 0:4].mean(1), v[:, 4:8].mean(1), v[:, 6:10].mean(1)
    torch.testing.assert_close(got[:, 0, 0], w0)
    torch.testing.assert_close(got[:, 5, 0], w1)
    torch.testing.assert_close(got[:, 7, 0], (w1 + w2) / 2)  # covered by two windows: their mean
    torch.testing.assert_close(got[:, 9, 0], w2)


def test_eval_entries_accept_names_and_dicts_and_name_their_errors():
    data = OmegaConf.create(dict(evaluate=["a_test", dict(name="a_test", tag="a_test_video", per_video=True,
                                                          mapper=dict(name="VideoEvalMapper"),
                                                          evaluator=[dict(name="VideoSegEvaluator")],
                                                          window=dict(size=8, overlap=2))],
                                 eval_mapper=dict(name="ClipEvalMapper"), evaluator=dict(name="VideoSegEvaluator")))
    plain, video = eval_entries(data)
    assert plain == dict(name="a_test", tag="a_test", mapper={"name": "ClipEvalMapper"},
                         evaluators=[{"name": "VideoSegEvaluator"}], per_video=False, window=None)
    assert video["tag"] == "a_test_video" and video["per_video"] and video["window"] == {"size": 8, "overlap": 2}
    bad = OmegaConf.create(dict(evaluate=[dict(name="a", per_vidoe=True)], eval_mapper=None, evaluator=None))
    with pytest.raises(ConfigError, match=r"data.evaluate\[0\]: unknown key 'per_vidoe'.*per_video"):
        eval_entries(bad)
    twice = OmegaConf.create(dict(evaluate=["a", dict(name="a")], eval_mapper=None, evaluator=None))
    with pytest.raises(ConfigError, match=r"\['a'\] appear more than once"):
        eval_entries(twice)


def test_per_video_metas_collect_the_scored_frames_of_each_video():
    metas = [dict(video_id="v1", frame_idx=3, sample_id=0), dict(video_id="v1", frame_idx=9, sample_id=1),
             dict(video_id="v2", frame_idx=0, sample_id=2)]
    out = per_video_metas(metas)
    assert [(m["video_id"], m["scored_frames"], m["sample_id"]) for m in out] == [("v1", [3, 9], 0), ("v2", [0], 1)]


def test_whole_video_protocol_end_to_end_on_echo_synth(tiny_config, tmp_path, synth_root, capsys):
    """A U-Net (per frame) scores the same Dice per frame whether each annotated frame is the centre of an
    11-frame clip or one of the scored frames of its whole video run in windows."""
    import main

    from tests.conftest import TINY_OVERRIDES

    run = tmp_path / "run"
    assert main.main(["--config_file", str(tiny_config), "--trainer_mode", "train_attmpt", "--output_dir",
                      str(run), *TINY_OVERRIDES, "train.max_iter=2", "train.eval_period=0",
                      "data.evaluate=[echo_synth_site_test]"]) == 0
    entries = ("data.evaluate=[echo_synth_site_test, {name: echo_synth_site_test, tag: whole, per_video: true, "
               "mapper: {name: VideoEvalMapper, size: [64, 64]}, window: {size: 16, overlap: 4}}]")
    assert main.main(["--trainer_mode", "eval", "--eval_path", str(run / "checkpoints" / "model_final.pth"),
                      "--output_dir", str(tmp_path / "ev"), entries, "data.eval_mapper.size=[64,64]"]) == 0
    clip = json.loads((tmp_path / "ev" / "eval" / "echo_synth_site_test" / "metrics.json").read_text())
    whole = json.loads((tmp_path / "ev" / "eval" / "whole" / "metrics.json").read_text())
    assert whole["num_scored_frames"] == clip["num_scored_frames"] == clip["num_samples"]
    assert whole["num_samples"] == whole["num_videos"] == clip["num_videos"] < clip["num_samples"]
    for k in ("mDice", "Dice_LV", "video_mDice", "frame_mIoU"):
        assert whole[k] == pytest.approx(clip[k], abs=1e-9), k  # a per-frame model: the same frames, resized alike
